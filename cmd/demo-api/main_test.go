package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

const (
	demoPolicy = "../../docs/examples/demo-policy.yaml"
	password   = "correct horse battery staple"
)

// offsetClock is the demo's clock: real time plus an offset tests move.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

func (c *offsetClock) Set(d time.Duration) { c.offset.Store(int64(d)) }

// stack is a Portcullis on PostgreSQL + Redis with the demo policy, users
// of each demo role and clients, and the demo API in front of it.
type stack struct {
	env     st.Env
	in      *st.Instance
	pc      *st.Client // talks to Portcullis (checked against its OpenAPI description)
	secrets map[string]string
	users   map[string]store.User // by role
	api     *api
	apiURL  string
	clock   *offsetClock
	logs    *st.SyncBuffer
}

func startStack(t *testing.T, settings map[string]string) *stack {
	t.Helper()
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_POLICY_FILE"] = demoPolicy
	for k, v := range settings {
		env[k] = v
	}
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	s := &stack{env: env, in: in, pc: in.Client(t), secrets: map[string]string{}, users: map[string]store.User{}, clock: &offsetClock{}, logs: &st.SyncBuffer{}}
	for _, role := range []string{"viewer", "editor", "admin", "super_admin"} {
		s.users[role] = fx.User(t, role+"@example.com", password, role)
	}
	s.secrets["web"] = fx.Client(t, clients.Spec{ID: "web", Name: "Web"})
	s.secrets["billing-web"] = fx.Client(t, clients.Spec{ID: "billing-web", Name: "Billing", Audiences: []string{"billing"}})
	s.secrets["reports"] = fx.Client(t, clients.Spec{ID: "reports", Name: "Reports", Grants: []string{"client_credentials"}, Scopes: []string{"projects:read"}})
	s.secrets["reader-web"] = fx.Client(t, clients.Spec{ID: "reader-web", Name: "Reader", Scopes: []string{"projects:read"}})

	a, err := newAPI(config{Addr: "127.0.0.1:0", Issuer: in.Config.Issuer, Audience: "api", ClientID: "demo-api", MaxTokenTTL: time.Hour},
		s.clock.Now, slog.New(slog.NewJSONHandler(s.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(func() { srv.Close(); a.Close() })
	s.api, s.apiURL = a, srv.URL
	return s
}

// login is a password grant of the role's user through client.
func (s *stack) login(t *testing.T, client, role, scope string) st.TokenResponse {
	t.Helper()
	return s.pc.PostForm("/oauth2/token", st.PasswordForm(role+"@example.com", password, scope), st.Basic(client, s.secrets[client])).Token()
}

// secondFactor is a user's TOTP enrolment: its secret, whether a TOTP
// login used the step after the enrolment, and the recovery codes left.
type secondFactor struct {
	secret   string
	otpUsed  bool
	recovery []string
}

// enrolMFA enrols TOTP for the role's user (through Portcullis's
// mfa.Service); its password alone then answers mfa_required.
func (s *stack) enrolMFA(t *testing.T, role string) *secondFactor {
	t.Helper()
	secret, codes := st.EnrolTOTP(t, s.in.App.MFA, s.users[role])
	return &secondFactor{secret: secret, recovery: codes}
}

// mfaLogin is a login of an enrolled user with a second factor: the
// password grant answers mfa_required, then the mfa-otp grant finishes it
// (the mfa-recovery-code grant after the first: a TOTP step logs in once).
func (s *stack) mfaLogin(t *testing.T, client, role, scope string, f *secondFactor) st.TokenResponse {
	t.Helper()
	r := s.pc.PostForm("/oauth2/token", st.PasswordForm(role+"@example.com", password, scope), st.Basic(client, s.secrets[client]))
	tok, _ := r.ExpectError(400, "mfa_required").Map()["mfa_token"].(string)
	form := url.Values{"mfa_token": {tok}}
	if !f.otpUsed {
		f.otpUsed = true
		form.Set("grant_type", "urn:portcullis:params:oauth:grant-type:mfa-otp")
		form.Set("otp", st.NextTOTPCode(t, f.secret))
	} else {
		form.Set("grant_type", "urn:portcullis:params:oauth:grant-type:mfa-recovery-code")
		form.Set("recovery_code", f.recovery[0])
		f.recovery = f.recovery[1:]
	}
	return s.pc.PostForm("/oauth2/token", form, st.Basic(client, s.secrets[client])).Token()
}

// answer is a response of the demo API.
type answer struct {
	status    int
	challenge string
	body      map[string]any
	raw       []byte
}

// call sends a request to the demo API. The demo is not Portcullis, so the
// OpenAPI-checking st.Client is not used for it.
func (s *stack) call(t testing.TB, method, path, token string, body any) answer {
	t.Helper()
	a, err := s.try(method, path, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// try is call returning errors, for goroutines other than the test's.
func (s *stack) try(method, path, token string, body any) (answer, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.apiURL+path, rd)
	if err != nil {
		return answer{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate"), raw: raw}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		return a, fmt.Errorf("%s %s: %d, body is not JSON: %q", method, path, resp.StatusCode, raw)
	}
	return a, nil
}

func jwtPart(t testing.TB, token string, i int) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[i])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// forge signs claims with a fresh key under kid, as an attacker would.
func forge(t *testing.T, claims map[string]any, kid string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDemoAPI: tokens of a running Portcullis are accepted by what they
// grant (a super_admin's read-only token names no role, so the role-guarded
// /admin/metrics refuses it; before roles followed the grant it was
// accepted; /admin/metrics also needs a sign-in with a second factor, and
// an admin's password-only token gets RFC 9470 insufficient_user_authentication),
// and expired, tampered, wrong-audience, wrong-typ and unknown-kid tokens
// are refused with RFC 6750 answers.
func TestDemoAPI(t *testing.T) {
	s := startStack(t, nil)
	s.users["pwd_admin"] = st.NewFixtures(t, s.in.App.Core).User(t, "pwd_admin@example.com", password, "admin")
	adminMFA, rootMFA := s.enrolMFA(t, "admin"), s.enrolMFA(t, "super_admin")
	viewer := s.login(t, "web", "viewer", "")
	editor := s.login(t, "web", "editor", "")
	admin := s.mfaLogin(t, "web", "admin", "", adminMFA)
	root := s.mfaLogin(t, "web", "super_admin", "", rootMFA)
	adminPwd := s.login(t, "web", "pwd_admin", "")
	idTok := s.login(t, "web", "viewer", "openid").IDToken
	// Read-only tokens of a super_admin: by the scope asked, and by the client's scopes.
	rootReadOnly := s.mfaLogin(t, "web", "super_admin", "projects:read", rootMFA)
	rootViaReader := s.mfaLogin(t, "reader-web", "super_admin", "", rootMFA)
	needMFA := `Bearer error="insufficient_user_authentication", error_description="This request needs a sign-in with a second factor (multi-factor authentication).", acr_values="mfa"`
	billing := s.pc.PostForm("/oauth2/token", st.PasswordForm("viewer@example.com", password, ""), st.Basic("billing-web", s.secrets["billing-web"])).Token()
	service := s.pc.PostForm("/oauth2/token", map[string][]string{"grant_type": {"client_credentials"}}, st.Basic("reports", s.secrets["reports"])).Token()
	if aud := jwtPart(t, billing.AccessToken, 1)["aud"]; fmt.Sprint(aud) == "api" || fmt.Sprint(aud) == "[api]" {
		t.Fatalf("the billing client's token is for %v", aud)
	}
	if idTok == "" {
		t.Fatal("no id token")
	}
	// Tampered: the viewer's signature over an editor's payload.
	vp, ep := strings.Split(viewer.AccessToken, "."), strings.Split(editor.AccessToken, ".")
	tampered := vp[0] + "." + ep[1] + "." + vp[2]
	forged := forge(t, jwtPart(t, root.AccessToken, 1), "forged-kid")

	invalid := func(desc string) string { return `Bearer error="invalid_token", error_description="` + desc + `"` }
	tests := []struct {
		name, method, path, token string
		body                      any
		status                    int
		challenge                 string
	}{
		{"ok/viewer reads", "GET", "/projects", viewer.AccessToken, nil, 200, ""},
		{"ok/editor writes", "POST", "/projects", editor.AccessToken, map[string]string{"name": "Apollo"}, 201, ""},
		{"ok/admin writes (every permission)", "POST", "/projects", admin.AccessToken, map[string]string{"name": "Gemini"}, 201, ""},
		{"ok/admin metrics", "GET", "/admin/metrics", admin.AccessToken, nil, 200, ""},
		{"ok/super_admin metrics (higher role)", "GET", "/admin/metrics", root.AccessToken, nil, 200, ""},
		{"ok/client_credentials reads", "GET", "/projects", service.AccessToken, nil, 200, ""},
		{"ok/health without token", "GET", "/healthz", "", nil, 200, ""},

		{"fail/no token", "GET", "/me", "", nil, 401, "Bearer"},
		{"fail/no token on a permission route", "POST", "/projects", "", map[string]string{"name": "x"}, 401, "Bearer"},
		{"fail/garbage token", "GET", "/me", "not-a-jwt", nil, 401, invalid("The access token is malformed.")},
		{"fail/tampered", "GET", "/me", tampered, nil, 401, invalid("The access token's signature is invalid.")},
		{"fail/wrong audience", "GET", "/me", billing.AccessToken, nil, 401, invalid("The access token is not meant for this service.")},
		{"fail/id token (wrong typ)", "GET", "/me", idTok, nil, 401, invalid("The token is not an access token.")},
		{"fail/refresh token", "GET", "/me", viewer.RefreshToken, nil, 401, invalid("The access token is malformed.")},
		{"fail/unknown kid", "GET", "/me", forged, nil, 401, invalid("The access token was signed by an unknown key.")},
		{"fail/viewer writes", "POST", "/projects", viewer.AccessToken, map[string]string{"name": "x"}, 403,
			`Bearer error="insufficient_scope", scope="projects:write", error_description="This request needs the permission projects:write."`},
		{"fail/admin metrics with a password-only token", "GET", "/admin/metrics", adminPwd.AccessToken, nil, 401, needMFA},
		{"ok/password-only admin reads (MFA only where required)", "GET", "/projects", adminPwd.AccessToken, nil, 200, ""},
		{"fail/editor metrics", "GET", "/admin/metrics", editor.AccessToken, nil, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role admin or higher."`},
		{"fail/client_credentials metrics (no roles)", "GET", "/admin/metrics", service.AccessToken, nil, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role admin or higher."`},
		{"ok/read-only super_admin reads", "GET", "/projects", rootReadOnly.AccessToken, nil, 200, ""},
		{"fail/read-only super_admin metrics (roles follow the grant)", "GET", "/admin/metrics", rootReadOnly.AccessToken, nil, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role admin or higher."`},
		{"fail/super_admin through a read-only client metrics", "GET", "/admin/metrics", rootViaReader.AccessToken, nil, 403,
			`Bearer error="insufficient_scope", error_description="This request needs the role admin or higher."`},
		{"fail/client_credentials writes", "POST", "/projects", service.AccessToken, map[string]string{"name": "x"}, 403,
			`Bearer error="insufficient_scope", scope="projects:write", error_description="This request needs the permission projects:write."`},
		{"fail/bad project", "POST", "/projects", editor.AccessToken, map[string]string{"title": "x"}, 400, ""},
		{"fail/unknown route", "GET", "/nope", viewer.AccessToken, nil, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := s.call(t, tc.method, tc.path, tc.token, tc.body)
			if a.status != tc.status || a.challenge != tc.challenge {
				t.Fatalf("%d %q, want %d %q; body %s", a.status, a.challenge, tc.status, tc.challenge, a.raw)
			}
			if tc.status >= 400 && (a.body["error"] == nil || a.body["error_description"] == nil) {
				t.Fatalf("error body %s", a.raw)
			}
		})
	}

	t.Run("ok/me", func(t *testing.T) {
		a := s.call(t, "GET", "/me", viewer.AccessToken, nil)
		if a.status != 200 || a.body["sub"] != s.users["viewer"].ID || fmt.Sprint(a.body["roles"]) != "[viewer]" ||
			a.body["scope"] != "projects:read" || a.body["client_id"] != "web" {
			t.Fatalf("/me %s", a.raw)
		}
		a = s.call(t, "GET", "/me", service.AccessToken, nil)
		if a.status != 200 || a.body["sub"] != "reports" || fmt.Sprint(a.body["roles"]) != "[]" || a.body["scope"] != "projects:read" {
			t.Fatalf("/me of a client_credentials token %s", a.raw)
		}
	})
	t.Run("ok/projects listed with owners", func(t *testing.T) {
		a := s.call(t, "GET", "/projects", viewer.AccessToken, nil)
		items, _ := a.body["items"].([]any)
		if len(items) != 2 || items[0].(map[string]any)["owner"] != s.users["editor"].ID {
			t.Fatalf("projects %s", a.raw)
		}
	})
	t.Run("fail/expired", func(t *testing.T) {
		exp := time.Unix(int64(jwtPart(t, viewer.AccessToken, 1)["exp"].(float64)), 0)
		s.clock.Set(time.Until(exp) + verify.DefaultLeeway + time.Second)
		defer s.clock.Set(0)
		a := s.call(t, "GET", "/projects", viewer.AccessToken, nil)
		if a.status != 401 || a.challenge != invalid("The access token expired.") {
			t.Fatalf("expired: %d %q", a.status, a.challenge)
		}
		s.clock.Set(time.Until(exp) + verify.DefaultLeeway - 2*time.Second) // still inside the leeway
		if a := s.call(t, "GET", "/projects", viewer.AccessToken, nil); a.status != 200 {
			t.Fatalf("inside the leeway: %d %s", a.status, a.raw)
		}
	})
	t.Run("ok/metrics count refusals", func(t *testing.T) {
		a := s.call(t, "GET", "/admin/metrics", root.AccessToken, nil)
		denied, _ := a.body["denied"].(map[string]any)
		if denied["401"] == nil || denied["403"] == nil || a.body["projects"] != float64(2) {
			t.Fatalf("metrics %s", a.raw)
		}
	})
	// The demo logs refusals but never a token.
	logs := s.logs.String()
	if !strings.Contains(logs, "request refused") {
		t.Fatalf("no refusal logged: %s", logs)
	}
	for _, tok := range []string{viewer.AccessToken, editor.AccessToken, tampered, forged, idTok, billing.AccessToken, viewer.RefreshToken} {
		if strings.Contains(logs, tok) || strings.Contains(logs, strings.Split(tok, ".")[len(strings.Split(tok, "."))-1]) {
			t.Fatal("a token reached the demo's log")
		}
	}
}

// TestDemoAPIAcrossKeyRotation: requests with fresh tokens keep succeeding
// while the server rotates its signing key; the demo picks the new key up
// without a restart (its background refresh has it before it signs), and
// tokens of the old key keep working.
func TestDemoAPIAcrossKeyRotation(t *testing.T) {
	// Rate limits off: the load logs the same user in many times a second.
	s := startStack(t, map[string]string{"PORTCULLIS_RATE_LIMITS": "off"})
	ctx := context.Background()
	before := s.login(t, "web", "viewer", "")
	oldKID := jwtPart(t, before.AccessToken, 0)["kid"].(string)

	var (
		stop            atomic.Bool
		total, failures atomic.Int64
		mu              sync.Mutex
		problems        []string // failed requests, and faults of the load itself
		accepted        = map[string]int{}
		wg              sync.WaitGroup
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	form := st.PasswordForm("viewer@example.com", password, "")
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := st.NewClient(t, s.in.URL)
			for !stop.Load() {
				r, err := c.TryDo(http.MethodPost, "/oauth2/token", []byte(form.Encode()), "application/x-www-form-urlencoded", st.Basic("web", s.secrets["web"]))
				var tok st.TokenResponse
				if err != nil || r.StatusCode != 200 || json.Unmarshal(r.Body, &tok) != nil || tok.AccessToken == "" {
					problem("login failed: %v %v", err, r)
					return
				}
				kid, _ := jwtPart(t, tok.AccessToken, 0)["kid"].(string)
				for _, path := range []string{"/projects", "/me"} {
					a, err := s.try("GET", path, tok.AccessToken, nil)
					total.Add(1)
					if err != nil || a.status != 200 {
						failures.Add(1)
						problem("%s with a token of key %s: %v %d %s", path, kid, err, a.status, a.challenge)
						continue
					}
					mu.Lock()
					accepted[kid]++
					mu.Unlock()
				}
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })

	// The next key, published beside the active one.
	var next keysInfo
	waitFor(t, 10*time.Second, "a next key", func() bool { next = nextKey(t, s); return next.KID != "" })
	// The demo learns it from its background refresh, before it signs.
	waitFor(t, 10*time.Second, "the demo to fetch the next key", func() bool { return slices.Contains(s.api.keys.KIDs(), next.KID) })
	waitFor(t, s.in.Config.PublicationDelay()+10*time.Second, "the next key to be safe to sign with", func() bool {
		return time.Now().After(next.SafeAt.Add(200 * time.Millisecond))
	})
	fetchesBefore := s.api.keys.Fetches()
	rot, err := s.in.App.Keys.Rotate(ctx, false)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if rot.Activated.KID != next.KID {
		t.Fatalf("rotation activated %s, not the next key %s", rot.Activated.KID, next.KID)
	}
	// Keep the load running until the new key has signed plenty of accepted tokens.
	waitFor(t, 30*time.Second, "tokens of the new key accepted", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return accepted[next.KID] >= 30 || len(problems) > 0
	})
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests, %d failures; accepted by kid: %v; JWKS requests by the demo: %d before the rotation, %d in all",
		total.Load(), failures.Load(), accepted, fetchesBefore, s.api.keys.Fetches())
	if len(problems) != 0 {
		t.Fatalf("%d of %d requests failed across the rotation (%d problems), e.g. %v", failures.Load(), total.Load(), len(problems), problems[:min(5, len(problems))])
	}
	if accepted[oldKID] == 0 || accepted[next.KID] == 0 {
		t.Fatalf("the load did not span the rotation: %v", accepted)
	}
	// A token of the old, now retired, key still works.
	if a := s.call(t, "GET", "/projects", before.AccessToken, nil); a.status != 200 {
		t.Fatalf("token of the retired key: %d %s", a.status, a.raw)
	}
}

type keysInfo struct {
	KID    string
	SafeAt time.Time
}

func nextKey(t *testing.T, s *stack) keysInfo {
	t.Helper()
	list, err := s.in.App.Keys.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range list {
		if k.State == store.KeyNext {
			return keysInfo{KID: k.KID, SafeAt: k.SigningSafeAt}
		}
	}
	return keysInfo{}
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBinary runs the real demo-api binary against Portcullis: settings from
// the environment, a token accepted, and a graceful stop on SIGTERM.
func TestBinary(t *testing.T) {
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_POLICY_FILE"] = demoPolicy
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	fx.User(t, "editor@example.com", password, "editor")
	secret := fx.Client(t, clients.Spec{ID: "web", Name: "Web"})
	tok := in.Client(t).PostForm("/oauth2/token", st.PasswordForm("editor@example.com", password, ""), st.Basic("web", secret)).Token()

	bin := filepath.Join(t.TempDir(), "demo-api")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DEMO_API_ADDR="+addr, "DEMO_API_ISSUER="+in.Config.Issuer, "DEMO_API_AUDIENCE=api")
	var logs st.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	s := &stack{apiURL: "http://" + addr}
	waitFor(t, 15*time.Second, "the demo to listen", func() bool {
		resp, err := http.Get(s.apiURL + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	if a := s.call(t, "POST", "/projects", tok.AccessToken, map[string]string{"name": "Voyager"}); a.status != 201 {
		t.Fatalf("POST /projects: %d %s", a.status, a.raw)
	}
	if a := s.call(t, "GET", "/admin/metrics", tok.AccessToken, nil); a.status != 403 {
		t.Fatalf("editor on /admin/metrics: %d", a.status)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit within 15 s of SIGTERM\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "shutting down") || strings.Contains(logs.String(), tok.AccessToken) {
		t.Fatalf("logs: %s", logs.String())
	}

	// Bad settings: exit 2, every problem named.
	bad := exec.Command(bin)
	bad.Env = append(os.Environ(), "DEMO_API_ADDR=nowhere", "DEMO_API_ISSUER=ftp://x")
	out, err := bad.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "DEMO_API_ADDR") || !strings.Contains(string(out), "DEMO_API_ISSUER") {
		t.Fatalf("bad settings: %v %s", err, out)
	}
}

// TestQuickstartScript runs docs/examples/demo-quickstart.sh (the README's
// curl tour) against Portcullis and the demo API, with the real CLI.
func TestQuickstartScript(t *testing.T) {
	s := startStack(t, nil)
	cmd := exec.Command("bash", "../../docs/examples/demo-quickstart.sh")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PORTCULLIS") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// The stack already has a super_admin, so bootstrap keeps it and the tour logs in as it.
	cmd.Env = append(cmd.Env, "PORTCULLIS="+st.Binary(t), "ISSUER="+s.in.Config.Issuer, "API="+s.apiURL,
		"EMAIL=super_admin@example.com", "PASSWORD="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo-quickstart.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"GET   /me             -> 401  WWW-Authenticate: Bearer\n",
		`POST  /projects       -> 403  WWW-Authenticate: Bearer error="insufficient_scope", scope="projects:write"`,
		`GET   /me             -> 401  WWW-Authenticate: Bearer error="invalid_token", error_description="The access token's signature is invalid."`,
		"all answers as expected",
	} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("%s", out)
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want config
		err  string
	}{
		{"ok/defaults", nil, config{Addr: "127.0.0.1:8081", Issuer: "http://127.0.0.1:8080", Audience: "api", ClientID: "demo-api", MaxTokenTTL: 24 * time.Hour}, ""},
		{"ok/set", map[string]string{"DEMO_API_ADDR": ":9000", "DEMO_API_ISSUER": "https://auth.example.com", "DEMO_API_AUDIENCE": "projects",
			"DEMO_API_CLIENT_ID": "projects-api", "DEMO_API_MAX_TOKEN_TTL": "15m"},
			config{Addr: ":9000", Issuer: "https://auth.example.com", Audience: "projects", ClientID: "projects-api", MaxTokenTTL: 15 * time.Minute}, ""},
		{"ok/API keys: client and secret", map[string]string{"DEMO_API_CLIENT_ID": "projects-api", "DEMO_API_CLIENT_SECRET": "s3cret"},
			config{Addr: "127.0.0.1:8081", Issuer: "http://127.0.0.1:8080", Audience: "api", ClientID: "projects-api", ClientSecret: "s3cret", MaxTokenTTL: 24 * time.Hour}, ""},
		{"ok/API keys: the secret of the default client", map[string]string{"DEMO_API_CLIENT_SECRET": "s3cret"},
			config{Addr: "127.0.0.1:8081", Issuer: "http://127.0.0.1:8080", Audience: "api", ClientID: "demo-api", ClientSecret: "s3cret", MaxTokenTTL: 24 * time.Hour}, ""},
		{"ok/API keys: an empty secret is none", map[string]string{"DEMO_API_CLIENT_ID": "projects-api", "DEMO_API_CLIENT_SECRET": ""},
			config{Addr: "127.0.0.1:8081", Issuer: "http://127.0.0.1:8080", Audience: "api", ClientID: "projects-api", MaxTokenTTL: 24 * time.Hour}, ""},
		{"fail/max token ttl", map[string]string{"DEMO_API_MAX_TOKEN_TTL": "forever"}, config{}, "DEMO_API_MAX_TOKEN_TTL"},
		{"fail/max token ttl not positive", map[string]string{"DEMO_API_MAX_TOKEN_TTL": "0s"}, config{}, "DEMO_API_MAX_TOKEN_TTL"},
		{"fail/addr", map[string]string{"DEMO_API_ADDR": "8081"}, config{}, "DEMO_API_ADDR"},
		{"fail/issuer", map[string]string{"DEMO_API_ISSUER": "auth.example.com"}, config{}, "DEMO_API_ISSUER"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadConfig(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one about %s", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("%+v %v", got, err)
			}
			if got.apiKeys() != (tc.env["DEMO_API_CLIENT_SECRET"] != "") {
				t.Fatalf("apiKeys() = %v", got.apiKeys())
			}
		})
	}
}

// TestRoleLevelsMatchDemoPolicy keeps the demo's levels in step with the policy file.
func TestRoleLevelsMatchDemoPolicy(t *testing.T) {
	levels, err := verify.LoadRoleLevels(demoPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if len(levels) != len(roleLevels) {
		t.Fatalf("policy %v, demo %v", levels, roleLevels)
	}
	for role, lvl := range levels {
		if roleLevels[role] != lvl {
			t.Fatalf("%s: policy %d, demo %d", role, lvl, roleLevels[role])
		}
	}
}

// TestImportsOnlyThePublicPackage: the demo is built on keys/verify (and
// its subpackages, such as the key format keys/verify/apikey) alone.
func TestImportsOnlyThePublicPackage(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, d := range strings.Fields(string(out)) {
		public := d == "github.com/portcullis-auth/portcullis/keys/verify" || strings.HasPrefix(d, "github.com/portcullis-auth/portcullis/keys/verify/")
		if strings.HasPrefix(d, "github.com/portcullis-auth/portcullis/") && !public &&
			d != "github.com/portcullis-auth/portcullis/cmd/demo-api" {
			t.Errorf("the demo depends on %s", d)
		}
		if strings.HasPrefix(d, "gorm.io/") || strings.HasPrefix(d, "github.com/redis/") {
			t.Errorf("the demo depends on %s", d)
		}
	}
}
