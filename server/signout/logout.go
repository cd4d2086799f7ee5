package signout

import (
	"net/url"
	"slices"

	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/store"
)

// LogoutRequest holds the parameters of an RP-initiated logout request
// (OpenID Connect RP-Initiated Logout 1.0 §2). logout_hint and ui_locales
// are accepted and not used.
type LogoutRequest struct {
	IDTokenHint           string
	ClientID              string
	PostLogoutRedirectURI string
	State                 string
}

// Hint is what a verified id_token_hint says (signed by one of our keys, our
// iss; expired is fine).
type Hint struct {
	Subject  string
	Audience []string
	SID      string
}

// LogoutInputs is everything the logout decision weighs, looked up by the
// caller.
type LogoutInputs struct {
	Request LogoutRequest
	// Hint is the verified id_token_hint; nil when none was sent or it did
	// not verify (HintInvalid then says which).
	Hint        *Hint
	HintInvalid bool
	// Client is the client named by client_id, or by the hint's audience
	// when client_id is absent; nil when neither names a known client.
	Client *store.Client
	// Session is the browser's session; nil when signed out.
	Session *store.BrowserSession
}

// LogoutAction is what the logout endpoint does.
type LogoutAction int

// Logout actions.
const (
	// LogoutConfirm shows the confirmation page; after "Sign out" the
	// session ends and the person is redirected to Confirmed.RedirectURI
	// when it is set, else shown the signed-out page.
	LogoutConfirm LogoutAction = iota
	// LogoutNow ends the session at once (a trusted request), then redirects
	// to RedirectURI when set, else shows the signed-out page.
	LogoutNow
)

// LogoutDecision is the outcome of DecideLogout.
type LogoutDecision struct {
	Action LogoutAction
	// RedirectURI is the registered post-logout URI with state added, or "".
	// On LogoutConfirm it is where the confirmation leads.
	RedirectURI string
	// ClientID is the client the request was verified to come from, or "".
	ClientID string
	// Why says, for logs and tests, why a request was not trusted.
	Why string
}

// DecideLogout applies the contract's logout rules. Only a registered
// post-logout URI (exact, the RFC 8252 loopback port aside) of the client
// the request names is ever redirected to: never one with an added query,
// never one of another client, never when a hint's aud disagrees with
// client_id or the hint is forged or foreign. The session ends without a
// question only for a valid hint that belongs to it (same subject, and its
// sid is one of the session's grants) or when there is no session to end.
func DecideLogout(in LogoutInputs) LogoutDecision {
	req := in.Request
	d := LogoutDecision{Action: LogoutConfirm}
	switch {
	case in.HintInvalid:
		d.Why = "the id_token_hint is not one of ours"
		return d
	case in.Hint != nil && req.ClientID != "" && !slices.Contains(in.Hint.Audience, req.ClientID):
		d.Why = "the id_token_hint's aud does not name client_id"
		return d
	}
	if in.Client != nil {
		d.ClientID = in.Client.ID
		if req.PostLogoutRedirectURI != "" {
			if _, err := redirecturi.Match(in.Client.PostLogoutRedirectURIs, req.PostLogoutRedirectURI); err == nil {
				d.RedirectURI = WithState(req.PostLogoutRedirectURI, req.State)
			} else {
				d.Why = "post_logout_redirect_uri is not registered for the client"
				return d
			}
		}
	} else if req.PostLogoutRedirectURI != "" {
		d.Why = "post_logout_redirect_uri without a known client"
		return d
	}
	if in.Hint == nil {
		if d.Why == "" {
			d.Why = "no id_token_hint"
		}
		return d
	}
	if in.Session != nil && !hintBelongs(*in.Hint, *in.Session) {
		d.Why = "the id_token_hint is not of this browser session"
		return d
	}
	d.Action = LogoutNow
	return d
}

// hintBelongs reports whether the hint was issued in the session: same
// person, and its sid is one of the session's grants.
func hintBelongs(h Hint, bs store.BrowserSession) bool {
	if h.Subject != bs.UserID || h.SID == "" {
		return false
	}
	return slices.ContainsFunc(bs.Grants, func(g store.SessionGrant) bool { return g.SID == h.SID })
}

// WithState adds state (when not empty) to a post-logout redirect URI's
// query, keeping what the registered URI has byte for byte.
func WithState(uri, state string) string {
	if state == "" {
		return uri
	}
	return redirecturi.WithQuery(uri, url.Values{"state": {state}})
}
