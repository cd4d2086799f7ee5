package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/server/pages"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

//go:embed templates/*.html
var templateFS embed.FS

// Paths and names.
const (
	// Path is the console's root.
	Path = "/console"
	// CallbackPath is the redirect URI path of the console's sign-in.
	CallbackPath = Path + "/callback"
	// CookieName is the console session cookie over HTTPS; InsecureCookieName
	// over plain HTTP (development), as for the browser session cookie.
	CookieName         = "__Host-portcullis-console"
	InsecureCookieName = "portcullis-console"
	// ClientID is the client_id of the console's audit events.
	ClientID = "console"
	// SessionIdleTTL and SessionMaxAge bound a console session.
	SessionIdleTTL = 30 * time.Minute
	SessionMaxAge  = 12 * time.Hour
	// PageSize is the number of items on one page of a list.
	PageSize = 25
)

// CallbackURL is the redirect URI of the console's sign-in for issuer: the
// built-in client lists it.
func CallbackURL(issuer string) string { return strings.TrimSuffix(issuer, "/") + CallbackPath }

// Tokens redeems the sign-in's code and checks and ends the session it
// starts (*token.Service).
type Tokens interface {
	Exchange(ctx context.Context, req token.TokenRequest, meta token.RequestMeta) (token.Response, error)
	AuthenticateAdmin(ctx context.Context, raw string) (token.AccessClaims, error)
	Logout(ctx context.Context, c token.AccessClaims, meta token.RequestMeta) error
}

// Config holds the console's settings.
type Config struct {
	// Issuer is PORTCULLIS_ISSUER: the base of the callback URL.
	Issuer string
	// ClientID is the built-in first-party client the sign-in uses.
	ClientID string
}

// Deps are the console's collaborators. Logger and Now may be nil.
type Deps struct {
	Pages    *pages.Pages
	Accounts *accounts.Service
	Tokens   Tokens
	// Sessions keeps console sessions (the token state's browser sessions);
	// Once keeps pending sign-ins (single use).
	Sessions store.BrowserSessions
	Once     store.SingleUse
	// Ended ends the grants of the browser sessions a console sign-in
	// pushes past the user's cap on sessions (*signout.Ender): console
	// sessions count against it like any other.
	Ended browsersession.Ended
	// Audit records the sessions a console sign-in ends past that cap
	// (browsersession.Config.Audit).
	Audit browsersession.Auditor
	// Pending counts each pending sign-in kept for a caller's address
	// (pages.PendingLimiter: *ratelimit.Limiter; nil: no limit).
	Pending pages.PendingLimiter
	Logger  *slog.Logger
	Now     func() time.Time
}

// Console serves /console.
type Console struct {
	cfg      Config
	d        Deps
	log      *slog.Logger
	tmpl     *template.Template
	sessions *browsersession.Manager
	clock    atomic.Pointer[func() time.Time]
}

// New checks cfg and d and returns the console.
func New(cfg Config, d Deps) (*Console, error) {
	var missing []string
	for name, v := range map[string]bool{"Pages": d.Pages == nil, "Accounts": d.Accounts == nil, "Tokens": d.Tokens == nil,
		"Sessions": d.Sessions == nil, "Once": d.Once == nil, "Ended": d.Ended == nil,
		"Audit": d.Audit == nil} {
		if v {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("console: missing dependencies %v", missing)
	}
	if cfg.Issuer == "" {
		return nil, errors.New("console: the issuer is required")
	}
	if cfg.ClientID == "" {
		cfg.ClientID = accounts.DefaultFirstPartyClientID
	}
	tmpl, err := template.New("console").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: parse templates: %w", err)
	}
	c := &Console{cfg: cfg, d: d, log: d.Logger, tmpl: tmpl}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	c.clock.Store(&now)
	c.sessions, err = browsersession.New(d.Sessions, browsersession.Config{IdleTTL: SessionIdleTTL, MaxAge: SessionMaxAge,
		Ended: d.Ended, Audit: d.Audit, Now: c.now, Cookie: browsersession.Cookie{Secure: CookieName, Insecure: InsecureCookieName, SameSite: http.SameSiteStrictMode}})
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	return c, nil
}

// SetClock replaces the console's clock (tests: a sign-in older than
// accounts.ReauthWindow without waiting).
func (c *Console) SetClock(now func() time.Time) { c.clock.Store(&now) }

func (c *Console) now() time.Time { return (*c.clock.Load())() }

// Register adds the console's routes to e.
func (c *Console) Register(e *echo.Echo) {
	h := c.d.Pages.Headers
	e.GET(Path, c.home, h, c.signedIn)
	e.GET(Path+"/login", c.login, h)
	e.GET(CallbackPath, c.callback, h)
	e.POST(Path+"/logout", c.logout, h, c.csrf)
	for _, s := range screens {
		e.GET(s.path, c.screen(s.get), h, c.signedIn)
		if s.post != nil {
			e.POST(s.path, c.screen(recent(s)), h, c.csrf, c.signedIn)
		}
	}
}

// screen is one route of the console with its GET and POST handlers.
type screen struct {
	path      string
	get, post handler
	// routine are the POST actions (the form's action field) that need no
	// recent sign-in: those that only take access away, or send a user a
	// link to their own address. Every other action, one unknown here
	// included, needs a sign-in within accounts.ReauthWindow (recent).
	routine []string
}

// handler serves a console request for the signed-in operator.
type handler func(c *Console, r *request) error

// screens are the console's routes. The actions left out of routine mint
// or reveal a credential, or hand over an account or a client's codes:
// creating a machine user, granting a role, activating a user, setting a
// temporary password, creating an API key, resetting second factors,
// inviting, creating a client (a confidential one's secret is shown),
// rotating a secret, replacing redirect URIs and revoking a signing key.
var screens = []screen{
	{Path + "/users", (*Console).users, (*Console).newMachineUser, nil},
	{Path + "/users/:id", (*Console).user, (*Console).userAction,
		[]string{"revoke_role", "deactivate", "reset_link", "revoke_sessions", "end_session", "clear_throttle", "revoke_api_key"}},
	{Path + "/invites", (*Console).invites, (*Console).inviteAction, []string{"revoke"}},
	{Path + "/sessions", (*Console).sessionsScreen, (*Console).sessionAction, []string{"end", "end_all"}},
	{Path + "/audit", (*Console).audit, nil, nil},
	{Path + "/clients", (*Console).clientsScreen, (*Console).clientAction, nil},
	{Path + "/roles", (*Console).roles, nil, nil},
	{Path + "/keys", (*Console).keysScreen, (*Console).keyAction, []string{"rotate"}},
}

func (c *Console) screen(h handler) echo.HandlerFunc {
	return func(ec echo.Context) error { return h(c, ec.Get(requestKey).(*request)) }
}

// recent is s's POST handler behind the one check of a recent sign-in:
// an action not in s.routine, from a sign-in older than
// accounts.ReauthWindow, answers the page asking to sign in again (403)
// and changes nothing.
func recent(s screen) handler {
	return func(c *Console, r *request) error {
		if !slices.Contains(s.routine, r.FormValue("action")) && !c.fresh(r) {
			return c.reauth(r, r.Request().URL.EscapedPath())
		}
		return s.post(c, r)
	}
}

// request is a console request of a signed-in operator.
type request struct {
	echo.Context
	session store.BrowserSession
	perms   []string
	actor   accounts.Actor
	csrf    string
}

const requestKey = "console.request"

func (r *request) ctx() context.Context { return r.Request().Context() }

// may reports whether the operator holds perm (accounts.RequirePermission).
func (r *request) may(perm string) bool { return accounts.RequirePermission(r.perms, perm) == nil }

// signedIn finds the console session, re-reads the operator's permissions
// and refuses anyone holding no admin permission. Without a session a GET
// goes to the sign-in (and back), anything else to the sign-in start.
func (c *Console) signedIn(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		secure := c.d.Pages.Secure(ec)
		bs, err := c.sessions.Find(ec.Request().Context(), ec.Request(), secure)
		switch {
		case errors.Is(err, browsersession.ErrNoSession):
			target := c.base() + Path + "/login"
			if m := ec.Request().Method; m == http.MethodGet || m == http.MethodHead {
				target += "?next=" + url.QueryEscape(ec.Request().URL.RequestURI())
			}
			return ec.Redirect(http.StatusSeeOther, target)
		case err != nil:
			return c.fail(ec, nil, fmt.Errorf("console: find the session: %w", err))
		}
		actor := accounts.Actor{ID: bs.UserID, Meta: c.meta(ec)}
		perms, err := c.d.Accounts.ActorPermissions(ec.Request().Context(), actor)
		if err != nil {
			if ae := answer(err); ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden {
				_, _ = c.sessions.End(ec.Request().Context(), bs.ID)
				ec.SetCookie(c.sessions.Clear(secure))
			}
			return c.fail(ec, nil, err)
		}
		r := &request{Context: ec, session: bs, perms: perms, actor: actor}
		if !isOperator(perms) {
			return c.render(r, http.StatusForbidden, view{Title: "Not an operator", Kind: "error",
				Message: "Your account holds none of the administration permissions, so the console has nothing to show you."})
		}
		if r.csrf, err = c.d.Pages.CSRFToken(ec); err != nil {
			return c.fail(ec, r, fmt.Errorf("console: CSRF token: %w", err))
		}
		ec.Set(requestKey, r)
		return next(ec)
	}
}

// isOperator reports whether perms hold any admin permission.
func isOperator(perms []string) bool {
	for _, p := range policy.AdminPermissions() {
		if accounts.RequirePermission(perms, p) == nil {
			return true
		}
	}
	return false
}

// csrf refuses a form POST that does not come from the console's own page
// (the hosted pages' double submit): 403, nothing changed.
func (c *Console) csrf(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		if !c.d.Pages.CheckCSRF(ec) {
			return c.render(&request{Context: ec}, http.StatusForbidden, view{Title: "This form has expired", Kind: "error",
				Message: "For your security, the form was not accepted: it was open too long, or it was not sent from this console. Nothing was changed. Open the page again and send the form from there."})
		}
		return next(ec)
	}
}

// meta describes the request for audit events: client_id console, its
// IP address and User-Agent as every record keeps them
// (store.CleanRequestMeta).
func (c *Console) meta(ec echo.Context) accounts.Meta {
	ip, ua := store.CleanRequestMeta(ec.RealIP(), ec.Request().UserAgent())
	return accounts.Meta{IP: ip, UserAgent: ua, ClientID: ClientID}
}

func (c *Console) base() string { return c.d.Pages.Base() }

func (c *Console) home(ec echo.Context) error {
	return ec.Redirect(http.StatusSeeOther, c.base()+Path+"/users")
}

// fresh reports whether the operator signed in within accounts.ReauthWindow.
func (c *Console) fresh(r *request) bool {
	return !r.session.AuthTime.IsZero() && c.now().Sub(r.session.AuthTime) <= accounts.ReauthWindow
}

// reauth answers an action that needs a recent sign-in: nothing is
// changed; the page offers to sign in again and come back to back.
func (c *Console) reauth(r *request, back string) error {
	return c.render(r, http.StatusForbidden, view{Title: "Confirm it is you", Kind: "error",
		Message: "This action needs a sign-in within the last five minutes. Nothing was changed. Sign in again, then repeat it.",
		Primary: &link{Href: c.base() + Path + "/login?reauth=1&next=" + url.QueryEscape(back), Text: "Sign in again"}})
}

// fail renders an error of a service call: the status and description of
// a refusal, or a page that reveals nothing for a server fault (logged).
func (c *Console) fail(ec echo.Context, r *request, err error) error {
	if apierr.ClientGone(ec.Request().Context()) {
		return err // nobody reads the page: the server's error handler records it
	}
	if r == nil {
		r = &request{Context: ec}
	}
	ae := answer(err)
	if ae.Status >= 500 {
		c.log.Error("console request failed", "path", ec.Path(), "err", err,
			"request_id", ec.Response().Header().Get(echo.HeaderXRequestID))
		return c.render(r, ae.Status, view{Title: "Something went wrong on our side", Kind: "error",
			Message: "It may not have been completed. Try again in a few minutes."})
	}
	if ae.Status == http.StatusTooManyRequests && ae.RetryAfterSeconds > 0 {
		ec.Response().Header().Set("Retry-After", strconv.Itoa(ae.RetryAfterSeconds))
	}
	return c.render(r, ae.Status, view{Title: "This could not be done", Kind: "error", Message: ae.Description})
}

// refused renders a screen again with the refusal of a service call on
// it (status of the refusal), or fails for a server fault.
func (c *Console) refused(r *request, status int, v view, err error) error {
	ae := answer(err)
	if ae.Status >= 500 {
		return c.fail(r.Context, r, err)
	}
	v.Error = ae.Description
	if status == 0 {
		status = ae.Status
	}
	return c.render(r, status, v)
}

// render writes v in the console layout.
func (c *Console) render(r *request, status int, v view) error {
	v.Product = c.d.Pages.ProductName()
	v.StyleURL = c.d.Pages.StylesheetPath()
	v.Base = c.base()
	v.CSRF = r.csrf
	v.CSRFField = pages.CSRFField
	if r.session.ID != "" {
		v.Nav = c.nav(r, v.Screen)
		v.SignedIn = true
	}
	var buf bytes.Buffer
	if err := c.tmpl.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.Error("render console page", "path", r.Path(), "err", err)
		return r.String(http.StatusInternalServerError, "The page could not be shown. Try again later.")
	}
	return r.HTMLBlob(status, buf.Bytes())
}

// navItems are the screens in the navigation, with the permission that
// shows each.
var navItems = []struct{ screen, text, perm string }{
	{"users", "Users", policy.PermUsersRead},
	{"invites", "Invites", policy.PermUsersInvite},
	{"sessions", "Sessions", policy.PermUsersRead},
	{"audit", "Audit", policy.PermAuditRead},
	{"clients", "Clients", policy.PermClientsRead},
	{"roles", "Roles", policy.PermRolesRead},
	{"keys", "Keys", policy.PermKeysRead},
}

func (c *Console) nav(r *request, current string) []navLink {
	var out []navLink
	for _, n := range navItems {
		if r.may(n.perm) {
			out = append(out, navLink{Href: c.base() + Path + "/" + n.screen, Text: n.text, Current: n.screen == current})
		}
	}
	return out
}

// answer is the answer to an error: a refusal as it is, an unreachable
// store 503 (fail closed), anything else 500 (apierr.FromStore).
func answer(err error) *apierr.Error { return apierr.From(apierr.FromStore("console", err, nil)) }

// errorStatus is the HTTP status an error answers with.
func errorStatus(err error) int { return answer(err).Status }

// errorText is the description of a refusal, for a person.
func errorText(err error) string { return answer(err).Description }
