package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// fakeChecker accepts "pw" for any user of its directory, by id.
type fakeChecker struct{ dir *fakeDirectory }

func (c fakeChecker) Check(ctx context.Context, a passcheck.Attempt) (passcheck.Result, error) {
	u, err := c.dir.GetUser(ctx, a.Login)
	if err != nil || a.Password != "pw" || !u.Active {
		return passcheck.Result{}, passcheck.ErrBadCredentials
	}
	return passcheck.Result{User: u}, nil
}

func (fakeChecker) Succeeded(context.Context, passcheck.Result) {}

// fakeMFA is a SecondFactor: users in enrolled have TOTP code "123456"
// and recovery codes "rc-1".."rc-3"; tokens are single use, bound to
// their client, five attempts.
type fakeMFA struct {
	mu       sync.Mutex
	enrolled map[string]bool
	tokens   map[string]*fakePending
	codes    map[string]int // recovery codes left by user
	n        int
	// requiredFor is the role whose holders the policy requires a second
	// factor of ("": nobody's).
	requiredFor string
}

func (m *fakeMFA) Required(roles []string) bool {
	return m.requiredFor != "" && slices.Contains(roles, m.requiredFor)
}

type fakePending struct {
	p        mfa.Pending
	attempts int
	used     bool
}

type fakeFactor struct {
	method, code string
	m            *fakeMFA
}

func (f fakeFactor) Method() string { return f.method }
func (f fakeFactor) Verify(_ context.Context, userID string) ([]string, error) {
	if f.method == mfa.MethodTOTP && f.code == "123456" {
		return []string{mfa.AMROTP}, nil
	}
	if f.method == mfa.MethodRecoveryCode && strings.HasPrefix(f.code, "rc-") && f.m.codes[userID] > 0 {
		f.m.codes[userID]--
		return nil, nil
	}
	return nil, mfa.ErrBadCode
}

func (m *fakeMFA) Begin(_ context.Context, u store.User, _ *mfa.Summary, _ ratelimit.Counted, clientID, scope, tenant string, at time.Time,
	_ []string) (*mfa.Challenge, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.enrolled[u.ID] {
		return nil, nil
	}
	m.n++
	tok := fmt.Sprintf("mfa-%d", m.n)
	m.tokens[tok] = &fakePending{p: mfa.Pending{UserID: u.ID, ClientID: clientID, Scope: scope, Tenant: tenant, AuthTime: at,
		Methods: []string{mfa.MethodTOTP, mfa.MethodRecoveryCode}}}
	return &mfa.Challenge{Token: tok, Methods: []string{mfa.MethodTOTP, mfa.MethodRecoveryCode}}, nil
}

func (m *fakeMFA) CompleteForTenant(ctx context.Context, token, clientID, tenant string, f mfa.Factor, _ mfa.Meta) (mfa.Completed, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.tokens[token]
	if !ok || p.used || p.attempts >= 5 || (clientID != "" && p.p.ClientID != clientID) || (tenant != "" && tenant != p.p.Tenant) {
		return mfa.Completed{}, mfa.ErrInvalidToken
	}
	p.attempts++
	amr, err := f.Verify(ctx, p.p.UserID)
	if err != nil {
		return mfa.Completed{}, fmt.Errorf("verify: %w", err)
	}
	p.used = true
	done := mfa.Completed{Pending: p.p, AMR: append(append([]string{mfa.AMRPassword}, amr...), mfa.AMRMFA), RecoveryCodesLeft: -1}
	if f.Method() == mfa.MethodRecoveryCode {
		done.RecoveryCodesLeft = m.codes[p.p.UserID]
	}
	return done, nil
}

func (m *fakeMFA) TOTPCode(code string) mfa.Factor {
	return fakeFactor{method: mfa.MethodTOTP, code: code, m: m}
}
func (m *fakeMFA) RecoveryCode(code string) mfa.Factor {
	return fakeFactor{method: mfa.MethodRecoveryCode, code: code, m: m}
}

type mfaEnv struct {
	*codeEnv
	mfa *fakeMFA
}

func newMFAEnv(t *testing.T) *mfaEnv {
	t.Helper()
	e := newCodeEnv(t, "EdDSA")
	m := &fakeMFA{enrolled: map[string]bool{"u1": true}, tokens: map[string]*fakePending{}, codes: map[string]int{"u1": 3}}
	pw := []string{GrantPassword, GrantRefreshToken}
	e.dir.clients["app"] = store.Client{ID: "app", SecretHash: HashSecret("s3cret"), Grants: pw, FirstParty: true}
	e.dir.clients["app2"] = store.Client{ID: "app2", SecretHash: HashSecret("s3cret"), Grants: pw, FirstParty: true}
	e.dir.clients["svc"] = store.Client{ID: "svc", SecretHash: HashSecret("s3cret"), Grants: []string{GrantClientCredentials}, Scopes: []string{"docs:read"}}
	e.dir.users["u3"] = store.User{ID: "u3", Email: "cy@example.com", Active: true, Roles: []string{"viewer"}}
	e.svc = NewService(e.svc.cfg, Deps{Clients: e.dir, Users: e.dir, State: e.state, Signer: fakeSigner{alg: "EdDSA"}, Sealer: plainSealer{},
		Permissions: fakePerms{}, Audit: e.audit, Metrics: e.metrics, Codes: e.once, Now: e.clock.Now,
		Checker: fakeChecker{dir: e.dir}, MFA: m})
	return &mfaEnv{codeEnv: e, mfa: m}
}

func (e *mfaEnv) token(t *testing.T, client string, params map[string]string) (Response, error) {
	t.Helper()
	req, err := ParseTokenRequest(params, ClientCredentials{ID: client, Secret: "s3cret"})
	if err != nil {
		return Response{}, err
	}
	return e.exchange(req)
}

// challenge runs a password grant of user that must answer mfa_required.
func (e *mfaEnv) challenge(t *testing.T, client, user, scope string) string {
	t.Helper()
	p := map[string]string{"grant_type": GrantPassword, "username": user, "password": "pw"}
	if scope != "" {
		p["scope"] = scope
	}
	resp, err := e.token(t, client, p)
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != "mfa_required" || ae.Status != 400 || ae.MFA() == nil || ae.MFA().Token == "" {
		t.Fatalf("password grant of an enrolled user: %+v, %v; want 400 mfa_required with an mfa_token", resp, err)
	}
	if resp.AccessToken != "" {
		t.Fatal("mfa_required came with a token")
	}
	return ae.MFA().Token
}

func claimsOf(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func wantAMR(t *testing.T, what string, c map[string]any, amr []string, acr string) {
	t.Helper()
	var got []string
	if l, ok := c["amr"].([]any); ok {
		for _, v := range l {
			got = append(got, v.(string))
		}
	}
	if !slices.Equal(got, amr) || c["acr"] != acr && !(acr == "" && c["acr"] == nil) {
		t.Fatalf("%s: amr %v acr %v, want %v %q", what, c["amr"], c["acr"], amr, acr)
	}
}

func TestPasswordGrantAsksForSecondFactor(t *testing.T) {
	e := newMFAEnv(t)
	tok := e.challenge(t, "app", "u1", "openid docs:read")
	if p := e.mfa.tokens[tok].p; p.Scope != "openid docs:read" || p.ClientID != "app" || !p.AuthTime.Equal(e.clock.Now()) {
		t.Fatalf("challenge bound to %+v", p)
	}
	if slices.Contains(e.audit.actions(), "login.succeeded") {
		t.Fatal("login.succeeded audited before the second factor")
	}
	// A scope the login could never have is refused before any factor is spent.
	_, err := e.token(t, "app", map[string]string{"grant_type": GrantPassword, "username": "u1", "password": "pw", "scope": "admin:all"})
	wantOAuthError(t, err, "invalid_scope")
	// A user without a second factor signs in with the password alone: amr pwd.
	resp, err := e.token(t, "app", map[string]string{"grant_type": GrantPassword, "username": "u3", "password": "pw", "scope": "openid"})
	if err != nil {
		t.Fatal(err)
	}
	wantAMR(t, "password access token", claimsOf(t, resp.AccessToken), []string{"pwd"}, "pwd")
	wantAMR(t, "password id token", claimsOf(t, resp.IDToken), []string{"pwd"}, "pwd")
	// client_credentials tokens carry neither.
	resp, err = e.token(t, "svc", map[string]string{"grant_type": GrantClientCredentials})
	if err != nil {
		t.Fatal(err)
	}
	wantAMR(t, "client_credentials token", claimsOf(t, resp.AccessToken), nil, "")
}

func TestMFAGrants(t *testing.T) {
	otp := func(tok, code string) map[string]string {
		return map[string]string{"grant_type": GrantMFAOTP, "mfa_token": tok, "otp": code}
	}
	t.Run("ok/otp_then_refresh_keeps_amr", func(t *testing.T) {
		e := newMFAEnv(t)
		login := e.clock.Now()
		tok := e.challenge(t, "app", "u1", "openid docs:read")
		e.clock.Add(20 * time.Second)
		resp, err := e.token(t, "app", otp(tok, "123456"))
		if err != nil {
			t.Fatal(err)
		}
		at, idt := claimsOf(t, resp.AccessToken), claimsOf(t, resp.IDToken)
		want := []string{"pwd", "otp", "mfa"}
		wantAMR(t, "access token", at, want, "mfa")
		wantAMR(t, "id token", idt, want, "mfa")
		if at["auth_time"] != float64(login.Unix()) || at["scope"] != "docs:read openid" || resp.RecoveryCodesLeft != nil {
			t.Fatalf("access token %v (auth_time want %d), recovery codes left %v", at, login.Unix(), resp.RecoveryCodesLeft)
		}
		e.clock.Add(time.Hour)
		next, err := e.token(t, "app", map[string]string{"grant_type": GrantRefreshToken, "refresh_token": resp.RefreshToken})
		if err != nil {
			t.Fatal(err)
		}
		wantAMR(t, "refreshed access token", claimsOf(t, next.AccessToken), want, "mfa")
		wantAMR(t, "refreshed id token", claimsOf(t, next.IDToken), want, "mfa")
		if a := e.audit.actions(); !slices.Contains(a, "login.succeeded") {
			t.Fatalf("audit %v", a)
		}
		if e.metrics.n["mfa_otp"] != 1 {
			t.Fatalf("metrics %v", e.metrics.n)
		}
	})
	t.Run("ok/recovery_code", func(t *testing.T) {
		e := newMFAEnv(t)
		tok := e.challenge(t, "app", "u1", "openid")
		resp, err := e.token(t, "app", map[string]string{"grant_type": GrantMFARecoveryCode, "mfa_token": tok, "recovery_code": "rc-1"})
		if err != nil {
			t.Fatal(err)
		}
		wantAMR(t, "recovery access token", claimsOf(t, resp.AccessToken), []string{"pwd", "mfa"}, "mfa")
		if resp.RecoveryCodesLeft == nil || *resp.RecoveryCodesLeft != 2 {
			t.Fatalf("recovery codes left %v, want 2", resp.RecoveryCodesLeft)
		}
	})
	for _, tc := range []struct {
		name   string
		client string
		params func(tok string) map[string]string
		code   string
	}{
		{"fail/wrong_code", "app", func(tok string) map[string]string { return otp(tok, "000000") }, "invalid_grant"},
		{"fail/other_client", "app2", func(tok string) map[string]string { return otp(tok, "123456") }, "invalid_grant"},
		{"fail/unknown_token", "app", func(string) map[string]string { return otp("nope", "123456") }, "invalid_grant"},
		{"fail/oversize_token", "app", func(string) map[string]string { return otp(strings.Repeat("a", 600), "123456") }, "invalid_grant"},
		{"fail/wrong_recovery_code", "app", func(tok string) map[string]string {
			return map[string]string{"grant_type": GrantMFARecoveryCode, "mfa_token": tok, "recovery_code": "nope"}
		}, "invalid_grant"},
		{"fail/missing_otp", "app", func(tok string) map[string]string { return otp(tok, "") }, "invalid_request"},
		{"fail/missing_token", "app", func(string) map[string]string { return otp("", "123456") }, "invalid_request"},
		{"fail/missing_recovery_code", "app", func(tok string) map[string]string {
			return map[string]string{"grant_type": GrantMFARecoveryCode, "mfa_token": tok}
		}, "invalid_request"},
		{"fail/client_without_password_grant", "svc", func(tok string) map[string]string { return otp(tok, "123456") }, "unauthorized_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMFAEnv(t)
			tok := e.challenge(t, "app", "u1", "")
			resp, err := e.token(t, tc.client, tc.params(tok))
			wantOAuthError(t, err, tc.code)
			if resp.AccessToken != "" {
				t.Fatal("a refused MFA grant came with a token")
			}
		})
	}
	t.Run("fail/token_used_once", func(t *testing.T) {
		e := newMFAEnv(t)
		tok := e.challenge(t, "app", "u1", "")
		if _, err := e.token(t, "app", otp(tok, "123456")); err != nil {
			t.Fatal(err)
		}
		_, err := e.token(t, "app", otp(tok, "123456"))
		wantOAuthError(t, err, "invalid_grant")
	})
	t.Run("fail/deactivated_between_steps", func(t *testing.T) {
		e := newMFAEnv(t)
		tok := e.challenge(t, "app", "u1", "")
		_, _ = e.dir.UpdateUser(context.Background(), "u1", func(u *store.User) error { u.Active = false; return nil })
		_, err := e.token(t, "app", otp(tok, "123456"))
		wantOAuthError(t, err, "invalid_grant")
	})
	t.Run("fail/sessions_ended_between_steps", func(t *testing.T) {
		e := newMFAEnv(t)
		// A client without refresh tokens: no family for the token state to refuse.
		e.dir.clients["norefresh-pw"] = store.Client{ID: "norefresh-pw", SecretHash: HashSecret("s3cret"), Grants: []string{GrantPassword}}
		tok := e.challenge(t, "norefresh-pw", "u1", "")
		e.clock.Add(time.Second)
		if err := e.svc.EndUserSessions(context.Background(), "u1"); err != nil {
			t.Fatal(err)
		}
		e.clock.Add(time.Second)
		resp, err := e.token(t, "norefresh-pw", otp(tok, "123456"))
		wantOAuthError(t, err, "invalid_grant")
		if resp.AccessToken != "" {
			t.Fatal("a login from before the cut-off got a token")
		}
	})
	t.Run("fail/no_second_factor_service", func(t *testing.T) {
		e := newMFAEnv(t)
		e.svc.mfa = nil
		_, err := e.token(t, "app", otp("mfa-1", "123456"))
		wantOAuthError(t, err, "invalid_grant")
	})
}

// TestMFAGrantOutage: a throttle refusal (429) or a store failure of the
// second step is answered as such, never as invalid_grant or a 500.
func TestMFAGrantOutage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
	}{
		{"throttled", apierr.ErrRateLimited.WithRetryAfter(30), 429},
		{"store_down", errors.New("redis: connection refused"), 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newMFAEnv(t)
			e.svc.mfa = failingMFA{fakeMFA: e.mfa, err: tc.err}
			_, err := e.token(t, "app", map[string]string{"grant_type": GrantMFAOTP, "mfa_token": "x", "otp": "123456"})
			if ae := apierr.From(err); ae.Status != tc.status {
				t.Fatalf("error %v (status %d), want %d", err, ae.Status, tc.status)
			}
			_, err = e.token(t, "app", map[string]string{"grant_type": GrantPassword, "username": "u1", "password": "pw"})
			if ae := apierr.From(err); ae.Status != tc.status {
				t.Fatalf("password step: %v (status %d), want %d", err, ae.Status, tc.status)
			}
		})
	}
}

type failingMFA struct {
	*fakeMFA
	err error
}

func (f failingMFA) Begin(context.Context, store.User, *mfa.Summary, ratelimit.Counted, string, string, string, time.Time, []string) (*mfa.Challenge, error) {
	return nil, f.err
}
func (f failingMFA) CompleteForTenant(context.Context, string, string, string, mfa.Factor, mfa.Meta) (mfa.Completed, error) {
	return mfa.Completed{}, f.err
}
