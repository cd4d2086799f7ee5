package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/token"
)

// KeySource is the published key set, served from memory.
type KeySource interface {
	// JWKS returns the cached JWKS document and its strong ETag, or an
	// error when the keys cannot be trusted now (keys.ErrStale).
	JWKS() (body []byte, etag string, err error)
	// SigningAlgs lists the algorithms of the published keys.
	SigningAlgs() []string
}

// DiscoveryOptions describe what the discovery document advertises.
type DiscoveryOptions struct {
	Issuer     string
	JWKSMaxAge time.Duration
	// BrowserSignIn: /oauth2/authorize and /oauth2/par are served (the
	// authorization code flow with PKCE, pushed authorization requests), so
	// their metadata is advertised.
	BrowserSignIn bool
	// MFA: the password grant's second step is served, so the two MFA
	// grants are advertised.
	MFA bool
	// TokenExchange: a subject_token_type is served (API keys always, and
	// upstream id tokens when providers are configured), so the RFC 8693
	// grant is advertised.
	TokenExchange bool
	// Tenants: organisations are on (PORTCULLIS_TENANTS), so a login's
	// tokens, its id token included, carry the tenant claim, which
	// claims_supported then lists.
	Tenants bool
}

// discovery serves the JWKS and the metadata documents from cached bytes:
// no database round trip and no allocation per request beyond writing them.
type discovery struct {
	keys     KeySource
	opts     DiscoveryOptions
	cacheCtl []string
	state    atomic.Pointer[discoveryState]
}

type discoveryState struct {
	jwksETag string
	jwks     []byte
	etagHdr  []string
	metadata []byte
	metaETag []string
}

// strongETag is a quoted SHA-256 prefix of the body.
func strongETag(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

var (
	contentTypeJSON = []string{"application/json"}
	noCacheMeta     = []string{"public, max-age=300"}
)

// MountDiscovery mounts /.well-known/jwks.json and the RFC 8414 / OIDC
// Discovery metadata documents.
func (s *Server) MountDiscovery(keys KeySource, opts DiscoveryOptions) {
	d := &discovery{keys: keys, opts: opts,
		cacheCtl: []string{"public, max-age=" + strconv.Itoa(int(opts.JWKSMaxAge.Seconds()))}}
	for path, h := range map[string]echo.HandlerFunc{"/.well-known/jwks.json": d.serveJWKS,
		"/.well-known/openid-configuration": d.serveMetadata, "/.well-known/oauth-authorization-server": d.serveMetadata} {
		s.echo.GET(path, h)
		s.fromMemory[path] = true // the key set and metadata are in memory (discovery.current)
	}
}

// current returns the cached documents, rebuilding them only when the key
// set changed. While the instance's keys cannot be trusted (keys.ErrStale:
// not reloaded for too long, so a key revoked elsewhere may still be in
// them) neither document is served: 503.
func (d *discovery) current() (*discoveryState, error) {
	body, etag, err := d.keys.JWKS()
	if err != nil {
		return nil, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("discovery: %w", err))
	}
	st := d.state.Load()
	if st != nil && st.jwksETag == etag {
		return st, nil
	}
	meta := d.metadata()
	next := &discoveryState{jwksETag: etag, jwks: body, etagHdr: []string{etag}, metadata: meta,
		metaETag: []string{strongETag(meta)}}
	d.state.Store(next)
	return next, nil
}

func (d *discovery) serveJWKS(c echo.Context) error {
	st, err := d.current()
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h["Cache-Control"] = d.cacheCtl
	h["Etag"] = st.etagHdr
	if match := c.Request().Header["If-None-Match"]; len(match) > 0 && etagMatches(match, st.jwksETag) {
		c.Response().WriteHeader(http.StatusNotModified)
		return nil
	}
	h["Content-Type"] = contentTypeJSON
	c.Response().WriteHeader(http.StatusOK)
	_, err = c.Response().Write(st.jwks)
	return err
}

func (d *discovery) serveMetadata(c echo.Context) error {
	st, err := d.current()
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h["Cache-Control"] = noCacheMeta
	h["Etag"] = st.metaETag
	if match := c.Request().Header["If-None-Match"]; len(match) > 0 && etagMatches(match, st.metaETag[0]) {
		c.Response().WriteHeader(http.StatusNotModified)
		return nil
	}
	h["Content-Type"] = contentTypeJSON
	c.Response().WriteHeader(http.StatusOK)
	_, err = c.Response().Write(st.metadata)
	return err
}

// etagMatches implements If-None-Match's list and "*" (RFC 9110 §13.1.2).
func etagMatches(values []string, etag string) bool {
	for _, v := range values {
		for v != "" {
			var part string
			part, v, _ = strings.Cut(v, ",")
			part = strings.TrimSpace(part)
			if part == "*" || part == etag || strings.TrimPrefix(part, "W/") == etag {
				return true
			}
		}
	}
	return false
}

// advertisedGrants are the grants discovery lists: those that work end to
// end. authorization_code, which clients may already be registered with
// (token.SupportedGrants), joins when /oauth2/authorize is served
// (DiscoveryOptions.BrowserSignIn).
var advertisedGrants = []string{token.GrantPassword, token.GrantRefreshToken, token.GrantClientCredentials}

// acrValues are the acr values tokens carry (mfa.ACR): a password alone, or
// a password and a second factor.
var acrValues = []string{mfa.ACRPassword, mfa.ACRMFA}

// promptValues are the prompt values /oauth2/authorize honours.
var promptValues = []string{"none", "login", "consent", "select_account"}

// metadata builds the RFC 8414 / OIDC Discovery document: only what the
// server really supports.
func (d *discovery) metadata() []byte {
	iss := strings.TrimSuffix(d.opts.Issuer, "/")
	algs := d.keys.SigningAlgs()
	if len(algs) == 0 {
		algs = []string{"RS256"}
	}
	grants := slices.Clone(advertisedGrants)
	if d.opts.BrowserSignIn {
		grants = append(grants, token.GrantAuthorizationCode)
	}
	if d.opts.MFA {
		grants = append(grants, token.MFAGrants...)
	}
	if d.opts.TokenExchange {
		grants = append(grants, token.GrantTokenExchange)
	}
	m := map[string]any{
		"issuer":                                        d.opts.Issuer,
		"token_endpoint":                                iss + "/oauth2/token",
		"jwks_uri":                                      iss + "/.well-known/jwks.json",
		"revocation_endpoint":                           iss + "/oauth2/revoke",
		"introspection_endpoint":                        iss + "/oauth2/introspect",
		"userinfo_endpoint":                             iss + "/userinfo",
		"response_types_supported":                      []string{},
		"grant_types_supported":                         grants,
		"token_endpoint_auth_methods_supported":         []string{"client_secret_basic", "client_secret_post", "none"},
		"revocation_endpoint_auth_methods_supported":    []string{"client_secret_basic", "client_secret_post", "none"},
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"scopes_supported":                              policy.OIDCScopes(),
		"subject_types_supported":                       []string{"public"},
		"id_token_signing_alg_values_supported":         algs,
		"claims_supported": []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "sid", "amr", "acr", "email",
			"email_verified", "name", "roles", "scope", "client_id", "jti"},
		"acr_values_supported":  acrValues,
		"service_documentation": iss + "/docs",
	}
	if d.opts.BrowserSignIn {
		m["authorization_endpoint"] = iss + "/oauth2/authorize"
		m["pushed_authorization_request_endpoint"] = iss + "/oauth2/par"
		m["require_pushed_authorization_requests"] = false
		m["response_types_supported"] = []string{"code"}
		m["response_modes_supported"] = []string{"query", "form_post"}
		m["code_challenge_methods_supported"] = []string{"S256"}
		m["prompt_values_supported"] = promptValues
		m["authorization_response_iss_parameter_supported"] = true
		m["request_parameter_supported"] = false
		m["request_uri_parameter_supported"] = false
		m["claims_parameter_supported"] = false
		m["claims_supported"] = []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid", "amr", "acr",
			"azp", "email", "email_verified", "name", "roles", "scope", "client_id", "jti"}
		m["end_session_endpoint"] = iss + "/oauth2/logout"
		m["backchannel_logout_supported"] = true
		m["backchannel_logout_session_supported"] = true
	}
	if d.opts.Tenants {
		m["claims_supported"] = append(m["claims_supported"].([]string), "tenant")
	}
	b, _ := json.Marshal(m)
	return b
}
