package authorize

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

func parsedRequest(t *testing.T, kv ...string) *Request {
	t.Helper()
	v := baseParams()
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	r, err := ParseRequest(context.Background(), v, testEnv(), testNow)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// location parses a 303's Location and returns its query.
func location(t *testing.T, resp Response, wantPrefix string) url.Values {
	t.Helper()
	if resp.Status != http.StatusSeeOther || resp.Body != nil {
		t.Fatalf("status %d, want 303", resp.Status)
	}
	if !strings.HasPrefix(resp.Location, wantPrefix) {
		t.Fatalf("location %q, want prefix %q", resp.Location, wantPrefix)
	}
	u, err := url.Parse(resp.Location)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

func TestSuccessQuery(t *testing.T) {
	for _, state := range []string{"xyz", odd, strings.Repeat("s", 128), ""} {
		r := parsedRequest(t, "state", state)
		if state == "" {
			r.State = ""
		}
		q := location(t, r.Success("c0de"), "https://app.example/cb?")
		if q.Get("code") != "c0de" || q.Get("iss") != issuer {
			t.Fatalf("query %v", q)
		}
		if _, has := q["state"]; has != (state != "") || q.Get("state") != state {
			t.Fatalf("state %q, want %q byte for byte", q.Get("state"), state)
		}
		if len(q) != 2+map[bool]int{true: 1}[state != ""] {
			t.Fatalf("unexpected parameters %v", q)
		}
	}
	// A registered URI's own query is kept.
	r := parsedRequest(t, "redirect_uri", "https://app.example/cb2?tenant=a")
	q := location(t, r.Success("c"), "https://app.example/cb2?tenant=a&")
	if q.Get("tenant") != "a" || q.Get("code") != "c" {
		t.Fatalf("%v", q)
	}
	// Loopback: the port sent.
	r = parsedRequest(t, "client_id", "native", "redirect_uri", "http://127.0.0.1:54321/cb")
	location(t, r.Success("c"), "http://127.0.0.1:54321/cb?")
}

func TestErrorQueryOnlyStandardParameters(t *testing.T) {
	v := baseParams()
	v.Set("state", odd)
	v.Set("response_type", "token")
	_, err := ParseRequest(context.Background(), v, testEnv(), testNow)
	var re *RedirectError
	if !errors.As(err, &re) {
		t.Fatal(err)
	}
	re.Description += "\r\n\t\"\\ é" // never sent as such
	q := location(t, re.Response(), "https://app.example/cb?")
	for k := range q {
		if !slices.Contains([]string{"error", "error_description", "state", "iss"}, k) {
			t.Fatalf("unexpected parameter %q", k)
		}
	}
	if q.Get("error") != ErrUnsupportedResponseType || q.Get("state") != odd || q.Get("iss") != issuer {
		t.Fatalf("%v", q)
	}
	if !regexp.MustCompile(`^[\x20\x21\x23-\x5b\x5d-\x7e]+$`).MatchString(q.Get("error_description")) {
		t.Fatalf("error_description has characters RFC 6749 forbids: %q", q.Get("error_description"))
	}
}

func TestFormPost(t *testing.T) {
	r := parsedRequest(t, "response_mode", "form_post", "state", odd)
	resp := r.Success("c0de")
	body := string(resp.Body)
	if resp.Status != http.StatusOK || resp.Location != "" || !strings.HasPrefix(resp.ContentType, "text/html") {
		t.Fatalf("%+v", resp)
	}
	// The script's hash is the one the CSP allows, and the only script source.
	m := regexp.MustCompile(`<script>(.*?)</script>`).FindAllStringSubmatch(body, -1)
	if len(m) != 1 {
		t.Fatalf("scripts: %v", m)
	}
	sum := sha256.Sum256([]byte(m[0][1]))
	hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	if resp.ScriptHash != hash || !strings.Contains(resp.CSP, "script-src "+hash+";") {
		t.Fatalf("CSP %q, script hash %s", resp.CSP, hash)
	}
	for _, want := range []string{"default-src 'none'", "form-action https://app.example", "frame-ancestors 'none'"} {
		if !strings.Contains(resp.CSP, want) {
			t.Fatalf("CSP %q lacks %q", resp.CSP, want)
		}
	}
	if !strings.Contains(body, `<form method="post" action="https://app.example/cb">`) || !strings.Contains(body, "<noscript>") ||
		!strings.Contains(body, `<button type="submit">`) {
		t.Fatalf("body %s", body)
	}
	// Every value, odd state included, round-trips through the HTML escaping.
	fields := map[string]string{}
	for _, f := range regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`).FindAllStringSubmatch(body, -1) {
		fields[html.UnescapeString(f[1])] = html.UnescapeString(f[2])
	}
	if fields["code"] != "c0de" || fields["state"] != odd || fields["iss"] != issuer || len(fields) != 3 {
		t.Fatalf("fields %v", fields)
	}
	if strings.Contains(body, "<>") {
		t.Fatal("state not escaped")
	}
	// An error in form_post mode.
	e := r.Fail(ErrAccessDenied, "Denied.").Response()
	if e.Status != http.StatusOK || !strings.Contains(string(e.Body), `name="error" value="access_denied"`) {
		t.Fatalf("%s", e.Body)
	}
}

func TestFormAction(t *testing.T) {
	for uri, want := range map[string]string{
		"https://app.example/cb":    "https://app.example",
		"http://127.0.0.1:54321/cb": "http://127.0.0.1:54321",
		"com.example.app:/cb":       "com.example.app:",
		// CSP cannot name an IPv6 literal: Chromium ignored the origin and
		// refused the redirect to the client (TestBrowserSignInChromium).
		"http://[::1]:61000/cb": "http:",
	} {
		if got := FormAction(uri); got != want {
			t.Fatalf("FormAction(%q) = %q, want %q", uri, got, want)
		}
	}
}

// issueCode prepares a code and stores it in st, as the authorize flow's
// store call does with the grant beside it.
func issueCode(t *testing.T, st *fakeOnce, r *Request, login Login, ttl time.Duration, now time.Time) (string, token.AuthCode, error) {
	t.Helper()
	p, err := PrepareCode(r, login, ttl, now)
	if err != nil {
		return "", token.AuthCode{}, err
	}
	if err := st.PutOnce(context.Background(), p.Once.Kind, p.Once.KeyHash, p.Once.Value, p.Once.ExpiresAt); err != nil {
		t.Fatalf("store the code: %v", err)
	}
	return p.Code, p.Record, nil
}

func TestIssueCode(t *testing.T) {
	st := newFakeOnce()
	r := parsedRequest(t, "scope", "openid offline_access docs:read", "nonce", "n1")
	login := Login{UserID: "u1", AuthTime: testNow.Add(-time.Hour), AMR: []string{"pwd"}, BrowserSessionID: "bs1"}
	code, rec, err := issueCode(t, st, r, login, time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := base64.RawURLEncoding.DecodeString(code); err != nil || len(b) < 16 {
		t.Fatalf("code %q is not >= 128 bits of base64url", code)
	}
	for k := range st.recs {
		if strings.Contains(k, code) {
			t.Fatal("the code itself is stored")
		}
	}
	raw, err := st.TakeOnce(context.Background(), store.OnceAuthCode, token.HashSecret(code), testNow.Add(59*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got, err := token.ParseAuthCode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.ClientID != "web" || got.UserID != "u1" || got.RedirectURI != "https://app.example/cb" || got.CodeChallenge != challenge ||
		got.Nonce != "n1" || !got.AuthTime.Equal(login.AuthTime) || !slices.Equal(got.AMR, []string{"pwd"}) || got.SID == "" ||
		got.SID != rec.SID || !got.Offline || got.BrowserSessionID != "bs1" || len(got.Scopes) != 3 {
		t.Fatalf("record %+v", got)
	}
	// Expired after the TTL.
	code2, _, _ := issueCode(t, st, r, login, time.Minute, testNow)
	if _, err := st.TakeOnce(context.Background(), store.OnceAuthCode, token.HashSecret(code2), testNow.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("code after its TTL: %v", err)
	}
	if code2 == code {
		t.Fatal("codes repeat")
	}
	// The redirect_uri omitted at /authorize is recorded as omitted.
	r3 := parsedRequest(t, "client_id", "one", "redirect_uri", "https://one.example/cb", "scope", "docs:read")
	r3.RedirectURISent = ""
	_, rec3, _ := issueCode(t, st, r3, login, time.Minute, testNow)
	if rec3.RedirectURI != "" {
		t.Fatal(rec3.RedirectURI)
	}
	if got.User != nil {
		t.Fatalf("a login without the account read carries a snapshot: %+v", got.User)
	}
}

// TestIssueCodeCarriesTheAccount: the account read for the decision goes
// into the code (token.CodeUser), and only the account that signed in.
func TestIssueCodeCarriesTheAccount(t *testing.T) {
	st := newFakeOnce()
	r := parsedRequest(t, "scope", "openid")
	u := store.User{ID: "u1", Email: "ada@example.com", Name: "Ada", Active: true, EmailVerified: true,
		Roles: []string{"editor"}, PasswordHash: "$argon2id$secret"}
	login := Login{UserID: "u1", AuthTime: testNow.Add(-time.Hour), User: &u}
	code, _, err := issueCode(t, st, r, login, time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.TakeOnce(context.Background(), store.OnceAuthCode, token.HashSecret(code), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "argon2id") {
		t.Fatal("the code record holds the password hash")
	}
	got, err := token.ParseAuthCode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got.User == nil {
		t.Fatal("no account snapshot in the code")
	}
	back := got.User.StoreUser(got.UserID)
	if back.ID != "u1" || back.Email != u.Email || back.Name != u.Name || !back.Active || !back.EmailVerified ||
		!slices.Equal(back.Roles, u.Roles) || back.PasswordHash != "" {
		t.Fatalf("snapshot %+v", back)
	}
	other := store.User{ID: "u2", Active: true}
	login.User = &other
	if _, _, err := issueCode(t, st, r, login, time.Minute, testNow); err == nil {
		t.Fatal("a code was issued with another account's snapshot")
	}
}

func TestPendingTwoTabsBothComplete(t *testing.T) {
	st := newFakeOnce()
	ctx := context.Background()
	a, b := parsedRequest(t, "state", "tab-a"), parsedRequest(t, "state", "tab-b")
	idA, err := SavePending(ctx, st, a, 30*time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	idB, _ := SavePending(ctx, st, b, 30*time.Minute, testNow)
	if idA == idB {
		t.Fatal("two requests share an id")
	}
	// Sign in in A (peek), finish A, then finish B.
	if r, err := LoadPending(ctx, st, idA, testNow.Add(time.Minute)); err != nil || r.State != "tab-a" {
		t.Fatalf("load A: %v", err)
	}
	for id, state := range map[string]string{idA: "tab-a", idB: "tab-b"} {
		r, err := FinishPending(ctx, st, id, testNow.Add(2*time.Minute))
		if err != nil || r.State != state || r.ClientID != "web" || r.CodeChallenge != challenge {
			t.Fatalf("finish %s: %+v %v", state, r, err)
		}
	}
	// The back button: never a second code.
	if _, err := FinishPending(ctx, st, idA, testNow.Add(3*time.Minute)); !errors.Is(err, ErrPendingDone) {
		t.Fatalf("second finish: %v", err)
	}
}

func TestPendingFinishedOnce(t *testing.T) {
	st := newFakeOnce()
	id, _ := SavePending(context.Background(), st, parsedRequest(t), 30*time.Minute, testNow)
	const n = 16
	var wg sync.WaitGroup
	start := make(chan struct{})
	var mu sync.Mutex
	ok := 0
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := FinishPending(context.Background(), st, id, testNow); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d finishes, want 1", ok)
	}
}

func TestPendingExpiry(t *testing.T) {
	st := newFakeOnce()
	ctx := context.Background()
	r := parsedRequest(t, "state", odd, "response_mode", "form_post")
	id, _ := SavePending(ctx, st, r, 30*time.Minute, testNow)
	_, err := LoadPending(ctx, st, id, testNow.Add(31*time.Minute))
	var re *RedirectError
	if !errors.As(err, &re) || re.Code != ErrAccessDenied || re.State != odd || re.Mode != ModeFormPost ||
		re.RedirectURI != "https://app.example/cb" || re.Issuer != issuer || re.ClientID != "web" || !re.MadeAt.Equal(r.MadeAt()) {
		t.Fatalf("expired: %+v", err)
	}
	// A tombstone kept without its client (written before clients were
	// checked again) cannot be checked: a page, never a redirect.
	old := randomToken(16)
	val, _ := json.Marshal(map[string]string{"redirect_uri": "https://app.example/cb", "mode": ModeQuery, "issuer": issuer})
	if err := st.PutOnce(ctx, store.OnceAuthRequest, tombstoneKey(old), val, testNow.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPending(ctx, st, old, testNow); !errors.As(err, new(*PageError)) {
		t.Fatalf("tombstone without its client: %v", err)
	}
	// The tombstone lasts an hour after the request's expiry (a day
	// before: each unauthenticated request held its state 49 times as
	// long as the request itself).
	if _, err := LoadPending(ctx, st, id, testNow.Add(30*time.Minute+59*time.Minute)); !errors.As(err, &re) {
		t.Fatalf("59 minutes after the expiry: %v, want access_denied", err)
	}
	_, err = FinishPending(ctx, st, id, testNow.Add(30*time.Minute+time.Hour+time.Second))
	var pe *PageError
	if !errors.As(err, &pe) {
		t.Fatalf("an hour after the expiry: %v, want the page", err)
	}
	// Unknown and absurd ids: a page.
	for _, bad := range []string{"", "nope", strings.Repeat("x", 100)} {
		if _, err := LoadPending(ctx, st, bad, testNow); !errors.As(err, &pe) {
			t.Fatalf("id %q: %v", bad, err)
		}
	}
}
