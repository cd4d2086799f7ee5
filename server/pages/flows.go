package pages

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mail"
)

// badCredentials answers an unknown email address, a deactivated account
// and a wrong current password alike on the change-password page.
const badCredentials = "The email address or the current password is incorrect."

// linkMissing answers a page of an emailed link opened without its token
// (never opened from the link, or the flow cookie expired after an hour).
func (p *Pages) linkMissing(c echo.Context, f flow) error {
	v := view{Kind: "problem", Heading: "Open the link from your email",
		Intro: []string{"This page needs the full link from the " + f.kind + " email, and it expires an hour after you open it. Open the link from your email again."}}
	switch f {
	case inviteFlow:
		v.Intro = append(v.Intro, "If the link no longer works, ask the person who invited you to send a new invitation.")
	case resetFlow:
		v.Intro = append(v.Intro, "If the link no longer works, ask for a new one.")
		v.Primary = &link{Href: p.base + ForgotPasswordPath, Text: "Request a new reset link"}
	case verifyFlow:
		v.Intro = append(v.Intro, "If the link no longer works, sign in and ask for a new confirmation email.")
		v.Primary = p.signIn("Go to sign in")
	}
	return p.render(c, http.StatusBadRequest, v)
}

// linkUnusable answers a one-time token the service refused (unknown,
// expired, used, superseded or revoked): the service's description says
// which; the page adds what to do next. The flow cookie is dropped.
func (p *Pages) linkUnusable(c echo.Context, f flow, err error) error {
	p.dropFlow(c, f)
	v := view{Kind: "problem", Intro: []string{apierr.From(err).Description}}
	switch f {
	case inviteFlow:
		v.Heading = "This invitation link cannot be used"
		v.Intro = append(v.Intro,
			"Ask the person who invited you to send a new invitation. Only the newest invitation works, and each works once.",
			"If you have already accepted it, your account exists: sign in with your email address and password.")
		v.Primary = p.signIn("Go to sign in")
	case resetFlow:
		v.Heading = "This password reset link cannot be used"
		v.Intro = append(v.Intro,
			"Request a new link to reset your password. Only the newest link works, and each works once.")
		v.Primary = &link{Href: p.base + ForgotPasswordPath, Text: "Request a new reset link"}
	case verifyFlow:
		v.Heading = "This confirmation link cannot be used"
		v.Intro = append(v.Intro,
			"If you have already confirmed your email address, there is nothing more to do. Otherwise, sign in and ask for a new confirmation email.")
		v.Primary = p.signIn("Go to sign in")
	}
	return p.render(c, http.StatusBadRequest, v)
}

// formView returns a form with a fresh or reused CSRF token.
func (p *Pages) formView(c echo.Context, v view, path string) (view, error) {
	tok, err := p.csrfToken(c)
	if err != nil {
		return view{}, err
	}
	v.CSRF, v.Action = tok, p.base+path
	return v, nil
}

// renderForm renders a form page.
func (p *Pages) renderForm(c echo.Context, status int, v view, path string) error {
	v, err := p.formView(c, v, path)
	if err != nil {
		return p.fail(c, apierr.ErrServer.WithCause(err))
	}
	return p.render(c, status, v)
}

// ---- /invite ----

// joinField marks the form of an existing account joining an organisation
// (inviteView): it asks for the account's password, not a new one. It
// chooses only what the page checks and says; the service decides what
// accepting does.
const joinField = "join"

// inviteView is the form for the invite look describes: it names the
// organisation the invite is to, if any. An address that already has an
// account is told that accepting adds that account to the organisation,
// and enters its password; a new one chooses a name and a password.
func (p *Pages) inviteView(name string, look accounts.InviteLook) view {
	product, org := p.cfg.ProductName, look.Organisation
	if look.ExistingAccount {
		return view{Heading: "Join " + org, Submit: "Join " + org,
			Intro: []string{
				"You have been invited to join the organisation " + org + " on " + product + ".",
				"This email address already has an account. Accepting adds that account to " + org +
					": its administrators will see your name and email address and manage your roles there. " +
					"Enter your account's password to accept; it stays as it is.",
			},
			Hidden: []hidden{{Name: joinField, Value: "1"}},
			Fields: []field{{ID: "password", Label: "Your password", Type: "password", Autocomplete: "current-password", Required: true}},
			Links:  []link{{Href: p.base + ForgotPasswordPath, Text: "Forgotten your password?"}}}
	}
	intro := "You have been invited to " + product + ". Choose a password to create your account."
	if org != "" {
		intro = "You have been invited to join the organisation " + org + " on " + product + ". Choose a password to create your account."
	}
	return view{Heading: "Set up your account", Submit: "Create my account", Intro: []string{intro},
		Fields: append([]field{{ID: "name", Label: "Your name", Type: "text", Autocomplete: "name", Value: name}},
			p.newPasswordFields()...),
		ProviderForms: p.inviteProviderForms()}
}

// inviteForm renders the invite's form with status, looking at the invite
// first (LookAtInvite), which changes nothing and counts no failed login:
// an unknown, expired, used or revoked invitation is invalid_token, so the
// person learns at once that the link cannot be used. ps are the problems
// of a form sent, name the name it held; the look after a form sent
// counts no second attempt (invitePost's accounts.CountOnce).
func (p *Pages) inviteForm(c echo.Context, status int, tok, name string, ps problems) error {
	look, answered, err := p.inviteUsable(c, tok)
	if answered {
		return err
	}
	return p.renderForm(c, status, p.inviteView(name, look).withErrors(ps), InvitePath)
}

// inviteGet shows the form (inviteForm). Opening the link (a reload, a
// link scanner that prefetches it) changes nothing and counts no failed
// login of an existing account the invite names.
func (p *Pages) inviteGet(c echo.Context) error {
	if done, err := p.carryToken(c, inviteFlow); done {
		return err
	}
	tok := p.flowToken(c, inviteFlow)
	if tok == "" {
		return p.linkMissing(c, inviteFlow)
	}
	p.inviteCSP(c)
	return p.inviteForm(c, http.StatusOK, tok, "", nil)
}

// inviteUsable looks at the invite tok without redeeming it
// (accounts.Service.LookAtInvite, which changes nothing and counts no
// failed login): answered is true when it is not usable, or cannot be
// checked now, and the page says so (err is the handler's result).
func (p *Pages) inviteUsable(c echo.Context, tok string) (look accounts.InviteLook, answered bool, err error) {
	look, err = p.d.Accounts.LookAtInvite(c.Request().Context(), meta(c), tok)
	switch {
	case err == nil:
		return look, false, nil
	case is(err, apierr.ErrOneTimeTokenInvalid):
		return look, true, p.linkUnusable(c, inviteFlow, err)
	}
	return look, true, p.fail(c, err) // rate limited or unavailable
}

func (p *Pages) invitePost(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, InvitePath)
	}
	p.inviteCSP(c)
	tok := p.flowToken(c, inviteFlow)
	if tok == "" {
		return p.linkMissing(c, inviteFlow)
	}
	// One form sent is one attempt: the look that shows the form again
	// after a refused acceptance does not count the limit again.
	r := c.Request().WithContext(accounts.CountOnce(c.Request().Context()))
	c.SetRequest(r)
	name, pw := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("password")
	join := r.PostFormValue(joinField) == "1"
	var ps problems
	if join {
		if pw == "" {
			ps.add("password", "Enter your account's password.")
		}
	} else {
		checkNewPassword(&ps, pw, r.PostFormValue("confirm_password"))
	}
	if len(ps) > 0 {
		return p.inviteForm(c, http.StatusBadRequest, tok, name, ps)
	}
	m := meta(c)
	resp, err := p.d.Accounts.AcceptInvite(r.Context(), m, accounts.AcceptInviteRequest{Token: tok, Password: pw, Name: name})
	switch {
	case err == nil:
	case is(err, apierr.ErrMFARequired):
		// The invite is accepted (the account created, or an existing one
		// joined the organisation) but the account owes a second factor: no
		// session was started, and the login page asks for the factor (or
		// has one set up), so this is the success page with a word on it.
		p.dropFlow(c, inviteFlow)
		return p.render(c, http.StatusOK, p.invitedView("Your invitation is accepted",
			"The invitation is accepted. Your account uses two-step verification: signing in asks for your second factor, or to set one up.",
			"your email address and your password"))
	case is(err, apierr.ErrOneTimeTokenInvalid):
		return p.linkUnusable(c, inviteFlow, err)
	case is(err, accounts.ErrWeakPassword), is(err, apierr.ErrInvalidGrant):
		// A password the rules refuse, or not the existing account's.
		ps.add("password", apierr.From(err).Description)
		return p.inviteForm(c, http.StatusBadRequest, tok, name, ps)
	case is(err, apierr.ErrInvalidRequest):
		ps.add("name", apierr.From(err).Description)
		return p.inviteForm(c, http.StatusBadRequest, tok, name, ps)
	case is(err, apierr.ErrConflict):
		p.dropFlow(c, inviteFlow)
		return p.render(c, http.StatusConflict, view{Kind: "problem", Heading: "You already have an account",
			Intro:   []string{apierr.From(err).Description, "Sign in with your email address and password. If you have forgotten your password, reset it."},
			Primary: p.signIn("Go to sign in"), Links: []link{{Href: p.base + ForgotPasswordPath, Text: "Reset your password"}}})
	default:
		return p.fail(c, err)
	}
	p.dropFlow(c, inviteFlow)
	p.endSession(r.Context(), resp, m)
	if join {
		return p.render(c, http.StatusOK, p.invitedView("You have joined the organisation",
			"Your account has been added to the organisation; your password is unchanged.", "your password"))
	}
	return p.render(c, http.StatusOK, p.invitedView("Your account is ready", "Your account has been created and your password is set.",
		"your email address and your new password"))
}

// invitedView is the page after an accepted invite: heading and what
// happened, then where to sign in and with what (for a person: "your
// email address and your password", or a provider's name).
func (p *Pages) invitedView(heading, done, with string) view {
	v := view{Kind: "success", Heading: heading, Intro: []string{done}}
	if pr := p.signIn("Continue to sign in"); pr != nil {
		v.Intro = append(v.Intro, "Sign in with "+with+".")
		v.Primary = pr
	} else {
		v.Intro = append(v.Intro, "Go back to the application you were invited to and sign in with "+with+". You can close this page.")
	}
	return v
}

// ---- /reset-password ----

func (p *Pages) resetView() view {
	return view{Heading: "Choose a new password", Submit: "Change my password",
		Intro:  []string{"Choose a new password for your " + p.cfg.ProductName + " account. Once it is changed, you are signed out everywhere."},
		Fields: p.newPasswordFields()}
}

// resetGet shows the form. A reset link can be checked only by redeeming
// it, so a link that has expired or was used says so when the form is sent
// (the password is then not changed). ResetPassword with no password does
// refuse a malformed (for example truncated) link first, without redeeming
// anything, so that is said at once.
func (p *Pages) resetGet(c echo.Context) error {
	if done, err := p.carryToken(c, resetFlow); done {
		return err
	}
	tok := p.flowToken(c, resetFlow)
	if tok == "" {
		return p.linkMissing(c, resetFlow)
	}
	err := p.d.Accounts.ResetPassword(c.Request().Context(), meta(c), tok, "")
	switch {
	case is(err, apierr.ErrOneTimeTokenInvalid):
		return p.linkUnusable(c, resetFlow, err)
	case is(err, apierr.ErrRateLimited) || apierr.From(err).Status >= 500:
		return p.fail(c, err)
	}
	return p.renderForm(c, http.StatusOK, p.resetView(), ResetPasswordPath)
}

func (p *Pages) resetPost(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, ResetPasswordPath)
	}
	tok := p.flowToken(c, resetFlow)
	if tok == "" {
		return p.linkMissing(c, resetFlow)
	}
	r := c.Request()
	pw := r.PostFormValue("password")
	var ps problems
	checkNewPassword(&ps, pw, r.PostFormValue("confirm_password"))
	if len(ps) > 0 {
		return p.renderForm(c, http.StatusBadRequest, p.resetView().withErrors(ps), ResetPasswordPath)
	}
	err := p.d.Accounts.ResetPassword(r.Context(), meta(c), tok, pw)
	switch {
	case err == nil:
	case is(err, apierr.ErrOneTimeTokenInvalid):
		return p.linkUnusable(c, resetFlow, err)
	case is(err, accounts.ErrWeakPassword):
		ps.add("password", apierr.From(err).Description)
		return p.renderForm(c, http.StatusBadRequest, p.resetView().withErrors(ps), ResetPasswordPath)
	default:
		return p.fail(c, err)
	}
	p.dropFlow(c, resetFlow)
	return p.render(c, http.StatusOK, view{Kind: "success", Heading: "Your password has been changed",
		Intro: []string{"You have been signed out everywhere: every session of your account has ended.",
			"Sign in again with your new password."},
		Primary: p.signIn("Continue to sign in")})
}

// ---- /verify-email ----

// verifyGet shows a button; only its POST redeems the link, since mail
// scanners fetch links with GET.
func (p *Pages) verifyGet(c echo.Context) error {
	if done, err := p.carryToken(c, verifyFlow); done {
		return err
	}
	if p.flowToken(c, verifyFlow) == "" {
		return p.linkMissing(c, verifyFlow)
	}
	return p.renderForm(c, http.StatusOK, view{Heading: "Confirm your email address", Submit: "Confirm my email address",
		Intro: []string{"Confirm that this email address belongs to you and can receive messages from " + p.cfg.ProductName + "."}},
		VerifyEmailPath)
}

func (p *Pages) verifyPost(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, VerifyEmailPath)
	}
	tok := p.flowToken(c, verifyFlow)
	if tok == "" {
		return p.linkMissing(c, verifyFlow)
	}
	u, err := p.d.Accounts.VerifyEmail(c.Request().Context(), meta(c), tok)
	switch {
	case err == nil:
	case is(err, apierr.ErrOneTimeTokenInvalid):
		return p.linkUnusable(c, verifyFlow, err)
	default:
		return p.fail(c, err)
	}
	p.dropFlow(c, verifyFlow)
	return p.render(c, http.StatusOK, view{Kind: "success", Heading: "Your email address is confirmed",
		Intro:   []string{"Thank you: " + u.Email + " is confirmed.", "There is nothing more to do here. You can close this page."},
		Primary: p.signIn("Continue")})
}

// ---- /change-password ----

func (p *Pages) changeView(email string) view {
	return view{Heading: "Change your password", Submit: "Change my password",
		Intro: []string{"Enter your email address and your current password (the temporary one you were given, if you were asked to change it), then choose a new password."},
		Fields: append([]field{
			{ID: "email", Label: "Email address", Type: "email", Autocomplete: "username", Value: email, Required: true, Plain: true},
			{ID: "current_password", Label: "Current password", Type: "password", Autocomplete: "current-password", Required: true},
		}, p.newPasswordFields()...),
		Links: []link{{Href: p.base + ForgotPasswordPath, Text: "Forgotten your password?"}}}
}

func (p *Pages) changeGet(c echo.Context) error {
	return p.renderForm(c, http.StatusOK, p.changeView(""), ChangePasswordPath)
}

// changePost changes a password with the email address and current password
// instead of a bearer token: ChangePassword with the login, so the current
// password goes through the one password check (the password grant's
// throttle, equal-time unknown accounts, audit) and the page spends the same
// limits and answers alike for an unknown, a deactivated or a known account.
// ChangePassword ends every session and starts a fresh one, which the page
// ends too: the person signs in again in their application.
func (p *Pages) changePost(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, ChangePasswordPath)
	}
	r := c.Request()
	email, current, pw := strings.TrimSpace(r.PostFormValue("email")), r.PostFormValue("current_password"), r.PostFormValue("password")
	var ps problems
	if email == "" {
		ps.add("email", "Enter your email address.")
	}
	if current == "" {
		ps.add("current_password", "Enter your current password.")
	}
	checkNewPassword(&ps, pw, r.PostFormValue("confirm_password"))
	if len(ps) > 0 {
		return p.renderForm(c, http.StatusBadRequest, p.changeView(email).withErrors(ps), ChangePasswordPath)
	}
	ctx, m := r.Context(), meta(c)
	resp, err := p.d.Accounts.ChangePassword(ctx, accounts.Actor{Meta: m},
		accounts.ChangePasswordRequest{Login: email, CurrentPassword: current, NewPassword: pw})
	switch {
	case err == nil:
	case is(err, apierr.ErrMFARequired):
		// Changed; the account's roles need a second factor, so the change
		// started no session (nothing to end): the person signs in with it.
	case is(err, apierr.ErrInvalidGrant):
		ps.add("current_password", badCredentials)
		return p.renderForm(c, http.StatusBadRequest, p.changeView(email).withErrors(ps), ChangePasswordPath)
	case is(err, accounts.ErrWeakPassword):
		ps.add("password", apierr.From(err).Description)
		return p.renderForm(c, http.StatusBadRequest, p.changeView(email).withErrors(ps), ChangePasswordPath)
	case is(err, accounts.ErrSignInToChangePassword):
		ps.add("current_password", apierr.From(err).Description)
		return p.renderForm(c, http.StatusBadRequest, p.changeView(email).withErrors(ps), ChangePasswordPath)
	default:
		return p.fail(c, err)
	}
	p.endSession(ctx, resp, m)
	return p.render(c, http.StatusOK, view{Kind: "success", Heading: "Your password has been changed",
		Intro: []string{"You have been signed out everywhere: every session of your account has ended.",
			"Sign in again with your new password."},
		Primary: p.signIn("Continue to sign in")})
}

// ---- /forgot-password ----

func (p *Pages) forgotView(email string) view {
	return view{Heading: "Reset your password", Submit: "Send me a reset link",
		Intro: []string{"Enter the email address of your account. If an account exists for it, we will send it a link to choose a new password."},
		Fields: []field{{ID: "email", Label: "Email address", Type: "email", Autocomplete: "email", Value: email,
			Required: true, Plain: true}}}
}

func (p *Pages) forgotGet(c echo.Context) error {
	return p.renderForm(c, http.StatusOK, p.forgotView(""), ForgotPasswordPath)
}

func (p *Pages) forgotPost(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, ForgotPasswordPath)
	}
	email := strings.TrimSpace(c.Request().PostFormValue("email"))
	var ps problems
	if email == "" {
		ps.add("email", "Enter your email address.")
		return p.renderForm(c, http.StatusBadRequest, p.forgotView(email).withErrors(ps), ForgotPasswordPath)
	}
	err := p.d.Accounts.ForgotPassword(c.Request().Context(), meta(c), email)
	switch {
	case err == nil:
	case is(err, apierr.ErrInvalidRequest):
		ps.add("email", apierr.From(err).Description)
		return p.renderForm(c, http.StatusBadRequest, p.forgotView(email).withErrors(ps), ForgotPasswordPath)
	default:
		return p.fail(c, err)
	}
	return p.render(c, http.StatusOK, view{Kind: "success", Heading: "Check your email",
		Intro: []string{"If an account exists for " + email + ", we have sent it a link to choose a new password. The link works once, for " +
			mail.HumanDuration(p.cfg.ResetTTL) + ".",
			"If nothing arrives within a few minutes, check your spam folder, or request another link."},
		Links: []link{{Href: p.base + ForgotPasswordPath, Text: "Request another link"}}})
}
