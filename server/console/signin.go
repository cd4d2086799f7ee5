package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

const (
	// onceLogin is the single-use kind of a pending console sign-in.
	onceLogin = "console_login"
	// loginTTL bounds a pending sign-in.
	loginTTL = 10 * time.Minute
	// maxNext bounds the console page a sign-in returns to: no screen's
	// address is longer, and it is kept with the pending sign-in.
	maxNext = 512
	// loginCookie binds a pending sign-in to the browser that started it
	// (no login CSRF): Lax, since the hosted login may pass through an
	// upstream identity provider on another site.
	loginCookie = "portcullis-console-login"
)

// pendingLogin is what a console sign-in keeps between /console/login and
// the callback, under the hash of its state.
type pendingLogin struct {
	Verifier    string `json:"v"`
	Next        string `json:"n"`
	BindingHash []byte `json:"b"`
}

func random() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("console: random value: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// safeNext returns next when it is a path of the console (never another
// site, never a scheme-relative URL) of at most maxNext bytes, else the
// users screen.
func safeNext(next string) string {
	if len(next) > maxNext {
		return Path + "/users"
	}
	if next == Path || strings.HasPrefix(next, Path+"/") && !strings.ContainsAny(next, "\\\r\n") &&
		!strings.HasPrefix(next, Path+"/login") && !strings.HasPrefix(next, CallbackPath) {
		return next
	}
	return Path + "/users"
}

// login starts the sign-in: a state, a PKCE verifier and a browser binding
// kept single-use, then 303 to /oauth2/authorize of the built-in client.
// reauth=1 asks the hosted login to ask for the password again
// (prompt=login) even when the browser is signed in.
func (c *Console) login(ec echo.Context) error {
	var state, verifier, binding string
	var err error
	for _, v := range []*string{&state, &verifier, &binding} {
		if *v, err = random(); err != nil {
			return c.fail(ec, nil, err)
		}
	}
	if err := c.startLogin(ec, state, verifier, binding); err != nil {
		return c.fail(ec, nil, err)
	}
	q := url.Values{"response_type": {"code"}, "client_id": {c.cfg.ClientID}, "redirect_uri": {CallbackURL(c.cfg.Issuer)},
		"scope": {"openid"}, "state": {state}, "code_challenge": {token.S256Challenge(verifier)},
		"code_challenge_method": {"S256"}}
	if ec.QueryParam("reauth") == "1" {
		q.Set("prompt", "login")
	}
	return ec.Redirect(http.StatusSeeOther, c.base()+"/oauth2/authorize?"+q.Encode())
}

func (c *Console) startLogin(ec echo.Context, state, verifier, binding string) error {
	if c.d.Pending != nil {
		if err := c.d.Pending.AllowPending(ec.Request().Context(), ec.RealIP()); err != nil {
			return err
		}
	}
	p := pendingLogin{Verifier: verifier, Next: safeNext(ec.QueryParam("next")), BindingHash: hash(binding)}
	raw, err := store.EncodeOnce(p)
	if err != nil {
		return fmt.Errorf("console: encode the pending sign-in: %w", err)
	}
	if err := c.d.Once.PutOnce(ec.Request().Context(), onceLogin, hash(state), raw, c.now().Add(loginTTL)); err != nil {
		return fmt.Errorf("console: keep the pending sign-in: %w", err)
	}
	secure := c.d.Pages.Secure(ec)
	ec.SetCookie(&http.Cookie{Name: loginCookieName(secure), Value: binding, Path: c.base() + Path, MaxAge: int(loginTTL / time.Second),
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode})
	return nil
}

func loginCookieName(secure bool) string {
	if secure {
		return "__Secure-" + loginCookie
	}
	return loginCookie
}

// callback finishes the sign-in: the pending sign-in of state, taken once
// and bound to this browser; the code redeemed in-process with its
// verifier; the access token checked as /admin checks it and its session
// ended at once; then a new console session (the old one, if any, ended).
func (c *Console) callback(ec echo.Context) error {
	ctx := ec.Request().Context()
	secure := c.d.Pages.Secure(ec)
	again := &link{Href: c.base() + Path + "/login", Text: "Sign in again"}
	problem := func(msg string) error {
		return c.render(&request{Context: ec}, http.StatusBadRequest, view{Title: "Sign-in did not complete", Kind: "error",
			Message: msg, Primary: again})
	}
	q := ec.QueryParams()
	if len(q["state"]) != 1 || len(q["state"][0]) > 128 {
		return problem("The answer from the sign-in page is incomplete.")
	}
	// Read first, take once bound: a state seen elsewhere (a log, a
	// shoulder) cannot use up this browser's sign-in.
	key := hash(q.Get("state"))
	raw, err := c.d.Once.PeekOnce(ctx, onceLogin, key, c.now())
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed):
		return problem("This sign-in has expired or was already used.")
	case err != nil:
		return c.fail(ec, nil, fmt.Errorf("console: read the pending sign-in: %w", err))
	}
	var p pendingLogin
	if err := json.Unmarshal(raw, &p); err != nil {
		return c.fail(ec, nil, fmt.Errorf("console: decode the pending sign-in: %w", err))
	}
	ck, err := ec.Cookie(loginCookieName(secure))
	if err != nil || subtle.ConstantTimeCompare(hash(ck.Value), p.BindingHash) != 1 {
		return problem("This sign-in was started in another browser.")
	}
	switch _, err := c.d.Once.TakeOnce(ctx, onceLogin, key, c.now()); {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed):
		return problem("This sign-in has expired or was already used.")
	case err != nil:
		return c.fail(ec, nil, fmt.Errorf("console: take the pending sign-in: %w", err))
	}
	ec.SetCookie(&http.Cookie{Name: loginCookieName(secure), Path: c.base() + Path, MaxAge: -1, HttpOnly: true, Secure: secure,
		SameSite: http.SameSiteLaxMode})
	if q.Get("error") != "" || len(q["code"]) != 1 {
		return problem("The sign-in was cancelled or refused.")
	}
	m := c.meta(ec)
	meta := token.RequestMeta{IP: m.IP, UserAgent: m.UserAgent}
	// Before the code is redeemed: the session's AuthTime is at most this,
	// so a cut-off of the user's from here on (AuthenticateAdmin checks the
	// ones before it) is at or after it, and the token state refuses the
	// session (CreateBrowserSession, or FindBrowserSession later).
	begun := c.now()
	resp, err := c.d.Tokens.Exchange(ctx, token.TokenRequest{GrantType: token.GrantAuthorizationCode,
		Client: token.ClientCredentials{ID: c.cfg.ClientID}, Code: q.Get("code"), RedirectURI: CallbackURL(c.cfg.Issuer),
		CodeVerifier: p.Verifier}, meta)
	if err != nil {
		if ae := errorStatus(err); ae >= 500 {
			return c.fail(ec, nil, err)
		}
		return problem("The sign-in could not be completed.")
	}
	claims, err := c.d.Tokens.AuthenticateAdmin(ctx, resp.AccessToken)
	if err != nil {
		return c.fail(ec, nil, err)
	}
	// The console keeps its own session; the token's is ended at once so no
	// unused token stays valid.
	if err := c.d.Tokens.Logout(ctx, claims, meta); err != nil {
		c.log.Warn("end the session of the console's sign-in", "err", err)
	}
	if old, err := c.sessions.Find(ctx, ec.Request(), secure); err == nil {
		if _, err := c.sessions.End(ctx, old.ID); err != nil {
			return c.fail(ec, nil, err)
		}
	}
	start := browsersession.Start{UserID: claims.Subject, AMR: claims.AMR, IP: m.IP, UserAgent: m.UserAgent}
	if claims.AuthTime > 0 {
		// auth_time has whole seconds: the end of its second, so that a
		// sign-in just after a cut-off (an MFA reset, say) is not taken for
		// one before it; never after begun, so that a cut-off landing
		// during this callback, in the same second, is not taken for one
		// before the sign-in. A sign-in that began before a cut-off never
		// gets here: its access token is revoked.
		start.AuthTime = time.Unix(claims.AuthTime, int64(time.Second-1))
		if start.AuthTime.After(begun) {
			start.AuthTime = begun
		}
	} else {
		start.AuthTime = begun
	}
	_, cookie, err := c.sessions.Start(ctx, start, secure)
	if errors.Is(err, store.ErrSessionsEnded) {
		return problem("Your sessions were ended while you were signing in. Sign in again.")
	}
	if err != nil {
		return c.fail(ec, nil, err)
	}
	ec.SetCookie(cookie)
	return ec.Redirect(http.StatusSeeOther, c.base()+p.Next)
}

// logout ends the console session on the server and clears its cookie.
func (c *Console) logout(ec echo.Context) error {
	secure := c.d.Pages.Secure(ec)
	if bs, err := c.sessions.Find(ec.Request().Context(), ec.Request(), secure); err == nil {
		if _, err := c.sessions.End(ec.Request().Context(), bs.ID); err != nil {
			return c.fail(ec, nil, err)
		}
	} else if !errors.Is(err, browsersession.ErrNoSession) {
		return c.fail(ec, nil, err)
	}
	ec.SetCookie(c.sessions.Clear(secure))
	return c.render(&request{Context: ec}, http.StatusOK, view{Title: "Signed out of the console", Kind: "success",
		Message: "Your console session has ended.", Primary: &link{Href: c.base() + Path + "/login", Text: "Sign in again"}})
}
