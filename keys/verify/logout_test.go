package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

const testClientID = "rp-1"

// logoutClaims are valid logout token claims at now (BCL §2.4).
func logoutClaims(now time.Time, jti string) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": testClientID, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(), "jti": jti,
		"sub": "usr_1", "sid": "ses_1", "events": map[string]any{verify.BackchannelLogoutEvent: map[string]any{}},
	}
}

var logoutTyp = map[string]any{"typ": "logout+jwt"}

func mustLogoutVerifier(t *testing.T, keys verify.KeySet, now func() time.Time, mutate func(*verify.LogoutConfig)) *verify.LogoutVerifier {
	t.Helper()
	cfg := verify.LogoutConfig{Issuer: testIssuer, ClientID: testClientID, Now: now}
	if mutate != nil {
		mutate(&cfg)
	}
	v, err := verify.NewLogoutVerifier(keys, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestLogoutVerify(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	clk := func() time.Time { return now }
	es := newSigner(t, jose.ES256, "ec-1")
	rs := newSigner(t, jose.RS256, "rsa-1")
	keys := staticKeys(t, es, rs)
	attacker := newSigner(t, jose.ES256, "attacker")
	var n atomic.Int64
	// base returns valid claims with a fresh jti, so no case is a replay.
	base := func() map[string]any { return logoutClaims(now, fmt.Sprintf("jti-%d", n.Add(1))) }
	payload, _ := json.Marshal(base())
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"ok/ES256", es.sign(t, base(), logoutTyp), nil},
		{"ok/RS256", rs.sign(t, base(), logoutTyp), nil},
		{"ok/typ application/logout+jwt", es.sign(t, base(), map[string]any{"typ": "application/logout+jwt"}), nil},
		{"ok/aud among several", es.sign(t, with(base(), map[string]any{"aud": []string{"other", testClientID}}), logoutTyp), nil},
		{"ok/sid only", es.sign(t, with(base(), map[string]any{"sub": nil}), logoutTyp), nil},
		{"ok/sub only", es.sign(t, with(base(), map[string]any{"sid": nil}), logoutTyp), nil},
		{"ok/event member with content", es.sign(t, with(base(), map[string]any{"events": map[string]any{verify.BackchannelLogoutEvent: map[string]any{"x": 1}}}), logoutTyp), nil},
		{"ok/expired within leeway", es.sign(t, with(base(), map[string]any{"exp": now.Add(-29 * time.Second).Unix()}), logoutTyp), nil},

		{"fail/wrong aud", es.sign(t, with(base(), map[string]any{"aud": "rp-2"}), logoutTyp), verify.ErrWrongAudience},
		{"fail/wrong iss", es.sign(t, with(base(), map[string]any{"iss": "https://evil.example"}), logoutTyp), verify.ErrWrongIssuer},
		{"fail/missing events", es.sign(t, with(base(), map[string]any{"events": nil}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/events without the logout member", es.sign(t, with(base(), map[string]any{"events": map[string]any{"http://schemas.openid.net/event/other": map[string]any{}}}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/logout member not an object", es.sign(t, with(base(), map[string]any{"events": map[string]any{verify.BackchannelLogoutEvent: "yes"}}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/logout member null", es.sign(t, with(base(), map[string]any{"events": map[string]any{verify.BackchannelLogoutEvent: json.RawMessage("null")}}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/events not an object", es.sign(t, with(base(), map[string]any{"events": []string{verify.BackchannelLogoutEvent}}), logoutTyp), verify.ErrMalformed},
		{"fail/nonce present", es.sign(t, with(base(), map[string]any{"nonce": "n-0S6_WzA2Mj"}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/nonce null", es.sign(t, with(base(), map[string]any{"nonce": json.RawMessage("null")}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/typ JWT (an id token)", es.sign(t, base(), map[string]any{"typ": "JWT"}), verify.ErrWrongType},
		{"fail/typ at+jwt (an access token)", es.sign(t, base(), nil), verify.ErrWrongType},
		{"fail/no typ", es.sign(t, base(), map[string]any{"typ": ""}), verify.ErrWrongType},
		{"fail/alg none", rawJWS(map[string]any{"alg": "none", "kid": "ec-1", "typ": "logout+jwt"}, payload, nil) + "AA", verify.ErrBadSignature},
		{"fail/foreign key", attacker.sign(t, base(), logoutTyp), verify.ErrUnknownKey},
		{"fail/foreign key under our kid", attacker.sign(t, base(), map[string]any{"typ": "logout+jwt", "kid": "ec-1"}), verify.ErrBadSignature},
		{"fail/expired", es.sign(t, with(base(), map[string]any{"exp": now.Add(-31 * time.Second).Unix()}), logoutTyp), verify.ErrExpired},
		{"fail/exp missing", es.sign(t, with(base(), map[string]any{"exp": nil}), logoutTyp), verify.ErrMalformed},
		{"fail/iat missing", es.sign(t, with(base(), map[string]any{"iat": nil}), logoutTyp), verify.ErrMalformed},
		{"fail/iat in the future", es.sign(t, with(base(), map[string]any{"iat": now.Add(time.Minute).Unix()}), logoutTyp), verify.ErrNotYetValid},
		{"fail/iss missing", es.sign(t, with(base(), map[string]any{"iss": nil}), logoutTyp), verify.ErrMalformed},
		{"fail/aud missing", es.sign(t, with(base(), map[string]any{"aud": nil}), logoutTyp), verify.ErrMalformed},
		{"fail/neither sub nor sid", es.sign(t, with(base(), map[string]any{"sub": nil, "sid": nil}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/empty sub and sid", es.sign(t, with(base(), map[string]any{"sub": "", "sid": ""}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/jti missing", es.sign(t, with(base(), map[string]any{"jti": nil}), logoutTyp), verify.ErrNotLogoutToken},
		{"fail/payload not JSON", es.signPayload(t, []byte("logout"), logoutTyp), verify.ErrMalformed},
		{"fail/garbage", "not.a.token", verify.ErrMalformed},
	}
	v := mustLogoutVerifier(t, keys, clk, nil)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tc.token)
			if tc.want == nil {
				if err != nil || c == nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.Issuer != testIssuer || c.ID == "" || !c.IssuedAt.Equal(time.Unix(now.Unix(), 0)) || (c.Subject == "" && c.SessionID == "") {
					t.Fatalf("claims %+v", c)
				}
				return
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, verify.ErrInvalidLogoutToken) || c != nil {
				t.Fatalf("Verify = %v, %v; want %v (and ErrInvalidLogoutToken)", c, err, tc.want)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "invalid logout token: ") || strings.Contains(msg, "access token") || strings.Contains(msg, tc.token) {
				t.Fatalf("error text %q", msg)
			}
		})
	}
}

// A jti is accepted once until its token expires, also when the same token
// arrives on many goroutines at once; the cache is bounded.
func TestLogoutVerifyReplay(t *testing.T) {
	clk := newClock()
	es := newSigner(t, jose.ES256, "ec-1")
	v := mustLogoutVerifier(t, staticKeys(t, es), clk.Now, func(c *verify.LogoutConfig) { c.MaxReplayEntries = 3 })
	ctx := context.Background()

	tok := es.sign(t, logoutClaims(clk.Now(), "jti-race"), logoutTyp)
	const racers = 16
	var start, done sync.WaitGroup
	start.Add(1)
	var ok, replayed atomic.Int64
	for range racers {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			_, err := v.Verify(ctx, tok)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, verify.ErrReplayed):
				replayed.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	start.Done()
	done.Wait()
	if ok.Load() != 1 || replayed.Load() != racers-1 {
		t.Fatalf("%d accepted, %d replays; want 1 and %d", ok.Load(), replayed.Load(), racers-1)
	}
	if _, err := v.Verify(ctx, tok); !errors.Is(err, verify.ErrReplayed) {
		t.Fatalf("replay later: %v", err)
	}
	for _, jti := range []string{"jti-2", "jti-3"} {
		if _, err := v.Verify(ctx, es.sign(t, logoutClaims(clk.Now(), jti), logoutTyp)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Verify(ctx, es.sign(t, logoutClaims(clk.Now(), "jti-4"), logoutTyp)); !errors.Is(err, verify.ErrReplayCacheFull) {
		t.Fatalf("a fourth jti with a cache of 3: %v, want ErrReplayCacheFull", err)
	}
	// Once the remembered tokens expired, they are forgotten and room is made.
	clk.Advance(3 * time.Minute)
	if _, err := v.Verify(ctx, es.sign(t, logoutClaims(clk.Now(), "jti-4"), logoutTyp)); err != nil {
		t.Fatalf("after the remembered tokens expired: %v", err)
	}
}

func TestLogoutHandler(t *testing.T) {
	clk := newClock()
	es := newSigner(t, jose.ES256, "ec-1")
	v := mustLogoutVerifier(t, staticKeys(t, es), clk.Now, nil)
	var mu sync.Mutex
	var got []*verify.LogoutClaims
	var fail atomic.Bool
	srv := httptest.NewServer(verify.LogoutHandler(v, func(_ context.Context, c *verify.LogoutClaims) error {
		if fail.Load() {
			return errors.New("session store down")
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, c)
		return nil
	}))
	t.Cleanup(srv.Close)
	form := "application/x-www-form-urlencoded"
	post := func(t *testing.T, ctype, body string) (int, http.Header, map[string]string) {
		t.Helper()
		resp, err := http.Post(srv.URL, ctype, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]string
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &out); err != nil {
				t.Fatalf("body %q: %v", raw, err)
			}
		}
		return resp.StatusCode, resp.Header, out
	}
	good := es.sign(t, logoutClaims(clk.Now(), "jti-ok"), logoutTyp)
	retried := es.sign(t, logoutClaims(clk.Now(), "jti-retried"), logoutTyp)
	tests := []struct {
		name     string
		ctype    string
		body     string
		failCB   bool
		status   int
		wantDesc string
	}{
		{name: "ok", ctype: form, body: url.Values{"logout_token": {good}}.Encode(), status: 200},
		{name: "fail/replayed", ctype: form, body: url.Values{"logout_token": {good}}.Encode(), status: 400, wantDesc: "already used"},
		{name: "fail/an access token", ctype: form, body: url.Values{"logout_token": {es.sign(t, logoutClaims(clk.Now(), "x1"), nil)}}.Encode(), status: 400, wantDesc: "not a logout token"},
		{name: "fail/nonce", ctype: form, body: url.Values{"logout_token": {es.sign(t, with(logoutClaims(clk.Now(), "x2"), map[string]any{"nonce": "n"}), logoutTyp)}}.Encode(), status: 400, wantDesc: "not a logout token"},
		{name: "fail/no token", ctype: form, body: "state=x", status: 400, wantDesc: "missing"},
		{name: "fail/token twice", ctype: form, body: url.Values{"logout_token": {good, good}}.Encode(), status: 400, wantDesc: "once"},
		{name: "fail/JSON body", ctype: "application/json", body: `{"logout_token":"x"}`, status: 400, wantDesc: "x-www-form-urlencoded"},
		{name: "fail/too large", ctype: form, body: "logout_token=" + strings.Repeat("A", 64<<10), status: 400, wantDesc: "too large"},
		{name: "fail/callback failed", ctype: form, body: url.Values{"logout_token": {retried}}.Encode(), failCB: true, status: 400, wantDesc: "could not be carried out"},
		{name: "ok/the same token after a failed logout", ctype: form, body: url.Values{"logout_token": {retried}}.Encode(), status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fail.Store(tc.failCB)
			status, h, body := post(t, tc.ctype, tc.body)
			if status != tc.status || h.Get("Cache-Control") != "no-store" {
				t.Fatalf("status %d Cache-Control %q, want %d no-store (body %v)", status, h.Get("Cache-Control"), tc.status, body)
			}
			if tc.status == 200 {
				if body != nil {
					t.Fatalf("a 200 with a body: %v", body)
				}
				return
			}
			if body["error"] != "invalid_request" || !strings.Contains(body["error_description"], tc.wantDesc) || h.Get("Content-Type") != "application/json" {
				t.Fatalf("body %v, want invalid_request mentioning %q", body, tc.wantDesc)
			}
		})
	}
	mu.Lock()
	if len(got) != 2 || got[0].ID != "jti-ok" || got[0].SessionID != "ses_1" || got[0].Subject != "usr_1" || got[1].ID != "jti-retried" {
		t.Fatalf("callback got %+v", got)
	}
	mu.Unlock()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// A Guard with a LoggedOut refuses the access tokens of a logged-out
// session (or of a user logged out everywhere) issued up to the logout, and
// admits tokens issued after it and tokens of other sessions.
func TestGuardLoggedOut(t *testing.T) {
	clk := newClock()
	es := newSigner(t, jose.ES256, "ec-1")
	keys := staticKeys(t, es)
	lo := verify.NewLoggedOut(verify.LoggedOutOptions{Now: clk.Now, MaxEntries: 3, MaxAccessTokenLifetime: time.Hour})
	g := verify.NewGuard(mustVerifier(t, keys, clk.Now), verify.GuardOptions{Revocations: lo})
	h := g.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	start := clk.Now()
	access := func(sid, sub string, iat time.Time) string {
		c := with(accessClaims(iat), map[string]any{"sid": sid, "sub": sub})
		if sid == "" {
			delete(c, "sid")
		}
		return es.sign(t, c, nil)
	}
	call := func(tok string) (int, string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code, w.Header().Get("WWW-Authenticate")
	}
	before := access("ses_1", "usr_1", start)
	otherSession := access("ses_2", "usr_1", start)
	if code, _ := call(before); code != http.StatusNoContent {
		t.Fatalf("before the logout: %d", code)
	}
	if err := lo.Add(&verify.LogoutClaims{SessionID: "ses_1", Subject: "usr_1", IssuedAt: start.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"fail/the logged-out session's token", before, http.StatusUnauthorized},
		{"fail/issued in the second of the logout", access("ses_1", "usr_1", start.Add(time.Second)), http.StatusUnauthorized},
		{"ok/the same sid issued after the logout (offline_access)", access("ses_1", "usr_1", start.Add(2*time.Second)), http.StatusNoContent},
		{"ok/another session of the user", otherSession, http.StatusNoContent},
	}
	for _, tc := range tests {
		code, challenge := call(tc.token)
		if code != tc.want {
			t.Fatalf("%s: %d, want %d", tc.name, code, tc.want)
		}
		if code == http.StatusUnauthorized && !strings.Contains(challenge, `error="invalid_token"`) {
			t.Fatalf("%s: challenge %q", tc.name, challenge)
		}
	}
	// A logout token without sid logs the user out everywhere.
	if err := lo.Add(&verify.LogoutClaims{Subject: "usr_1", IssuedAt: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	if code, _ := call(otherSession); code != http.StatusUnauthorized {
		t.Fatalf("after a sub-wide logout: %d", code)
	}
	if code, _ := call(access("ses_9", "usr_2", start)); code != http.StatusNoContent {
		t.Fatalf("another user: %d", code)
	}
	// Bounded: a full list refuses more logouts, until its entries are past
	// every token's lifetime.
	if err := lo.Add(&verify.LogoutClaims{SessionID: "ses_3", IssuedAt: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := lo.Add(&verify.LogoutClaims{SessionID: "ses_4", IssuedAt: clk.Now()}); !errors.Is(err, verify.ErrTooManyLoggedOut) {
		t.Fatalf("a fourth entry of 3: %v", err)
	}
	clk.Advance(time.Hour + time.Minute)
	if err := lo.Add(&verify.LogoutClaims{SessionID: "ses_4", IssuedAt: clk.Now()}); err != nil {
		t.Fatalf("after the old entries' tokens expired: %v", err)
	}
}
