package pages

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
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/server/config"
	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

//go:embed templates/*.html
var templateFS embed.FS

// Paths of the pages. The three emailed links (see the contract) use the
// paths of package mail.
const (
	InvitePath         = mail.InvitePath
	ResetPasswordPath  = mail.ResetPasswordPath
	VerifyEmailPath    = mail.VerifyEmailPath
	ChangePasswordPath = "/change-password"
	ForgotPasswordPath = "/forgot-password"
	// AssetsPath serves the stylesheet, under a name holding its hash.
	AssetsPath = "/pages/assets/"
)

// ContentSecurityPolicy is sent with every page: nothing but the page's own
// stylesheet and images may load, forms post only to this origin, and no
// other site may frame the page.
const ContentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

// Accounts is the account service the pages call (*accounts.Service): the
// same methods as the JSON endpoints under /auth.
type Accounts interface {
	AcceptInvite(ctx context.Context, m accounts.Meta, req accounts.AcceptInviteRequest) (token.Response, error)
	LookAtInvite(ctx context.Context, m accounts.Meta, tok string) (accounts.InviteLook, error)
	ResetPassword(ctx context.Context, m accounts.Meta, tok, newPassword string) error
	VerifyEmail(ctx context.Context, m accounts.Meta, tok string) (accounts.User, error)
	ChangePassword(ctx context.Context, actor accounts.Actor, req accounts.ChangePasswordRequest) (token.Response, error)
	ForgotPassword(ctx context.Context, m accounts.Meta, email string) error
}

// Sessions ends the session that accepting an invite or changing a password
// starts (*token.Service): a page has no client to hand its tokens to, so
// the person signs in afresh in their application.
type Sessions interface {
	AuthenticateBearer(ctx context.Context, raw string) (token.AccessClaims, error)
	Logout(ctx context.Context, c token.AccessClaims, meta token.RequestMeta) error
}

// Deps are the collaborators of the pages. Logger may be nil.
type Deps struct {
	Accounts Accounts
	Sessions Sessions
	Logger   *slog.Logger
	// SignIn serves browser sign-in (/oauth2/authorize, /login, /consent)
	// when its Flow is set.
	SignIn SignInDeps
}

// Config holds what the pages show and where they send people.
type Config struct {
	// ProductName and BrandColor brand the pages (PORTCULLIS_PRODUCT_NAME,
	// PORTCULLIS_BRAND_COLOR, #rrggbb).
	ProductName string
	BrandColor  string
	// AppURL is where people sign in after success (PORTCULLIS_APP_URL);
	// empty: the pages say to return to the application.
	AppURL string
	// PublicURL is the base of the emailed links (PORTCULLIS_PUBLIC_URL). Its
	// path, if any, prefixes every path the pages write (behind a proxy that
	// strips it), and an https URL marks cookies Secure.
	PublicURL string
	// Password length bounds shown with the password rules.
	PasswordMinLength int
	PasswordMaxLength int
	// ResetTTL is the lifetime of a reset link, shown after a request.
	ResetTTL time.Duration
	// TLS is true when the server itself terminates HTTPS.
	TLS bool
	// Issuer (PORTCULLIS_ISSUER) is the base of the callback registered at
	// upstream identity providers: {issuer}/login/{provider}/callback.
	Issuer string
	// FirstPartyClientID is the built-in client whose sign-in
	// /account/security asks for when a write of a factor needs a recent
	// one (accounts.DefaultFirstPartyClientID when empty).
	FirstPartyClientID string
}

// ConfigFrom takes the pages' settings from the server configuration.
func ConfigFrom(c config.Config) Config {
	return Config{ProductName: c.ProductName, BrandColor: c.BrandColor, AppURL: c.AppURL, PublicURL: c.PublicURL,
		PasswordMinLength: c.PasswordMinLength, PasswordMaxLength: c.PasswordMaxLength, ResetTTL: c.ResetTTL,
		TLS: c.TLSCert != "", Issuer: c.Issuer}
}

// Pages serves the hosted pages.
type Pages struct {
	cfg          Config
	d            Deps
	si           SignInDeps
	log          *slog.Logger
	tmpl         *template.Template
	theme        theme
	base         string // path prefix from PublicURL, "" or "/…" without a trailing slash
	publicOrigin string // scheme://host of PublicURL
	https        browsersession.HTTPS
}

// New checks cfg and d, parses the embedded templates and returns the pages.
func New(cfg Config, d Deps) (*Pages, error) {
	var missing []string
	if d.Accounts == nil {
		missing = append(missing, "Accounts")
	}
	if d.Sessions == nil {
		missing = append(missing, "Sessions")
	}
	if si := d.SignIn; si.Flow != nil {
		if si.Browser == nil {
			missing = append(missing, "SignIn.Browser")
		}
		if si.Checker == nil {
			missing = append(missing, "SignIn.Checker")
		}
		if si.Users == nil {
			missing = append(missing, "SignIn.Users")
		}
		if si.Ender == nil {
			missing = append(missing, "SignIn.Ender")
		}
		if si.Hints == nil {
			missing = append(missing, "SignIn.Hints")
		}
		if si.Clients == nil {
			missing = append(missing, "SignIn.Clients")
		}
		if si.MFA == nil {
			missing = append(missing, "SignIn.MFA")
		}
		if si.Security == nil {
			missing = append(missing, "SignIn.Security")
		}
		if si.Once == nil {
			missing = append(missing, "SignIn.Once")
		}
		if si.Audit == nil {
			d.SignIn.Audit = discardAudit{}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("pages: missing dependencies %v", missing)
	}
	if strings.TrimSpace(cfg.ProductName) == "" {
		cfg.ProductName = mail.DefaultProductName
	}
	if cfg.PasswordMinLength <= 0 {
		cfg.PasswordMinLength = 8
	}
	if cfg.PasswordMaxLength < cfg.PasswordMinLength {
		cfg.PasswordMaxLength = 256
	}
	if cfg.ResetTTL <= 0 {
		cfg.ResetTTL = time.Hour
	}
	tmpl, err := template.ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("pages: parse templates: %w", err)
	}
	if cfg.FirstPartyClientID == "" {
		cfg.FirstPartyClientID = accounts.DefaultFirstPartyClientID
	}
	p := &Pages{cfg: cfg, d: d, si: d.SignIn, log: d.Logger, tmpl: tmpl, theme: newTheme(cfg.BrandColor),
		https: browsersession.HTTPSFor(cfg.TLS, cfg.PublicURL)}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if cfg.PublicURL != "" {
		u, err := url.Parse(cfg.PublicURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("pages: PublicURL %q is not an absolute URL", cfg.PublicURL)
		}
		p.base = strings.TrimSuffix(u.EscapedPath(), "/")
		p.publicOrigin = u.Scheme + "://" + u.Host
	}
	return p, nil
}

// Mount builds the pages from the server configuration, registers them on
// e and returns them (the admin console reuses their headers, CSRF and
// stylesheet).
func Mount(e *echo.Echo, cfg config.Config, d Deps) (*Pages, error) {
	p, err := New(ConfigFrom(cfg), d)
	if err != nil {
		return nil, err
	}
	p.Register(e)
	return p, nil
}

// Register adds the pages' routes to e.
func (p *Pages) Register(e *echo.Echo) {
	h := p.headers
	e.GET(InvitePath, p.inviteGet, h)
	e.POST(InvitePath, p.invitePost, h)
	e.POST(InvitePath+"/:provider", p.inviteUpstreamStart, h)
	e.GET(ResetPasswordPath, p.resetGet, h)
	e.POST(ResetPasswordPath, p.resetPost, h)
	e.GET(VerifyEmailPath, p.verifyGet, h)
	e.POST(VerifyEmailPath, p.verifyPost, h)
	e.GET(ChangePasswordPath, p.changeGet, h)
	e.POST(ChangePasswordPath, p.changePost, h)
	e.GET(ForgotPasswordPath, p.forgotGet, h)
	e.POST(ForgotPasswordPath, p.forgotPost, h)
	e.GET(AssetsPath+":name", p.asset)
	if p.si.Flow != nil {
		p.registerSignIn(e)
		p.registerLogout(e)
	}
}

type discardAudit struct{}

func (discardAudit) Record(context.Context, store.AuditEvent) {}

func (discardAudit) RecordLogin(context.Context, store.AuditEvent) {}

// StylesheetPath is the path of the current stylesheet (its name changes
// with its content, so it may be cached for good).
func (p *Pages) StylesheetPath() string { return p.base + AssetsPath + p.theme.name }

// headers sets the security headers of every page and of the token redirect.
func (p *Pages) headers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		return next(c)
	}
}

// asset serves the stylesheet and the WebAuthn script; any other name is
// unknown.
func (p *Pages) asset(c echo.Context) error {
	var typ string
	var body []byte
	switch c.Param("name") {
	case p.theme.name:
		typ, body = "text/css; charset=utf-8", p.theme.css
	case webauthnScript.name:
		typ, body = "text/javascript; charset=utf-8", webauthnScript.body
	default:
		return echo.ErrNotFound
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	return c.Blob(http.StatusOK, typ, body)
}

// view is what the page template shows: a form when Submit is set, else a
// message.
type view struct {
	Product  string
	StyleURL string
	Heading  string
	// Kind colours a message: success, problem (a link that cannot be used)
	// or error.
	Kind    string
	Intro   []string
	Errors  []formError
	Fields  []field
	Submit  string
	Action  string
	CSRF    string
	Primary *link
	Links   []link
	// Browser sign-in: hidden fields, named buttons instead of Submit, the
	// client's logo, and a list (the scopes asked) with text after it.
	Hidden      []hidden
	Buttons     []button
	Logo        string
	ListHeading string
	List        []string
	After       []string
	// Account is the sessions page (/account/sessions): its lists, each
	// item with its own form.
	Account *accountView
	// Second factors: the passkey button the script drives (Script is the
	// script's URL), a TOTP enrolment's QR code and secret, recovery codes
	// shown once, and the /account/security page.
	WebAuthn  *webauthnView
	Script    string
	Enrolment *enrolmentView
	Codes     []string
	Security  *securityView
	// Providers are the login page's "sign in with" links, one per
	// upstream identity provider.
	Providers []link
	// ProviderForms are the /invite page's "Accept with" buttons: one
	// form (CSRF token, one button) per provider, posting to Href.
	ProviderForms []link
}

// hidden is a hidden form field.
type hidden struct{ Name, Value string }

// button is one of several submit buttons; Name=Value is what it submits.
type button struct {
	ID, Name, Value, Text string
	Secondary             bool
}

type link struct{ Href, Text string }

// formError is one problem with a form, tied to the field it is about (""
// for the form as a whole).
type formError struct{ Field, Message string }

// field is one input of a form.
type field struct {
	ID           string // also the form parameter name
	Label        string
	Type         string
	Autocomplete string
	Value        string // never a password
	Hint         []string
	Error        string
	Required     bool
	Plain        bool   // no spell checking or capitalisation (email addresses)
	InputMode    string // the keyboard a phone shows ("numeric" for a code)
}

// DescribedBy lists the hint and error that describe the input.
func (f field) DescribedBy() string {
	var ids []string
	if len(f.Hint) > 0 {
		ids = append(ids, f.ID+"-hint")
	}
	if f.Error != "" {
		ids = append(ids, f.ID+"-error")
	}
	return strings.Join(ids, " ")
}

// problems collects the errors of a submitted form.
type problems []formError

func (ps *problems) add(field, msg string) { *ps = append(*ps, formError{Field: field, Message: msg}) }

func (ps problems) about(field string) string {
	for _, p := range ps {
		if p.Field == field {
			return p.Message
		}
	}
	return ""
}

// withErrors ties ps to the fields of v.
func (v view) withErrors(ps problems) view {
	v.Errors = ps
	for i := range v.Fields {
		v.Fields[i].Error = ps.about(v.Fields[i].ID)
	}
	return v
}

// render writes v as a page with status.
func (p *Pages) render(c echo.Context, status int, v view) error {
	v.Product = p.cfg.ProductName
	v.StyleURL = p.StylesheetPath()
	if v.Script != "" || (v.Enrolment != nil && v.Enrolment.QR != "") {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", widenCSP(h.Get("Content-Security-Policy"), v.Script != "",
			v.Enrolment != nil && v.Enrolment.QR != ""))
	}
	var buf bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&buf, "page", v); err != nil {
		p.log.Error("render page", "path", c.Path(), "err", err)
		return c.String(http.StatusInternalServerError, "The page could not be shown. Try again later.")
	}
	return c.HTMLBlob(status, buf.Bytes())
}

// meta describes the request for audit events and throttling, its IP
// address and User-Agent as every record keeps them (store.CleanRequestMeta).
func meta(c echo.Context) accounts.Meta {
	ip, ua := store.CleanRequestMeta(c.RealIP(), c.Request().UserAgent())
	return accounts.Meta{IP: ip, UserAgent: ua}
}

// fail renders a failure that is not about the form: the rate limit, an
// unavailable backend, a server fault (logged, never shown) or an
// unexpected refusal.
func (p *Pages) fail(c echo.Context, err error) error {
	if apierr.ClientGone(c.Request().Context()) {
		return err // nobody reads the page: the server's error handler records it
	}
	ae := apierr.From(err)
	switch {
	case ae.Status == http.StatusTooManyRequests:
		wait := "a minute"
		if ae.RetryAfterSeconds > 0 {
			c.Response().Header().Set("Retry-After", strconv.Itoa(ae.RetryAfterSeconds))
			wait = mail.HumanDuration(time.Duration(ae.RetryAfterSeconds) * time.Second)
		}
		return p.render(c, http.StatusTooManyRequests, view{Kind: "error", Heading: "Too many attempts",
			Intro: []string{"For your security, this was not tried. Wait " + wait + ", then try again."}})
	case ae.Status == http.StatusRequestEntityTooLarge:
		return p.render(c, ae.Status, view{Kind: "error", Heading: "That was more than this page accepts",
			Intro: []string{"Nothing was changed. Go back, shorten what you typed, and send it again."}})
	case ae.Status >= 500:
		p.log.Error("page request failed", "path", c.Path(), "err", err,
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
		return p.render(c, ae.Status, view{Kind: "error", Heading: "Something went wrong on our side",
			Intro: []string{"It may not have been completed. Try again in a few minutes."}})
	}
	return p.render(c, ae.Status, view{Kind: "error", Heading: "This could not be done",
		Intro: []string{ae.Description}})
}

// Refuse answers err as a page answers a refusal that is not about its
// form, with the pages' headers: for the server's refusals of a page's
// request (a malformed query, a body over the limit).
func (p *Pages) Refuse(c echo.Context, err error) error {
	return p.headers(func(c echo.Context) error { return p.fail(c, err) })(c)
}

// signIn is the link to the application, when PORTCULLIS_APP_URL is set.
func (p *Pages) signIn(text string) *link {
	if p.cfg.AppURL == "" {
		return nil
	}
	return &link{Href: p.cfg.AppURL, Text: text}
}

// endSession ends the session a service call started for the person (the
// page has no application to hand its tokens to). A failure is logged: the
// unheld session expires on its own.
func (p *Pages) endSession(ctx context.Context, resp token.Response, m accounts.Meta) {
	if resp.AccessToken == "" {
		return
	}
	claims, err := p.d.Sessions.AuthenticateBearer(ctx, resp.AccessToken)
	if err == nil {
		err = p.d.Sessions.Logout(ctx, claims, token.RequestMeta{IP: m.IP, UserAgent: m.UserAgent})
	}
	if err != nil {
		p.log.Warn("end the session started by a page", "err", err)
	}
}

// passwordRules describe the rules of package policy/password for people.
func (p *Pages) passwordRules() []string {
	return []string{
		fmt.Sprintf("At least %d characters (at most %d).", p.cfg.PasswordMinLength, p.cfg.PasswordMaxLength),
		"Not a commonly used password, even with a few characters added or swapped.",
		"Not your email address, nor based on it.",
		"Not based on the name of this service.",
		"Not one character or a short pattern repeated (aaaaaaaa), nor a simple sequence (12345678).",
		"Tip: a few unrelated words make a strong password that is easy to remember.",
	}
}

// newPasswordFields are the fields choosing a new password.
func (p *Pages) newPasswordFields() []field {
	return []field{
		{ID: "password", Label: "New password", Type: "password", Autocomplete: "new-password", Required: true,
			Hint: p.passwordRules()},
		{ID: "confirm_password", Label: "Confirm new password", Type: "password", Autocomplete: "new-password",
			Required: true, Hint: []string{"Type the same password again."}},
	}
}

// checkNewPassword checks what the form itself can: both copies given and
// equal. The rules are the service's to apply.
func checkNewPassword(ps *problems, pw, confirm string) {
	switch {
	case pw == "":
		ps.add("password", "Enter a new password.")
	case confirm == "":
		ps.add("confirm_password", "Type the new password again to confirm it.")
	case pw != confirm:
		ps.add("confirm_password", "The two passwords do not match. Type the same password in both fields.")
	}
}

// is reports whether err is the answer sentinel.
func is(err error, sentinel *apierr.Error) bool { return errors.Is(err, sentinel) }
