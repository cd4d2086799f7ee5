package pages

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/store"
)

// Upstream is sign-in through upstream identity providers
// (*upstream.Service): the pages keep none of its rules (state, nonce,
// verification, linking); they carry the person between its steps.
type Upstream interface {
	Providers() *upstream.Providers
	Begin(ctx context.Context, providerID, callbackURL string, fresh upstream.Freshness, ret []byte) (string, error)
	Callback(ctx context.Context, providerID string, q url.Values, m upstream.Meta) (upstream.Verified, error)
	SignIn(ctx context.Context, in upstream.Input, m upstream.Meta) (store.User, upstream.Decision, error)
	NeedsSecondFactor(ctx context.Context, u store.User, amr []string) (bool, error)
	LinkConfirmed(ctx context.Context, p *upstream.Provider, c upstream.Claims, userID string, m upstream.Meta) (store.User, error)
	RecordRefusal(ctx context.Context, m upstream.Meta, providerID string, err error) error
	AcceptInvite(ctx context.Context, v upstream.Verified, invite accounts.InviteRef, m upstream.Meta) (store.User, upstream.Decision, error)
}

// Steps and fields of upstream sign-in on the login page.
const (
	// stepLink is the confirm-link page's form (posted to /login).
	stepLink = "upstream_link"
	// linkField carries the confirm-link record's handle.
	linkField = "link"
	// upstreamCallback is the path after /login/{provider}.
	upstreamCallback = "/callback"
)

// linkTTL bounds the confirm-link page (and the second step that may
// follow it).
const linkTTL = 10 * time.Minute

// upstreamReturn is what the pages give Begin as ret: the pending
// authorization request the sign-in continues.
type upstreamReturn struct {
	Request string `json:"r"`
	// Browser is the SHA-256 of the browser's CSRF cookie when the
	// sign-in began: the callback is accepted only in that browser (RFC
	// 6749 §10.12), so a provider's answer for someone else's sign-in,
	// sent to a victim, signs nobody in there.
	Browser []byte `json:"b"`
	// Invite names the invite of a sign-in begun on the /invite page
	// (upstream_invite.go) as the invites table does, by its id and the
	// hash of its token's secret: the token itself is never kept here, so
	// whoever reads the token state (a replica, a backup) gets no invite to
	// accept.
	Invite *accounts.InviteRef `json:"j,omitempty"`
	// OlderInvite is the raw invite token a record written by the previous
	// release holds (a sign-in begun before a rolling upgrade, for at most
	// upstream.LoginTTL): read, turned into an InviteRef (invite), never
	// written. It can go once no instance of that release runs.
	OlderInvite string `json:"i,omitempty"`
}

// invite is the invite a sign-in begun on the /invite page accepts, ok
// false for a sign-in of an authorization request.
func (r upstreamReturn) invite() (ref accounts.InviteRef, ok bool) {
	switch {
	case r.Invite != nil:
		return *r.Invite, true
	case r.OlderInvite != "":
		return accounts.InviteRefOf(r.OlderInvite), true
	}
	return accounts.InviteRef{}, false
}

// browserBinding is the SHA-256 of the request's CSRF cookie, nil when it
// has none.
func (p *Pages) browserBinding(c echo.Context) []byte {
	ck, err := c.Cookie(p.csrfCookieName(c))
	if err != nil || !validCSRF(ck.Value) {
		return nil
	}
	h := sha256.Sum256([]byte(ck.Value))
	return h[:]
}

// upstreamRecord is kept server-side (single-use store, kind
// store.OnceUpstreamLogin, under the SHA-256 of "link:"+handle or
// "mfa:"+mfa_token) between the steps of an upstream sign-in: the verified
// identity waiting to be linked to UserID, on the confirm-link page and
// then, once the local password is proved (Link), until the second step is
// complete. (The login's amr and auth_time travel with the mfa_token:
// mfa.Service.Begin.)
type upstreamRecord struct {
	Provider string          `json:"p"`
	Claims   upstream.Claims `json:"c"`
	UserID   string          `json:"u"`
	Request  string          `json:"r"`
	// Link: the identity is linked once the second step is complete; the
	// local password was proved.
	Link bool `json:"l,omitempty"`
}

func upstreamKey(prefix, secret string) []byte {
	h := sha256.Sum256([]byte(prefix + secret))
	return h[:]
}

func randomHandle() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// registerUpstream adds GET /login/{provider} and its callback. They are
// served without providers too: every name is then unknown (404 page).
func (p *Pages) registerUpstream(e *echo.Echo) {
	e.GET(LoginPath+"/:provider", p.upstreamStart, p.headers)
	e.GET(LoginPath+"/:provider"+upstreamCallback, p.upstreamCallback, p.headers)
}

// providerLinks are the login page's buttons: one link per provider to
// /login/{id}, labelled with its name, carrying the pending request.
func (p *Pages) providerLinks(pr Pending) []link {
	if p.si.Upstream == nil {
		return nil
	}
	var out []link
	for _, pv := range p.si.Upstream.Providers().List() {
		out = append(out, link{Href: p.base + LoginPath + "/" + url.PathEscape(pv.ID) + "?" +
			url.Values{requestField: {pr.ID}}.Encode(), Text: pv.Name})
	}
	return out
}

// upstreamMeta is the request's meta for the upstream service.
func upstreamMeta(c echo.Context, clientID string) upstream.Meta {
	m := meta(c)
	return upstream.Meta{IP: m.IP, UserAgent: m.UserAgent, ClientID: clientID}
}

// callbackURL is the redirect URI registered at the provider:
// {issuer}/login/{provider}/callback.
func (p *Pages) callbackURL(providerID string) string {
	return strings.TrimSuffix(p.cfg.Issuer, "/") + LoginPath + "/" + url.PathEscape(providerID) + upstreamCallback
}

// upstreamStart is GET /login/{provider}?request=…: it sends the browser to
// the provider (authorization code + PKCE; state, nonce and verifier in the
// single-use store, with the pending request), within the caller's address
// budget of kept records (429 past it). An unknown provider is 404.
func (p *Pages) upstreamStart(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("provider")
	if p.si.Upstream == nil {
		return p.unknownProvider(c)
	}
	if _, ok := p.si.Upstream.Providers().Get(id); !ok {
		return p.unknownProvider(c)
	}
	reqID := c.QueryParam(requestField)
	if reqID == "" {
		return p.noRequest(c)
	}
	pr, answered, err := p.pendingPage(c, reqID, nil)
	if answered {
		return err
	}
	// The browser's CSRF cookie (set now when missing) binds the sign-in to
	// this browser.
	tok, err := p.csrfToken(c)
	if err != nil {
		return p.fail(c, apierr.ErrServer.WithCause(err))
	}
	bind := sha256.Sum256([]byte(tok))
	ret, err := json.Marshal(upstreamReturn{Request: pr.ID, Browser: bind[:]})
	if err != nil {
		return p.fail(c, apierr.ErrServer.WithCause(err))
	}
	// Each start keeps a record (the state, nonce and verifier) for the
	// provider's answer, and a pending request may be started from any
	// number of times: each counts in the caller's address budget, as
	// every other record kept for an unauthenticated caller does.
	if p.si.Pending != nil {
		if err := p.si.Pending.AllowPending(ctx, meta(c).IP); err != nil {
			return p.fail(c, err)
		}
	}
	// The request's prompt=login and max_age go on to the provider, and
	// its answer must show them.
	to, err := p.si.Upstream.Begin(ctx, id, p.callbackURL(id), pr.Freshness, ret)
	if err != nil {
		return p.fail(c, err)
	}
	return p.redirect(c, to)
}

func (p *Pages) unknownProvider(c echo.Context) error {
	return p.render(c, http.StatusNotFound, view{Kind: "problem", Heading: "This sign-in option does not exist",
		Intro:   []string{"There is no identity provider by this name here. Go back to your application and sign in from there."},
		Primary: p.signIn("Go to the application")})
}

// upstreamRefused answers a refused upstream sign-in: an HTML page saying
// why (never a session). The pending request, when known, may still be
// completed with a password.
func (p *Pages) upstreamRefused(c echo.Context, err error, requestID string) error {
	var r *upstream.Refusal
	if !errors.As(err, &r) {
		if errors.Is(err, upstream.ErrUnavailable) {
			err = apierr.ErrTemporarilyUnavailable.WithDescription(
				"The identity provider could not be reached. Try again shortly.").WithCause(err)
		}
		return p.fail(c, err)
	}
	status := http.StatusForbidden
	switch r.Reason {
	case upstream.ReasonInvalidState, upstream.ReasonBrowserMismatch, upstream.ReasonReplayedCallback, upstream.ReasonInvalidToken,
		upstream.ReasonUpstreamError:
		status = http.StatusBadRequest
	case upstream.ReasonUnknownProvider:
		status = http.StatusNotFound
	}
	v := view{Kind: "error", Heading: "You could not be signed in", Intro: []string{r.Description(), "You have not been signed in."}}
	if requestID != "" {
		v.Primary = &link{Href: p.base + LoginPath + "?" + url.Values{requestField: {requestID}}.Encode(),
			Text: "Back to sign in"}
	} else {
		v.Primary = p.signIn("Go to the application")
	}
	return p.render(c, status, v)
}

// upstreamCallback is GET /login/{provider}/callback: the provider's
// answer is verified (upstream.Service.Callback), the linking core decides
// (SignIn), and the person is signed in — after Portcullis's own second
// step when the account owes one — or asked to confirm the local account
// the identity would be linked to.
func (p *Pages) upstreamCallback(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("provider")
	if p.si.Upstream == nil {
		return p.unknownProvider(c)
	}
	if _, ok := p.si.Upstream.Providers().Get(id); !ok {
		_ = p.si.Upstream.RecordRefusal(ctx, upstreamMeta(c, ""), id,
			&upstream.Refusal{Reason: upstream.ReasonUnknownProvider, Provider: id, Unmatched: true})
		return p.unknownProvider(c)
	}
	v, err := p.si.Upstream.Callback(ctx, id, c.Request().URL.Query(), upstreamMeta(c, ""))
	if err != nil {
		return p.upstreamRefused(c, err, "")
	}
	var ret upstreamReturn
	if err := json.Unmarshal(v.Return, &ret); err != nil {
		return p.noRequest(c)
	}
	invite, isInvite := ret.invite()
	if ret.Request == "" && !isInvite {
		return p.noRequest(c)
	}
	if b := p.browserBinding(c); b == nil || subtle.ConstantTimeCompare(b, ret.Browser) != 1 {
		// Begun in another browser: the answer is used up and signs nobody
		// in. Its state was taken, so the refusal is always recorded.
		err := p.si.Upstream.RecordRefusal(ctx, upstreamMeta(c, ""), id,
			&upstream.Refusal{Reason: upstream.ReasonBrowserMismatch, Provider: id})
		return p.upstreamRefused(c, err, "")
	}
	if isInvite {
		return p.upstreamInviteCallback(c, v, invite)
	}
	old, err := p.sessionOf(c)
	if err != nil {
		return p.fail(c, err)
	}
	pr, answered, err := p.pendingPage(c, ret.Request, old)
	if answered {
		return err
	}
	m := upstreamMeta(c, pr.Client.ID)
	u, d, err := p.si.Upstream.SignIn(ctx, upstream.Input{Provider: v.Provider, Claims: v.Claims}, m)
	switch {
	case errors.Is(err, upstream.ErrNeedsConfirmation):
		rec := upstreamRecord{Provider: v.Provider.ID, Claims: v.Claims, UserID: d.User.ID, Request: pr.ID}
		return p.linkPage(c, http.StatusOK, pr, rec, "", nil)
	case err != nil:
		return p.upstreamRefused(c, err, pr.ID)
	}
	return p.upstreamSignedIn(c, old, pr, u, upstream.AMR(v.Provider, v.Claims), v.SignedInAt)
}

// upstreamSignedIn finishes an upstream sign-in of u with amr, made at the
// provider at signedInAt (upstream.Verified.SignedInAt: the session's
// auth_time, so that the provider's own older session meets no max_age or
// re-authentication window here): Portcullis's own second step when u
// owes one with the roles the login will carry (those of the organisation
// the request names; the login page's step, with amr and signedInAt kept
// as the first factor's), else the browser session and the pending
// request, like a password login.
func (p *Pages) upstreamSignedIn(c echo.Context, old *store.BrowserSession, pr Pending, u store.User, amr []string,
	signedInAt time.Time) error {
	ctx := c.Request().Context()
	lu, err := p.loginUser(ctx, pr, u)
	if err != nil {
		return p.fail(c, err)
	}
	owes, err := p.si.Upstream.NeedsSecondFactor(ctx, lu, amr)
	if err != nil {
		return p.fail(c, err)
	}
	if owes {
		ch, err := p.si.MFA.Begin(ctx, lu, nil, ratelimit.Counted{}, pr.Client.ID, strings.Join(pr.Scopes, " "), "", signedInAt, amr)
		if err != nil {
			return p.fail(c, err)
		}
		if ch != nil {
			return p.secondStep(c, pr, u.ID, ch, false)
		}
	}
	return p.finishLogin(c, old, pr, u, signedInAt, amr, false)
}

func (p *Pages) provider(id string) *upstream.Provider {
	pv, _ := p.si.Upstream.Providers().Get(id)
	return pv
}

func (p *Pages) putUpstreamRecord(ctx context.Context, prefix, secret string, rec upstreamRecord) error {
	if p.si.Once == nil {
		return apierr.ErrTemporarilyUnavailable.WithCause(errors.New("pages: no single-use store"))
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return apierr.ErrServer.WithCause(err)
	}
	if err := p.si.Once.PutOnce(ctx, store.OnceUpstreamLogin, upstreamKey(prefix, secret), val, p.now().Add(linkTTL)); err != nil {
		return apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	return nil
}

// linkAfterMFA is called when the login page's second step completed for
// token: when the confirm-link page began it, the identity waiting for it
// is linked now. found is false for any other login (a password login, an
// upstream sign-in of a linked identity), whose amr the mfa_token carried
// (mfa.Completed.AMR).
func (p *Pages) linkAfterMFA(c echo.Context, token string, pr Pending, done mfa.Completed) (found bool, err error) {
	if p.si.Upstream == nil || p.si.Once == nil {
		return false, nil
	}
	ctx := c.Request().Context()
	raw, err := p.si.Once.TakeOnce(ctx, store.OnceUpstreamLogin, upstreamKey("mfa:", token), p.now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed):
		return false, nil
	case err != nil:
		return true, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	var rec upstreamRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.UserID != done.UserID {
		return true, apierr.ErrServer.WithCause(errors.New("pages: upstream record does not match the second step"))
	}
	if rec.Link {
		if _, err := p.si.Upstream.LinkConfirmed(ctx, p.provider(rec.Provider), rec.Claims, rec.UserID,
			upstreamMeta(c, pr.Client.ID)); err != nil {
			return true, err
		}
	}
	return true, nil
}

// ---- the confirm-link page ----

// linkPage shows the confirm-link page: the verified identity is kept
// server-side under a new handle (single use); the person proves the local
// account with its password (and then its second factor).
func (p *Pages) linkPage(c echo.Context, status int, pr Pending, rec upstreamRecord, handle string, ps problems) error {
	ctx := c.Request().Context()
	if handle == "" {
		handle = randomHandle()
		if err := p.putUpstreamRecord(ctx, "link:", handle, rec); err != nil {
			return p.fail(c, err)
		}
	}
	name := rec.Provider
	if pv := p.provider(rec.Provider); pv != nil {
		name = pv.Name
	}
	v := view{Heading: "Link your " + name + " account",
		Intro: []string{"An account with the email address " + rec.Claims.Email + " already exists here.",
			"To sign in with " + name + " from now on, confirm that this account is yours: enter its password. You are asked once."},
		Hidden: []hidden{{Name: requestField, Value: pr.ID}, {Name: stepField, Value: stepLink}, {Name: linkField, Value: handle}},
		Fields: []field{{ID: "password", Label: "Password of your account", Type: "password",
			Autocomplete: "current-password", Required: true}},
		Submit: "Link and sign in",
		Links: []link{{Href: p.base + LoginPath + "?" + url.Values{requestField: {pr.ID}}.Encode(), Text: "Cancel and sign in another way"},
			{Href: p.base + ForgotPasswordPath, Text: "Forgotten your password?"}}}
	if len(ps) > 0 {
		v = v.withErrors(ps)
	}
	return p.renderForm(c, status, v, LoginPath)
}

// linkPost is the confirm-link page's form: the password of the local
// account through the one password check (the login throttle), then the
// second step when the account has a factor, then the link
// (LinkConfirmed, which decides again) and the session.
func (p *Pages) linkPost(c echo.Context, id string) error {
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
	if p.si.Upstream == nil || p.si.Once == nil {
		return p.noRequest(c)
	}
	handle := r.PostFormValue(linkField)
	if handle == "" || len(handle) > 128 {
		return p.linkLost(c, pr)
	}
	raw, err := p.si.Once.PeekOnce(ctx, store.OnceUpstreamLogin, upstreamKey("link:", handle), p.now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed):
		return p.linkLost(c, pr)
	case err != nil:
		return p.fail(c, apierr.ErrTemporarilyUnavailable.WithCause(err))
	}
	var rec upstreamRecord
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Request != pr.ID || p.provider(rec.Provider) == nil {
		return p.linkLost(c, pr)
	}
	pw := r.PostFormValue("password")
	var ps problems
	if pw == "" {
		ps.add("password", "Enter your password.")
		return p.linkPage(c, http.StatusBadRequest, pr, rec, handle, ps)
	}
	u, err := p.si.Users.GetUser(ctx, rec.UserID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return p.linkLost(c, pr)
		}
		return p.fail(c, apierr.ErrTemporarilyUnavailable.WithCause(err))
	}
	m := meta(c)
	res, err := p.si.Checker.Check(ctx, passcheck.Attempt{Login: u.Email, Password: pw, IP: m.IP, UserAgent: m.UserAgent,
		ClientID: pr.Client.ID, FailureAction: "login.failed", Method: "page", DeferSuccess: true})
	switch {
	case errors.Is(err, passcheck.ErrBadCredentials):
		ps.add("password", "The password is incorrect.")
		return p.linkPage(c, http.StatusBadRequest, pr, rec, handle, ps)
	case err != nil:
		return p.fail(c, err)
	case res.User.ID != rec.UserID:
		return p.linkLost(c, pr)
	}
	if _, err := p.si.Once.TakeOnce(ctx, store.OnceUpstreamLogin, upstreamKey("link:", handle), p.now()); err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrTokenUsed) {
			return p.linkLost(c, pr)
		}
		return p.fail(c, apierr.ErrTemporarilyUnavailable.WithCause(err))
	}
	if p.si.Rehasher != nil {
		p.si.Rehasher.Rehash(ctx, res, pw)
	}
	rec.Link = true
	// The local password was proved now: the login's time, with "fed"
	// before "pwd".
	amr := []string{upstream.AMRFederated, mfa.AMRPassword}
	ch, err := p.si.MFA.Begin(ctx, res.User, (*mfa.Summary)(res.Factors), res.Counted(), pr.Client.ID, strings.Join(pr.Scopes, " "), "",
		p.now(), amr)
	if err != nil {
		return p.fail(c, err)
	}
	if ch != nil {
		if err := p.putUpstreamRecord(ctx, "mfa:", ch.Token, rec); err != nil {
			return p.fail(c, err)
		}
		return p.secondStep(c, pr, u.ID, ch, false)
	}
	p.si.Checker.Succeeded(ctx, res)
	if _, err := p.si.Upstream.LinkConfirmed(ctx, p.provider(rec.Provider), rec.Claims, rec.UserID,
		upstreamMeta(c, pr.Client.ID)); err != nil {
		return p.upstreamRefused(c, err, pr.ID)
	}
	return p.finishLogin(c, old, pr, res.User, p.now(), amr, false)
}

// linkLost answers a confirm-link form whose record is gone (used,
// expired, another request's).
func (p *Pages) linkLost(c echo.Context, pr Pending) error {
	var ps problems
	ps.add("", "Linking was not completed in time, or it was done already. Sign in again.")
	return p.loginForm(c, http.StatusBadRequest, pr, "", ps)
}

// federated reports whether amr is an upstream sign-in's.
func federated(amr []string) bool { return slices.Contains(amr, upstream.AMRFederated) }
