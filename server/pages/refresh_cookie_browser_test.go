package pages_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// The refresh-token cookie in headless Chromium over TLS. Portcullis runs
// on https://auth.app.test, the SPA on https://app.test (the same site, as
// the deployment rule asks: SameSite=Strict and Sec-Fetch-Site allow it) and
// an attacker on https://evil.test (another site); Chromium's host resolver
// rules send every name to 127.0.0.1 and it trusts the test certificate.

const (
	authHost = "auth.app.test"
	spaHost  = "app.test"
	evilHost = "evil.test"
)

// testCertificate is a self-signed certificate for the three host names,
// written as PEM files for Portcullis, with the base64 SHA-256 of its public
// key for Chromium's --ignore-certificate-errors-spki-list.
type testCertificate struct {
	tls               tls.Certificate
	certFile, keyFile string
	spkiSHA256Base64  string
}

func newTestCertificate(t *testing.T) testCertificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: authHost},
		DNSNames:  []string{authHost, spaHost, evilHost},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := testCertificate{certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(c.certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if c.tls, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(parsed.RawSubjectPublicKeyInfo)
	c.spkiSHA256Base64 = base64.StdEncoding.EncodeToString(sum[:])
	return c
}

// serveTLS serves h over TLS with the certificate on 127.0.0.1 and returns
// its port.
func serveTLS(t *testing.T, cert testCertificate, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert.tls}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

// spaPage is the SPA: the access token lives in a variable, the refresh
// token nowhere the page can reach. login, refresh and userinfo answer
// {status, body} (body parsed JSON).
const spaPage = `<!doctype html><html><head><meta charset="utf-8"><title>SPA</title></head><body><main>SPA</main><script>
const AUTH = %q;
let access = null;
async function tokenRequest(form) {
  const r = await fetch(AUTH + "/oauth2/token", {method: "POST", credentials: "include",
    headers: {"Content-Type": "application/x-www-form-urlencoded", "X-Portcullis-CSRF": "1"},
    body: new URLSearchParams(form)});
  const text = await r.text();
  let body = {};
  try { body = JSON.parse(text); } catch (e) {}
  if (r.ok) { access = body.access_token; }
  return {status: r.status, body: body, raw: text};
}
window.login = (u, p) => tokenRequest({grant_type: "password", client_id: "spa", username: u, password: p});
window.refresh = () => tokenRequest({grant_type: "refresh_token", client_id: "spa"});
window.userinfo = async () => (await fetch(AUTH + "/userinfo", {headers: {Authorization: "Bearer " + access}})).status;
</script></body></html>`

// evilPage tries to refresh with the SPA's cookie: a credentialed fetch
// (CORS must keep it from reading, the server must refuse it), a simple
// no-cors post, and a form a click submits.
const evilPage = `<!doctype html><html><head><meta charset="utf-8"><title>Evil</title></head><body><main>
<form method="post" action="%[1]s/oauth2/token"><input type="hidden" name="grant_type" value="refresh_token">
<input type="hidden" name="client_id" value="spa"><button type="submit">Win a prize</button></form></main><script>
window.steal = async () => {
  try {
    const r = await fetch(%[1]q + "/oauth2/token", {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/x-www-form-urlencoded", "X-Portcullis-CSRF": "1"},
      body: "grant_type=refresh_token&client_id=spa"});
    return "read " + r.status + " " + (await r.text());
  } catch (e) { return "blocked"; }
};
window.simplePost = async () => {
  await fetch(%[1]q + "/oauth2/token", {method: "POST", mode: "no-cors", credentials: "include",
    headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "grant_type=refresh_token&client_id=spa"});
  return true;
};
</script></body></html>`

type tokenAnswer struct {
	Status int            `json:"status"`
	Body   map[string]any `json:"body"`
	Raw    string         `json:"raw"`
}

// TestBrowserRefreshCookie: the SPA logs in with fetch(credentials:
// "include"), reloads and resumes through refresh; no refresh token is ever
// in the page's reach (body, document.cookie, localStorage,
// sessionStorage); the cookie is __Host-, HttpOnly, Secure, SameSite=Strict;
// a page on another site can neither refresh (CORS, and the server refuses)
// nor rotate the cookie with a form; two tabs refreshing at once both
// succeed and the session goes on.
func TestBrowserRefreshCookie(t *testing.T) {
	cert := newTestCertificate(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, authPort, _ := net.SplitHostPort(ln.Addr().String())
	authURL := "https://" + authHost + ":" + authPort
	spaPort := serveTLS(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, spaPage, authURL)
	}))
	evilPort := serveTLS(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, evilPage, authURL)
	}))
	spaOrigin := "https://" + spaHost + ":" + spaPort
	evilOrigin := "https://" + evilHost + ":" + evilPort

	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_ISSUER"] = authURL
	env["PORTCULLIS_TLS_CERT"], env["PORTCULLIS_TLS_KEY"] = cert.certFile, cert.keyFile
	env["PORTCULLIS_REFRESH_REUSE_GRACE"] = "10s"
	env["PORTCULLIS_CORS_ORIGINS"] = spaOrigin // /userinfo, without credentials
	in := st.StartOn(t, env, ln)
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, "spa.user@example.com", goodPassword, "user")
	fx.Client(t, clients.Spec{ID: "spa", Public: true, RefreshTokenDelivery: store.RefreshDeliveryCookie,
		AllowedOrigins: []string{spaOrigin}, RefreshReuseGrace: 10 * time.Second})

	browser := newBrowser(t,
		chromedp.Flag("host-resolver-rules", fmt.Sprintf("MAP %s 127.0.0.1, MAP %s 127.0.0.1, MAP %s 127.0.0.1", authHost, spaHost, evilHost)),
		chromedp.Flag("ignore-certificate-errors-spki-list", cert.spkiSHA256Base64))
	// Tabs of one browser context share the cookie jar, as a person's tabs do.
	tab := func() context.Context {
		ctx, cancel := chromedp.NewContext(browser)
		t.Cleanup(cancel)
		// The first call opens the tab and binds it to ctx, not to a timeout.
		if err := chromedp.Do(ctx); err != nil {
			t.Fatalf("open a tab: %v", err)
		}
		return ctx
	}
	call := func(ctx context.Context, js string) tokenAnswer {
		return value(t, ctx, chromedp.Evaluate[tokenAnswer](js, chromedp.EvalAwaitPromise))
	}
	cookie := func() *network.Cookie {
		t.Helper()
		var found *network.Cookie
		browse(t, browser, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{authURL + "/oauth2/token"}})
			if err != nil {
				return err
			}
			for _, c := range res.Cookies {
				if strings.Contains(c.Name, "portcullis-rt") {
					if found != nil {
						return fmt.Errorf("two refresh-token cookies: %s and %s", found.Name, c.Name)
					}
					found = c
				}
			}
			return nil
		}))
		if found == nil {
			t.Fatal("the browser holds no refresh-token cookie")
		}
		return found
	}
	noTokenInReach := func(ctx context.Context) {
		t.Helper()
		reach := value(t, ctx, chromedp.Evaluate[string](
			`document.cookie + "|" + JSON.stringify(Object.assign({}, localStorage)) + "|" + JSON.stringify(Object.assign({}, sessionStorage))`))
		if strings.Contains(reach, token.RefreshTokenPrefix) || strings.Contains(reach, "portcullis-rt") {
			t.Fatalf("the page can reach a refresh token: %s", reach)
		}
	}

	spa := tab()
	if status := open(t, spa, spaOrigin+"/"); status != http.StatusOK {
		t.Fatalf("SPA page: %d", status)
	}
	login := call(spa, `login("spa.user@example.com", `+fmt.Sprintf("%q", goodPassword)+`)`)
	if login.Status != http.StatusOK || login.Body["access_token"] == nil {
		t.Fatalf("login from the SPA: %d %s", login.Status, login.Raw)
	}
	if strings.Contains(login.Raw, "refresh_token") || strings.Contains(login.Raw, token.RefreshTokenPrefix) {
		t.Fatalf("the login answer carries a refresh token: %s", login.Raw)
	}
	c := cookie()
	if c.Name != rtcookie.CookieName || !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict ||
		c.Path != "/" || c.Domain != authHost || c.Session {
		t.Fatalf("the cookie as the browser keeps it: %+v", c)
	}
	if left := time.Until(time.Unix(int64(c.Expires), 0)); left < in.Config.RefreshMaxAge-time.Minute || left > in.Config.RefreshMaxAge+time.Minute {
		t.Fatalf("the cookie expires in %s, want the session's absolute lifetime %s", left, in.Config.RefreshMaxAge)
	}
	noTokenInReach(spa)

	// A reload forgets the access token; the cookie resumes the session.
	browse(t, spa, chromedp.Reload())
	if n := value(t, spa, chromedp.Evaluate[int](`userinfo()`, chromedp.EvalAwaitPromise)); n != http.StatusUnauthorized {
		t.Fatalf("userinfo after the reload without a token: %d", n)
	}
	resumed := call(spa, `refresh()`)
	if resumed.Status != http.StatusOK || strings.Contains(resumed.Raw, token.RefreshTokenPrefix) {
		t.Fatalf("refresh after the reload: %d %s", resumed.Status, resumed.Raw)
	}
	if n := value(t, spa, chromedp.Evaluate[int](`userinfo()`, chromedp.EvalAwaitPromise)); n != http.StatusOK {
		t.Fatalf("userinfo with the resumed token: %d", n)
	}
	rotated := cookie()
	if rotated.Value == c.Value {
		t.Fatal("the refresh did not rotate the cookie")
	}
	noTokenInReach(spa)
	current := func(rt string) bool {
		sid := strings.TrimPrefix(rt, token.RefreshTokenPrefix)[:22]
		_, err := in.App.State.FindRefresh(context.Background(), sid, token.HashSecret(rt), time.Now(), 0)
		return err == nil
	}
	if !current(rotated.Value) {
		t.Fatal("the cookie is not the session's current refresh token")
	}

	// Another site: the credentialed fetch cannot be read (CORS) and the
	// server refused it; a simple post and a form do not rotate the cookie.
	evil := tab()
	if status := open(t, evil, evilOrigin+"/"); status != http.StatusOK {
		t.Fatalf("evil page: %d", status)
	}
	if got := value(t, evil, chromedp.Evaluate[string](`steal()`, chromedp.EvalAwaitPromise)); got != "blocked" {
		t.Fatalf("the other site's fetch: %s", got)
	}
	value(t, evil, chromedp.Evaluate[bool](`simplePost()`, chromedp.EvalAwaitPromise))
	if status := submit(t, evil); status != http.StatusForbidden {
		t.Fatalf("the other site's form answered %d, want 403", status)
	}
	if after := cookie(); after.Value != rotated.Value || !current(after.Value) {
		t.Fatal("a request from another site rotated the cookie")
	}

	// Two tabs refresh at once: both succeed, the session goes on.
	other := tab()
	if status := open(t, other, spaOrigin+"/"); status != http.StatusOK {
		t.Fatalf("second SPA tab: %d", status)
	}
	var wg sync.WaitGroup
	var ready sync.WaitGroup
	ready.Add(1)
	answers := make([]tokenAnswer, 2)
	for i, ctx := range []context.Context{spa, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready.Wait()
			tctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			a, err := chromedp.Run(tctx, chromedp.Evaluate[tokenAnswer](`refresh()`, chromedp.EvalAwaitPromise))
			if err != nil {
				a.Status, a.Raw = -1, err.Error()
			}
			answers[i] = a
		}()
	}
	ready.Done()
	wg.Wait()
	for i, a := range answers {
		if a.Status != http.StatusOK {
			t.Fatalf("tab %d's refresh at once: %d %s", i+1, a.Status, a.Raw)
		}
	}
	if again := call(other, `refresh()`); again.Status != http.StatusOK {
		t.Fatalf("refresh after the tabs' race: %d %s (logged out)", again.Status, again.Raw)
	}
	noTokenInReach(other)
}
