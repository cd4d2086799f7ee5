package authorize

import (
	"slices"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Action is what a request needs next.
type Action int

// Actions of Decide.
const (
	// ActIssueCode: issue a code now (PrepareCode, stored with its grant) and answer Request.Success.
	ActIssueCode Action = iota
	// ShowLogin: the login page; the login starts a new auth_time. Reason says why.
	ShowLogin
	// ShowConsent: the consent page (third-party clients).
	ShowConsent
	// ShowChangePassword: the change-password step, then on.
	ShowChangePassword
	// SelectAccount: "Continue as X / Use another account".
	SelectAccount
	// Refuse: prompt=none could not be honoured; deliver Decision.Error.
	Refuse
)

// String names the action for logs and tests.
func (a Action) String() string {
	return [...]string{"issue_code", "show_login", "show_consent", "show_change_password", "select_account", "refuse"}[a]
}

// Login reasons (Decision.Reason of ShowLogin).
const (
	ReasonNoSession      = "no_session"     // no live browser session (or its user cannot sign in)
	ReasonReauthenticate = "reauthenticate" // prompt=login or max_age exceeded
	ReasonHintMismatch   = "hint_mismatch"  // id_token_hint names another user
	// ReasonSecondFactor: the session's login used no second factor and
	// the roles the code would carry require one.
	ReasonSecondFactor = "second_factor"
)

// UserState is what Decide needs to know of the session's user.
type UserState struct {
	Exists             bool
	Active             bool
	MustChangePassword bool
}

// StateOf is the UserState of a user read from the store (nil: not found).
func StateOf(u *store.User) UserState {
	if u == nil {
		return UserState{}
	}
	return UserState{Exists: true, Active: u.Active, MustChangePassword: u.MustChangePassword}
}

// Inputs are the facts Decide weighs besides the request.
type Inputs struct {
	// Client is the request's client as it is now (CheckRedirect, or
	// CheckClient of the client ParseRequestClient read): its
	// first-party and public flags decide consent, not those it had when
	// the request arrived.
	Client store.Client
	// Session is the live browser session (nil: none).
	Session *store.BrowserSession
	// User is the session's user as stored now.
	User UserState
	// Consent is the user's remembered consent to the client (nil: none).
	Consent *store.Consent
	// AccountSelected: the person chose an account on the select-account
	// page for this request (prompt=select_account is then satisfied).
	AccountSelected bool
	// ConsentGiven: the person allowed this very request on the consent page
	// (prompt=consent, offline_access and a public client's redirect that
	// cannot assure its identity are then satisfied). A consent remembered
	// from another request, however recent, is not.
	ConsentGiven bool
	// SignedInDuring: the session's login happened during this request
	// (Request.SignedInDuring of its auth time), which satisfies
	// prompt=login and max_age. A request answered as it arrives has had
	// no login during it, whatever the session's auth time: only a request
	// kept for a page (a login page, then its answer) can.
	SignedInDuring bool
	// SecondFactorOwed: the roles a code issued now would carry (those of
	// the organisation the request names) require a second factor the
	// session's login did not use (its amr has no "mfa"), so its
	// redemption would be refused (token.Service.SecondFactorOwed).
	SecondFactorOwed bool
}

// Decision is the outcome of Decide.
type Decision struct {
	Action Action
	// Reason explains ShowLogin (a Reason… constant).
	Reason string
	// Error is set for Refuse: login_required, consent_required,
	// interaction_required or account_selection_required.
	Error *RedirectError
}

// Decide applies the contract's table ("situation at /authorize") to a
// validated request; the first matching row wins:
//
//  1. no live session, or its user is gone or deactivated: login
//  2. prompt=login or max_age exceeded, unless the login happened after the
//     request arrived: login (new auth_time)
//  3. id_token_hint names another user: login
//  4. prompt=select_account not yet answered: select account
//  5. the user must change the password: change-password step
//  6. the session's login lacks the second factor the roles the code
//     would carry require: login (whose second step asks for it, or for
//     its enrolment)
//  7. third-party client without remembered consent covering the scopes,
//     or prompt=consent / offline_access / a public client's redirect
//     that cannot assure its identity (a private-use scheme or a loopback
//     IP literal) without consent given for this request: consent
//  8. otherwise: issue a code
//
// With prompt=none every row but the last is an error instead:
// login_required (1-3, 6), account_selection_required (4),
// interaction_required (5), consent_required (7).
func Decide(req *Request, in Inputs, now time.Time) Decision {
	s := in.Session
	switch {
	case s == nil || !in.User.Exists || !in.User.Active || s.UserID == "":
		return req.interact(ShowLogin, ReasonNoSession, ErrLoginRequired, "The user is not signed in.")
	case !in.SignedInDuring && (req.Prompt.Login || req.HasMaxAge && now.Sub(s.AuthTime) > req.MaxAge):
		return req.interact(ShowLogin, ReasonReauthenticate, ErrLoginRequired, "The user must sign in again.")
	case req.HintSubject != "" && req.HintSubject != s.UserID:
		return req.interact(ShowLogin, ReasonHintMismatch, ErrLoginRequired, "The signed-in user is not the one the id_token_hint names.")
	case req.Prompt.SelectAccount && !in.AccountSelected:
		return req.interact(SelectAccount, "", ErrAccountSelectionRequired, "The user must choose an account.")
	case in.User.MustChangePassword:
		return req.interact(ShowChangePassword, "", ErrInteractionRequired, "The user must change their password.")
	case in.SecondFactorOwed:
		return req.interact(ShowLogin, ReasonSecondFactor, ErrLoginRequired, "The user must sign in with a second factor.")
	case needsConsent(req, in):
		return req.interact(ShowConsent, "", ErrConsentRequired, "The user has not consented to this application's access.")
	}
	return Decision{Action: ActIssueCode}
}

// interact is action for an interactive request, or the prompt=none error.
func (r *Request) interact(a Action, reason, code, desc string) Decision {
	if r.Prompt.None {
		return Decision{Action: Refuse, Error: r.Fail(code, desc)}
	}
	return Decision{Action: a, Reason: reason}
}

// needsConsent: first-party clients never ask; a third-party client needs a
// remembered consent covering every scope asked; prompt=consent,
// offline_access and a public client's redirect that cannot assure its
// identity (unassuredRedirect, RFC 8252 §8.6) need consent given for this
// very request.
func needsConsent(req *Request, in Inputs) bool {
	if in.Client.FirstParty {
		return false
	}
	if c := in.Consent; c == nil || !covers(c.Scopes, req.Scopes) {
		return true
	}
	if req.Prompt.Consent || req.WantsOffline() || in.Client.Public && unassuredRedirect(req.RedirectURI) {
		return !in.ConsentGiven
	}
	return false
}

func covers(granted, asked []string) bool {
	for _, s := range asked {
		if !slices.Contains(granted, s) {
			return false
		}
	}
	return true
}

// unassuredRedirect reports whether a response sent to uri may reach a
// program other than the client the request names, so that the redirect
// cannot assure a public client's identity (RFC 8252 §8.6): a private-use
// scheme, which another app may claim, or plain http, which registration
// allows only on the loopback IP literals 127.0.0.1 and [::1], where any
// local program may listen on the port. Only https assures it.
func unassuredRedirect(uri string) bool {
	scheme, _, _ := strings.Cut(uri, ":")
	return !strings.EqualFold(scheme, "https")
}
