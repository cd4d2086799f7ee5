package pages_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

const (
	rootEmail  = "root@example.com"
	rootPass   = "root password for tests 1"
	mailWithin = 10 * time.Second
	// goodPassword passes the rules; weakPassword is a common password.
	goodPassword = "correct horse battery staple"
	weakPassword = "password123"
)

// deployment is a Portcullis instance on PostgreSQL + Redis whose emails go
// to a real SMTP server on loopback, with a super_admin and a confidential
// client "web" for the password grant. Its emailed links point at the
// instance itself (PORTCULLIS_PUBLIC_URL defaults to the issuer).
type deployment struct {
	in        *st.Instance
	api       *st.Client
	fx        *st.Fixtures
	smtp      *mailtest.Server
	webSecret string
	root      store.User
}

func newDeployment(t *testing.T, settings map[string]string) *deployment {
	t.Helper()
	return newDeploymentOn(t, st.PostgresRedis, settings)
}

// newDeploymentOn is newDeployment on backend b.
func newDeploymentOn(t *testing.T, b st.Backend, settings map[string]string) *deployment {
	t.Helper()
	smtp := mailtest.NewServer(t)
	env := st.NewEnv(t, b)
	env["PORTCULLIS_SMTP_URL"] = smtp.URL()
	for k, v := range settings {
		env[k] = v
	}
	in := st.Start(t, env)
	d := &deployment{in: in, api: in.Client(t), fx: st.NewFixtures(t, in.App.Core), smtp: smtp}
	d.root = d.fx.User(t, rootEmail, rootPass, "super_admin")
	// Its tokens carry the issuer audience, so rootToken works at /admin.
	d.webSecret = d.fx.Client(t, clients.Spec{ID: "web", Name: "Web", Audiences: []string{d.fx.Issuer()}})
	return d
}

// login runs the password grant through "web" and returns the response.
func (d *deployment) login(t *testing.T, email, pw string) *st.Response {
	t.Helper()
	return d.api.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("web", d.webSecret))
}

// rootToken is an access token of the super_admin.
func (d *deployment) rootToken(t *testing.T) string {
	t.Helper()
	return d.login(t, rootEmail, rootPass).Token().AccessToken
}

// invite invites email as the super_admin and returns the emailed link.
func (d *deployment) invite(t *testing.T, email, role string) string {
	t.Helper()
	d.api.PostJSON("/admin/invites", map[string]string{"email": email, "role": role}, st.Bearer(d.rootToken(t))).
		ExpectStatus(http.StatusCreated)
	link := d.smtp.WaitFor(t, email, mailWithin).Link(t)
	if !strings.HasPrefix(link, d.in.URL+"/invite?token=") {
		t.Fatalf("invite link %q does not open this instance's page", link)
	}
	return link
}

// resetLink has the super_admin email a reset link to the user and returns it.
func (d *deployment) resetLink(t *testing.T, u store.User) string {
	t.Helper()
	d.api.PostJSON("/admin/users/"+u.ID+"/password-reset", nil, st.Bearer(d.rootToken(t))).ExpectStatus(http.StatusOK)
	link := d.smtp.WaitFor(t, u.Email, mailWithin).Link(t)
	if !strings.HasPrefix(link, d.in.URL+"/reset-password?token=") {
		t.Fatalf("reset link %q", link)
	}
	return link
}

// expireInvites moves every invite for email into the past, through the
// deployment's database: there is no API to age an invite, and waiting for
// the shortest lifetime (1m) would make the test slow.
func (d *deployment) expireInvites(t *testing.T, email string) {
	t.Helper()
	res := d.in.App.Core.Store.DB().Exec("UPDATE invites SET expires_at = ? WHERE email = ?",
		time.Now().Add(-time.Hour).UTC(), email)
	if res.Error != nil || res.RowsAffected == 0 {
		t.Fatalf("expire invites of %s: %v (%d rows)", email, res.Error, res.RowsAffected)
	}
}

// assertPageSessionEnded checks that the session a page's service call
// started for the user (through the first-party client) was ended at once:
// the page hands its tokens to nobody.
func (d *deployment) assertPageSessionEnded(t *testing.T, userID string) {
	t.Helper()
	var page struct {
		Items []struct {
			ClientID string            `json:"client_id"`
			Details  map[string]string `json:"details"`
		} `json:"items"`
	}
	d.api.Get("/admin/audit?action=session.ended&target_id="+url.QueryEscape(userID), st.Bearer(d.rootToken(t))).
		ExpectStatus(http.StatusOK).JSON(&page)
	if len(page.Items) != 1 || page.Items[0].ClientID != "portcullis" || page.Items[0].Details["reason"] != "logout" {
		t.Fatalf("session.ended events of %s: %+v", userID, page.Items)
	}
}

// tokenOf returns the token query parameter of an emailed link.
func tokenOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	tok := u.Query().Get("token")
	if tok == "" {
		t.Fatalf("link %q has no token", link)
	}
	return tok
}

// assertNoSecretInLogs fails when the server's log holds any of secrets.
func (d *deployment) assertNoSecretInLogs(t *testing.T, secrets ...string) {
	t.Helper()
	logs := d.in.Logs.String()
	if !strings.Contains(logs, `"msg":"request"`) {
		t.Fatalf("no request log lines captured; the check would prove nothing:\n%s", logs)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Fatalf("the server log holds a secret (%d characters)", len(s))
		}
	}
}

// browserClient is a plain HTTP client with a cookie jar that does not
// follow redirects, for the pages (they answer HTML, not the JSON API that
// servertest's client decodes as JSON).
func browserClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// page is an HTTP answer with its body read.
type page struct {
	*http.Response
	Body string
}

// do sends req (whose body, if any, is body) and checks the answer against
// the OpenAPI description, like every answer servertest's client sees.
func do(t *testing.T, hc *http.Client, req *http.Request, body []byte) page {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CheckOpenAPI(req, body, resp, b); err != nil {
		t.Errorf("%s %s (%d) does not match the OpenAPI description: %v", req.Method, req.URL.Path, resp.StatusCode, err)
	}
	return page{Response: resp, Body: string(b)}
}

func get(t *testing.T, hc *http.Client, u string, header ...string) page {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, hc, req, nil)
}

func post(t *testing.T, hc *http.Client, u string, form url.Values, header ...string) page {
	t.Helper()
	body := []byte(form.Encode())
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, hc, req, body)
}

// ---- the browser ----

// chromiumPath finds Debian's chromium, installing the package when it is
// missing and the tests run as root. A missing browser fails the test: it
// never skips.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if err := testservers.EnsureDebianPackages("chromium"); err != nil {
		t.Fatalf("headless Chromium is required for the page tests: %v", err)
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found after installing the Debian package chromium: %v", err)
	}
	return p
}

// newBrowser starts a headless Chromium with a fresh profile for the test
// and returns a context for its first tab; the browser stops when the test
// ends. extra adds allocator options (host resolver rules, a trusted test
// certificate).
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	profile := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 900),
	)
	opts = append(opts, extra...)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout bound to it
		t.Fatalf("start headless Chromium: %v", err)
	}
	return ctx
}

// browse runs steps within a minute.
func browse(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

// value runs an action that returns a value, within a minute.
func value[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// submit clicks the form's button and waits for the answer, returning its
// HTTP status.
func submit(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := chromedp.RunResponse(tctx, chromedp.Click(chromedp.CSS(`button[type="submit"]`)))
	if err != nil {
		t.Fatalf("submit the form: %v", err)
	}
	return resp.Status
}

// open navigates to u and returns the HTTP status of the page it lands on.
func open(t *testing.T, ctx context.Context, u string) int64 {
	t.Helper()
	resp := value(t, ctx, chromedp.NavigateResponse(u))
	return resp.Status
}

// text is the visible text of the page's main element.
func text(t *testing.T, ctx context.Context) string {
	t.Helper()
	return value(t, ctx, chromedp.Text(chromedp.CSS("main")))
}

// location is the address the browser shows.
func location(t *testing.T, ctx context.Context) string {
	t.Helper()
	return value(t, ctx, chromedp.Location())
}

// fill types v into the input with id.
func fill(id, v string) chromedp.Action[chromedp.Void] {
	return chromedp.SendKeys(chromedp.ID(id), v)
}

// mustContain fails unless s holds every part.
func mustContain(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Fatalf("%s does not say %q:\n%s", what, p, s)
		}
	}
}
