package authorize

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/server/tenancy"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// Response modes (OAuth 2.0 Multiple Response Types §2.1, Form Post Response Mode).
const (
	ModeQuery    = "query"
	ModeFormPost = "form_post"
)

// grantAuthorizationCode is the client grant that allows the endpoint (token.GrantAuthorizationCode).
const grantAuthorizationCode = "authorization_code"

// Limits on a request (contract step 1; design brief step 14).
const (
	MaxRequestBytes = 16 << 10
	maxNonceBytes   = 1 << 10
	maxLoginHint    = 320
	challengeLen    = 43
)

// Clients reads OAuth clients (store.Clients).
type Clients interface {
	GetClient(ctx context.Context, id string) (store.Client, error)
}

// HintVerifier verifies an id_token_hint: signed by one of our published
// keys, typ JWT, our iss; an expired hint is fine. It returns the subject
// (token.Service.VerifyIDTokenHint).
type HintVerifier interface {
	VerifyIDTokenHint(raw string) (subject string, err error)
}

// Permissions lists the permissions the policy knows (policy.Policy.AllPermissions).
type Permissions interface {
	AllPermissions() []string
}

// Env is what ParseRequest checks a request against.
type Env struct {
	Issuer      string
	Clients     Clients
	Hints       HintVerifier
	Permissions Permissions
	// Pushed keeps requests pushed to /oauth2/par (store.SingleUse, kind
	// store.OncePushedRequest); nil: a PAR request_uri is not served
	// (request_uri_not_supported, like any other request_uri).
	Pushed PendingStore
}

// Prompt is the set of prompt values (OIDC Core §3.1.2.1).
type Prompt struct {
	None          bool `json:"none,omitempty"`
	Login         bool `json:"login,omitempty"`
	Consent       bool `json:"consent,omitempty"`
	SelectAccount bool `json:"select_account,omitempty"`
}

// Request is a validated authorization request. It is JSON so it can be
// kept server-side while the person signs in (SavePending).
type Request struct {
	ClientID string `json:"client_id"`
	// The client's flags (first-party, public) are not kept: Decide weighs
	// the client as it is when the answer is decided (Inputs.Client), not
	// as it was when the request arrived.
	// RedirectURI is where responses go: the redirect_uri as sent (a
	// loopback one keeps its port) or, when omitted, the client's only one.
	RedirectURI string `json:"redirect_uri"`
	// RedirectURISent is redirect_uri exactly as sent, "" when omitted; the
	// token endpoint compares it.
	RedirectURISent string `json:"redirect_uri_sent,omitempty"`
	ResponseMode    string `json:"response_mode"`
	// Scopes are the scope tokens named, in order, without duplicates.
	Scopes        []string `json:"scopes"`
	State         string   `json:"state,omitempty"`
	Nonce         string   `json:"nonce,omitempty"`
	CodeChallenge string   `json:"code_challenge,omitempty"`
	Prompt        Prompt   `json:"prompt"`
	// MaxAge is max_age when HasMaxAge.
	MaxAge    time.Duration `json:"max_age,omitempty"`
	HasMaxAge bool          `json:"has_max_age,omitempty"`
	// HintSubject is the sub of a verified id_token_hint.
	HintSubject string `json:"hint_subject,omitempty"`
	// LoginHint pre-fills the login form; it reveals nothing about accounts.
	LoginHint string `json:"login_hint,omitempty"`
	// Tenant is the `tenant` parameter: the organisation the login is to
	// (organisations on). It is checked when the code is redeemed (an
	// unknown organisation, or one the user is not a member of, is
	// invalid_grant there); with organisations off it means nothing.
	Tenant string `json:"tenant,omitempty"`
	Issuer string `json:"issuer"`
	// ReceivedAt is when the request arrived: a login or consent given at or
	// after it satisfies prompt=login, max_age and prompt=consent.
	ReceivedAt time.Time `json:"received_at"`
	// PushedAt is when a pushed request (/oauth2/par) was pushed; zero for
	// any other (MadeAt).
	PushedAt time.Time `json:"pushed_at,omitzero"`
}

// MadeAt is when the client made the request: when it was pushed, for a
// pushed request, else when it arrived. Only a client created by then is
// answered (CheckRedirect).
func (r *Request) MadeAt() time.Time {
	if !r.PushedAt.IsZero() {
		return r.PushedAt
	}
	return r.ReceivedAt
}

// SignedInDuring reports whether a login at authTime happened during the
// request: at or after its arrival (what satisfies prompt=login and
// max_age in Decide). A login time kept to the second (a provider's
// auth_time, a store that keeps whole seconds) counts from the start of
// the second the request arrived in, so a login in the request's own
// second is not refused for its rounding (no endless login loop); a finer
// one must be at or after the arrival itself, so a session begun a moment
// before the request, in the same second, never meets it (OIDC Core
// 3.1.2.1: found by a review). A login at a whole second before the
// arrival, in its second, still counts: a 1 in 1,000 chance for a
// millisecond clock, within the second.
func (r *Request) SignedInDuring(authTime time.Time) bool {
	if authTime.Equal(authTime.Truncate(time.Second)) {
		return !authTime.Before(r.ReceivedAt.Truncate(time.Second))
	}
	return !authTime.Before(r.ReceivedAt.Truncate(time.Millisecond)) // stores keep milliseconds
}

// WantsOpenID reports whether the request asked for openid.
func (r *Request) WantsOpenID() bool { return slices.Contains(r.Scopes, policy.ScopeOpenID) }

// WantsOffline reports whether the request asked for offline_access.
func (r *Request) WantsOffline() bool { return slices.Contains(r.Scopes, policy.ScopeOfflineAccess) }

// Fail returns the error code delivered to the client for this request.
func (r *Request) Fail(code, description string) *RedirectError {
	return &RedirectError{ClientID: r.ClientID, MadeAt: r.MadeAt(), RedirectURI: r.RedirectURI, Mode: r.ResponseMode, Code: code,
		Description: description, State: r.State, Issuer: r.Issuer}
}

// ParseRequest validates an authorization request (GET query or POST form,
// parsed once by the caller) in the contract's order; the first failure
// wins. Steps 1-3 fail with a *PageError (never redirected); later steps
// with a *RedirectError (step 4's in query mode). A store failure while
// reading the client is a *PageError with status 503.
//
// A request_uri of /oauth2/par (RFC 9126 §4) with the client_id it was
// pushed by is the pushed request, taken once; every other parameter is
// ignored. One that is unknown, used, expired or another client's is a
// *PageError (400). A client that must push its requests
// (RequirePushedAuthorizationRequests) is refused anything else with
// invalid_request at its redirect URI.
func ParseRequest(ctx context.Context, form url.Values, env Env, now time.Time) (*Request, error) {
	return parse(ctx, form, env, now, false, nil)
}

// ParseRequestClient is ParseRequest that also returns, with a valid
// request, its client as read in step 2 (as it is now), so that a caller
// answering the request at once checks that client with CheckClient
// instead of reading it again (CheckRedirect). For a pushed request it is
// the client that pushed it, not yet checked against the pushed request's
// redirect URI or push time: that is CheckClient's.
func ParseRequestClient(ctx context.Context, form url.Values, env Env, now time.Time) (*Request, store.Client, error) {
	var c store.Client
	req, err := parse(ctx, form, env, now, false, &c)
	if err != nil {
		return nil, store.Client{}, err
	}
	return req, c, nil
}

// parse is ParseRequest; pushing is true at /oauth2/par (Push), where a
// request_uri is invalid_request and the requirement to push is met. The
// client read in step 2 is stored in read unless read is nil.
func parse(ctx context.Context, form url.Values, env Env, now time.Time, pushing bool, read *store.Client) (*Request, error) {
	// 1. One value per parameter, at most 16 KiB, UTF-8 without NUL; a
	// state of VSCHAR (RFC 6749 Appendix A.5) of at most 4 KiB. An invalid
	// state is the error page, never redirected: every answer at the
	// redirect URI carries the state byte for byte (RFC 6749 §4.1.2.1),
	// and it is the state that cannot be used. It is refused before
	// anything is kept (the pending request and its tombstone hold it).
	p, err := singleValues(form)
	if err != nil {
		return nil, err
	}
	if state, ok := p["state"]; ok && !token.ValidState(state) {
		return nil, pageError(fmt.Sprintf("The state parameter must be at most %d printable ASCII characters (RFC 6749 Appendix A.5).",
			token.MaxStateBytes))
	}
	// 2. client_id names a client.
	clientID := p["client_id"]
	if clientID == "" {
		return nil, pageError("The request names no client (client_id is missing).")
	}
	client, err := readClient(ctx, env.Clients, clientID)
	if err != nil {
		return nil, err
	}
	if read != nil {
		*read = client
	}
	// A pushed request (RFC 9126 §4) stands in for every other parameter.
	if !pushing && env.Pushed != nil && strings.HasPrefix(p["request_uri"], RequestURIPrefix) {
		return takePushed(ctx, env.Pushed, client.ID, p["request_uri"], now)
	}
	// 3. redirect_uri matches a registered one (loopback IP: any port); it
	// may be omitted only with exactly one registered and no openid.
	req := &Request{ClientID: client.ID, Issuer: env.Issuer,
		State: p["state"], ReceivedAt: now, ResponseMode: ModeQuery}
	if sent, ok := p["redirect_uri"]; ok {
		if err := registered(client, sent); err != nil {
			return nil, err
		}
		req.RedirectURI, req.RedirectURISent = sent, sent
	} else {
		switch {
		case len(client.RedirectURIs) != 1:
			return nil, pageError("The request must name its redirect URI (redirect_uri is missing).")
		case slices.Contains(strings.Split(p["scope"], " "), policy.ScopeOpenID):
			return nil, pageError("An OpenID Connect request must name its redirect URI (redirect_uri is missing).")
		}
		req.RedirectURI = client.RedirectURIs[0]
	}
	// 4. response_mode: absent, query or form_post (a failure goes in query mode).
	switch m := p["response_mode"]; m {
	case "", ModeQuery, ModeFormPost:
		if m != "" {
			req.ResponseMode = m
		}
	default:
		return nil, req.Fail(ErrInvalidRequest, "response_mode must be query or form_post.")
	}
	// 5. response_type=code.
	switch rt := p["response_type"]; rt {
	case "code":
	case "":
		return nil, req.Fail(ErrInvalidRequest, "The response_type parameter is missing.")
	default:
		return nil, req.Fail(ErrUnsupportedResponseType, "Only response_type=code is supported.")
	}
	// 6. The client may use the code flow.
	if !codeFlow(client) {
		return nil, req.Fail(ErrUnauthorizedClient, "The client may not use the authorization code flow.")
	}
	// 7. No request objects, request_uri (outside PAR) or dynamic
	// registration; a client that must push its requests pushes them.
	switch {
	case p["request"] != "":
		return nil, req.Fail(ErrRequestNotSupported, "Request objects are not supported.")
	case p["request_uri"] != "" && pushing:
		return nil, req.Fail(ErrInvalidRequest, "A pushed authorization request must not contain request_uri.")
	case p["request_uri"] != "":
		return nil, req.Fail(ErrRequestURINotSupported, "request_uri is not supported.")
	case p["registration"] != "":
		return nil, req.Fail(ErrRegistrationNotSupported, "The registration parameter is not supported.")
	case client.RequirePushedAuthorizationRequests && !pushing:
		return nil, req.Fail(ErrInvalidRequest, "This client must use pushed authorization requests.")
	}
	// 8. Scopes known and allowed to the client.
	if req.Scopes, err = checkScopes(p["scope"], client.Scopes, env.Permissions); err != nil {
		return nil, req.Fail(ErrInvalidScope, err.Error())
	}
	// 9. PKCE S256 with a 43-character base64url challenge; required for
	// public clients and require_pkce.
	if err := checkPKCE(p["code_challenge"], p["code_challenge_method"], client.Public || client.RequirePKCE); err != nil {
		return nil, req.Fail(ErrInvalidRequest, err.Error())
	}
	req.CodeChallenge = p["code_challenge"]
	// 10. prompt, max_age, id_token_hint, and the length of what is echoed or kept.
	if req.Prompt, err = parsePrompt(p["prompt"]); err != nil {
		return nil, req.Fail(ErrInvalidRequest, err.Error())
	}
	if v, ok := p["max_age"]; ok {
		n, err := parseMaxAge(v)
		if err != nil {
			return nil, req.Fail(ErrInvalidRequest, err.Error())
		}
		req.MaxAge, req.HasMaxAge = n, true
	}
	if hint, ok := p["id_token_hint"]; ok {
		sub, err := env.Hints.VerifyIDTokenHint(hint)
		switch {
		case errors.Is(err, apierr.ErrTemporarilyUnavailable):
			// The keys cannot be used now: the hint is not judged.
			return nil, req.Fail(ErrTemporarilyUnavailable, "The id_token_hint cannot be checked now; try again shortly.")
		case err != nil:
			return nil, req.Fail(ErrInvalidRequest, "The id_token_hint is not an id token issued by this server.")
		}
		req.HintSubject = sub
	}
	// nonce is any string (OIDC Core §3.1.2.1); only its length is bounded.
	switch {
	case len(p["nonce"]) > maxNonceBytes:
		return nil, req.Fail(ErrInvalidRequest, fmt.Sprintf("nonce is longer than %d bytes.", maxNonceBytes))
	case len(p["login_hint"]) > maxLoginHint:
		return nil, req.Fail(ErrInvalidRequest, fmt.Sprintf("login_hint is longer than %d bytes.", maxLoginHint))
	case len(p["tenant"]) > tenancy.MaxSlugLen:
		// No organisation's slug is longer; a shorter unknown one is
		// invalid_grant at the redemption, as before.
		return nil, req.Fail(ErrInvalidRequest, fmt.Sprintf("tenant is longer than %d bytes.", tenancy.MaxSlugLen))
	}
	req.Nonce, req.LoginHint, req.Tenant = p["nonce"], p["login_hint"], p["tenant"]
	return req, nil
}

// readClient is step 2 once client_id is present: a plausible id naming a
// client, read through clients. An unknown client is the error page (400);
// a store failure a *PageError with status 503.
func readClient(ctx context.Context, clients Clients, id string) (store.Client, error) {
	if !token.PlausibleClientID(id) {
		return store.Client{}, pageError(msgUnknownClient)
	}
	c, err := clients.GetClient(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Client{}, pageError(msgUnknownClient)
	case err != nil:
		return store.Client{}, &PageError{Status: http.StatusServiceUnavailable, Message: "The service is temporarily unavailable; try again shortly.",
			cause: fmt.Errorf("read client %q: %w", id, err)}
	}
	return c, nil
}

// registered is step 3's rule for a redirect URI: one of the client's
// registered URIs (redirecturi.Match: the same string, or a loopback IP
// literal on any port), else the error page (400).
func registered(c store.Client, redirectURI string) error {
	if _, err := redirecturi.Match(c.RedirectURIs, redirectURI); err != nil {
		return &PageError{Status: http.StatusBadRequest, Message: msgUnregisteredRedirect,
			cause: fmt.Errorf("redirect URI of client %q: %w", c.ID, err)}
	}
	return nil
}

// codeFlow is step 6's rule: the client has the authorization_code grant.
func codeFlow(c store.Client) bool { return slices.Contains(c.Grants, grantAuthorizationCode) }

// CheckRedirect checks again, when an answer to an authorization request of
// client clientID made at madeAt (Request.MadeAt) is about to be decided or
// sent to redirectURI (a code, or an error such as access_denied or
// login_required), what ParseRequest checked when the request arrived: it
// reads the client through clients (step 2: 400 when it no longer exists,
// 503 when it cannot be read) and checks it with CheckClient. It returns
// the client as it is now, whose flags Decide weighs (Inputs.Client).
func CheckRedirect(ctx context.Context, clients Clients, clientID, redirectURI string, madeAt time.Time) (store.Client, error) {
	c, err := readClient(ctx, clients, clientID)
	if err != nil {
		return store.Client{}, err
	}
	if err := CheckClient(c, clientID, redirectURI, madeAt); err != nil {
		return store.Client{}, err
	}
	return c, nil
}

// CheckClient is the rule of CheckRedirect for client c as read in the
// request that answers (by CheckRedirect, or by ParseRequestClient for a
// request answered at once): c is the one the request of client clientID
// was made to, created at or before madeAt (token.IssuedTo, the rule of
// the token endpoint), still registers redirectURI under the rule of step
// 3 and still has the authorization_code grant (step 6). A request kept
// pending while the person signs in (PORTCULLIS_AUTHORIZE_REQUEST_TTL, its
// expiry answer TombstoneTTL longer) or pushed (PushedRequestTTL) is so
// never answered at a redirect URI its client no longer registers (RFC
// 6749 §3.1.2, RFC 9700 §4.1): a client deleted or changed meanwhile gets
// nothing, and one deleted and created again under its id (another
// application, perhaps third-party where the deleted one was first-party)
// gets nothing of a request made to the deleted one. Every failure is a
// *PageError (400), never redirected: the error page of a fresh request
// for an unknown client or an unregistered redirect URI.
func CheckClient(c store.Client, clientID, redirectURI string, madeAt time.Time) error {
	if !token.IssuedTo(c, clientID, madeAt) {
		return &PageError{Status: http.StatusBadRequest, Message: msgUnknownClient,
			cause: fmt.Errorf("client %q was created after the request was made (%v)", c.ID, madeAt)}
	}
	if !codeFlow(c) {
		return &PageError{Status: http.StatusBadRequest, Message: msgNoCodeFlow,
			cause: fmt.Errorf("client %q lost the %s grant", c.ID, grantAuthorizationCode)}
	}
	return registered(c, redirectURI)
}

// Messages of the error page for a client or redirect URI that may not be used.
const (
	msgUnknownClient        = "The application that sent you here is not known to this server."
	msgUnregisteredRedirect = "The redirect URI of this request is not registered for the application."
	msgNoCodeFlow           = "The application that sent you here may not use this sign-in."
)

// singleValues is step 1: every parameter once, the whole request at most
// MaxRequestBytes, values valid UTF-8 without NUL. Empty values count as
// absent (they are left out of the result).
func singleValues(form url.Values) (map[string]string, error) {
	size := 0
	out := make(map[string]string, len(form))
	for k, vs := range form {
		size += len(k) + 2
		for _, v := range vs {
			size += len(v)
		}
		if size > MaxRequestBytes {
			return nil, pageError("The request is too large.")
		}
		if len(vs) > 1 {
			return nil, pageError(fmt.Sprintf("The parameter %q is included more than once.", token.SafeParamName(k)))
		}
		if len(vs) == 0 || vs[0] == "" {
			continue
		}
		if !utf8.ValidString(vs[0]) || strings.ContainsRune(vs[0], 0) {
			return nil, pageError(fmt.Sprintf("The parameter %q is not valid UTF-8 text.", token.SafeParamName(k)))
		}
		out[k] = vs[0]
	}
	return out, nil
}

// checkScopes parses scope and requires each token to be an OIDC scope or a
// permission the policy knows and the client may receive (nil client
// scopes: every permission). Wildcards are refused.
func checkScopes(raw string, clientScopes []string, perms Permissions) ([]string, error) {
	scopes, err := policy.ParseScope(raw)
	if err != nil {
		return nil, err
	}
	var known []string
	for _, s := range scopes {
		switch {
		case policy.IsOIDCScope(s):
		case policy.ValidPermission(s):
			if known == nil {
				known = perms.AllPermissions()
			}
			if !slices.Contains(known, s) {
				return nil, &policy.ScopeError{Scope: s, Reason: "unknown permission"}
			}
			if clientScopes != nil && !policy.Matches(clientScopes, s) {
				return nil, &policy.ScopeError{Scope: s, Reason: "this client may not receive this permission"}
			}
		default:
			return nil, &policy.ScopeError{Scope: s, Reason: "unknown scope; scopes are openid, profile, email, offline_access or permissions of the form resource:action"}
		}
	}
	return scopes, nil
}

// checkPKCE is step 9 (RFC 7636 §4.2-4.4.1, S256 only).
func checkPKCE(challenge, method string, required bool) error {
	switch {
	case challenge == "" && method != "":
		return errors.New("code_challenge_method was sent without a code_challenge.")
	case challenge == "" && required:
		return errors.New("This client must use PKCE: send code_challenge and code_challenge_method=S256.")
	case challenge == "":
		return nil
	case method != "S256":
		return errors.New("code_challenge_method must be S256.")
	case !validChallenge(challenge):
		return errors.New("code_challenge must be 43 characters of base64url (the S256 hash of the verifier).")
	}
	return nil
}

func validChallenge(c string) bool {
	if len(c) != challengeLen {
		return false
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_') {
			return false
		}
	}
	return true
}

// parsePrompt: values in {none, login, consent, select_account}, none alone.
func parsePrompt(raw string) (Prompt, error) {
	var p Prompt
	n := 0
	for v := range strings.SplitSeq(raw, " ") {
		switch v {
		case "":
			continue
		case "none":
			p.None = true
		case "login":
			p.Login = true
		case "consent":
			p.Consent = true
		case "select_account":
			p.SelectAccount = true
		default:
			return Prompt{}, errors.New("prompt values are none, login, consent and select_account.")
		}
		n++
	}
	if p.None && n > 1 {
		return Prompt{}, errors.New("prompt=none cannot be combined with other values.")
	}
	return p, nil
}

// maxMaxAge caps a max_age: a century, longer than any login is kept, so
// a larger value (a relying party's sentinel such as 2147483647) forces a
// login exactly when it would, and fits a time.Duration.
const maxMaxAge = 100 * 365 * 24 * time.Hour

// parseMaxAge: a non-negative integer of seconds, of any size (OIDC Core
// 3.1.2.1); one above maxMaxAge counts as maxMaxAge.
func parseMaxAge(v string) (time.Duration, error) {
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, errors.New("max_age must be a non-negative integer (seconds).")
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > uint64(maxMaxAge/time.Second) {
		return maxMaxAge, nil
	}
	return time.Duration(n) * time.Second, nil
}
