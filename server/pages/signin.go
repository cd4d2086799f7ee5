package pages

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/authorize"
	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/store"
)

// Paths of browser sign-in.
const (
	AuthorizePath = "/oauth2/authorize"
	LoginPath     = "/login"
	ConsentPath   = "/consent"
)

// Form fields of browser sign-in (the contract's automation hooks).
const (
	// requestField carries the pending authorization request's id (and
	// the held logout request's, at /logout).
	requestField = "request"
	// stepField tells the forms posted to /login apart: the login form (no
	// step), the account chooser and the change-password step.
	stepField          = "step"
	stepSelectAccount  = "select_account"
	stepChangePassword = "change_password"
	decisionField      = "decision"
)

// Done is what the person just did, for Flow.Proceed.
type Done int

// What the person did.
const (
	// DoneNothing: the request is (re)opened; nothing new happened.
	DoneNothing Done = iota
	// DoneLogin: the person signed in during this request (a fresh
	// authentication: it satisfies prompt=login, max_age, select_account).
	DoneLogin
	// DoneAccountChosen: "Continue as X" on the account chooser.
	DoneAccountChosen
	// DoneConsent: the person allowed the client on the consent page.
	DoneConsent
	// DoneDeny: the person refused (access_denied to the client).
	DoneDeny
	// DonePasswordChanged: the person changed a temporary password on the
	// change-password step of this request. It answers a page of the
	// request (the account counts as chosen) but is no login: the new
	// session's auth_time and amr say what it satisfies.
	DonePasswordChanged
)

// StepKind is what the browser is shown next.
type StepKind int

// Steps of browser sign-in.
const (
	// StepLogin shows the login form.
	StepLogin StepKind = iota + 1
	// StepSelectAccount shows "Continue as X / Use another account".
	StepSelectAccount
	// StepChangePassword shows the change-password step (the user must
	// change a temporary password before going on).
	StepChangePassword
	// StepConsent shows the consent page.
	StepConsent
	// StepRedirect answers 303 to Location (a code or an error, with iss).
	StepRedirect
	// StepFormPost answers the self-submitting form_post document.
	StepFormPost
	// StepError answers the HTML error page (400): the request cannot be
	// answered at any redirect URI.
	StepError
)

// Client is what the pages show of the client asking.
type Client struct {
	ID, Name  string
	LogoURI   string // https, registered by an administrator; may be ""
	ClientURI string
}

// Pending is a pending authorization request as the pages show it.
type Pending struct {
	ID     string
	Client Client
	// Scopes are the scopes asked for (consent lists them).
	Scopes []string
	// RedirectURI is the validated redirect URI; its origin is added to the
	// form-action of the pages (Chrome applies form-action to the 303 that
	// follows a form POST).
	RedirectURI string
	// LoginHint pre-fills the login form.
	LoginHint string
	// Freshness is the request's prompt=login and max_age, which a sign-in
	// through an identity provider passes on to it and checks.
	Freshness upstream.Freshness
	// Tenant is the organisation the request names ("": none): the second
	// step a login owes is decided with the roles held there.
	Tenant string
}

// Step is what the flow decided: a page to show or an answer to send.
type Step struct {
	Kind    StepKind
	Request Pending
	// Location is the URL of a StepRedirect.
	Location string
	// FormPost is the document of a StepFormPost and CSP its policy
	// (server/authorize builds both: only the document's script, by hash,
	// may run, and the form may post only to the redirect URI's origin).
	FormPost []byte
	CSP      string
	// Message says, on a StepError page, what is wrong (for a person, no
	// secret); Status is its HTTP status (400 when 0) and Heading its title
	// (a generic one when "").
	Message string
	Status  int
	Heading string
}

// Flow is the authorization request machinery (server/authorize) as the
// pages see it: they render steps and never decide them.
type Flow interface {
	// Authorize validates the authorization request r (GET query or POST
	// form, in the contract's order) and stores it as pending. It returns
	// the pending request's id, or the Step that ends the request at once
	// (the error page, or an error delivered to the redirect URI).
	// m is the caller's (its address counts the records it makes keep).
	Authorize(ctx context.Context, r *http.Request, m accounts.Meta) (id string, stop *Step, err error)
	// AuthorizeNow validates the authorization request r and decides it at
	// once with the browser session bs (nil: none): a request the session
	// answers (single sign-on, prompt=none's errors) is answered without a
	// pending request being stored; one that needs a page is stored and its
	// page step returned.
	AuthorizeNow(ctx context.Context, r *http.Request, bs *store.BrowserSession, m accounts.Meta) (Step, error)
	// Proceed decides what comes next for the pending request id, given the
	// browser session (nil: none) and what the person just did. A request
	// that expired or was completed answers its own Step (access_denied
	// with its state, or the error page).
	Proceed(ctx context.Context, id string, bs *store.BrowserSession, done Done, m accounts.Meta) (Step, error)
	// Lookup returns the pending request id for a page, deciding nothing. A
	// request that expired or was completed answers its Step instead.
	Lookup(ctx context.Context, id string) (Pending, *Step, error)
	// PasswordChange looks up the pending request id for a post of the
	// change-password step with the browser session bs (nil: none),
	// deciding nothing: whether the step is due, and whether bs's login
	// happened during the request. A request that expired or was completed
	// answers its Step instead.
	PasswordChange(ctx context.Context, id string, bs *store.BrowserSession) (PasswordChange, *Step, error)
}

// PasswordChange is what Flow.PasswordChange finds for a post of the
// change-password step.
type PasswordChange struct {
	// Request is the pending request as the pages show it.
	Request Pending
	// Due: with this browser session the request is at the change-password
	// step, as authorize.Decide decides it: a live session whose user must
	// change the password, signed in recently enough for the request's
	// prompt=login and max_age, of the user its id_token_hint names. The
	// step is refused otherwise.
	Due bool
	// SignedInDuring: the session's login happened during the request (the
	// login the step completes), so that login's amr describes the session
	// the step starts.
	SignedInDuring bool
}

// BrowserSessions starts, finds and ends browser sessions (*browsersession.Manager).
type BrowserSessions interface {
	Start(ctx context.Context, s browsersession.Start, secure bool) (store.BrowserSession, *http.Cookie, error)
	Find(ctx context.Context, r *http.Request, secure bool) (store.BrowserSession, error)
	End(ctx context.Context, id string) ([]store.SessionGrant, error)
	Grants(ctx context.Context, bs store.BrowserSession) ([]store.SessionGrant, error)
}

// PasswordChecker is the one password check (*passcheck.Checker), shared
// with the password grant.
type PasswordChecker interface {
	Check(ctx context.Context, a passcheck.Attempt) (passcheck.Result, error)
	// Succeeded clears the account's throttle failures after a check made
	// with DeferSuccess, once the login needs nothing more.
	Succeeded(ctx context.Context, r passcheck.Result)
}

// Users reads users (*sqlstore.Store).
type Users interface {
	GetUser(ctx context.Context, id string) (store.User, error)
}

// Logins gives a user the roles a login through a client naming an
// organisation would carry (*token.Service.LoginUser), so that the second
// step is decided with the roles the code's tokens will hold.
type Logins interface {
	LoginUser(ctx context.Context, clientID string, u store.User, tenant string) (store.User, error)
}

// Rehasher upgrades an outdated password hash after a successful password
// check (*token.Service, the password grant's upgrade): only when
// res.NeedsRehash, and only over the hash res verified, so a password
// changed meanwhile is never put back.
type Rehasher interface {
	Rehash(ctx context.Context, res passcheck.Result, password string)
}

// Auditor records security-relevant events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
	// RecordLogin records a successful login: e is its login.succeeded
	// event, e.Time the login's time and e.TargetID the user, whose
	// last-login time it sets in the same write.
	RecordLogin(ctx context.Context, e store.AuditEvent)
}

// SignInDeps are the collaborators of browser sign-in. When Flow is nil,
// the sign-in pages are not served.
type SignInDeps struct {
	Flow     Flow
	Browser  BrowserSessions
	Checker  PasswordChecker
	Users    Users
	Audit    Auditor
	Rehasher Rehasher // may be nil: hashes are then upgraded at the next password grant
	// Logins applies the organisation a request names to the user whose
	// second step is decided; nil: the user's roles as read (organisations
	// off).
	Logins   Logins
	Now      func() time.Time
	Accounts Accounts // ChangePassword of the change-password step; Deps.Accounts when nil
	// Signing out: id_token_hint checks, clients' post-logout URIs and the
	// one routine that ends a browser session (also at a login as someone
	// else).
	Hints   HintParser
	Clients ClientReader
	Ender   SessionEnder
	// Views serves /account/sessions when set.
	Views SessionViews
	// MFA is the login page's second step (required: a login page
	// without it would skip a user's second factor). Passkeys adds the
	// WebAuthn prompt to it and the passkey forms to /account/security;
	// nil: no passkeys.
	MFA      MFA
	Passkeys Passkeys
	// Security is the account service's second-factor operations: it
	// serves /account/security and the enrolment step of the login page
	// (required).
	Security SecurityAccounts
	// Upstream adds a button per identity provider to the login page and
	// serves /login/{provider} and its callback; nil: no providers.
	Upstream Upstream
	// Once keeps the logout requests POSTed to /oauth2/logout until the
	// browser's GET (required), and the confirm-link page's record.
	Once store.SingleUse
	// Pending counts each logout request held for a caller's address
	// (*ratelimit.Limiter; nil: no limit).
	Pending PendingLimiter
}

// PendingLimiter bounds the records of interactive state kept for one
// client address (*ratelimit.Limiter.AllowPending): 429 past its budget.
// A nil *ratelimit.Limiter (rate limits off) allows everything.
type PendingLimiter interface {
	AllowPending(ctx context.Context, ip string) error
}

// badLogin answers a wrong password, an unknown login and a deactivated
// account alike on the login page.
const badLogin = "The email address or password is incorrect."

// registerSignIn adds the routes of browser sign-in.
func (p *Pages) registerSignIn(e *echo.Echo) {
	h := p.headers
	e.GET(AuthorizePath, p.authorize, h)
	e.POST(AuthorizePath, p.authorize, h)
	e.GET(LoginPath, p.resume, h)
	e.POST(LoginPath, p.loginPost, h)
	e.GET(ConsentPath, p.resume, h)
	e.POST(ConsentPath, p.consentPost, h)
	if p.si.Views != nil {
		e.GET(AccountSessionsPath, p.accountSessions, h)
		e.POST(AccountSessionsPath, p.accountSessionsPost, h)
	}
	e.GET(AccountSecurityPath, p.accountSecurity, h)
	e.POST(AccountSecurityPath, p.accountSecurityPost, h)
	e.GET(AccountSecuritySignedInPath, p.accountSecuritySignedIn, h)
	p.registerUpstream(e)
}

// flowCSP is the policy of the pages of the flow: the strict page policy,
// with the validated redirect URI's origin added to form-action (the 303
// after a form POST is subject to it) and the client's logo origin to
// img-src.
func flowCSP(redirectURI, logoURI string) string {
	formAction := "'self'"
	if o := formOrigin(redirectURI); o != "" {
		formAction += " " + o
	}
	img := "'self'"
	if o := redirecturi.Origin(logoURI); strings.HasPrefix(o, "https://") {
		img += " " + o
	}
	return "default-src 'none'; style-src 'self'; img-src " + img + "; form-action " + formAction +
		"; frame-ancestors 'none'; base-uri 'none'"
}

// formOrigin is the form-action source of a redirect URI
// (authorize.FormAction: its origin, or "scheme:" for a private-use
// scheme); "" when it has none.
func formOrigin(raw string) string {
	if raw == "" {
		return ""
	}
	if o := authorize.FormAction(raw); o != "'none'" {
		return o
	}
	return ""
}

// noScriptCSP answers a form_post document that came without its policy:
// nothing runs, nothing is sent (fail closed).
const noScriptCSP = "default-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// sessionOf returns the browser session of the request, nil when there is
// none. A token state that cannot answer is an error: the caller fails
// closed rather than treat the browser as signed out.
func (p *Pages) sessionOf(c echo.Context) (*store.BrowserSession, error) {
	bs, err := p.si.Browser.Find(c.Request().Context(), c.Request(), p.secure(c))
	switch {
	case errors.Is(err, browsersession.ErrNoSession):
		return nil, nil
	case err != nil:
		return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	return &bs, nil
}

// authorize is GET and POST /oauth2/authorize. A GET is decided at once
// with the browser's session (single sign-on stores no pending request). A
// POST from another site carries no SameSite=Lax cookie, so it is stored
// and answered with a 303 to the same-site GET /login?request=…, which sees
// the session (SSO works for POSTed requests too).
func (p *Pages) authorize(c echo.Context) error {
	ctx := c.Request().Context()
	if c.Request().Method != http.MethodPost {
		bs, err := p.sessionOf(c)
		if err != nil {
			return p.fail(c, err)
		}
		step, err := p.si.Flow.AuthorizeNow(ctx, c.Request(), bs, meta(c))
		if err != nil {
			return p.fail(c, err)
		}
		return p.respond(c, step, bs)
	}
	id, stop, err := p.si.Flow.Authorize(ctx, c.Request(), meta(c))
	if err != nil {
		return p.fail(c, err)
	}
	if stop != nil {
		return p.respond(c, *stop, nil)
	}
	return p.toSameSiteGet(c, LoginPath, id)
}

// toSameSiteGet answers a POST that may come from another site, whose
// request was stored under id (the authorization endpoint's, the
// end_session_endpoint's): a 303 to this server's GET path?request=id. The
// browser leaves its SameSite=Lax session cookie off a cross-site POST but
// sends it with that GET, so the request is decided only there, with the
// session.
func (p *Pages) toSameSiteGet(c echo.Context, path, id string) error {
	return p.redirect(c, p.base+path+"?"+url.Values{requestField: {id}}.Encode())
}

// resume is GET /login?request=… and GET /consent?request=…: the pending
// request continues with the browser's session (SSO after a POSTed
// request, a reloaded page, the back button).
func (p *Pages) resume(c echo.Context) error {
	id := c.QueryParam(requestField)
	if id == "" {
		return p.noRequest(c)
	}
	return p.proceed(c, id, DoneNothing)
}

// proceed asks the flow for the next step of request id and answers it.
func (p *Pages) proceed(c echo.Context, id string, done Done) error {
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	return p.proceedWith(c, id, bs, done)
}

func (p *Pages) proceedWith(c echo.Context, id string, bs *store.BrowserSession, done Done) error {
	step, err := p.si.Flow.Proceed(c.Request().Context(), id, bs, done, meta(c))
	if err != nil {
		return p.fail(c, err)
	}
	return p.respond(c, step, bs)
}

// respond answers a step: a page of the flow, a redirect or the form_post
// document.
func (p *Pages) respond(c echo.Context, s Step, bs *store.BrowserSession) error {
	h := c.Response().Header()
	h.Set("Content-Security-Policy", flowCSP(s.Request.RedirectURI, s.Request.Client.LogoURI))
	switch s.Kind {
	case StepRedirect:
		return p.redirect(c, s.Location)
	case StepFormPost:
		csp := s.CSP
		if csp == "" {
			csp = noScriptCSP
		}
		h.Set("Content-Security-Policy", csp)
		return c.HTMLBlob(http.StatusOK, s.FormPost)
	case StepError:
		return p.errorPage(c, s)
	case StepLogin:
		return p.loginForm(c, http.StatusOK, s.Request, s.Request.LoginHint, nil)
	case StepSelectAccount:
		if bs == nil {
			return p.loginForm(c, http.StatusOK, s.Request, s.Request.LoginHint, nil)
		}
		return p.chooser(c, s.Request, bs)
	case StepChangePassword:
		return p.changeStep(c, http.StatusOK, s.Request, nil)
	case StepConsent:
		return p.consentForm(c, s.Request)
	}
	return p.fail(c, apierr.ErrServer.WithCause(fmt.Errorf("unknown sign-in step %d", s.Kind)))
}

// redirect answers 303 See Other (never 307: the POST that led here carried
// a password, RFC 9700 §4.12).
func (p *Pages) redirect(c echo.Context, location string) error {
	c.Response().Header().Set(echo.HeaderLocation, location)
	return c.NoContent(http.StatusSeeOther)
}

// errorPage is the HTML error page of an authorization request that cannot
// be answered at a redirect URI (a repeated parameter, an unknown client, a
// redirect URI that is not registered): 400 unless the step says
// otherwise, never a redirect. A step with a heading and a 2xx status is a
// message ("You are signed in").
func (p *Pages) errorPage(c echo.Context, s Step) error {
	status := s.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	if status < 300 {
		return p.render(c, status, view{Kind: "success", Heading: s.Heading, Intro: []string{s.Message},
			Primary: p.signIn("Go to the application")})
	}
	if status >= 500 {
		return p.render(c, status, view{Kind: "error", Heading: "Something went wrong on our side",
			Intro: []string{"Signing in could not go on. Try again in a few minutes."}})
	}
	intro := []string{}
	if s.Message != "" {
		intro = append(intro, s.Message)
	}
	intro = append(intro, "The application that sent you here made a request that cannot be answered, so you have not been sent back to it. Go back to the application and try again; if this happens again, tell its administrator.")
	heading := s.Heading
	if heading == "" {
		heading = "This sign-in request is not valid"
	}
	return p.render(c, status, view{Kind: "error", Heading: heading, Intro: intro, Primary: p.signIn("Go to the application")})
}

// noRequest answers /login or /consent opened without a pending request.
func (p *Pages) noRequest(c echo.Context) error {
	return p.render(c, http.StatusBadRequest, view{Kind: "problem", Heading: "Start from your application",
		Intro:   []string{"Sign-in starts in the application you want to use: go back to it and choose to sign in there."},
		Primary: p.signIn("Go to the application")})
}

// ---- the login form ----

func (p *Pages) loginView(pr Pending, login string) view {
	heading := "Sign in"
	intro := []string{}
	if pr.Client.Name != "" {
		heading = "Sign in to continue to " + pr.Client.Name
	}
	return view{Heading: heading, Submit: "Sign in", Intro: intro,
		Hidden: []hidden{{Name: requestField, Value: pr.ID}},
		Fields: []field{
			{ID: "username", Label: "Email address", Type: "text", Autocomplete: "username", Value: login,
				Required: true, Plain: true},
			{ID: "password", Label: "Password", Type: "password", Autocomplete: "current-password", Required: true},
			{ID: "remember", Label: "Keep me signed in", Type: "checkbox",
				Hint: []string{"Only on a device you do not share. Otherwise you are signed out when you close the browser."}},
		},
		Links:     []link{{Href: p.base + ForgotPasswordPath, Text: "Forgotten your password?"}},
		Providers: p.providerLinks(pr)}
}

func (p *Pages) loginForm(c echo.Context, status int, pr Pending, login string, ps problems) error {
	v := p.loginView(pr, login)
	if len(ps) > 0 {
		v = v.withErrors(ps)
	}
	return p.renderForm(c, status, v, LoginPath)
}

// loginPost is POST /login: the login form, the account chooser and the
// change-password step, told apart by the hidden step field.
func (p *Pages) loginPost(c echo.Context) error {
	r := c.Request()
	id := r.PostFormValue(requestField)
	if !p.checkCSRF(c) {
		return p.refuseFlowCSRF(c, id)
	}
	if id == "" {
		return p.noRequest(c)
	}
	switch r.PostFormValue(stepField) {
	case stepSelectAccount:
		return p.choose(c, id)
	case stepChangePassword:
		return p.changeStepPost(c, id)
	case stepMFA:
		return p.mfaPost(c, id)
	case stepMFAEnrol:
		return p.enrolPost(c, id)
	case stepLink:
		return p.linkPost(c, id)
	}
	return p.login(c, id)
}

// refuseFlowCSRF answers a form of the flow that failed the CSRF check: the
// person reopens the request (its pending id is not secret from them).
func (p *Pages) refuseFlowCSRF(c echo.Context, id string) error {
	again := &link{Href: p.base + LoginPath, Text: "Open the form again"}
	if id != "" {
		again.Href += "?" + url.Values{requestField: {id}}.Encode()
	}
	return p.render(c, http.StatusForbidden, view{Kind: "error", Heading: "This form has expired",
		Intro: []string{"For your security, the form was not accepted: it was open too long, or it was not sent from this page. Nothing was changed.",
			"Open the form again and send it from there."},
		Primary: again})
}

// pendingPage looks up the pending request a form of the flow posts to. When
// the request cannot go on (expired, done, unknown) or the lookup fails, it
// answers and reports answered; else it sets the flow's CSP for pr's
// redirect URI and the handler goes on with pr.
func (p *Pages) pendingPage(c echo.Context, id string, bs *store.BrowserSession) (pr Pending, answered bool, err error) {
	pr, stop, err := p.si.Flow.Lookup(c.Request().Context(), id)
	if err != nil {
		return pr, true, p.fail(c, err)
	}
	if stop != nil {
		return pr, true, p.respond(c, *stop, bs)
	}
	c.Response().Header().Set("Content-Security-Policy", flowCSP(pr.RedirectURI, pr.Client.LogoURI))
	return pr, false, nil
}

// login checks the login form through the one password check (the
// password grant's throttle, equal-time unknown accounts and audit), ends
// the browser's old session, starts a new one under a new cookie and
// proceeds (or shows the change-password step for a temporary password).
func (p *Pages) login(c echo.Context, id string) error {
	r := c.Request()
	ctx, m := r.Context(), meta(c)
	old, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	pr, answered, err := p.pendingPage(c, id, old)
	if answered {
		return err
	}
	login, pw := strings.TrimSpace(r.PostFormValue("username")), r.PostFormValue("password")
	var ps problems
	if login == "" {
		ps.add("username", "Enter your email address.")
	}
	if pw == "" {
		ps.add("password", "Enter your password.")
	}
	if len(ps) > 0 {
		return p.loginForm(c, http.StatusBadRequest, pr, login, ps)
	}
	now := p.now()
	res, err := p.si.Checker.Check(ctx, passcheck.Attempt{Login: login, Password: pw, IP: m.IP, UserAgent: m.UserAgent,
		ClientID: pr.Client.ID, FailureAction: "login.failed", Method: "page", DeferSuccess: true})
	switch {
	case errors.Is(err, passcheck.ErrBadCredentials):
		ps.add("password", badLogin)
		return p.loginForm(c, http.StatusBadRequest, pr, login, ps)
	case err != nil:
		return p.fail(c, err)
	}
	u := res.User
	if p.si.Rehasher != nil {
		p.si.Rehasher.Rehash(ctx, res, pw)
	}
	remember := r.PostFormValue(rememberField) != ""
	// A correct password clears the account's throttle failures only when
	// no second step follows (else each new mfa_token would bring fresh
	// guesses); a completed second step clears them itself.
	if handled, err := p.beginMFA(c, pr, res, now, remember); handled {
		return err
	}
	p.si.Checker.Succeeded(ctx, res)
	return p.finishLogin(c, old, pr, u, now, []string{mfa.AMRPassword}, remember)
}

// startSession ends the browser's old session (signing in, as another user
// or again, never keeps the old cookie value: no session fixation), starts
// a new one and sets its cookie. A login as someone else ends the old
// session through the one routine (its grants end, back-channel logout is
// sent); a new login of the same person carries the old session's grants
// into the new one, so signing out later still ends them, and continues
// its lineage, so their refresh families go on. It records
// session.started.
func (p *Pages) startSession(c echo.Context, old *store.BrowserSession, userID string, authTime time.Time,
	amr []string, remember bool, clientID string) (*store.BrowserSession, error) {
	ctx, m := c.Request().Context(), meta(c)
	m.ClientID = clientID
	var clientIDs []string
	var grants []store.SessionGrant
	var lineage string
	switch {
	case old == nil:
	case old.UserID != userID:
		if err := p.si.Ender.End(ctx, *old, signout.Reason{Why: signout.WhyAnotherUser, ActorID: userID, Meta: m}); err != nil {
			return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
		}
	default:
		held, err := p.si.Browser.End(ctx, old.ID)
		if err != nil {
			return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
		}
		clientIDs, grants = signout.CarryGrants(old.ClientIDs, held)
		// The new session continues the old one's lineage, to which the
		// refresh families of the carried grants are bound.
		lineage = old.Lineage
		p.si.Audit.Record(ctx, store.AuditEvent{Action: "session.ended", Outcome: store.OutcomeSuccess, ActorID: userID,
			TargetID: old.UserID, ClientID: clientID, IP: m.IP, UserAgent: m.UserAgent,
			Details: map[string]string{"sid": old.ID, "reason": signout.WhyLogin, "kind": "browser"}})
	}
	bs, ck, err := p.si.Browser.Start(ctx, browsersession.Start{UserID: userID, AuthTime: authTime, AMR: amr,
		Remember: remember, IP: m.IP, UserAgent: m.UserAgent, ClientIDs: clientIDs, Grants: grants, Lineage: lineage}, p.secure(c))
	if err != nil {
		return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	c.SetCookie(ck)
	p.si.Audit.Record(ctx, store.AuditEvent{Action: "session.started", Outcome: store.OutcomeSuccess, ActorID: userID,
		TargetID: userID, ClientID: clientID, IP: m.IP, UserAgent: m.UserAgent,
		Details: map[string]string{"sid": bs.ID, "method": "page"}})
	return &bs, nil
}

func (p *Pages) now() time.Time {
	if p.si.Now != nil {
		return p.si.Now()
	}
	return time.Now()
}

// ---- select account ----

// chooser shows "Continue as X / Use another account".
func (p *Pages) chooser(c echo.Context, pr Pending, bs *store.BrowserSession) error {
	u, err := p.si.Users.GetUser(c.Request().Context(), bs.UserID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return p.loginForm(c, http.StatusOK, pr, "", nil)
		}
		return p.fail(c, apierr.ErrTemporarilyUnavailable.WithCause(err))
	}
	who := u.Email
	if u.Name != "" {
		who = u.Name + " (" + u.Email + ")"
	}
	heading := "Choose an account"
	if pr.Client.Name != "" {
		heading += " to continue to " + pr.Client.Name
	}
	return p.renderForm(c, http.StatusOK, view{Heading: heading,
		Intro:  []string{"You are signed in as " + who + "."},
		Hidden: []hidden{{Name: requestField, Value: pr.ID}, {Name: stepField, Value: stepSelectAccount}},
		Buttons: []button{
			{ID: "continue", Name: decisionField, Value: "continue", Text: "Continue as " + u.Email},
			{ID: "switch", Name: decisionField, Value: "switch", Text: "Use another account", Secondary: true},
		}}, LoginPath)
}

// choose answers the account chooser.
func (p *Pages) choose(c echo.Context, id string) error {
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	if c.Request().PostFormValue(decisionField) == "continue" && bs != nil {
		return p.proceedWith(c, id, bs, DoneAccountChosen)
	}
	pr, answered, err := p.pendingPage(c, id, bs)
	if answered {
		return err
	}
	return p.loginForm(c, http.StatusOK, pr, "", nil)
}

// ---- the change-password step ----

func (p *Pages) changeStepView(pr Pending) view {
	return view{Heading: "Choose a new password", Submit: "Change my password and continue",
		Intro:  []string{"You signed in with a temporary password. Choose your own password to continue."},
		Hidden: []hidden{{Name: requestField, Value: pr.ID}, {Name: stepField, Value: stepChangePassword}},
		Fields: append([]field{
			{ID: "current_password", Label: "Temporary password", Type: "password", Autocomplete: "current-password",
				Required: true, Hint: []string{"The password you just signed in with."}},
		}, p.newPasswordFields()...)}
}

func (p *Pages) changeStep(c echo.Context, status int, pr Pending, ps problems) error {
	v := p.changeStepView(pr)
	if len(ps) > 0 {
		v = v.withErrors(ps)
	}
	return p.renderForm(c, status, v, LoginPath)
}

// changeStepPost changes the temporary password of the session's user
// through the same ChangePassword as POST /auth/password/change (the
// current password goes through the one password check), only while the
// request is at the change-password step with this session
// (Flow.PasswordChange): a post of the step without a session, by a user
// who has no temporary password, or to a request that asks for a fresh
// login first (prompt=login, max_age) gets the login form and changes
// nothing.
//
// Changing the password ends every session of the user, this browser
// session included, so a new one is started. The step is no login: the
// new session's auth_time is the change's (after the cut-off the change
// made, or its codes would be void), and its amr is the session's only
// when that login happened during this request (the step completes it),
// else the password the step itself proved, never an older session's
// factors under a new auth_time.
func (p *Pages) changeStepPost(c echo.Context, id string) error {
	r := c.Request()
	ctx, m := r.Context(), meta(c)
	bs, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	pc, stop, err := p.si.Flow.PasswordChange(ctx, id, bs)
	switch {
	case err != nil:
		return p.fail(c, err)
	case stop != nil:
		return p.respond(c, *stop, bs)
	}
	pr := pc.Request
	c.Response().Header().Set("Content-Security-Policy", flowCSP(pr.RedirectURI, pr.Client.LogoURI))
	if bs == nil || !pc.Due {
		return p.loginForm(c, http.StatusOK, pr, "", nil)
	}
	current, pw := r.PostFormValue("current_password"), r.PostFormValue("password")
	var ps problems
	if current == "" {
		ps.add("current_password", "Enter the temporary password you signed in with.")
	}
	checkNewPassword(&ps, pw, r.PostFormValue("confirm_password"))
	if len(ps) > 0 {
		return p.changeStep(c, http.StatusBadRequest, pr, ps)
	}
	resp, err := p.accounts().ChangePassword(ctx, accounts.Actor{ID: bs.UserID, Meta: m},
		accounts.ChangePasswordRequest{CurrentPassword: current, NewPassword: pw})
	switch {
	case err == nil:
	case is(err, apierr.ErrMFARequired):
		// Changed; the account's roles need a second factor, so the change
		// started no session. The browser session below is the page's, and
		// Decide asks for that factor before any code of those roles.
	case is(err, apierr.ErrInvalidGrant):
		ps.add("current_password", "The temporary password is incorrect.")
		return p.changeStep(c, http.StatusBadRequest, pr, ps)
	case is(err, accounts.ErrWeakPassword), is(err, apierr.ErrInvalidRequest):
		ps.add("password", apierr.From(err).Description)
		return p.changeStep(c, http.StatusBadRequest, pr, ps)
	default:
		return p.fail(c, err)
	}
	p.endSession(ctx, resp, m) // the page has no application to hand these tokens to
	amr := []string{mfa.AMRPassword}
	if pc.SignedInDuring {
		amr = bs.AMR
	}
	next, err := p.startSession(c, bs, bs.UserID, p.now(), amr, bs.Remember, pr.Client.ID)
	if err != nil {
		return p.fail(c, err)
	}
	return p.proceedWith(c, id, next, DonePasswordChanged)
}

func (p *Pages) accounts() Accounts {
	if p.si.Accounts != nil {
		return p.si.Accounts
	}
	return p.d.Accounts
}

// ---- consent ----

// identityText is the first line of every consent: what any access token of
// the person lets an application read at /userinfo, whatever scopes it
// asked for (../shared/CONTRACT.md: /userinfo returns sub, email,
// email_verified and roles to any valid access token of a user; the name
// too). The openid, profile and email scopes add nothing to it, so they
// get no line of their own: the page never promises less than the
// application will see.
const identityText = "Know who you are: your account's identifier, your name, your email address and whether it is confirmed, and your roles"

// scopeText describes the scopes beside permissions for people; a
// permission is shown by its name; an empty text shows no line.
var scopeText = map[string]string{
	"openid":         "",
	"profile":        "",
	"email":          "",
	"offline_access": "Stay connected when you are not using it",
}

// consentList is what the consent page says an application asking for
// scopes will be able to do.
func consentList(scopes []string) []string {
	list := []string{identityText}
	for _, s := range scopes {
		t, ok := scopeText[s]
		switch {
		case !ok:
			list = append(list, "Use the permission "+s)
		case t != "":
			list = append(list, t)
		}
	}
	return list
}

func (p *Pages) consentForm(c echo.Context, pr Pending) error {
	name := pr.Client.Name
	if name == "" {
		name = pr.Client.ID
	}
	list := consentList(pr.Scopes)
	v := view{Heading: name + " wants to access your account", Logo: pr.Client.LogoURI,
		Intro:       []string{"Allow " + name + " to act on your behalf, as listed below?"},
		ListHeading: name + " will be able to:", List: list,
		After:  []string{"You can withdraw this permission at any time."},
		Hidden: []hidden{{Name: requestField, Value: pr.ID}},
		Buttons: []button{
			{ID: "allow", Name: decisionField, Value: "allow", Text: "Allow"},
			{ID: "deny", Name: decisionField, Value: "deny", Text: "Deny", Secondary: true},
		}}
	if pr.Client.ClientURI != "" && strings.HasPrefix(pr.Client.ClientURI, "https://") {
		v.Links = []link{{Href: pr.Client.ClientURI, Text: "About " + name}}
	}
	return p.renderForm(c, http.StatusOK, v, ConsentPath)
}

// consentPost is POST /consent: "allow" or "deny", all or nothing.
func (p *Pages) consentPost(c echo.Context) error {
	r := c.Request()
	id := r.PostFormValue(requestField)
	if !p.checkCSRF(c) {
		return p.refuseFlowCSRF(c, id)
	}
	if id == "" {
		return p.noRequest(c)
	}
	done := DoneNothing
	switch r.PostFormValue(decisionField) {
	case "allow":
		done = DoneConsent
	case "deny":
		done = DoneDeny
	}
	return p.proceed(c, id, done)
}
