package pages

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/token"
)

// AccountSecurityPath is the page of the signed-in person's second factors.
const AccountSecurityPath = "/account/security"

// AccountSecuritySignedInPath is where the hosted login sends the person
// back after the sign-in again that a write of a factor asked for
// (securityReauth): the built-in client's redirect URI SecuritySignInURL.
const AccountSecuritySignedInPath = AccountSecurityPath + "/signed-in"

// SecuritySignInURL is the redirect URI of /account/security's sign-in
// again for issuer: the built-in first-party client lists it beside the
// console's callback.
func SecuritySignInURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + AccountSecuritySignedInPath
}

// Actions of the /account/security forms.
const (
	actionTOTPStart      = "totp_start"
	actionTOTPConfirm    = "totp_confirm"
	actionTOTPRemove     = "totp_remove"
	actionRecoveryRegen  = "recovery_regenerate"
	actionPasskeyBegin   = "passkey_begin"
	actionPasskeyFinish  = "passkey_finish"
	actionPasskeyRemove  = "passkey_remove"
	currentPasswordField = "current_password"
	passkeyNameField     = "name"
	passkeyIDField       = "id"
)

// SecurityAccounts is the account service's second-factor operations
// (*accounts.Service): the same methods, and so the same rules, as the
// JSON endpoints under /auth/mfa (a confirmed app is removed before a new
// one is set up, removing a factor needs the current password, adding one
// or making codes needs a recent sign-in made with the second factor when
// there is one, an mfa_token enrols only a user without a factor).
type SecurityAccounts interface {
	OwnMFA(ctx context.Context, actor accounts.Actor) (accounts.MFAStatus, error)
	MFATokenActor(ctx context.Context, token string, m accounts.Meta) (accounts.Actor, error)
	StartTOTP(ctx context.Context, actor accounts.Actor) (mfa.Enrolment, error)
	ConfirmTOTP(ctx context.Context, actor accounts.Actor, code string) ([]string, error)
	RemoveTOTP(ctx context.Context, actor accounts.Actor, currentPassword string) error
	RegenerateRecoveryCodes(ctx context.Context, actor accounts.Actor) ([]string, error)
	BeginPasskeyRegistration(ctx context.Context, actor accounts.Actor) (optionsJSON []byte, handle string, err error)
	FinishPasskeyRegistration(ctx context.Context, actor accounts.Actor, handle, name string, responseJSON []byte) (accounts.RegisteredPasskey, error)
	RemovePasskey(ctx context.Context, actor accounts.Actor, id, currentPassword string) error
}

// securityAbout says what /account/security is for, to a person who is
// not signed in.
const securityAbout = "This page sets up the second step of your sign-in: an authenticator app, passkeys and recovery codes."

// securityView is what /account/security shows.
type securityView struct {
	TOTP         bool
	Enrolled     bool
	RecoveryLeft int
	Passkeys     []passkeyItem
	// CanPasskeys: passkeys are configured (server/passkeys is wired).
	CanPasskeys bool
}

// passkeyItem is one registered passkey or security key.
type passkeyItem struct {
	ID, Name string
	Added    stamp
	LastUsed *stamp
}

// accountSecurity is GET /account/security: the person of the browser
// session cookie sees their second factors, each with its forms.
func (p *Pages) accountSecurity(c echo.Context) error {
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	if bs == nil {
		return p.notSignedInTo(c, securityAbout)
	}
	st, err := p.si.Security.OwnMFA(c.Request().Context(), accounts.Actor{ID: bs.UserID, Meta: meta(c)})
	if err != nil {
		return p.fail(c, err)
	}
	enrolled := mfa.Summary{TOTP: st.TOTP, WebAuthnCredentials: len(st.WebAuthn)}.Enrolled() // the one rule
	sv := &securityView{TOTP: st.TOTP, Enrolled: enrolled, RecoveryLeft: st.RecoveryCodesLeft,
		CanPasskeys: p.si.Passkeys != nil}
	for _, cr := range st.WebAuthn {
		it := passkeyItem{ID: cr.ID, Name: cr.Name, Added: stampOf(cr.CreatedAt)}
		if cr.LastUsedAt != nil {
			s := stampOf(*cr.LastUsedAt)
			it.LastUsed = &s
		}
		sv.Passkeys = append(sv.Passkeys, it)
	}
	v, err := p.formView(c, view{Heading: "Two-step verification", Security: sv}, AccountSecurityPath)
	if err != nil {
		return p.fail(c, apierr.ErrServer.WithCause(err))
	}
	return p.render(c, http.StatusOK, v)
}

// accountSecurityPost is POST /account/security: every change goes
// through the account service's second-factor operations (the JSON
// endpoints' rules); this handler only renders their answers.
func (p *Pages) accountSecurityPost(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, AccountSecurityPath)
	}
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	if bs == nil {
		return p.notSignedInTo(c, securityAbout)
	}
	r := c.Request()
	// The session's sign-in (when, how) is what a write of a factor
	// needs recent and, once there is one, made with it (the account
	// service's rule; securityReauth answers its refusal).
	ctx, actor := r.Context(), accounts.Actor{ID: bs.UserID, Meta: meta(c), SignedInAt: bs.AuthTime, AMR: bs.AMR}
	sec := p.si.Security
	switch action := r.PostFormValue(accountActionField); action {
	case actionTOTPStart:
		en, err := sec.StartTOTP(ctx, actor)
		if err != nil {
			return p.securityFailed(c, err)
		}
		return p.securityEnrol(c, http.StatusOK, en, nil)
	case actionTOTPConfirm:
		code := strings.TrimSpace(r.PostFormValue(codeField))
		var ps problems
		if code == "" {
			ps.add(codeField, "Enter the 6-digit code from your authenticator app.")
			return p.securityEnrol(c, http.StatusBadRequest, enrolmentFromForm(r), ps)
		}
		codes, err := sec.ConfirmTOTP(ctx, actor, code)
		if errors.Is(err, mfa.ErrBadCode) {
			ps.add(codeField, wrongEnrolmentCode)
			return p.securityEnrol(c, http.StatusBadRequest, enrolmentFromForm(r), ps)
		}
		if err != nil {
			return p.securityFailed(c, err)
		}
		return p.showCodes(c, "Your authenticator app is set up", codes)
	case actionRecoveryRegen:
		codes, err := sec.RegenerateRecoveryCodes(ctx, actor)
		if err != nil {
			return p.securityFailed(c, err)
		}
		return p.showCodes(c, "Your new recovery codes", codes)
	case actionTOTPRemove, actionPasskeyRemove:
		return p.securityRemove(c, actor, action)
	case actionPasskeyBegin, actionPasskeyFinish:
		if p.si.Passkeys != nil {
			return p.securityPasskey(c, actor, action)
		}
	}
	return p.securityProblem(c, "The form did not say what to do. Open the page again and use its buttons.")
}

// wrongEnrolmentCode is what a wrong first code of an enrolment says.
const wrongEnrolmentCode = "That code is not right. Check that your app shows a code for this account, then enter the newest code."

// securityFailed answers a refusal of the account service with its reason
// (a 4xx: the page shows its description), a sign-in too old or without
// the second factor with securityReauth, or a failure (429, 5xx).
func (p *Pages) securityFailed(c echo.Context, err error) error {
	ae := apierr.From(err)
	if errors.Is(err, apierr.ErrInsufficientUserAuthentication) {
		return p.securityReauth(c, ae.Description)
	}
	if ae.Status >= 500 || ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusUnauthorized {
		return p.fail(c, err)
	}
	return p.securityProblem(c, ae.Description)
}

// securityReauth answers a write of a factor that needs a more recent or
// stronger sign-in, as the console answers one of its own (accounts.
// ReauthWindow): nothing is changed; the page offers to sign in again at
// the hosted login with prompt=login (the password, then the second
// factor if there is one), through the built-in client, whose redirect
// comes back here (accountSecuritySignedIn). The login renews the browser
// session this page reads; the code it issues is never redeemed (its
// verifier is not kept) and expires.
func (p *Pages) securityReauth(c echo.Context, why string) error {
	var b [2][32]byte
	for i := range b {
		if _, err := rand.Read(b[i][:]); err != nil {
			return p.fail(c, apierr.ErrServer.WithCause(fmt.Errorf("pages: random value: %w", err)))
		}
	}
	q := url.Values{"response_type": {"code"}, "client_id": {p.cfg.FirstPartyClientID},
		"redirect_uri": {SecuritySignInURL(p.cfg.Issuer)}, "scope": {"openid"}, "prompt": {"login"},
		"state":          {base64.RawURLEncoding.EncodeToString(b[0][:])},
		"code_challenge": {token.S256Challenge(base64.RawURLEncoding.EncodeToString(b[1][:]))}, "code_challenge_method": {"S256"}}
	return p.render(c, http.StatusForbidden, view{Kind: "problem", Heading: "Confirm it is you",
		Intro:   []string{why, "Nothing was changed."},
		Primary: &link{Href: p.base + AuthorizePath + "?" + q.Encode(), Text: "Sign in again"},
		Links:   []link{{Href: p.base + AccountSecurityPath, Text: "Back to two-step verification"}}})
}

// accountSecuritySignedIn is GET /account/security/signed-in, where the
// sign-in again of securityReauth returns: back to the page, without the
// code in its address.
func (p *Pages) accountSecuritySignedIn(c echo.Context) error {
	return p.redirect(c, p.base+AccountSecurityPath)
}

// securityEnrol shows a started TOTP enrolment with its confirm form.
func (p *Pages) securityEnrol(c echo.Context, status int, en mfa.Enrolment, ps problems) error {
	v := view{Heading: "Set up an authenticator app",
		Intro: []string{"Scan this QR code with an authenticator app (such as Google Authenticator, Microsoft Authenticator or 1Password), then enter the 6-digit code it shows."},
		Hidden: []hidden{{Name: accountActionField, Value: actionTOTPConfirm}, {Name: secretField, Value: en.Secret},
			{Name: otpauthURIField, Value: en.URI}},
		Enrolment: enrolmentOf(en),
		Fields: []field{{ID: codeField, Label: "Code from your authenticator app", Type: "text", Autocomplete: "one-time-code",
			Required: true, Plain: true, InputMode: "numeric"}},
		Submit: "Turn on the authenticator app",
		Links:  []link{{Href: p.base + AccountSecurityPath, Text: "Cancel"}}}
	if len(ps) > 0 {
		v = v.withErrors(ps)
	}
	return p.renderForm(c, status, v, AccountSecurityPath)
}

// showCodes shows new recovery codes, once.
func (p *Pages) showCodes(c echo.Context, heading string, codes []string) error {
	return p.render(c, http.StatusOK, view{Kind: "success", Heading: heading,
		Intro:   []string{"Save these recovery codes somewhere safe, such as a password manager. Each one signs you in once if you lose your authenticator app or passkey. They are shown only now; any older codes no longer work."},
		Codes:   codes,
		Primary: &link{Href: p.base + AccountSecurityPath, Text: "I have saved my codes"}})
}

// securityProblem answers a form that could not be used.
func (p *Pages) securityProblem(c echo.Context, msg string) error {
	return p.render(c, http.StatusBadRequest, view{Kind: "problem", Heading: "This could not be done",
		Intro:   []string{msg},
		Primary: &link{Href: p.base + AccountSecurityPath, Text: "Back to two-step verification"}})
}

// securityRemove turns off the authenticator app or removes a passkey:
// first a confirmation asking for the current password, then, with it,
// the account service's removal (which checks the password).
func (p *Pages) securityRemove(c echo.Context, actor accounts.Actor, action string) error {
	r := c.Request()
	ctx := r.Context()
	id := r.PostFormValue(passkeyIDField)
	if action == actionPasskeyRemove && id == "" {
		return p.securityProblem(c, "The form did not say which passkey to remove. Open the page again and use its buttons.")
	}
	v := view{Heading: "Turn off the authenticator app?", Submit: "Turn it off",
		Intro:  []string{"You will no longer be asked for a code from your app when you sign in. Enter your password to confirm."},
		Hidden: []hidden{{Name: accountActionField, Value: action}, {Name: "confirm", Value: "1"}},
		Fields: []field{{ID: currentPasswordField, Label: "Your password", Type: "password", Autocomplete: "current-password", Required: true}},
		Links:  []link{{Href: p.base + AccountSecurityPath, Text: "Cancel"}}}
	if action == actionPasskeyRemove {
		v.Heading, v.Submit = "Remove this passkey?", "Remove the passkey"
		v.Intro = []string{"It will no longer sign you in. Enter your password to confirm."}
		v.Hidden = append(v.Hidden, hidden{Name: passkeyIDField, Value: id})
	}
	if r.PostFormValue("confirm") == "" {
		return p.renderForm(c, http.StatusOK, v, AccountSecurityPath)
	}
	pw := r.PostFormValue(currentPasswordField)
	var ps problems
	if pw == "" {
		ps.add(currentPasswordField, "Enter your password.")
		return p.renderForm(c, http.StatusBadRequest, v.withErrors(ps), AccountSecurityPath)
	}
	var err error
	if action == actionPasskeyRemove {
		err = p.si.Security.RemovePasskey(ctx, actor, id, pw)
	} else {
		err = p.si.Security.RemoveTOTP(ctx, actor, pw)
	}
	switch {
	case err == nil, apierr.From(err).Status == http.StatusNotFound:
		// Removed, or gone already (another tab): the page shows what is left.
		return p.redirect(c, p.base+AccountSecurityPath)
	case is(err, apierr.ErrInvalidGrant):
		ps.add(currentPasswordField, "The password is incorrect.")
		return p.renderForm(c, http.StatusBadRequest, v.withErrors(ps), AccountSecurityPath)
	}
	return p.securityFailed(c, err)
}

// securityPasskey registers a passkey: passkey_begin (with its name) shows
// the page whose button the script drives; its result comes back as
// passkey_finish.
func (p *Pages) securityPasskey(c echo.Context, actor accounts.Actor, action string) error {
	r := c.Request()
	ctx := r.Context()
	name := strings.TrimSpace(r.PostFormValue(passkeyNameField))
	if action == actionPasskeyFinish {
		resp := r.PostFormValue(webauthnField)
		if resp == "" || len(resp) > maxWebAuthnResponse {
			return p.securityProblem(c, "Your browser did not create a passkey. Try again.")
		}
		pk, err := p.si.Security.FinishPasskeyRegistration(ctx, actor, r.PostFormValue(handleField), name, []byte(resp))
		if err != nil {
			return p.securityFailed(c, err)
		}
		if len(pk.RecoveryCodes) > 0 {
			return p.showCodes(c, "Your passkey is set up", pk.RecoveryCodes)
		}
		return p.redirect(c, p.base+AccountSecurityPath)
	}
	opts, handle, err := p.si.Security.BeginPasskeyRegistration(ctx, actor)
	if err != nil {
		return p.securityFailed(c, err)
	}
	shown := name
	if shown == "" {
		shown = "Passkey"
	}
	return p.renderForm(c, http.StatusOK, view{Heading: "Add a passkey",
		Intro:    []string{"Press the button, then follow your browser: it may ask for your fingerprint, face, screen lock or security key. The passkey will be called “" + shown + "”."},
		Hidden:   []hidden{{Name: accountActionField, Value: actionPasskeyFinish}, {Name: passkeyNameField, Value: name}},
		WebAuthn: &webauthnView{Mode: "create", Options: string(opts), Handle: handle, Text: "Create the passkey"},
		Script:   p.ScriptPath(),
		Links:    []link{{Href: p.base + AccountSecurityPath, Text: "Cancel"}}}, AccountSecurityPath)
}
