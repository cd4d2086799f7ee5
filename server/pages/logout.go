package pages

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// Paths of signing out.
const (
	// EndSessionPath is the end_session_endpoint (RP-Initiated Logout 1.0).
	EndSessionPath = "/oauth2/logout"
	// LogoutPath is the hosted confirmation page; its form posts here.
	LogoutPath = "/logout"
)

// HintParser verifies an id_token_hint and returns its claims
// (*token.Service.ParseIDTokenHint).
type HintParser interface {
	ParseIDTokenHint(raw string) (token.IDClaims, error)
}

// ClientReader reads a client (the clients cache).
type ClientReader interface {
	GetClient(ctx context.Context, id string) (store.Client, error)
}

// SessionEnder ends a browser session (*signout.Ender).
type SessionEnder interface {
	End(ctx context.Context, bs store.BrowserSession, r signout.Reason) error
}

// logoutDecision is the confirmation form's decision value (the
// contract's automation hook).
const logoutDecision = "logout"

// registerLogout adds the routes of signing out.
func (p *Pages) registerLogout(e *echo.Echo) {
	h := p.headers
	e.GET(EndSessionPath, p.rpLogout, h)
	e.POST(EndSessionPath, p.rpLogout, h)
	e.GET(LogoutPath, p.logoutPage, h)
	e.POST(LogoutPath, p.logoutPost, h)
}

// logoutParams reads the request's parameters (the query of a GET, the form
// of a POST); a repeated one is an error.
func logoutParams(c echo.Context) (signout.LogoutRequest, error) {
	r := c.Request()
	var vs url.Values
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			return signout.LogoutRequest{}, errors.New("the request could not be read")
		}
		vs = r.PostForm
	} else {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return signout.LogoutRequest{}, errors.New("the query string is malformed")
		}
		vs = q
	}
	one := func(name string) (string, error) {
		if len(vs[name]) > 1 {
			return "", errors.New("the parameter " + name + " is given more than once")
		}
		return vs.Get(name), nil
	}
	var req signout.LogoutRequest
	var err error
	for _, f := range []struct {
		name string
		dst  *string
	}{{"id_token_hint", &req.IDTokenHint}, {"client_id", &req.ClientID},
		{"post_logout_redirect_uri", &req.PostLogoutRedirectURI}, {"state", &req.State}} {
		if *f.dst, err = one(f.name); err != nil {
			return signout.LogoutRequest{}, err
		}
	}
	return req, nil
}

// rpLogout is GET and POST /oauth2/logout (and GET /logout without a held
// request). A GET is decided at once with the browser's session. A POST,
// usually a form the application's site posts, carries no SameSite=Lax
// session cookie: decided then, it would end nothing on the server and
// still redirect as if it had. So it is held and answered with a 303 to the
// same-site GET /logout?request=…, which carries the cookie
// (toSameSiteGet, as a POSTed authorization request).
func (p *Pages) rpLogout(c echo.Context) error {
	req, err := logoutParams(c)
	if err != nil {
		return p.badLogout(c, "The request to sign out could not be read: "+err.Error()+".")
	}
	if c.Request().Method == http.MethodPost {
		id, err := p.hold(c, req)
		var nh *signout.NotHeldError
		switch {
		case errors.As(err, &nh):
			return p.badLogout(c, "The request to sign out could not be read: "+nh.Reason+".")
		case err != nil:
			return p.fail(c, err)
		}
		return p.toSameSiteGet(c, LogoutPath, id)
	}
	return p.logout(c, req)
}

// hold keeps a POSTed logout request for the browser's GET
// (signout.Hold, which refuses one no client could have sent with a
// *signout.NotHeldError) once the caller's address may have one more record
// kept (p.si.Pending: 429 past its budget).
func (p *Pages) hold(c echo.Context, req signout.LogoutRequest) (string, error) {
	ctx := c.Request().Context()
	if p.si.Pending != nil {
		if err := p.si.Pending.AllowPending(ctx, meta(c).IP); err != nil {
			return "", err
		}
	}
	id, err := signout.Hold(ctx, p.si.Once, req, p.now())
	var nh *signout.NotHeldError
	if err != nil && !errors.As(err, &nh) {
		return "", apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	return id, err
}

// logoutPage is GET /logout: with ?request=… the logout request held by a
// POST to /oauth2/logout (taken once; unknown, expired or used is 400 and
// ends nothing), else as GET /oauth2/logout.
func (p *Pages) logoutPage(c echo.Context) error {
	q, err := url.ParseQuery(c.Request().URL.RawQuery)
	switch {
	case err != nil:
		return p.badLogout(c, "The request to sign out could not be read: the query string is malformed.")
	case !q.Has(requestField):
		return p.rpLogout(c)
	case len(q[requestField]) > 1:
		return p.badLogout(c, "The request to sign out could not be read: the parameter request is given more than once.")
	}
	req, err := signout.TakeHeld(c.Request().Context(), p.si.Once, q.Get(requestField), p.now())
	switch {
	case errors.Is(err, signout.ErrHeldGone):
		return p.badLogout(c, "This sign-out request has expired or was used already. Go back to the application and sign out there again.")
	case err != nil:
		return p.fail(c, apierr.ErrTemporarilyUnavailable.WithCause(err))
	}
	return p.logout(c, req)
}

// badLogout is the error page (400) of a logout request that cannot be
// read: nothing ends, nothing redirects.
func (p *Pages) badLogout(c echo.Context, message string) error {
	return p.errorPage(c, Step{Kind: StepError, Status: http.StatusBadRequest, Heading: "This sign-out request is not valid",
		Message: message})
}

// logout decides req with the browser's session: a trusted request (a
// valid id_token_hint of this browser session) ends the session at once
// and goes back to a registered post-logout URI, or shows the signed-out
// page; anything else shows the confirmation page first, and never
// redirects anywhere not registered (signout.DecideLogout).
func (p *Pages) logout(c echo.Context, req signout.LogoutRequest) error {
	ctx := c.Request().Context()
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	in := signout.LogoutInputs{Request: req, Session: bs}
	clientID := req.ClientID
	if req.IDTokenHint != "" {
		claims, err := p.si.Hints.ParseIDTokenHint(req.IDTokenHint)
		switch {
		case errors.Is(err, apierr.ErrTemporarilyUnavailable):
			return p.fail(c, err) // the keys cannot be used now: the hint is not judged
		case err != nil:
			in.HintInvalid = true
		default:
			in.Hint = &signout.Hint{Subject: claims.Subject, Audience: claims.Audience, SID: claims.SID}
			if clientID == "" {
				clientID = claims.AuthorizedBy
				if clientID == "" && len(claims.Audience) == 1 {
					clientID = claims.Audience[0]
				}
			}
		}
	}
	if in.Client, err = p.logoutClient(ctx, clientID); err != nil {
		return p.fail(c, err)
	}
	if bs != nil && in.Hint != nil {
		// Whether the hint is of this session: its sid among the grants.
		gs, err := p.si.Browser.Grants(ctx, *bs)
		switch {
		case errors.Is(err, store.ErrNotFound):
			in.Session = nil // ended meanwhile
		case err != nil:
			return p.fail(c, apierr.ErrTemporarilyUnavailable.WithCause(err))
		default:
			bs.Grants = gs
		}
	}
	d := signout.DecideLogout(in)
	c.Response().Header().Set("Content-Security-Policy", flowCSP(d.RedirectURI, ""))
	if d.Action == signout.LogoutConfirm {
		if d.Why != "" {
			p.log.Debug("logout request needs confirmation", "why", d.Why)
		}
		return p.logoutConfirm(c, d, req)
	}
	if err := p.signOut(c, bs, d.ClientID); err != nil {
		return p.fail(c, err)
	}
	if d.RedirectURI != "" {
		return p.redirect(c, d.RedirectURI)
	}
	return p.signedOut(c)
}

// logoutClient reads the client a logout request names; nil when it names
// none or an unknown one.
func (p *Pages) logoutClient(ctx context.Context, id string) (*store.Client, error) {
	if id == "" {
		return nil, nil
	}
	cl, err := p.si.Clients.GetClient(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	return &cl, nil
}

// logoutConfirm shows "Sign out?". The form carries the client and the
// post-logout URI only when the decision allows going back there after
// the confirmation; the POST checks them again.
func (p *Pages) logoutConfirm(c echo.Context, d signout.LogoutDecision, req signout.LogoutRequest) error {
	v := view{Heading: "Sign out?", Intro: []string{"Do you want to sign out of " + p.cfg.ProductName + " on this device?"},
		Buttons: []button{
			{ID: "logout", Name: decisionField, Value: logoutDecision, Text: "Sign out"},
			{ID: "stay", Name: decisionField, Value: "stay", Text: "Stay signed in", Secondary: true},
		}}
	if d.RedirectURI != "" {
		v.Hidden = []hidden{{Name: "client_id", Value: d.ClientID},
			{Name: "post_logout_redirect_uri", Value: req.PostLogoutRedirectURI}, {Name: "state", Value: req.State}}
	}
	return p.renderForm(c, http.StatusOK, v, LogoutPath)
}

// logoutPost is POST /logout, the confirmation: "Sign out" ends the
// browser's session, then goes back to the client's registered post-logout
// URI when the form names one (checked again here), else shows the
// signed-out page.
func (p *Pages) logoutPost(c echo.Context) error {
	if !p.checkCSRF(c) {
		return p.refuseCSRF(c, LogoutPath)
	}
	r := c.Request()
	if r.PostFormValue(decisionField) != logoutDecision {
		return p.render(c, http.StatusOK, view{Kind: "success", Heading: "You are still signed in",
			Intro: []string{"Nothing was changed. You can close this page."}, Primary: p.signIn("Go to the application")})
	}
	req := signout.LogoutRequest{ClientID: r.PostFormValue("client_id"),
		PostLogoutRedirectURI: r.PostFormValue("post_logout_redirect_uri"), State: r.PostFormValue("state")}
	cl, err := p.logoutClient(r.Context(), req.ClientID)
	if err != nil {
		return p.fail(c, err)
	}
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	d := signout.DecideLogout(signout.LogoutInputs{Request: req, Client: cl, Session: bs})
	c.Response().Header().Set("Content-Security-Policy", flowCSP(d.RedirectURI, ""))
	if err := p.signOut(c, bs, d.ClientID); err != nil {
		return p.fail(c, err)
	}
	if d.RedirectURI != "" {
		return p.redirect(c, d.RedirectURI)
	}
	return p.signedOut(c)
}

// signOut ends the browser's session (nil: there is none) through the one
// routine and clears its cookie, and the refresh-token cookie of a cookie
// client (rtcookie) with it: the contract's "logout clears it" holds for
// the OIDC logout too, so a browser signed out no longer holds a refresh
// token of an offline_access grant (which outlives the session by design)
// nor a dead one.
func (p *Pages) signOut(c echo.Context, bs *store.BrowserSession, clientID string) error {
	secure := p.secure(c)
	if bs != nil {
		m := meta(c)
		m.ClientID = clientID
		if err := p.si.Ender.End(c.Request().Context(), *bs, signout.Reason{Why: signout.WhyLogout, Meta: m}); err != nil {
			return apierr.ErrTemporarilyUnavailable.WithCause(err)
		}
	}
	c.SetCookie(browsersession.Clear(secure))
	c.SetCookie(rtcookie.Clear(secure))
	return nil
}

// signedOut is the page after signing out.
func (p *Pages) signedOut(c echo.Context) error {
	return p.render(c, http.StatusOK, view{Kind: "success", Heading: "You are signed out",
		Intro:   []string{"You have been signed out of " + p.cfg.ProductName + " on this device. You can close this page."},
		Primary: p.signIn("Go to the application")})
}
