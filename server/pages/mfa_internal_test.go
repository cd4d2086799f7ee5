package pages

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// These tests drive the login page's second step and /account/security
// over HTTP against a fake mfa.Service and passkeys service: they pin what
// the pages do (no session before the second factor, the token and the
// client passed through, what each refusal shows, the session's amr and
// auth_time); the rules themselves are server/mfa's and server/passkeys',
// tested there and end to end in mfa_test.go and the Chromium tests.

const (
	fakeTOTP     = "123456"
	fakeRecovery = "ABCD-EFGH-IJKL-MNOP"
)

// fakeMFA: users listed in methods have those second factors; those in
// enrol must enrol first. A TOTP code is right when it is fakeTOTP, a
// recovery code when fakeRecovery; five wrong attempts use the token up.
type fakeMFA struct {
	mu        sync.Mutex
	methods   map[string][]string
	enrol     map[string]bool
	tokens    map[string]mfa.Pending
	first     map[string][]string // each token's first factor (Begin's first)
	attempts  map[string]int
	totp      map[string]bool // users whose TOTP is on
	started   []string
	confirmed []string
	removed   []string
	regen     []string
}

func newFakeMFA() *fakeMFA {
	return &fakeMFA{methods: map[string][]string{}, enrol: map[string]bool{}, tokens: map[string]mfa.Pending{},
		first: map[string][]string{}, attempts: map[string]int{}, totp: map[string]bool{}}
}

func (f *fakeMFA) Begin(_ context.Context, u store.User, _ *mfa.Summary, _ ratelimit.Counted, clientID, scope, _ string, authTime time.Time,
	first []string) (*mfa.Challenge, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	methods, has := f.methods[u.ID]
	if !has && !f.enrol[u.ID] {
		return nil, nil
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	f.tokens[tok] = mfa.Pending{UserID: u.ID, ClientID: clientID, Scope: scope, AuthTime: authTime,
		EnrollmentRequired: f.enrol[u.ID], Methods: methods}
	f.first[tok] = first
	return &mfa.Challenge{Token: tok, EnrollmentRequired: f.enrol[u.ID], Methods: methods}, nil
}

func (f *fakeMFA) peek(tok, clientID string) (mfa.Pending, error) {
	p, ok := f.tokens[tok]
	if !ok || (clientID != "" && p.ClientID != clientID) {
		return mfa.Pending{}, mfa.ErrInvalidToken
	}
	return p, nil
}

func (f *fakeMFA) Peek(_ context.Context, tok, clientID string) (mfa.Pending, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peek(tok, clientID)
}

func (f *fakeMFA) Complete(ctx context.Context, tok, clientID string, fc mfa.Factor, _ mfa.Meta) (mfa.Completed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, err := f.peek(tok, clientID)
	if err != nil {
		return mfa.Completed{}, err
	}
	amr, err := fc.Verify(ctx, p.UserID)
	if err != nil {
		if f.attempts[tok]++; f.attempts[tok] >= 5 {
			delete(f.tokens, tok)
		}
		return mfa.Completed{}, err
	}
	delete(f.tokens, tok)
	return mfa.Completed{Pending: p, AMR: append(append(slices.Clone(f.first[tok]), amr...), mfa.AMRMFA), RecoveryCodesLeft: -1}, nil
}

type fakeFactor struct{ method, code, want string }

func (c fakeFactor) Method() string { return c.method }
func (c fakeFactor) Verify(context.Context, string) ([]string, error) {
	if c.code != c.want {
		return nil, fmt.Errorf("fake: %w", mfa.ErrBadCode)
	}
	if c.method == mfa.MethodTOTP {
		return []string{mfa.AMROTP}, nil
	}
	return nil, nil
}

func (f *fakeMFA) TOTPCode(code string) mfa.Factor {
	return fakeFactor{method: mfa.MethodTOTP, code: code, want: fakeTOTP}
}
func (f *fakeMFA) RecoveryCode(code string) mfa.Factor {
	return fakeFactor{method: mfa.MethodRecoveryCode, code: code, want: fakeRecovery}
}

func (f *fakeMFA) Status(_ context.Context, userID string) (mfa.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := mfa.Status{Summary: mfa.Summary{TOTP: f.totp[userID]}}
	if st.TOTP {
		st.RecoveryCodesLeft = 10
	}
	return st, nil
}

// A tiny but real PNG header: the page shows only PNGs as images.
var fakeQR = []byte("\x89PNG\r\n\x1a\nfake")

func (f *fakeMFA) StartTOTP(_ context.Context, u store.User, _ mfa.Meta) (mfa.Enrolment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = append(f.started, u.ID)
	return mfa.Enrolment{Secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", URI: "otpauth://totp/Portcullis:" + u.Email +
		"?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Portcullis", QRPNG: fakeQR}, nil
}

func (f *fakeMFA) ConfirmTOTP(_ context.Context, u store.User, code string, _ mfa.Meta) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if code != fakeTOTP {
		return nil, fmt.Errorf("fake: %w", mfa.ErrBadCode)
	}
	f.confirmed = append(f.confirmed, u.ID)
	f.totp[u.ID] = true
	return []string{"CODE-ONE-AAAA-BBBB", "CODE-TWO-CCCC-DDDD"}, nil
}

func (f *fakeMFA) RemoveTOTP(_ context.Context, userID string, _ mfa.Meta) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, userID)
	delete(f.totp, userID)
	return nil
}

func (f *fakeMFA) RegenerateRecoveryCodes(_ context.Context, userID string, _ mfa.Meta) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.regen = append(f.regen, userID)
	return []string{"NEW1-AAAA-BBBB-CCCC"}, nil
}

// fakeSecurity is the account service's second-factor operations over
// fakeMFA; the current password is "right".
type fakeSecurity struct {
	m    *fakeMFA
	keys *fakePasskeys
}

func (f fakeSecurity) OwnMFA(ctx context.Context, a accounts.Actor) (accounts.MFAStatus, error) {
	st, err := f.m.Status(ctx, a.ID)
	return accounts.MFAStatus{TOTP: st.TOTP, RecoveryCodesLeft: st.RecoveryCodesLeft}, err
}

func (f fakeSecurity) MFATokenActor(_ context.Context, tok string, m accounts.Meta) (accounts.Actor, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	p, err := f.m.peek(tok, "")
	if err != nil {
		return accounts.Actor{}, apierr.ErrInvalidToken.WithCause(err)
	}
	if !p.EnrollmentRequired {
		return accounts.Actor{}, apierr.ErrForbidden
	}
	return accounts.Actor{ID: p.UserID, Meta: m}, nil
}

func (f fakeSecurity) StartTOTP(ctx context.Context, a accounts.Actor) (mfa.Enrolment, error) {
	return f.m.StartTOTP(ctx, testUsers[a.ID], mfa.Meta{})
}
func (f fakeSecurity) ConfirmTOTP(ctx context.Context, a accounts.Actor, code string) ([]string, error) {
	codes, err := f.m.ConfirmTOTP(ctx, testUsers[a.ID], code, mfa.Meta{})
	if err != nil {
		return nil, apierr.ErrInvalidRequest.WithCause(err)
	}
	return codes, nil
}
func (f fakeSecurity) RemoveTOTP(ctx context.Context, a accounts.Actor, pw string) error {
	if pw != "right" {
		return apierr.ErrInvalidGrant
	}
	return f.m.RemoveTOTP(ctx, a.ID, mfa.Meta{})
}
func (f fakeSecurity) RegenerateRecoveryCodes(ctx context.Context, a accounts.Actor) ([]string, error) {
	return f.m.RegenerateRecoveryCodes(ctx, a.ID, mfa.Meta{})
}
func (f fakeSecurity) BeginPasskeyRegistration(context.Context, accounts.Actor) ([]byte, string, error) {
	return []byte(`{"publicKey":{"challenge":"Y2hhbGxlbmdl","user":{"id":"dXNy","name":"ann"}}}`), "reg", nil
}
func (f fakeSecurity) FinishPasskeyRegistration(context.Context, accounts.Actor, string, string, []byte) (accounts.RegisteredPasskey, error) {
	return accounts.RegisteredPasskey{}, apierr.ErrInvalidRequest.WithDescription("refused")
}
func (f fakeSecurity) RemovePasskey(_ context.Context, a accounts.Actor, id, pw string) error {
	if pw != "right" {
		return apierr.ErrInvalidGrant
	}
	f.keys.mu.Lock()
	defer f.keys.mu.Unlock()
	f.keys.removed = append(f.keys.removed, a.ID+"/"+id)
	return nil
}

// fakePasskeys: a login ceremony's handle is "h-<user>"; the response
// "good" passes.
type fakePasskeys struct {
	mu      sync.Mutex
	begun   int
	removed []string
}

func (k *fakePasskeys) BeginLogin(_ context.Context, userID string, _ mfa.Meta) ([]byte, string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.begun++
	return []byte(`{"publicKey":{"challenge":"Y2hhbGxlbmdl","allowCredentials":[{"type":"public-key","id":"Y3JlZA"}]}}`), "h-" + userID, nil
}

type fakeAssertion struct{ handle, resp string }

func (a fakeAssertion) Method() string { return mfa.MethodWebAuthn }
func (a fakeAssertion) Verify(_ context.Context, userID string) ([]string, error) {
	if a.handle != "h-"+userID || a.resp != `{"good":true}` {
		return nil, fmt.Errorf("fake: %w", mfa.ErrBadCode)
	}
	return []string{mfa.AMRHardwareKey, mfa.AMRUserPresence}, nil
}

func (k *fakePasskeys) Assertion(handle string, resp []byte) mfa.Factor {
	return fakeAssertion{handle: handle, resp: string(resp)}
}

var (
	mfaTokenRe = regexp.MustCompile(`name="mfa_token" value="([0-9a-f]+)"`)
	methodRe   = regexp.MustCompile(`name="method" value="([a-z_]*)"`)
)

// mfaForm is the second step's form as served: its hidden fields.
func mfaForm(t *testing.T, a answer) url.Values {
	t.Helper()
	m := mfaTokenRe.FindStringSubmatch(a.body)
	if m == nil {
		t.Fatalf("no mfa_token on the page (%d):\n%s", a.StatusCode, a.body)
	}
	f := url.Values{"csrf_token": {csrfIn(t, a)}, "request": {"req1"}, "step": {"mfa"}, "mfa_token": {m[1]}}
	if mm := methodRe.FindStringSubmatch(a.body); mm != nil {
		f.Set("method", mm[1])
	}
	if strings.Contains(a.body, `name="remember" value="1"`) {
		f.Set("remember", "1")
	}
	return f
}

func with(f url.Values, kv ...string) url.Values {
	out := url.Values{}
	for k, v := range f {
		out[k] = slices.Clone(v)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out.Set(kv[i], kv[i+1])
	}
	return out
}

// sessionsOf returns the live browser sessions of user.
func (m *memSessions) sessionsOf(userID string) []store.BrowserSession {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.BrowserSession
	for _, s := range m.byHash {
		if s.UserID == userID && !m.ended[s.ID] {
			out = append(out, s)
		}
	}
	return out
}

// TestMFAStep: a correct password of a user with a second factor starts no
// session and shows the second step (the mfa_token in the form, the
// remember flag carried); a wrong or empty code stays on it; switching to a
// recovery code and back uses nothing up; the right code starts the
// session with the service's amr and the password step's auth time, then
// proceeds as a login (DoneLogin). Fails on the old code: the password
// alone started a session with amr ["pwd"].
func TestMFAStep(t *testing.T) {
	env := newSigninEnv(t)
	env.mfa.methods["usr_bob"] = []string{mfa.MethodTOTP, mfa.MethodRecoveryCode}
	hc := env.browser(t)
	a := env.signIn(t, hc, "bob@example.com", "right", true)
	if a.StatusCode != http.StatusOK || sessionCookie(a) != nil {
		t.Fatalf("after the password: %d, cookie %v:\n%s", a.StatusCode, sessionCookie(a), a.body)
	}
	for _, want := range []string{"Confirm it is you to continue to Third App", `autocomplete="one-time-code"`,
		`inputmode="numeric"`, `name="step" value="mfa"`, `name="remember" value="1"`, `value="use_recovery_code"`,
		`<label for="code">Code from your authenticator app`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the second step lacks %s", want)
		}
	}
	if csp := a.Header.Get("Content-Security-Policy"); strings.Contains(csp, "script-src") || !strings.Contains(csp, "form-action 'self' https://app.example.com") {
		t.Errorf("second step CSP %q", csp)
	}
	if len(env.store.sessionsOf("usr_bob")) != 0 || len(env.audit.of("login.succeeded")) != 0 {
		t.Fatal("a session or a login.succeeded before the second factor")
	}
	// The correct password did not take back its throttle attempt: the
	// second step will, with its own (mfa.Service.Complete).
	if at := env.checker.attempts[len(env.checker.attempts)-1]; !at.DeferSuccess || len(env.checker.succeeded) != 0 {
		t.Fatalf("password step %+v, throttle cleared for %v", at, env.checker.succeeded)
	}
	if len(env.rehash.calls) != 1 {
		t.Fatalf("the password step should upgrade the hash once: %v", env.rehash.calls)
	}
	var pend mfa.Pending
	for _, p := range env.mfa.tokens {
		pend = p
	}
	if pend.ClientID != "third" || pend.Scope != "openid email projects:read" || pend.AuthTime.IsZero() {
		t.Fatalf("Begin got %+v", pend)
	}
	form := mfaForm(t, a)

	for _, tc := range []struct{ name, code, want string }{
		{"empty", "", "Enter the 6-digit code"},
		{"wrong", "654321", "That code is not right"},
	} {
		a = env.do(t, hc, http.MethodPost, "/login", with(form, "code", tc.code, "mfa_action", "verify"))
		if a.StatusCode != http.StatusBadRequest || !strings.Contains(a.body, tc.want) || sessionCookie(a) != nil ||
			!strings.Contains(a.body, `aria-invalid="true"`) || mfaForm(t, a).Get("mfa_token") != form.Get("mfa_token") {
			t.Fatalf("%s code: %d:\n%s", tc.name, a.StatusCode, a.body)
		}
	}
	// Switch to a recovery code and back: nothing is used up.
	a = env.do(t, hc, http.MethodPost, "/login", with(form, "mfa_action", "use_recovery_code"))
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, `<label for="code">Recovery code`) ||
		mfaForm(t, a).Get("method") != "recovery_code" || !strings.Contains(a.body, `value="use_totp"`) {
		t.Fatalf("recovery code toggle: %d:\n%s", a.StatusCode, a.body)
	}
	a = env.do(t, hc, http.MethodPost, "/login", with(form, "mfa_action", "use_totp", "method", "recovery_code"))
	if mfaForm(t, a).Get("method") != "totp" {
		t.Fatalf("back to the app code:\n%s", a.body)
	}
	if env.mfa.attempts[form.Get("mfa_token")] != 1 {
		t.Fatalf("attempts %d, want 1 (the empty code and the toggles spend none)", env.mfa.attempts[form.Get("mfa_token")])
	}

	a = env.do(t, hc, http.MethodPost, "/login", with(form, "code", " "+fakeTOTP+" ", "mfa_action", "verify"))
	ck := sessionCookie(a)
	if a.StatusCode != http.StatusOK || ck == nil || !strings.Contains(a.body, `value="allow"`) {
		t.Fatalf("right code: %d, cookie %v:\n%s", a.StatusCode, ck, a.body)
	}
	if ck.MaxAge <= 0 {
		t.Fatalf("remember was not carried: %+v", ck)
	}
	ss := env.store.sessionsOf("usr_bob")
	if len(ss) != 1 || !slices.Equal(ss[0].AMR, []string{"pwd", "otp", "mfa"}) || !ss[0].AuthTime.Equal(pend.AuthTime) {
		t.Fatalf("session %+v, want amr [pwd otp mfa] and auth time %v", ss, pend.AuthTime)
	}
	if last := env.flow.last(); last.done != DoneLogin || last.userID != "usr_bob" {
		t.Fatalf("proceeded with %+v", last)
	}
	if ev := env.audit.of("login.succeeded"); len(ev) != 1 || ev[0].Details["amr"] != "pwd otp mfa" {
		t.Fatalf("login.succeeded %+v", ev)
	}
	// The token was used: the same form again goes back to the login form.
	a = env.do(t, hc, http.MethodPost, "/login", with(form, "code", fakeTOTP, "mfa_action", "verify"))
	if a.StatusCode != http.StatusBadRequest || !strings.Contains(a.body, "Sign in again") || !strings.Contains(a.body, `name="password"`) {
		t.Fatalf("used token: %d:\n%s", a.StatusCode, a.body)
	}
}

// TestMFAStepRefusals: every way the second step cannot go on.
func TestMFAStepRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(env *signinEnv, f url.Values) url.Values
		status int
		want   string
	}{
		{"no_csrf", func(_ *signinEnv, f url.Values) url.Values { return with(f, "csrf_token", "") },
			http.StatusForbidden, "This form has expired"},
		{"unknown_token", func(_ *signinEnv, f url.Values) url.Values { return with(f, "mfa_token", "0000") },
			http.StatusBadRequest, expiredMFA},
		{"no_token", func(_ *signinEnv, f url.Values) url.Values { return with(f, "mfa_token", "") },
			http.StatusBadRequest, expiredMFA},
		{"another_clients_token", func(env *signinEnv, f url.Values) url.Values {
			// The token is another client's; this pending request is "third"'s.
			p := env.mfa.tokens[f.Get("mfa_token")]
			p.ClientID = "other"
			env.mfa.tokens[f.Get("mfa_token")] = p
			return f
		}, http.StatusBadRequest, expiredMFA},
		{"expired_request", func(_ *signinEnv, f url.Values) url.Values { return with(f, "request", "gone") },
			http.StatusSeeOther, ""},
		{"five_wrong_codes", func(env *signinEnv, f url.Values) url.Values {
			env.mfa.attempts[f.Get("mfa_token")] = 4
			return with(f, "code", "000000")
		}, http.StatusBadRequest, "That code is not right"},
		{"wrong_recovery_code", func(_ *signinEnv, f url.Values) url.Values {
			return with(f, "method", "recovery_code", "code", "AAAA-BBBB-CCCC-DDDD")
		}, http.StatusBadRequest, "That recovery code is not right"},
		{"passkey_without_ceremony", func(_ *signinEnv, f url.Values) url.Values {
			return with(f, "webauthn_response", `{"good":true}`, "webauthn_handle", "h-usr_ann")
		}, http.StatusBadRequest, "Your passkey could not be used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newSigninEnv(t)
			env.mfa.methods["usr_bob"] = []string{mfa.MethodTOTP, mfa.MethodRecoveryCode}
			hc := env.browser(t)
			form := mfaForm(t, env.signIn(t, hc, "bob@example.com", "right", false))
			a := env.do(t, hc, http.MethodPost, "/login", tc.change(env, with(form, "code", fakeTOTP)))
			if a.StatusCode != tc.status || !strings.Contains(a.body, tc.want) || sessionCookie(a) != nil {
				t.Fatalf("%d, want %d with %q:\n%s", a.StatusCode, tc.status, tc.want, a.body)
			}
			if len(env.store.sessionsOf("usr_bob")) != 0 {
				t.Fatal("a session was started")
			}
			if tc.name == "five_wrong_codes" {
				// The fifth failure used the token up: the right code now
				// sends the person back to the login form.
				a = env.do(t, hc, http.MethodPost, "/login", with(form, "code", fakeTOTP))
				if a.StatusCode != http.StatusBadRequest || !strings.Contains(a.body, expiredMFA) || sessionCookie(a) != nil {
					t.Fatalf("after five failures: %d:\n%s", a.StatusCode, a.body)
				}
			}
		})
	}
}

// TestMFAStepPasskey: a user with a passkey gets the button, its options
// and ceremony handle, and the script (CSP script-src 'self' on this page
// only); the script's answer completes the login with the passkey's amr.
func TestMFAStepPasskey(t *testing.T) {
	env := newSigninEnv(t)
	env.mfa.methods["usr_bob"] = []string{mfa.MethodWebAuthn, mfa.MethodRecoveryCode}
	hc := env.browser(t)
	a := env.signIn(t, hc, "bob@example.com", "right", false)
	for _, want := range []string{`data-webauthn="get"`, `name="webauthn_handle" value="h-usr_bob"`,
		`data-options="{&#34;publicKey&#34;:{&#34;challenge&#34;:&#34;Y2hhbGxlbmdl&#34;`, `<script src="/pages/assets/webauthn.`,
		`name="webauthn_response" value=""`, "Use your passkey", `value="use_recovery_code"`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the passkey step lacks %s:\n%s", want, a.body)
		}
	}
	if strings.Contains(a.body, `name="code"`) {
		t.Error("a user without an authenticator app is asked for its code")
	}
	csp := a.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self';") || strings.Contains(csp, "unsafe") {
		t.Fatalf("CSP %q", csp)
	}
	js := env.do(t, hc, http.MethodGet, strings.TrimPrefix(regexp.MustCompile(`<script src="([^"]+)"`).FindStringSubmatch(a.body)[1], ""), nil)
	if js.StatusCode != http.StatusOK || !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") ||
		!strings.Contains(js.body, "navigator.credentials.get") {
		t.Fatalf("the script: %d %v", js.StatusCode, js.Header)
	}
	form := mfaForm(t, a)
	a = env.do(t, hc, http.MethodPost, "/login", with(form, "webauthn_response", `{"bad":true}`, "webauthn_handle", "h-usr_bob"))
	if a.StatusCode != http.StatusBadRequest || !strings.Contains(a.body, "Your passkey could not be used") {
		t.Fatalf("refused assertion: %d:\n%s", a.StatusCode, a.body)
	}
	a = env.do(t, hc, http.MethodPost, "/login", with(form, "webauthn_response", `{"good":true}`, "webauthn_handle", "h-usr_bob"))
	if sessionCookie(a) == nil {
		t.Fatalf("passkey: %d:\n%s", a.StatusCode, a.body)
	}
	if ss := env.store.sessionsOf("usr_bob"); len(ss) != 1 || !slices.Equal(ss[0].AMR, []string{"pwd", "hwk", "user", "mfa"}) {
		t.Fatalf("sessions %+v", ss)
	}
}

// TestMFAEnrolmentStep: a user who must enrol gets the enrolment step (QR
// as a data: PNG allowed by this page's CSP only, the secret as text, a
// code field); a wrong code shows it again; the right one shows the
// recovery codes and starts no session: the person signs in again.
func TestMFAEnrolmentStep(t *testing.T) {
	env := newSigninEnv(t)
	env.mfa.enrol["usr_bob"] = true
	hc := env.browser(t)
	a := env.signIn(t, hc, "bob@example.com", "right", false)
	for _, want := range []string{"Set up two-step verification", `<img class="qr" src="data:image/png;base64,`,
		"JBSW Y3DP EHPK 3PXP", `name="step" value="mfa_enrol"`, `autocomplete="one-time-code"`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the enrolment step lacks %s", want)
		}
	}
	if csp := a.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "img-src 'self' data: https://cdn.example.com;") {
		t.Fatalf("enrolment CSP %q", csp)
	}
	if sessionCookie(a) != nil || len(env.mfa.started) != 1 {
		t.Fatalf("cookie %v, started %v", sessionCookie(a), env.mfa.started)
	}
	form := mfaForm(t, a)
	form.Set("step", "mfa_enrol")
	for _, k := range []string{"secret", "otpauth_uri"} {
		m := regexp.MustCompile(`name="` + k + `" value="([^"]+)"`).FindStringSubmatch(a.body)
		if m == nil {
			t.Fatalf("no %s field", k)
		}
		form.Set(k, strings.ReplaceAll(m[1], "&amp;", "&"))
	}
	a = env.do(t, hc, http.MethodPost, "/login", with(form, "code", "000000"))
	if a.StatusCode != http.StatusBadRequest || !strings.Contains(a.body, "That code is not right") ||
		!strings.Contains(a.body, `src="data:image/png;base64,`) || len(env.mfa.started) != 1 {
		t.Fatalf("wrong enrolment code: %d (started %d):\n%s", a.StatusCode, len(env.mfa.started), a.body)
	}
	a = env.do(t, hc, http.MethodPost, "/login", with(form, "code", fakeTOTP))
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, "CODE-ONE-AAAA-BBBB") ||
		!strings.Contains(a.body, `href="/login?request=req1"`) || sessionCookie(a) != nil {
		t.Fatalf("confirmed: %d:\n%s", a.StatusCode, a.body)
	}
	if !slices.Equal(env.mfa.confirmed, []string{"usr_bob"}) || len(env.store.sessionsOf("usr_bob")) != 0 {
		t.Fatalf("confirmed %v", env.mfa.confirmed)
	}
	// The enrolment form cannot finish a login of a user who need not enrol.
	env.mfa.enrol["usr_bob"] = false
	env.mfa.methods["usr_bob"] = []string{mfa.MethodTOTP}
	f2 := mfaForm(t, env.signIn(t, hc, "bob@example.com", "right", false))
	a = env.do(t, hc, http.MethodPost, "/login", with(f2, "step", "mfa_enrol", "code", fakeTOTP))
	if a.StatusCode != http.StatusBadRequest || sessionCookie(a) != nil || len(env.mfa.confirmed) != 1 {
		t.Fatalf("enrol with a plain mfa_token: %d", a.StatusCode)
	}
}

// TestAccountSecurity: the page needs the browser session; every change
// goes through the MFA service; turning the app off and removing a
// passkey need the current password (a wrong one changes nothing); every
// form refuses a missing CSRF token.
func TestAccountSecurity(t *testing.T) {
	env := newSigninEnv(t)
	hc := env.browser(t)
	if a := env.do(t, hc, http.MethodGet, "/account/security", nil); a.StatusCode != http.StatusOK ||
		!strings.Contains(a.body, "You are not signed in") || strings.Contains(a.body, "<form") {
		t.Fatalf("without a session: %d:\n%s", a.StatusCode, a.body)
	}
	if a := env.signIn(t, hc, "ann@example.com", "right", false); sessionCookie(a) == nil {
		t.Fatal("ann could not sign in")
	}
	a := env.do(t, hc, http.MethodGet, "/account/security", nil)
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, `value="totp_start"`) || !strings.Contains(a.body, `value="passkey_begin"`) {
		t.Fatalf("security page: %d:\n%s", a.StatusCode, a.body)
	}
	csrf := csrfIn(t, a)
	post := func(kv ...string) answer {
		f := url.Values{"csrf_token": {csrf}}
		for i := 0; i+1 < len(kv); i += 2 {
			f.Set(kv[i], kv[i+1])
		}
		return env.do(t, hc, http.MethodPost, "/account/security", f)
	}
	if a := post("action", "totp_start", "csrf_token", ""); a.StatusCode != http.StatusForbidden || len(env.mfa.started) != 0 {
		t.Fatalf("no CSRF: %d", a.StatusCode)
	}
	a = post("action", "totp_start")
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, `src="data:image/png;base64,`) ||
		!strings.Contains(a.Header.Get("Content-Security-Policy"), "img-src 'self' data:;") {
		t.Fatalf("start: %d %q:\n%s", a.StatusCode, a.Header.Get("Content-Security-Policy"), a.body)
	}
	if a := post("action", "totp_confirm", "code", "000000"); a.StatusCode != http.StatusBadRequest || env.mfa.totp["usr_ann"] {
		t.Fatalf("wrong code: %d", a.StatusCode)
	}
	if a := post("action", "totp_confirm", "code", fakeTOTP); a.StatusCode != http.StatusOK || !strings.Contains(a.body, "CODE-TWO-CCCC-DDDD") {
		t.Fatalf("confirm: %d:\n%s", a.StatusCode, a.body)
	}
	a = env.do(t, hc, http.MethodGet, "/account/security", nil)
	if !strings.Contains(a.body, `value="totp_remove"`) || !strings.Contains(a.body, "10 unused recovery codes") {
		t.Fatalf("after enrolment:\n%s", a.body)
	}
	if a := post("action", "recovery_regenerate"); !strings.Contains(a.body, "NEW1-AAAA-BBBB-CCCC") {
		t.Fatalf("regenerate:\n%s", a.body)
	}
	// Turning it off: a confirmation, a wrong password, then the right one.
	if a := post("action", "totp_remove"); a.StatusCode != http.StatusOK || !strings.Contains(a.body, `autocomplete="current-password"`) {
		t.Fatalf("confirmation: %d:\n%s", a.StatusCode, a.body)
	}
	for _, pw := range []string{"", "wrong"} {
		if a := post("action", "totp_remove", "confirm", "1", "current_password", pw); a.StatusCode != http.StatusBadRequest {
			t.Fatalf("password %q: %d", pw, a.StatusCode)
		}
	}
	if len(env.mfa.removed) != 0 {
		t.Fatal("removed without the password")
	}
	if a := post("action", "totp_remove", "confirm", "1", "current_password", "right"); a.StatusCode != http.StatusSeeOther ||
		!slices.Equal(env.mfa.removed, []string{"usr_ann"}) {
		t.Fatalf("remove: %d %v", a.StatusCode, env.mfa.removed)
	}
	// A passkey: removal needs the password too.
	if a := post("action", "passkey_remove", "id", "cred1", "confirm", "1", "current_password", "wrong"); a.StatusCode != http.StatusBadRequest || len(env.keys.removed) != 0 {
		t.Fatalf("passkey, wrong password: %d", a.StatusCode)
	}
	if a := post("action", "passkey_remove", "id", "cred1", "confirm", "1", "current_password", "right"); a.StatusCode != http.StatusSeeOther ||
		!slices.Equal(env.keys.removed, []string{"usr_ann/cred1"}) {
		t.Fatalf("passkey remove: %d %v", a.StatusCode, env.keys.removed)
	}
	a = post("action", "passkey_begin", "name", "Laptop")
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, `data-webauthn="create"`) || !strings.Contains(a.body, `name="webauthn_handle" value="reg"`) ||
		!strings.Contains(a.Header.Get("Content-Security-Policy"), "script-src 'self';") {
		t.Fatalf("passkey begin: %d:\n%s", a.StatusCode, a.body)
	}
	if a := post("action", "nonsense"); a.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown action: %d", a.StatusCode)
	}
}

// TestWidenCSP: only the named additions, only once.
func TestWidenCSP(t *testing.T) {
	got := widenCSP(ContentSecurityPolicy, true, true)
	want := "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	if got != want || widenCSP(got, true, false) != got || widenCSP(ContentSecurityPolicy, false, false) != ContentSecurityPolicy {
		t.Fatalf("widenCSP: %q", got)
	}
}

// TestMFAThenTemporaryPassword: a user with a temporary password and a
// second factor passes both steps, then gets the change-password step; the
// session the change starts keeps the login's amr. Fails on the old code:
// the change-password step started its new session with amr ["pwd"].
func TestMFAThenTemporaryPassword(t *testing.T) {
	env := newSigninEnv(t)
	env.mfa.methods["usr_tmp"] = []string{mfa.MethodTOTP}
	hc := env.browser(t)
	form := mfaForm(t, env.signIn(t, hc, "tmp@example.com", "temp", false))
	a := env.do(t, hc, http.MethodPost, "/login", with(form, "code", fakeTOTP))
	if a.StatusCode != http.StatusOK || !strings.Contains(a.body, `name="step" value="change_password"`) || sessionCookie(a) == nil {
		t.Fatalf("after the code: %d:\n%s", a.StatusCode, a.body)
	}
	change := url.Values{"csrf_token": {csrfIn(t, a)}, "request": {"req1"}, "step": {"change_password"},
		"current_password": {"temp"}, "password": {"a new good password"}, "confirm_password": {"a new good password"}}
	if a := env.do(t, hc, http.MethodPost, "/login", change); a.StatusCode != http.StatusOK || !strings.Contains(a.body, `value="allow"`) {
		t.Fatalf("after the change: %d:\n%s", a.StatusCode, a.body)
	}
	ss := env.store.sessionsOf("usr_tmp")
	if len(ss) != 1 || !slices.Equal(ss[0].AMR, []string{"pwd", "otp", "mfa"}) {
		t.Fatalf("sessions after the change %+v, want one with amr [pwd otp mfa]", ss)
	}
}
