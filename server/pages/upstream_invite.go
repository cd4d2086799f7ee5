package pages

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/server/upstream"
)

// Accepting an invite by signing in at an upstream identity provider
// (CONTRACT: an invite can be accepted by signing in with a provider whose
// verified email equals the invite's). The /invite page shows one form per
// provider posting to /invite/{provider}; that route checks the invite
// (inviteUsable, as the page does) and starts the provider's sign-in with
// the invite's accounts.InviteRef (its id and the hash of the token's
// secret, as the invites table holds it) in the sign-in's server-side
// single-use record (Begin's ret); the token itself goes nowhere: not in
// that record, a URL, a log or the state. The callback hands the verified
// identity and the InviteRef to upstream.Service.AcceptInvite, which keeps
// every rule (verified email equal to the invite's, no account with it,
// the accounts service's invite and inviter checks) and audits refusals.

// inviteProviderForms are the /invite page's "Accept with" buttons: one
// form per provider posting to /invite/{id}.
func (p *Pages) inviteProviderForms() []link {
	if p.si.Upstream == nil {
		return nil
	}
	var out []link
	for _, pv := range p.si.Upstream.Providers().List() {
		out = append(out, link{Href: p.base + InvitePath + "/" + url.PathEscape(pv.ID), Text: "Accept with " + pv.Name})
	}
	return out
}

// inviteCSP lets the /invite page's provider forms be followed to the
// providers: Chrome applies form-action to the 303 after a form POST, so
// the origins of the providers' issuers join 'self' (an authorization
// endpoint elsewhere gets a page with a link instead, see
// inviteUpstreamStart).
func (p *Pages) inviteCSP(c echo.Context) {
	if p.si.Upstream == nil {
		return
	}
	var origins []string
	for _, pv := range p.si.Upstream.Providers().List() {
		if o := redirecturi.Origin(pv.Issuer); o != "" {
			origins = append(origins, o)
		}
	}
	if len(origins) == 0 {
		return
	}
	c.Response().Header().Set("Content-Security-Policy", strings.Replace(ContentSecurityPolicy,
		"form-action 'self'", "form-action 'self' "+strings.Join(origins, " "), 1))
}

// inviteUpstreamStart is POST /invite/{provider}: with the form's CSRF
// token and the invite carried by the /invite page's cookie, it checks the
// invite is usable and starts the sign-in at the provider (303), within
// the caller's address budget of kept records (429 past it). An unknown
// provider is 404.
func (p *Pages) inviteUpstreamStart(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, InvitePath)
	}
	id := c.Param("provider")
	if p.si.Upstream == nil {
		return p.unknownProvider(c)
	}
	pv, ok := p.si.Upstream.Providers().Get(id)
	if !ok {
		return p.unknownProvider(c)
	}
	tok := p.flowToken(c, inviteFlow)
	if tok == "" {
		return p.linkMissing(c, inviteFlow)
	}
	if _, answered, err := p.inviteUsable(c, tok); answered {
		return err
	}
	ctx := c.Request().Context()
	tokCSRF, err := p.csrfToken(c)
	if err != nil {
		return p.fail(c, apierr.ErrServer.WithCause(err))
	}
	bind := sha256.Sum256([]byte(tokCSRF))
	ref := accounts.InviteRefOf(tok)
	ret, err := json.Marshal(upstreamReturn{Invite: &ref, Browser: bind[:]})
	if err != nil {
		return p.fail(c, apierr.ErrServer.WithCause(err))
	}
	if p.si.Pending != nil {
		if err := p.si.Pending.AllowPending(ctx, meta(c).IP); err != nil {
			return p.fail(c, err)
		}
	}
	to, err := p.si.Upstream.Begin(ctx, id, p.callbackURL(id), upstream.Freshness{}, ret)
	if err != nil {
		return p.fail(c, err)
	}
	if o := redirecturi.Origin(to); o == "" || o != redirecturi.Origin(pv.Issuer) {
		// Not an origin the /invite page's form-action allows (inviteCSP).
		return p.render(c, http.StatusOK, view{Heading: "Continue to " + pv.Name,
			Intro:   []string{"Sign in at " + pv.Name + " with the email address you were invited at to accept the invitation."},
			Primary: &link{Href: to, Text: "Continue to " + pv.Name}})
	}
	return p.redirect(c, to)
}

// upstreamInviteCallback ends a provider sign-in begun on the /invite page
// (the callback found ref, the invite's InviteRef, in its record): the verified
// identity accepts the invite (upstream.Service.AcceptInvite) or is
// refused with the /invite flow's pages. No session is started: the
// person signs in with the provider at the application.
func (p *Pages) upstreamInviteCallback(c echo.Context, v upstream.Verified, ref accounts.InviteRef) error {
	_, d, err := p.si.Upstream.AcceptInvite(c.Request().Context(), v, ref, upstreamMeta(c, ""))
	var r *upstream.Refusal
	switch {
	case err == nil && d.Outcome == upstream.OutcomeAcceptInvite:
		p.dropFlow(c, inviteFlow)
		return p.render(c, http.StatusOK, p.invitedView("Your invitation is accepted",
			"Your account has been created and linked to your "+v.Provider.Name+" account.", v.Provider.Name))
	case err == nil, errors.Is(err, upstream.ErrNeedsConfirmation):
		// An account has the address: the invite stays pending (the
		// service signed nobody in here, and no session is started).
		return p.render(c, http.StatusConflict, view{Kind: "problem", Heading: "You already have an account",
			Intro: []string{"An account with the email address of your " + v.Provider.Name + " account already exists, so the invitation was not accepted with it.",
				"Sign in to it, or open the invitation link again and accept it with your password."},
			Primary: p.signIn("Go to sign in")})
	case is(err, apierr.ErrOneTimeTokenInvalid):
		return p.linkUnusable(c, inviteFlow, err)
	case errors.As(err, &r):
		return p.render(c, http.StatusForbidden, view{Kind: "error", Heading: "The invitation was not accepted",
			Intro: []string{r.Description(), "Nothing was created. Open the invitation link again and sign in at " + v.Provider.Name +
				" with the email address you were invited at, or choose a password instead."}})
	case is(err, apierr.ErrConflict):
		p.dropFlow(c, inviteFlow)
		return p.render(c, http.StatusConflict, view{Kind: "problem", Heading: "You already have an account",
			Intro: []string{apierr.From(err).Description}, Primary: p.signIn("Go to sign in")})
	}
	return p.upstreamRefused(c, err, "")
}
