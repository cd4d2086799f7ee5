package pages

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"html/template"
	"image/png"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/pquerna/otp"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// MFA is the second-factor service (*mfa.Service) as the login page's
// second step uses it: the page keeps none of its rules (attempts, the
// token's binding, replays).
type MFA interface {
	Begin(ctx context.Context, u store.User, factors *mfa.Summary, counted ratelimit.Counted, clientID, scope, tenant string, authTime time.Time,
		first []string) (*mfa.Challenge, error)
	Peek(ctx context.Context, token, clientID string) (mfa.Pending, error)
	Complete(ctx context.Context, token, clientID string, f mfa.Factor, m mfa.Meta) (mfa.Completed, error)
	TOTPCode(code string) mfa.Factor
	RecoveryCode(code string) mfa.Factor
}

// Passkeys is the WebAuthn login ceremony (*passkeys.Service) of the second
// step. Options are the JSON navigator.credentials.get takes
// ({"publicKey":{…}}, binary members base64url) and the handle names the
// begun ceremony (single use, bound to the user); a response is the JSON
// the page's script makes of the browser's credential. Registration goes
// through SecurityAccounts.
type Passkeys interface {
	BeginLogin(ctx context.Context, userID string, m mfa.Meta) (optionsJSON []byte, handle string, err error)
	Assertion(handle string, responseJSON []byte) mfa.Factor
}

// Form fields and steps of the second factor on the login page.
const (
	stepMFA       = "mfa"
	stepMFAEnrol  = "mfa_enrol"
	mfaTokenField = "mfa_token"
	rememberField = "remember"
	methodField   = "method"
	codeField     = "code"
	// webauthnField carries the browser's credential as JSON, filled by
	// the script.
	webauthnField = "webauthn_response"
	// handleField names the begun WebAuthn ceremony.
	handleField = "webauthn_handle"
	// actionField names the button pressed on the second step.
	mfaActionField  = "mfa_action"
	actionVerify    = "verify"
	actionRecovery  = "use_recovery_code"
	actionTOTP      = "use_totp"
	secretField     = "secret"
	otpauthURIField = "otpauth_uri"
)

// maxWebAuthnResponse bounds the credential JSON a form may carry.
const maxWebAuthnResponse = 64 << 10

// expiredMFA is what the login form says when the second step can no
// longer be completed.
const expiredMFA = "Your sign-in was not completed in time, or too many codes were wrong. Sign in again."

// mfaMeta is the request's meta for the MFA service's audit events.
func mfaMeta(c echo.Context, actorID, clientID string) mfa.Meta {
	m := meta(c)
	return mfa.Meta{ActorID: actorID, IP: m.IP, UserAgent: m.UserAgent, ClientID: clientID}
}

// webauthnView is the "Use your passkey" button (or "Create the passkey"
// on /account/security) that the script drives.
type webauthnView struct {
	// Mode is "get" (sign in) or "create" (register).
	Mode    string
	Options string
	Handle  string
	Text    string
}

// mfaStepState is what the second step carries from one answer to the
// next: the mfa_token, the remember flag and the chosen method.
type mfaStepState struct {
	Token    string
	Remember bool
	Method   string // mfa.MethodTOTP or mfa.MethodRecoveryCode
	UserID   string
	Methods  []string
}

func (s mfaStepState) hidden(pr Pending) []hidden {
	h := []hidden{{Name: requestField, Value: pr.ID}, {Name: stepField, Value: stepMFA},
		{Name: mfaTokenField, Value: s.Token}, {Name: methodField, Value: s.Method}}
	if s.Remember {
		h = append(h, hidden{Name: rememberField, Value: "1"})
	}
	return h
}

// mfaStep shows the second step: the code field for the chosen method, a
// button to switch between an authenticator code and a recovery code, and
// the passkey button when the user has a passkey (its options are a new
// assertion ceremony each time the step is shown, counted against the
// caller's address budget: the 429 page past it).
func (p *Pages) mfaStep(c echo.Context, status int, pr Pending, s mfaStepState, ps problems) error {
	if s.Method == "" {
		s.Method = mfa.MethodTOTP
		if !slices.Contains(s.Methods, mfa.MethodTOTP) && !slices.Contains(s.Methods, mfa.MethodWebAuthn) {
			s.Method = mfa.MethodRecoveryCode
		}
	}
	v := view{Heading: "Confirm it is you", Hidden: s.hidden(pr)}
	if pr.Client.Name != "" {
		v.Heading = "Confirm it is you to continue to " + pr.Client.Name
	}
	if slices.Contains(s.Methods, mfa.MethodWebAuthn) && p.si.Passkeys != nil {
		opts, handle, err := p.si.Passkeys.BeginLogin(c.Request().Context(), s.UserID, mfaMeta(c, s.UserID, pr.Client.ID))
		if err != nil {
			return p.fail(c, err)
		}
		v.WebAuthn = &webauthnView{Mode: "get", Options: string(opts), Handle: handle, Text: "Use your passkey"}
		v.Script = p.ScriptPath()
	}
	switch s.Method {
	case mfa.MethodRecoveryCode:
		v.Intro = []string{"Enter one of the recovery codes you saved when you set up two-step verification. Each code works once."}
		v.Fields = []field{{ID: codeField, Label: "Recovery code", Type: "text", Autocomplete: "off", Required: true, Plain: true,
			Hint: []string{"16 letters and digits; spaces and dashes do not matter."}}}
		if slices.Contains(s.Methods, mfa.MethodTOTP) {
			v.Buttons = []button{{ID: "verify", Name: mfaActionField, Value: actionVerify, Text: "Continue"},
				{ID: "use-totp", Name: mfaActionField, Value: actionTOTP, Text: "Use your authenticator app instead", Secondary: true}}
		}
	default:
		switch {
		case !slices.Contains(s.Methods, mfa.MethodTOTP):
			v.Intro = []string{"Use your passkey to continue."}
		case v.WebAuthn != nil:
			v.Intro = []string{"Use your passkey, or enter the 6-digit code from your authenticator app."}
		default:
			v.Intro = []string{"Enter the 6-digit code from your authenticator app."}
		}
		if slices.Contains(s.Methods, mfa.MethodTOTP) {
			v.Fields = []field{{ID: codeField, Label: "Code from your authenticator app", Type: "text", Autocomplete: "one-time-code",
				Required: true, Plain: true, InputMode: "numeric"}}
			v.Buttons = []button{{ID: "verify", Name: mfaActionField, Value: actionVerify, Text: "Continue"}}
		}
		if slices.Contains(s.Methods, mfa.MethodRecoveryCode) {
			v.Buttons = append(v.Buttons, button{ID: "use-recovery-code", Name: mfaActionField, Value: actionRecovery,
				Text: "Use a recovery code instead", Secondary: true})
		}
	}
	if v.Buttons == nil && v.Fields != nil {
		v.Submit = "Continue"
	}
	if len(ps) > 0 {
		v = v.withErrors(ps)
	}
	return p.renderForm(c, status, v, LoginPath)
}

// beginMFA is called after a correct password: it asks the MFA service
// whether a second factor is needed for the roles the login's tokens will
// carry (those of the organisation the request names: loginUser). handled
// reports that it answered (the second step, the enrolment step, or a
// failure); otherwise the login goes on as a password login. The second
// step's failures count under the throttle key of the password step
// (res.Counted(), whose window its success takes the password step's
// attempt back from). No browser session is started before the second
// factor.
func (p *Pages) beginMFA(c echo.Context, pr Pending, res passcheck.Result, authTime time.Time, remember bool) (handled bool, err error) {
	ctx := c.Request().Context()
	u, err := p.loginUser(ctx, pr, res.User)
	if err != nil {
		return true, p.fail(c, err)
	}
	ch, err := p.si.MFA.Begin(ctx, u, (*mfa.Summary)(res.Factors), res.Counted(), pr.Client.ID, strings.Join(pr.Scopes, " "), "", authTime,
		[]string{mfa.AMRPassword})
	if err != nil {
		return true, p.fail(c, err)
	}
	if ch == nil {
		return false, nil
	}
	return true, p.secondStep(c, pr, u.ID, ch, remember)
}

// loginUser is u with the roles a login for pr will carry: those of the
// organisation pr names (SignInDeps.Logins), else as read.
func (p *Pages) loginUser(ctx context.Context, pr Pending, u store.User) (store.User, error) {
	if p.si.Logins == nil {
		return u, nil
	}
	return p.si.Logins.LoginUser(ctx, pr.Client.ID, u, pr.Tenant)
}

// secondStep shows the step a begun challenge asks for: the enrolment step
// when the policy requires a factor the user lacks, else the second step.
// Password and upstream sign-ins share it.
func (p *Pages) secondStep(c echo.Context, pr Pending, userID string, ch *mfa.Challenge, remember bool) error {
	ctx := c.Request().Context()
	s := mfaStepState{Token: ch.Token, Remember: remember, UserID: userID, Methods: ch.Methods}
	if ch.EnrollmentRequired {
		actor, err := p.si.Security.MFATokenActor(ctx, ch.Token, meta(c))
		if err != nil {
			return p.mfaLost(c, pr, err)
		}
		en, err := p.si.Security.StartTOTP(ctx, actor)
		if err != nil {
			return p.mfaLost(c, pr, err)
		}
		return p.enrolStep(c, http.StatusOK, pr, s, en, nil)
	}
	return p.mfaStep(c, http.StatusOK, pr, s, nil)
}

// mfaPost is the second step's form: a button switching between code kinds
// (nothing is used up), or an attempt through mfa.Service.Complete. A wrong
// factor shows the step again; an mfa_token that cannot be used any more
// (expired, used, out of attempts, another client's) sends the person back
// to the login form.
func (p *Pages) mfaPost(c echo.Context, id string) error {
	r := c.Request()
	ctx := r.Context()
	old, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	pr, answered, err := p.pendingPage(c, id, old)
	if answered {
		return err
	}
	tok := r.PostFormValue(mfaTokenField)
	pend, err := p.si.MFA.Peek(ctx, tok, pr.Client.ID)
	if err != nil {
		return p.mfaLost(c, pr, err)
	}
	s := mfaStepState{Token: tok, Remember: r.PostFormValue(rememberField) != "", UserID: pend.UserID, Methods: pend.Methods,
		Method: r.PostFormValue(methodField)}
	if s.Method != mfa.MethodRecoveryCode {
		s.Method = mfa.MethodTOTP
	}
	switch r.PostFormValue(mfaActionField) {
	case actionRecovery:
		s.Method = mfa.MethodRecoveryCode
		return p.mfaStep(c, http.StatusOK, pr, s, nil)
	case actionTOTP:
		s.Method = mfa.MethodTOTP
		return p.mfaStep(c, http.StatusOK, pr, s, nil)
	}
	var f mfa.Factor
	var ps problems
	if resp := r.PostFormValue(webauthnField); resp != "" && p.si.Passkeys != nil {
		if len(resp) > maxWebAuthnResponse {
			ps.add("", "Your passkey could not be used. Try again.")
			return p.mfaStep(c, http.StatusBadRequest, pr, s, ps)
		}
		f = p.si.Passkeys.Assertion(r.PostFormValue(handleField), []byte(resp))
	} else {
		code := strings.TrimSpace(r.PostFormValue(codeField))
		switch {
		case code == "" && s.Method == mfa.MethodRecoveryCode:
			ps.add(codeField, "Enter a recovery code.")
		case code == "":
			ps.add(codeField, "Enter the 6-digit code from your authenticator app.")
		case s.Method == mfa.MethodRecoveryCode:
			f = p.si.MFA.RecoveryCode(code)
		default:
			f = p.si.MFA.TOTPCode(code)
		}
		if len(ps) > 0 {
			return p.mfaStep(c, http.StatusBadRequest, pr, s, ps)
		}
	}
	done, err := p.si.MFA.Complete(ctx, tok, pr.Client.ID, f, mfaMeta(c, pend.UserID, pr.Client.ID))
	switch {
	case errors.Is(err, mfa.ErrBadCode), errors.Is(err, mfa.ErrNotEnrolled):
		switch {
		case f.Method() == mfa.MethodWebAuthn:
			ps.add("", "Your passkey could not be used. Try again, or enter a code instead.")
		case s.Method == mfa.MethodRecoveryCode:
			ps.add(codeField, "That recovery code is not right, or it has been used already.")
		default:
			ps.add(codeField, "That code is not right, or it has been used already. Wait for a new code and enter it.")
		}
		return p.mfaStep(c, http.StatusBadRequest, pr, s, ps)
	case err != nil:
		return p.mfaLost(c, pr, err)
	}
	// The confirm-link page's login: the identity waiting for this step is
	// linked now.
	if linking, err := p.linkAfterMFA(c, tok, pr, done); err != nil {
		if linking {
			return p.upstreamRefused(c, err, pr.ID)
		}
		return p.fail(c, err)
	}
	u, err := p.si.Users.GetUser(ctx, done.UserID)
	if err != nil {
		return p.fail(c, apierr.ErrTemporarilyUnavailable.WithCause(err))
	}
	return p.finishLogin(c, old, pr, u, done.AuthTime, done.AMR, s.Remember)
}

// mfaLost answers an mfa_token that cannot be used (the login form with a
// message: unknown, expired, used, out of attempts, another client's, or
// no longer allowed to enrol) or a failure of the service (429, 5xx).
func (p *Pages) mfaLost(c echo.Context, pr Pending, err error) error {
	if st := apierr.From(err).Status; errors.Is(err, mfa.ErrInvalidToken) || (st >= 400 && st < 500 && st != http.StatusTooManyRequests) {
		var ps problems
		ps.add("", expiredMFA)
		return p.loginForm(c, http.StatusBadRequest, pr, "", ps)
	}
	return p.fail(c, err)
}

// ---- enrolment on the login page ----

// enrolStep shows the TOTP enrolment the policy requires before this login
// can finish: the QR code (a PNG in a data: URL, allowed by this page's CSP
// alone), the secret as text, and the field for a first code. The secret and
// the otpauth:// URI also travel in the form, only to show them again after
// a wrong code: ConfirmTOTP checks the code against the enrolment the
// service stored, never against what the form sends.
func (p *Pages) enrolStep(c echo.Context, status int, pr Pending, s mfaStepState, en mfa.Enrolment, ps problems) error {
	v := view{Heading: "Set up two-step verification",
		Intro: []string{"Your account needs a second step to sign in. Scan this QR code with an authenticator app (such as Google Authenticator, Microsoft Authenticator or 1Password), then enter the 6-digit code it shows."},
		Hidden: []hidden{{Name: requestField, Value: pr.ID}, {Name: stepField, Value: stepMFAEnrol},
			{Name: mfaTokenField, Value: s.Token}, {Name: secretField, Value: en.Secret}, {Name: otpauthURIField, Value: en.URI}},
		Enrolment: enrolmentOf(en),
		Fields: []field{{ID: codeField, Label: "Code from your authenticator app", Type: "text", Autocomplete: "one-time-code",
			Required: true, Plain: true, InputMode: "numeric"}},
		Submit: "Turn on two-step verification"}
	if s.Remember {
		v.Hidden = append(v.Hidden, hidden{Name: rememberField, Value: "1"})
	}
	if len(ps) > 0 {
		v = v.withErrors(ps)
	}
	return p.renderForm(c, status, v, LoginPath)
}

// enrolmentView is a TOTP enrolment as a page shows it.
type enrolmentView struct {
	QR     template.URL // data:image/png;base64,…
	Secret string
}

// enrolmentOf turns en into its view; a QR code that is not a PNG is left
// out (the secret is still shown).
func enrolmentOf(en mfa.Enrolment) *enrolmentView {
	ev := &enrolmentView{Secret: spaced(en.Secret)}
	if len(en.QRPNG) > 8 && string(en.QRPNG[1:4]) == "PNG" {
		ev.QR = template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(en.QRPNG))
	}
	return ev
}

// spaced groups a base32 secret by four characters for reading and typing.
func spaced(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && i%4 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// enrolmentFromForm rebuilds what the enrolment step showed from its form,
// to show it again after a wrong code (display only: the QR code is drawn
// again from the otpauth:// URI).
func enrolmentFromForm(r *http.Request) mfa.Enrolment {
	en := mfa.Enrolment{Secret: r.PostFormValue(secretField), URI: r.PostFormValue(otpauthURIField)}
	if len(en.URI) > 1024 || !strings.HasPrefix(en.URI, "otpauth://totp/") {
		en.URI = ""
		return en
	}
	if key, err := otp.NewKeyFromURL(en.URI); err == nil && key.Secret() == en.Secret {
		if img, err := key.Image(200, 200); err == nil {
			var buf bytes.Buffer
			if err := png.Encode(&buf, img); err == nil {
				en.QRPNG = buf.Bytes()
			}
		}
	}
	return en
}

// enrolPost confirms the enrolment of the login page with a first code
// (mfa.Service.ConfirmTOTP), then shows the recovery codes once. The login
// itself then starts again from the password: the enrolment proved the
// new factor, not a second factor for this login.
func (p *Pages) enrolPost(c echo.Context, id string) error {
	r := c.Request()
	ctx := r.Context()
	old, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	pr, answered, err := p.pendingPage(c, id, old)
	if answered {
		return err
	}
	// The token is bound to this pending request's client (Peek); the
	// account service decides whether it may enrol (only a login whose
	// enrolment is required, of a user who has no factor yet).
	tok := r.PostFormValue(mfaTokenField)
	pend, err := p.si.MFA.Peek(ctx, tok, pr.Client.ID)
	if err != nil {
		return p.mfaLost(c, pr, err)
	}
	actor, err := p.si.Security.MFATokenActor(ctx, tok, meta(c))
	if err != nil {
		return p.mfaLost(c, pr, err)
	}
	s := mfaStepState{Token: tok, Remember: r.PostFormValue(rememberField) != "", UserID: pend.UserID}
	code := strings.TrimSpace(r.PostFormValue(codeField))
	var ps problems
	if code == "" {
		ps.add(codeField, "Enter the 6-digit code from your authenticator app.")
		return p.enrolStep(c, http.StatusBadRequest, pr, s, enrolmentFromForm(r), ps)
	}
	codes, err := p.si.Security.ConfirmTOTP(ctx, actor, code)
	switch {
	case errors.Is(err, mfa.ErrBadCode):
		ps.add(codeField, wrongEnrolmentCode)
		return p.enrolStep(c, http.StatusBadRequest, pr, s, enrolmentFromForm(r), ps)
	case err != nil:
		return p.mfaLost(c, pr, err)
	}
	again := p.base + LoginPath + "?" + url.Values{requestField: {pr.ID}}.Encode()
	return p.render(c, http.StatusOK, view{Kind: "success", Heading: "Two-step verification is on",
		Intro:   []string{"Save these recovery codes somewhere safe, such as a password manager. Each one signs you in once if you lose your authenticator app. They are shown only now."},
		Codes:   codes,
		After:   []string{"Then sign in again with your password and a code from your app."},
		Primary: &link{Href: again, Text: "I have saved my codes: sign in"}})
}

// ---- the end of a login ----

// finishLogin starts the browser session of a login that passed every
// step (amr as the login proved it, authTime when its first factor was
// given: the password, or the sign-in at the identity provider), records
// it and proceeds like a password login: consent, the change-password step
// or the code. A login at or before the user's cut-off (every session
// ended since it began) starts none: the sessionsEnded page.
func (p *Pages) finishLogin(c echo.Context, old *store.BrowserSession, pr Pending, u store.User, authTime time.Time,
	amr []string, remember bool) error {
	ctx, m := c.Request().Context(), meta(c)
	bs, err := p.startSession(c, old, u.ID, authTime, amr, remember, pr.Client.ID)
	if errors.Is(err, store.ErrSessionsEnded) {
		return p.sessionsEnded(c, pr, u, amr)
	}
	if err != nil {
		return p.fail(c, err)
	}
	p.si.Audit.RecordLogin(ctx, store.AuditEvent{Action: "login.succeeded", Outcome: store.OutcomeSuccess, ActorID: u.ID,
		TargetID: u.ID, ClientID: pr.Client.ID, IP: m.IP, UserAgent: m.UserAgent, Time: p.now(),
		Details: map[string]string{"method": loginMethod(amr), "sid": bs.ID, "amr": strings.Join(amr, " ")}})
	if u.MustChangePassword {
		return p.changeStep(c, http.StatusOK, pr, nil)
	}
	return p.proceedWith(c, pr.ID, bs, DoneLogin)
}

// sessionsEnded answers a login that began before every session of u was
// ended (a password reset, a sign-out everywhere, an administrator's end
// of every session): 403, no session, audited login.failed with reason
// sessions_ended. A sign-in through an identity provider began when the
// person signed in there (upstream.Claims.LoginTime), so a provider that
// answers from its own session of before then signs nobody in: the person
// signs in there again.
func (p *Pages) sessionsEnded(c echo.Context, pr Pending, u store.User, amr []string) error {
	m := meta(c)
	p.si.Audit.Record(c.Request().Context(), store.AuditEvent{Action: "login.failed", Outcome: store.OutcomeFailure,
		TargetID: u.ID, ClientID: pr.Client.ID, IP: m.IP, UserAgent: m.UserAgent,
		Details: map[string]string{"method": loginMethod(amr), "reason": "sessions_ended"}})
	why := "Every session of this account was ended while you were signing in. Sign in again."
	if federated(amr) {
		why = "Every session of this account was ended after you last signed in at the identity provider, which answered from that sign-in. " +
			"Sign in there again (sign out there first if it does not ask you), then start again."
	}
	return p.render(c, http.StatusForbidden, view{Kind: "error", Heading: "You could not be signed in",
		Intro:   []string{why, "You have not been signed in."},
		Primary: &link{Href: p.base + LoginPath + "?" + url.Values{requestField: {pr.ID}}.Encode(), Text: "Back to sign in"}})
}

// loginMethod is login.succeeded's details.method: "upstream" for a
// sign-in through an identity provider, else "page".
func loginMethod(amr []string) string {
	if federated(amr) {
		return "upstream"
	}
	return "page"
}
