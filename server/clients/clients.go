// Package clients creates and manages OAuth clients: id rules, generated
// secrets (256 random bits, shown once, stored as SHA-256) and the grants,
// scopes and audiences a client may use. The CLI and the admin API share it.
//
// It never logs or stores a secret in the clear.
package clients

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// Store keeps clients.
type Store interface {
	// CreateClient stores c, having run check over every stored client
	// and every name a deleted client left retired and not yet expired, in
	// the same transaction, under a lock every client creation and
	// deletion takes (an error from check is returned as it is, and
	// nothing is stored), so that no creation checks against a state
	// another creation or a deletion changes.
	CreateClient(ctx context.Context, c *store.Client, check func(existing []store.Client, retired []store.RetiredClientName) error) error
	GetClient(ctx context.Context, id string) (store.Client, error)
	ListClients(ctx context.Context) ([]store.Client, error)
	// DeleteClient deletes a client and, in the same transaction, retires
	// its id and audiences until its tokens have expired (the revocation
	// horizon), so that CreateClient's check sees them until then.
	DeleteClient(ctx context.Context, id string) error
	SetClientSecretHash(ctx context.Context, id string, hash []byte) error
}

// Spec describes a client to create.
type Spec struct {
	ID        string
	Name      string
	Public    bool
	Grants    []string // nil: password, refresh_token
	Scopes    []string // nil: every permission; empty: none
	Audiences []string
	// Optional lifetimes; zero uses the server defaults.
	AccessTokenTTL time.Duration
	// MaxAccessTokenTTL caps AccessTokenTTL (PORTCULLIS_MAX_CLIENT_TOKEN_TTL;
	// zero: DefaultMaxAccessTokenTTL). Revocations are kept this long, so no
	// client may outlive it.
	MaxAccessTokenTTL time.Duration

	// The authorization code flow (contract, "Browser sign-in").
	RedirectURIs           []string // only with the authorization_code grant, which needs at least one
	PostLogoutRedirectURIs []string
	FirstParty             bool   // never shows consent; the admin API needs every admin permission to set it
	ApplicationType        string // "" (web), store.ApplicationWeb or store.ApplicationNative
	// RequirePKCE: nil means true. A public client always requires PKCE;
	// false on one is refused.
	RequirePKCE          *bool
	BackchannelLogoutURI string
	LogoURI              string // https only
	ClientURI            string // https only

	// RequirePushedAuthorizationRequests: /oauth2/authorize serves only
	// requests pushed to /oauth2/par first (RFC 9126 §6); needs the
	// authorization_code grant.
	RequirePushedAuthorizationRequests bool

	// RefreshTokenDelivery is "" or store.RefreshDeliveryBody (the JSON
	// body), or store.RefreshDeliveryCookie (the HttpOnly cookie, which needs
	// AllowedOrigins and a reuse grace of at least MinCookieReuseGrace).
	RefreshTokenDelivery string
	// AllowedOrigins are exact browser origins (scheme://host[:port]; https,
	// or http on a loopback host) a cookie client's requests come from.
	AllowedOrigins []string
	// TenantID binds the client to an organisation (set by the accounts
	// service for a tenant admin; "" for a platform client).
	TenantID string
	// RefreshReuseGrace is the server's PORTCULLIS_REFRESH_REUSE_GRACE,
	// which a cookie client needs at MinCookieReuseGrace or more.
	RefreshReuseGrace time.Duration
	// ReservedAudiences are the access-token audiences no client id may
	// be besides those clients list (Clashes): ServerAudiences of the
	// server's settings. Set by the accounts service and the test fixtures.
	ReservedAudiences []string
}

// ServerAudiences are the server's own access-token audiences, which no
// client id may be (Spec.ReservedAudiences, Clashes): defaultAudience
// (PORTCULLIS_DEFAULT_AUDIENCE, the aud of every client listing none) and
// the issuer (the admin API's audience).
func ServerAudiences(defaultAudience, issuer string) []string {
	return []string{defaultAudience, issuer}
}

// MinCookieReuseGrace is the least PORTCULLIS_REFRESH_REUSE_GRACE a cookie
// client works with: browser tabs share the one cookie and refresh at once,
// and only a grace replay gives each of them the same successor.
const MinCookieReuseGrace = 2 * time.Second

// CookieGraceError is the one explanation of a reuse grace too short for
// cookie clients, for creation and for start-up.
func CookieGraceError(grace time.Duration) error {
	if grace >= MinCookieReuseGrace {
		return nil
	}
	return &ValidationError{fmt.Sprintf("refresh_token_delivery cookie needs PORTCULLIS_REFRESH_REUSE_GRACE of at least %s (it is %s): "+
		"browser tabs refresh at once with the one cookie", MinCookieReuseGrace, grace)}
}

// maxURIs bounds each list of registered URIs.
const maxURIs = 32

// DefaultMaxAccessTokenTTL is the default cap on a client's access-token
// lifetime (PORTCULLIS_MAX_CLIENT_TOKEN_TTL).
const DefaultMaxAccessTokenTTL = 24 * time.Hour

// ValidationError explains why a Spec is refused.
type ValidationError struct{ Reason string }

func (e *ValidationError) Error() string { return e.Reason }

// DefaultGrants are the grants of a client created without --grants.
var DefaultGrants = []string{token.GrantPassword, token.GrantRefreshToken}

// ValidID reports whether id is 3–64 characters of a-z 0-9 . _ - and not
// shaped like a user id.
func ValidID(id string) bool {
	if len(id) < 3 || len(id) > 64 || strings.HasPrefix(id, "usr_") {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// Validate checks a spec and fills defaults.
func (s *Spec) Validate() error {
	if !ValidID(s.ID) {
		return &ValidationError{"client id must be 3-64 characters of a-z 0-9 . _ - (and not start with usr_)"}
	}
	s.Name = strings.TrimSpace(s.Name)
	if s.Name == "" {
		s.Name = s.ID
	}
	if len(s.Name) > 200 {
		return &ValidationError{"client name must be at most 200 characters"}
	}
	if !plainText(s.Name) {
		return &ValidationError{"client name must be valid UTF-8 without control characters"}
	}
	if s.Grants == nil {
		s.Grants = slices.Clone(DefaultGrants)
	}
	if len(s.Grants) == 0 {
		return &ValidationError{"a client needs at least one grant type"}
	}
	for _, g := range s.Grants {
		if !slices.Contains(token.SupportedGrants, g) {
			return &ValidationError{fmt.Sprintf("unsupported grant type %q (use %s)", g, strings.Join(token.SupportedGrants, ", "))}
		}
		if g == token.GrantClientCredentials && s.Public {
			return &ValidationError{"a public client cannot use client_credentials"}
		}
	}
	slices.Sort(s.Grants)
	s.Grants = slices.Compact(s.Grants)
	if s.Scopes != nil {
		for _, sc := range s.Scopes {
			if sc == "" || strings.ContainsAny(sc, " \"\\*") || len(sc) > 200 || !plainText(sc) {
				return &ValidationError{fmt.Sprintf("invalid scope %q (concrete permissions such as projects:read)", sc)}
			}
		}
	}
	for _, a := range s.Audiences {
		if a == "" || len(a) > 200 || strings.ContainsAny(a, " \"") || !plainText(a) {
			return &ValidationError{fmt.Sprintf("invalid audience %q", a)}
		}
	}
	ceiling := s.MaxAccessTokenTTL
	if ceiling <= 0 {
		ceiling = DefaultMaxAccessTokenTTL
	}
	if s.AccessTokenTTL < 0 || s.AccessTokenTTL > ceiling {
		return &ValidationError{fmt.Sprintf("access token lifetime must be between 0 and %d seconds (PORTCULLIS_MAX_CLIENT_TOKEN_TTL)",
			int64(ceiling.Seconds()))}
	}
	if err := s.validateCodeFlow(); err != nil {
		return err
	}
	return s.validateDelivery()
}

// validateDelivery checks the refresh-token delivery and the allowed
// origins, and fills the default delivery (body).
func (s *Spec) validateDelivery() error {
	switch s.RefreshTokenDelivery {
	case "":
		s.RefreshTokenDelivery = store.RefreshDeliveryBody
	case store.RefreshDeliveryBody, store.RefreshDeliveryCookie:
	default:
		return &ValidationError{fmt.Sprintf("refresh_token_delivery %q must be body or cookie", s.RefreshTokenDelivery)}
	}
	if len(s.AllowedOrigins) > maxURIs {
		return &ValidationError{fmt.Sprintf("at most %d allowed origins", maxURIs)}
	}
	var origins []string
	for _, o := range s.AllowedOrigins {
		if !ValidOrigin(o) {
			return &ValidationError{fmt.Sprintf("allowed origin %q must be an exact origin scheme://host[:port] without a path: https, or http on a loopback host", o)}
		}
		if !slices.Contains(origins, o) {
			origins = append(origins, o)
		}
	}
	s.AllowedOrigins = origins
	if s.RefreshTokenDelivery != store.RefreshDeliveryCookie {
		if len(s.AllowedOrigins) > 0 {
			return &ValidationError{"allowed origins are for refresh_token_delivery cookie (--refresh-cookie)"}
		}
		return nil
	}
	if len(s.AllowedOrigins) == 0 {
		return &ValidationError{"refresh_token_delivery cookie needs at least one allowed origin (--allowed-origin)"}
	}
	if !slices.Contains(s.Grants, token.GrantRefreshToken) {
		return &ValidationError{"refresh_token_delivery cookie needs the refresh_token grant"}
	}
	return CookieGraceError(s.RefreshReuseGrace)
}

// ValidOrigin reports whether o is an exact, serialised browser origin:
// lower-case scheme://host[:port] without user information, path, query or
// fragment; https, or http on a loopback host (localhost, 127.0.0.1, [::1]).
func ValidOrigin(o string) bool {
	if len(o) > 200 || strings.ContainsAny(o, " \t\r\n\x00\\") {
		return false
	}
	u, err := url.Parse(o)
	if err != nil || u.User != nil || u.Host == "" || u.Opaque != "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" ||
		strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return false
	}
	if o != u.Scheme+"://"+u.Host || u.Host != strings.ToLower(u.Host) || strings.HasSuffix(u.Host, ":") {
		return false
	}
	h := u.Hostname()
	if net.ParseIP(h) == nil && strings.Trim(h, "abcdefghijklmnopqrstuvwxyz0123456789.-") != "" {
		return false
	}
	switch u.Scheme {
	case "https":
		return true
	case "http":
		return h == "localhost" || h == "127.0.0.1" || h == "::1"
	}
	return false
}

// validateCodeFlow checks the fields of the authorization code flow and
// fills their defaults: application type web, PKCE required. Every URI rule
// is redirecturi.Validate's.
func (s *Spec) validateCodeFlow() error {
	switch s.ApplicationType {
	case "":
		s.ApplicationType = store.ApplicationWeb
	case store.ApplicationWeb, store.ApplicationNative:
	default:
		return &ValidationError{fmt.Sprintf("application type %q must be web or native", s.ApplicationType)}
	}
	native := s.ApplicationType == store.ApplicationNative
	codeFlow := slices.Contains(s.Grants, token.GrantAuthorizationCode)
	if s.RequirePushedAuthorizationRequests && !codeFlow {
		return &ValidationError{"require_pushed_authorization_requests (--require-par) needs the authorization_code grant"}
	}
	if len(s.RedirectURIs) > 0 && !codeFlow {
		return &ValidationError{"redirect URIs need the authorization_code grant (add it to the grants, or drop the redirect URIs)"}
	}
	if codeFlow && len(s.RedirectURIs) == 0 {
		return &ValidationError{"a client with the authorization_code grant needs at least one redirect URI"}
	}
	var err error
	if s.RedirectURIs, err = validURIs(s.RedirectURIs, redirecturi.Redirect, native); err != nil {
		return err
	}
	if s.PostLogoutRedirectURIs, err = validURIs(s.PostLogoutRedirectURIs, redirecturi.PostLogout, native); err != nil {
		return err
	}
	if s.BackchannelLogoutURI != "" {
		if err := redirecturi.Validate(s.BackchannelLogoutURI, redirecturi.BackchannelLogout, native); err != nil {
			return &ValidationError{err.Error()}
		}
		if s.TenantID != "" {
			if err := redirecturi.ValidateOrganisationBackchannel(s.BackchannelLogoutURI); err != nil {
				return &ValidationError{err.Error()}
			}
		}
	}
	for _, u := range []struct{ name, value string }{{"logo URI", s.LogoURI}, {"client URI", s.ClientURI}} {
		if u.value != "" && !httpsURI(u.value) {
			return &ValidationError{fmt.Sprintf("%s %q must be an absolute https URI without user information", u.name, u.value)}
		}
	}
	if s.RequirePKCE == nil {
		s.RequirePKCE = ptr(true)
	}
	if s.Public && !*s.RequirePKCE {
		return &ValidationError{"a public client always needs PKCE: require_pkce false (--no-pkce) is only for confidential clients"}
	}
	return nil
}

// validURIs checks each URI and drops repeats, keeping the order.
func validURIs(list []string, kind redirecturi.Kind, native bool) ([]string, error) {
	if len(list) > maxURIs {
		return nil, &ValidationError{fmt.Sprintf("at most %d %ss", maxURIs, kind)}
	}
	var out []string
	for _, u := range list {
		if err := redirecturi.Validate(u, kind, native); err != nil {
			return nil, &ValidationError{err.Error()}
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// httpsURI reports whether raw is an absolute https URI with a host, no user
// information and no spaces or control characters.
func httpsURI(raw string) bool {
	if len(raw) > 2000 || strings.ContainsAny(raw, " \\") || !plainText(raw) {
		return false
	}
	u, err := url.Parse(raw)
	return err == nil && u.Scheme == "https" && strings.HasPrefix(raw, "https://") && u.Host != "" && u.User == nil
}

func ptr[T any](v T) *T { return &v }

// plainText reports whether a spec's free text (its name, a scope, an
// audience, a URI) can be stored and shown as it is: valid UTF-8 without
// control characters. NUL, which PostgreSQL refuses in text (a 500 when
// it reached the insert), is one; so are the other C0 and C1 controls,
// which would reach tokens (an audience is their aud), logs and pages.
func plainText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, unicode.IsControl)
}

// NewSecret returns a client secret of 256 random bits.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "pcs_" + base64.RawURLEncoding.EncodeToString(b)
}

// Clash is a client id that is also an access-token audience, so that
// the access tokens carrying it verify as that client's id tokens with a
// relying party that does not check typ (go-oidc and most OpenID
// libraries: OIDC Core §3.1.3.7 checks iss, aud and exp): an audience
// client ListedBy lists (ListedBy == ClientID: its own id), or, with
// ListedBy empty, Reserved (PORTCULLIS_DEFAULT_AUDIENCE or the issuer).
//
// With Deleted set, one side is a deleted client's, live in its tokens
// until RetiredUntil (store.RetiredClientName): with ListedBy empty,
// ClientID is an audience Deleted listed (Reserved holds it too); else
// ClientID is Deleted's own id, which ListedBy lists.
type Clash struct {
	ClientID string
	ListedBy string
	Reserved string

	Deleted      string
	RetiredUntil time.Time
}

// Clashes is the one rule that keeps the two kinds of JWT apart (RFC 8725
// §3.12: distinct aud): an access-token audience is never a client id. It
// returns every clash among list, each once, ordered as list is: a client
// id that any client of list lists among its audiences (its own included),
// or that is one of reserved (see Spec.ReservedAudiences); and, for the
// names deleted clients left live in their tokens (retired, unexpired:
// store.Store's DeleteClient), a client id that is a retired audience, as
// if reserved, and a retired client id that a client lists, as if that
// client still existed. Create refuses a new client with any; the server
// logs those of the clients it finds at start-up.
//
// It reads each client and audience once (an index of who lists each
// audience), so a creation's check stays linear in the number of clients.
func Clashes(list []store.Client, reserved []string, retired []store.RetiredClientName) []Clash {
	listedBy := make(map[string][]string)
	for _, by := range list {
		for _, a := range by.Audiences {
			if l := listedBy[a]; len(l) == 0 || l[len(l)-1] != by.ID {
				listedBy[a] = append(l, by.ID)
			}
		}
	}
	// The latest retirement of each retired audience and client id.
	retiredAs := map[string]map[string]store.RetiredClientName{store.RetiredAudience: {}, store.RetiredClientID: {}}
	for _, r := range retired {
		if m := retiredAs[r.Kind]; m != nil {
			if prev, ok := m[r.Name]; !ok || r.Until.After(prev.Until) {
				m[r.Name] = r
			}
		}
	}
	var out []Clash
	for _, c := range list {
		for _, r := range reserved {
			if r != "" && c.ID == r {
				out = append(out, Clash{ClientID: c.ID, Reserved: r})
				break
			}
		}
		if r, ok := retiredAs[store.RetiredAudience][c.ID]; ok {
			out = append(out, Clash{ClientID: c.ID, Reserved: r.Name, Deleted: r.ClientID, RetiredUntil: r.Until})
		}
		for _, by := range listedBy[c.ID] {
			out = append(out, Clash{ClientID: c.ID, ListedBy: by})
		}
		for i, a := range c.Audiences {
			if r, ok := retiredAs[store.RetiredClientID][a]; ok && !slices.Contains(c.Audiences[:i], a) {
				out = append(out, Clash{ClientID: a, ListedBy: c.ID, Deleted: r.ClientID, RetiredUntil: r.Until})
			}
		}
	}
	return out
}

// clashOf refuses, with a ValidationError, a new client c whose id or
// audiences clash (Clashes) with existing, reserved or retired. Clashes
// among the existing clients alone are not c's: they are logged at
// start-up. A taken id is left to the insert (store.ErrAlreadyExists).
func clashOf(c store.Client, existing []store.Client, reserved []string, retired []store.RetiredClientName) error {
	if slices.ContainsFunc(existing, func(e store.Client) bool { return e.ID == c.ID }) {
		return nil
	}
	list := append(slices.Clone(existing), c)
	for _, cl := range Clashes(list, reserved, retired) {
		until := cl.RetiredUntil.UTC().Format(time.RFC3339)
		switch {
		case cl.Deleted != "" && cl.ListedBy == c.ID:
			return &ValidationError{fmt.Sprintf("audience %q is the id of deleted client %q, whose id tokens live until they expire: "+
				"it is retired until %s (an access-token audience is never a client id, else this client's access tokens "+
				"would pass as those id tokens, RFC 8725 section 3.12)", cl.ClientID, cl.Deleted, until)}
		case cl.Deleted != "" && cl.ClientID == c.ID:
			return &ValidationError{fmt.Sprintf("client id %q is an audience of deleted client %q, whose access tokens live until they expire: "+
				"it is retired until %s (a client id is never an access-token audience, else those access tokens "+
				"would pass as this client's id tokens, RFC 8725 section 3.12)", c.ID, cl.Deleted, until)}
		case cl.ListedBy == c.ID && cl.ClientID == c.ID:
			return &ValidationError{fmt.Sprintf("audience %q is the client's own id: an access-token audience is never a client id, "+
				"else its access tokens would pass as its id tokens (RFC 8725 section 3.12)", c.ID)}
		case cl.ListedBy == c.ID:
			return &ValidationError{fmt.Sprintf("audience %q is the id of a client: an access-token audience is never a client id, "+
				"else this client's access tokens would pass as that client's id tokens (RFC 8725 section 3.12)", cl.ClientID)}
		case cl.ClientID == c.ID && cl.Reserved != "":
			return &ValidationError{fmt.Sprintf("client id %q is an access-token audience of the server (PORTCULLIS_DEFAULT_AUDIENCE or the issuer): "+
				"a client id is never an access-token audience, else access tokens would pass as its id tokens (RFC 8725 section 3.12)", c.ID)}
		case cl.ClientID == c.ID:
			return &ValidationError{fmt.Sprintf("client id %q is an audience another client lists: a client id is never an access-token audience, "+
				"else that client's access tokens would pass as this client's id tokens (RFC 8725 section 3.12)", c.ID)}
		}
	}
	return nil
}

// Create stores a client; for a confidential client it returns the
// generated secret, which is never shown again. Besides Validate, a client
// whose id or audiences clash (Clashes) with a stored client,
// spec.ReservedAudiences or a name a deleted client left retired is refused
// with a ValidationError (saying until when, for a retired name), checked
// in the store's transaction under its lock on client creation and
// deletion (Store.CreateClient), so two creations, or a creation and a
// deletion, at once cannot both pass.
func Create(ctx context.Context, st Store, spec Spec) (store.Client, string, error) {
	if err := spec.Validate(); err != nil {
		return store.Client{}, "", err
	}
	c := store.Client{ID: spec.ID, Name: spec.Name, Public: spec.Public, Grants: spec.Grants, Scopes: spec.Scopes,
		Audiences: spec.Audiences, AccessTokenTTL: spec.AccessTokenTTL,
		RedirectURIs: spec.RedirectURIs, PostLogoutRedirectURIs: spec.PostLogoutRedirectURIs,
		FirstParty: spec.FirstParty, ApplicationType: spec.ApplicationType, RequirePKCE: *spec.RequirePKCE,
		BackchannelLogoutURI: spec.BackchannelLogoutURI, LogoURI: spec.LogoURI, ClientURI: spec.ClientURI}
	c.RequirePushedAuthorizationRequests = spec.RequirePushedAuthorizationRequests
	c.RefreshTokenDelivery, c.AllowedOrigins = spec.RefreshTokenDelivery, spec.AllowedOrigins
	c.TenantID = spec.TenantID
	var secret string
	if !spec.Public {
		secret = NewSecret()
		c.SecretHash = token.HashSecret(secret)
	}
	check := func(existing []store.Client, retired []store.RetiredClientName) error {
		return clashOf(c, existing, spec.ReservedAudiences, retired)
	}
	if err := st.CreateClient(ctx, &c, check); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			return store.Client{}, "", ve
		}
		if errors.Is(err, store.ErrAlreadyExists) {
			return store.Client{}, "", fmt.Errorf("client %q already exists: %w", spec.ID, err)
		}
		return store.Client{}, "", fmt.Errorf("create client: %w", err)
	}
	return c, secret, nil
}

// RotateSecret replaces a confidential client's secret and returns the new one.
func RotateSecret(ctx context.Context, st Store, id string) (string, error) {
	c, err := st.GetClient(ctx, id)
	if err != nil {
		return "", fmt.Errorf("load client %q: %w", id, err)
	}
	if c.Public {
		return "", &ValidationError{"a public client has no secret"}
	}
	secret := NewSecret()
	if err := st.SetClientSecretHash(ctx, id, token.HashSecret(secret)); err != nil {
		return "", fmt.Errorf("store new secret: %w", err)
	}
	return secret, nil
}

// RedirectURIStore reads a client and replaces its redirect URIs
// (*sqlstore.Store implements it).
type RedirectURIStore interface {
	GetClient(ctx context.Context, id string) (store.Client, error)
	SetClientRedirectURIs(ctx context.Context, id string, uris []string) error
}

// SetRedirectURIs replaces the redirect URIs of a client of the
// authorization code flow, checked by the rules of registration (at least
// one, each valid for the client's application type), and returns the
// client as changed.
func SetRedirectURIs(ctx context.Context, st RedirectURIStore, id string, uris []string) (store.Client, error) {
	c, err := st.GetClient(ctx, id)
	if err != nil {
		return store.Client{}, fmt.Errorf("load client %q: %w", id, err)
	}
	if !slices.Contains(c.Grants, token.GrantAuthorizationCode) {
		return store.Client{}, &ValidationError{"redirect URIs are only for a client with the authorization_code grant"}
	}
	if len(uris) == 0 {
		return store.Client{}, &ValidationError{"a client with the authorization_code grant needs at least one redirect URI"}
	}
	valid, err := validURIs(uris, redirecturi.Redirect, c.ApplicationType == store.ApplicationNative)
	if err != nil {
		return store.Client{}, err
	}
	if err := st.SetClientRedirectURIs(ctx, id, valid); err != nil {
		return store.Client{}, fmt.Errorf("store redirect URIs: %w", err)
	}
	c.RedirectURIs = valid
	return c, nil
}

// ClientView is a client as the API and CLI show it: never its secret hash.
type ClientView struct {
	ClientID       string   `json:"client_id"`
	Name           string   `json:"name"`
	Public         bool     `json:"public"`
	Grants         []string `json:"grants"`
	Scopes         []string `json:"scopes"` // null: every permission
	Audiences      []string `json:"audiences"`
	AccessTokenTTL int64    `json:"access_token_ttl,omitempty"`

	RedirectURIs           []string `json:"redirect_uris"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris"`
	FirstParty             bool     `json:"first_party"`
	ApplicationType        string   `json:"application_type"`
	RequirePKCE            bool     `json:"require_pkce"` // true for every public client
	BackchannelLogoutURI   string   `json:"backchannel_logout_uri,omitempty"`
	LogoURI                string   `json:"logo_uri,omitempty"`
	ClientURI              string   `json:"client_uri,omitempty"`

	// RequirePushedAuthorizationRequests is RFC 9126 §6's client metadata.
	RequirePushedAuthorizationRequests bool `json:"require_pushed_authorization_requests"`

	// RefreshTokenDelivery is body or cookie; AllowedOrigins the exact
	// origins a cookie client's requests must come from.
	RefreshTokenDelivery string   `json:"refresh_token_delivery"`
	AllowedOrigins       []string `json:"allowed_origins"`

	// TenantID is the organisation the client belongs to; absent for a
	// platform client (and always while organisations are off).
	TenantID string `json:"tenant_id,omitempty"`

	CreatedAt time.Time `json:"created_at"`
}

// View returns the public view of c.
func View(c store.Client) ClientView {
	aud := c.Audiences
	if aud == nil {
		aud = []string{}
	}
	appType := c.ApplicationType
	if appType == "" {
		appType = store.ApplicationWeb
	}
	delivery := store.RefreshDeliveryBody
	if c.RefreshByCookie() {
		delivery = store.RefreshDeliveryCookie
	}
	return ClientView{ClientID: c.ID, Name: c.Name, Public: c.Public, Grants: c.Grants, Scopes: c.Scopes,
		Audiences: aud, AccessTokenTTL: int64(c.AccessTokenTTL.Seconds()),
		RedirectURIs: orEmpty(c.RedirectURIs), PostLogoutRedirectURIs: orEmpty(c.PostLogoutRedirectURIs),
		FirstParty: c.FirstParty, ApplicationType: appType, RequirePKCE: c.RequirePKCE || c.Public,
		BackchannelLogoutURI: c.BackchannelLogoutURI, LogoURI: c.LogoURI, ClientURI: c.ClientURI,
		RequirePushedAuthorizationRequests: c.RequirePushedAuthorizationRequests, CreatedAt: c.CreatedAt,
		TenantID:             c.TenantID,
		RefreshTokenDelivery: delivery, AllowedOrigins: orEmpty(c.AllowedOrigins)}
}

// orEmpty returns l, or an empty list for nil (a JSON array, never null).
func orEmpty(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}
