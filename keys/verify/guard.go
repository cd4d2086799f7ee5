package verify

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

// GuardOptions configure a Guard.
type GuardOptions struct {
	// Roles is the role hierarchy Role and AnyRole use for "or higher"; nil:
	// roles match only exactly.
	Roles RoleLevels
	// Introspector answers Online requirements; nil: an Online requirement
	// denies every request with 503 (fail closed).
	Introspector *Introspector
	// APIKeys, when set, makes the Guard accept Portcullis API keys too, in
	// an X-API-Key header or as "Authorization: Bearer pcak_…", checked by
	// APIKeys.VerifyAPIKey (format first, then the issuer's introspection
	// endpoint, cached at most MaxAPIKeyCacheTTL). A key's claims meet Scope
	// requirements like a token's, never Role or MFA ones; Online is met by
	// the introspection just made. A request carrying both an X-API-Key and
	// an Authorization header is refused with 400 invalid_request (RFC 6750
	// §2: one method per request). It may be the same Introspector as
	// Introspector. nil: X-API-Key is not read (a request with only that
	// header has no credential: 401), and the Guard works exactly as
	// without API keys.
	APIKeys *Introspector
	// Realm, when set, is sent as the realm of WWW-Authenticate.
	Realm string
	// Revocations, when set, is asked about every token that verified (and
	// every API key, whose claims' IssuedAt is when the issuer confirmed
	// it); an error refuses it with 401 invalid_token (LoggedOut refuses the
	// tokens of sessions ended by back-channel logout).
	Revocations Revocations
	// OnDenied, when set, is called for every denied request (for logs and
	// metrics; the Denial's Err says why, and never contains the token).
	OnDenied func(r *http.Request, d *Denial)
}

// Revocations says whether a verified access token was revoked by
// something learnt out of band, such as a back-channel logout. Revoked
// returns nil for a token still good, else an error that wraps ErrInactive.
type Revocations interface {
	Revoked(c *Claims) error
}

// Guard authenticates requests with RFC 6750 bearer tokens (and, with
// GuardOptions.APIKeys, API keys) and enforces Requirements. It answers 401
// (WWW-Authenticate: Bearer, with error="invalid_token" when a token or key
// was given but is not valid, or error="insufficient_user_authentication"
// for an unmet MFA), 403 (error="insufficient_scope") and, when the key set
// or the introspection endpoint cannot be reached, 503; each with a JSON
// body {"error", "error_description"}. It is safe for concurrent use.
type Guard struct {
	v    *Verifier
	opts GuardOptions
}

// NewGuard returns a Guard over the verifier.
func NewGuard(v *Verifier, opts GuardOptions) *Guard {
	return &Guard{v: v, opts: opts}
}

// Authenticate is middleware that admits any valid access token.
func (g *Guard) Authenticate(next http.Handler) http.Handler { return g.Require()(next) }

// RequireScope is middleware that admits tokens granting every one of perms
// (never a token of an organisation: see Scope; use Require with Tenant).
func (g *Guard) RequireScope(perms ...string) func(http.Handler) http.Handler {
	return g.Require(Scope(perms...))
}

// RequireAnyScope is middleware that admits tokens granting at least one of
// perms (never a token of an organisation, as RequireScope).
func (g *Guard) RequireAnyScope(perms ...string) func(http.Handler) http.Handler {
	return g.Require(AnyScope(perms...))
}

// RequireMFA is middleware that admits tokens whose user signed in with a
// second factor (see MFA); others get 401 insufficient_user_authentication
// with acr_values="mfa" (RFC 9470).
func (g *Guard) RequireMFA() func(http.Handler) http.Handler {
	return g.Require(MFA())
}

// RequireRole is middleware that admits tokens carrying role or, with
// GuardOptions.Roles, a role of an equal or higher level; never a token of
// an organisation, whose roles are held there (see Role; use Require with
// Tenant for a route of the organisation).
func (g *Guard) RequireRole(role string) func(http.Handler) http.Handler {
	return g.Require(Role(role))
}

// RequireTenant is middleware that admits tokens whose `tenant` claim
// equals the value from takes from the request, exactly (see Tenant); use
// it on every route that names an organisation, e.g. with Go 1.22's
// patterns: g.RequireTenant(func(r *http.Request) string { return
// r.PathValue("tenant") }). To ask for a role or permission in the
// organisation too, use Require with Tenant beside Role or Scope.
func (g *Guard) RequireTenant(from func(*http.Request) string) func(http.Handler) http.Handler {
	return g.Require(Tenant(from))
}

// Require is middleware that admits valid tokens meeting every requirement
// (use Any for alternatives), and puts the claims in the request context
// (ClaimsFromContext).
func (g *Guard) Require(reqs ...Requirement) func(http.Handler) http.Handler {
	req := All(reqs...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			claims, d := g.Check(r, req)
			if d != nil {
				d.Write(w)
				return
			}
			next.ServeHTTP(w, r.WithContext(ContextWithClaims(r.Context(), claims)))
		})
	}
}

// Check authenticates r and evaluates every requirement, for frameworks
// other than net/http (see package echoguard). Exactly one of the results
// is nil; a Denial is reported to OnDenied before it is returned.
func (g *Guard) Check(r *http.Request, reqs ...Requirement) (*Claims, *Denial) {
	claims, d := g.check(r, reqs)
	if d != nil {
		d.realm = g.opts.Realm
		if g.opts.OnDenied != nil {
			g.opts.OnDenied(r, d)
		}
		return nil, d
	}
	return claims, nil
}

func (g *Guard) check(r *http.Request, reqs []Requirement) (*Claims, *Denial) {
	var (
		token  string
		apiKey bool
		d      *Denial
	)
	if g.opts.APIKeys == nil {
		token, d = bearerToken(r)
	} else {
		token, apiKey, d = credential(r)
	}
	if d != nil {
		return nil, d
	}
	var (
		claims *Claims
		err    error
	)
	if apiKey {
		claims, err = g.opts.APIKeys.VerifyAPIKey(r.Context(), token)
	} else {
		claims, err = g.v.Verify(r.Context(), token)
	}
	if err == nil && g.opts.Revocations != nil {
		err = g.opts.Revocations.Revoked(claims)
	}
	if err != nil {
		if apiKey {
			return nil, apiKeyDenial(err)
		}
		return nil, verifyDenial(err)
	}
	e := &evaluation{ctx: r.Context(), r: r, g: g, claims: claims, token: token, apiKey: apiKey}
	// As one All, so a Tenant among reqs verifies the organisation for all.
	if out := allReq(reqs).eval(e); out != nil {
		return nil, out
	}
	return claims, nil
}

// bearerToken reads the RFC 6750 §2.1 Authorization header. Only the header
// is read: tokens in query strings or forms are not accepted.
func bearerToken(r *http.Request) (string, *Denial) {
	vals := r.Header["Authorization"]
	if len(vals) == 0 {
		return "", noToken()
	}
	if len(vals) > 1 {
		return "", &Denial{Status: http.StatusBadRequest, Code: "invalid_request",
			Description: "Send one Authorization header.", Err: errors.New("more than one Authorization header")}
	}
	scheme, token, _ := strings.Cut(vals[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", noToken()
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", &Denial{Status: http.StatusBadRequest, Code: "invalid_request",
			Description: "The Bearer authorization has no token.", Err: errors.New("empty bearer token")}
	}
	return token, nil
}

// apiKeyHeader is the header an API key may come in (canonical form).
const apiKeyHeader = "X-Api-Key"

// credential reads the one credential of a request when API keys are
// accepted: an X-API-Key header, or an Authorization Bearer token (an API
// key when it has the key prefix, else an access token).
func credential(r *http.Request) (token string, apiKey bool, d *Denial) {
	keys := r.Header[apiKeyHeader]
	if len(keys) == 0 {
		token, d = bearerToken(r)
		if d != nil {
			if d.Err == errNoToken {
				d.Description = "An access token or an API key is required."
			}
			return "", false, d
		}
		return token, IsAPIKeyLike(token), nil
	}
	switch {
	case len(r.Header["Authorization"]) > 0:
		return "", false, &Denial{Status: http.StatusBadRequest, Code: "invalid_request",
			Description: "Send one credential: an Authorization header or an X-API-Key header, not both.",
			Err:         errors.New("both an Authorization and an X-API-Key header")}
	case len(keys) > 1:
		return "", false, &Denial{Status: http.StatusBadRequest, Code: "invalid_request",
			Description: "Send one X-API-Key header.", Err: errors.New("more than one X-API-Key header")}
	}
	key := strings.TrimSpace(keys[0])
	if key == "" {
		return "", false, &Denial{Status: http.StatusBadRequest, Code: "invalid_request",
			Description: "The X-API-Key header is empty.", Err: errors.New("empty X-API-Key header")}
	}
	return key, true, nil
}

var errNoToken = errors.New("no bearer token")

func noToken() *Denial {
	return &Denial{Status: http.StatusUnauthorized, Code: "unauthorized", Description: "A bearer access token is required.", Err: errNoToken}
}

// verifyDenial turns a verification error into its answer.
func verifyDenial(err error) *Denial {
	if errors.Is(err, ErrKeySetUnavailable) {
		return unavailable("The access token cannot be checked right now; try again shortly.", err)
	}
	desc := "The access token is invalid."
	for _, m := range []struct {
		err  error
		desc string
	}{
		{ErrExpired, "The access token expired."},
		{ErrNotYetValid, "The access token is not valid yet."},
		{ErrWrongAudience, "The access token is not meant for this service."},
		{ErrWrongIssuer, "The access token was issued by another issuer."},
		{ErrWrongType, "The token is not an access token."},
		{ErrUnknownKey, "The access token was signed by an unknown key."},
		{ErrBadSignature, "The access token's signature is invalid."},
		{ErrMalformed, "The access token is malformed."},
		{ErrInactive, "The access token is no longer active."},
	} {
		if errors.Is(err, m.err) {
			desc = m.desc
			break
		}
	}
	return &Denial{Status: http.StatusUnauthorized, Code: "invalid_token", Description: desc, Err: err}
}

// apiKeyDenial turns an API key's verification error into its answer.
func apiKeyDenial(err error) *Denial {
	if errors.Is(err, ErrIntrospectionUnavailable) {
		return unavailable("The API key cannot be checked right now; try again shortly.", err)
	}
	desc := "The API key is invalid."
	switch {
	case errors.Is(err, ErrMalformed):
		desc = "The API key is malformed."
	case errors.Is(err, ErrExpired):
		desc = "The API key expired."
	case errors.Is(err, ErrWrongType):
		desc = "The credential is not an API key."
	case errors.Is(err, ErrInactive):
		desc = "The API key is not active."
	}
	return &Denial{Status: http.StatusUnauthorized, Code: "invalid_token", Description: desc, Err: err}
}

func unavailable(desc string, err error) *Denial {
	return &Denial{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: desc, Err: err}
}

// Denial is a refused request: its status, the RFC 6750 error code, a
// description for people and the cause for logs.
type Denial struct {
	// Status is 400, 401, 403 or 503.
	Status int
	// Code is the error code of the JSON body: invalid_request,
	// unauthorized (no token), invalid_token, insufficient_scope,
	// insufficient_user_authentication (RFC 9470, 401) or
	// temporarily_unavailable.
	Code string
	// Description is the error_description: safe to show, no token or key in it.
	Description string
	// Scope, for insufficient_scope, lists the permissions that would do.
	Scope string
	// ACRValues, for insufficient_user_authentication, lists the acr values
	// that would do (RFC 9470 §3: "mfa").
	ACRValues string
	// Err is the cause, for logs; it is never sent.
	Err   error
	realm string
}

// Error describes the denial with its cause.
func (d *Denial) Error() string {
	if d.Err != nil {
		return d.Code + ": " + d.Err.Error()
	}
	return d.Code + ": " + d.Description
}

// Unwrap returns the cause.
func (d *Denial) Unwrap() error { return d.Err }

// WWWAuthenticate returns the WWW-Authenticate challenge to send ("" for 503).
func (d *Denial) WWWAuthenticate() string {
	var params []string
	if d.realm != "" {
		params = append(params, `realm="`+quote(d.realm)+`"`)
	}
	switch d.Code {
	case "temporarily_unavailable":
		return ""
	case "unauthorized":
		// RFC 6750 §3.1: no error code when the request had no token.
	default:
		params = append(params, `error="`+d.Code+`"`)
		if d.Scope != "" {
			params = append(params, `scope="`+quote(d.Scope)+`"`)
		}
		params = append(params, `error_description="`+quote(d.Description)+`"`)
		if d.ACRValues != "" {
			params = append(params, `acr_values="`+quote(d.ACRValues)+`"`)
		}
	}
	if len(params) == 0 {
		return "Bearer"
	}
	return "Bearer " + strings.Join(params, ", ")
}

// Write sends the denial: status, WWW-Authenticate (or Retry-After for
// 503) and the JSON body.
func (d *Denial) Write(w http.ResponseWriter) {
	h := w.Header()
	if c := d.WWWAuthenticate(); c != "" {
		h.Set("WWW-Authenticate", c)
	}
	if d.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "5")
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	body, _ := json.Marshal(d.Body())
	w.WriteHeader(d.Status)
	_, _ = w.Write(append(body, '\n'))
}

// Body returns the JSON body of the denial.
func (d *Denial) Body() map[string]string {
	return map[string]string{"error": d.Code, "error_description": d.Description}
}

// quote keeps a header parameter a valid quoted-string of printable ASCII
// without quotes or backslashes (RFC 6750 §3 NQSCHAR).
func quote(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

type claimsKey struct{}

// ContextWithClaims returns ctx carrying claims (the Guard does this; tests
// of handlers may too).
func ContextWithClaims(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// ClaimsFromContext returns the verified claims the Guard put in ctx.
func ClaimsFromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*Claims)
	return c, ok && c != nil
}
