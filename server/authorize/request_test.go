package authorize

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

const (
	issuer    = "https://id.example"
	challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
)

var testNow = time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)

func testEnv() Env {
	code := []string{"authorization_code", "refresh_token"}
	return Env{Issuer: issuer, Hints: fakeHints{}, Permissions: fakePerms{"docs:read", "docs:write"}, Clients: fakeClients{
		"web": {ID: "web", Grants: code, RequirePKCE: true, RedirectURIs: []string{"https://app.example/cb", "https://app.example/cb2?tenant=a"}},
		"one": {ID: "one", Grants: code, Scopes: []string{"docs:read"}, RedirectURIs: []string{"https://one.example/cb"}},
		"native": {ID: "native", Public: true, Grants: code, ApplicationType: store.ApplicationNative,
			RedirectURIs: []string{"http://127.0.0.1/cb", "http://[::1]/cb", "com.example.app:/cb", "http://localhost:5/cb"}},
		"pwonly": {ID: "pwonly", Grants: []string{"password"}, RedirectURIs: []string{"https://pw.example/cb"}},
		// Created again under its id after a request made at testNow, and
		// within testNow's millisecond (TestCheckRedirect).
		"recreated": {ID: "recreated", Grants: code, RedirectURIs: []string{"https://app.example/cb"}, CreatedAt: testNow.Add(time.Millisecond)},
		"same_ms":   {ID: "same_ms", Grants: code, RedirectURIs: []string{"https://app.example/cb"}, CreatedAt: testNow.Add(time.Millisecond - 1)},
	}}
}

func baseParams() url.Values {
	return url.Values{"client_id": {"web"}, "redirect_uri": {"https://app.example/cb"}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"xyz"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}
}

// odd is a state with bytes a client may well send: spaces, percent signs,
// ampersands, quotes, angle brackets, backslashes, 128 VSCHAR characters in
// all (RFC 6749 Appendix A.5: nothing else is a state).
var odd = (`a b%20&c=d+e"'<>/?#\` + strings.Repeat("~", 128))[:128]

func TestParseRequest(t *testing.T) {
	type want struct {
		page  bool   // HTML page, no redirect
		code  string // redirect error code; "" = success
		mode  string // mode of the error (query by default)
		check func(t *testing.T, r *Request)
	}
	set := func(kv ...string) func(url.Values) {
		return func(v url.Values) {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] == "<del>" {
					v.Del(kv[i])
				} else {
					v.Set(kv[i], kv[i+1])
				}
			}
		}
	}
	cases := []struct {
		name string
		mod  func(url.Values)
		want want
	}{
		{"ok/base", nil, want{check: func(t *testing.T, r *Request) {
			if r.RedirectURI != "https://app.example/cb" || r.RedirectURISent != r.RedirectURI || r.State != "xyz" ||
				r.CodeChallenge != challenge || r.ResponseMode != ModeQuery || !r.WantsOpenID() || !r.ReceivedAt.Equal(testNow) {
				t.Fatalf("%+v", r)
			}
		}}},
		// 1. one value per parameter, 16 KiB
		{"fail/step1 repeated parameter", func(v url.Values) { v.Add("scope", "openid") }, want{page: true}},
		{"fail/step1 repeated unknown parameter", func(v url.Values) { v["extra"] = []string{"a", "b"} }, want{page: true}},
		{"fail/step1 repeated redirect_uri", func(v url.Values) { v.Add("redirect_uri", "https://app.example/cb") }, want{page: true}},
		{"fail/step1 over 16 KiB", set("extra", strings.Repeat("a", 16<<10)), want{page: true}},
		{"fail/step1 not UTF-8", set("extra", "\xff"), want{page: true}},
		// state is 1*VSCHAR (RFC 6749 Appendix A.5), at most 4 KiB: else the
		// page, as it could not be echoed byte for byte.
		{"fail/step1 state over 4 KiB", set("state", strings.Repeat("s", 4097)), want{page: true}},
		{"ok/step1 state of 4 KiB", set("state", strings.Repeat("<", 4096)), want{}},
		{"fail/step1 state with a tab", set("state", "a\tb"), want{page: true}},
		{"fail/step1 state with a newline", set("state", "a\nb"), want{page: true}},
		{"fail/step1 state with DEL", set("state", "a\x7f"), want{page: true}},
		{"fail/step1 state not ASCII", set("state", "café"), want{page: true}},
		{"fail/step1 state not VSCHAR, form_post", set("state", "ü", "response_mode", "form_post"), want{page: true}},
		// 2. client
		{"fail/step2 missing client_id", set("client_id", "<del>"), want{page: true}},
		{"fail/step2 empty client_id", set("client_id", ""), want{page: true}},
		{"fail/step2 unknown client", set("client_id", "nobody"), want{page: true}},
		{"fail/step2 implausible client id", set("client_id", "Web<script>"), want{page: true}},
		// 3. redirect_uri
		{"fail/step3 extra path", set("redirect_uri", "https://app.example/cb/x"), want{page: true}},
		{"fail/step3 added query", set("redirect_uri", "https://app.example/cb?x=1"), want{page: true}},
		{"fail/step3 trailing slash", set("redirect_uri", "https://app.example/cb/"), want{page: true}},
		{"fail/step3 other host", set("redirect_uri", "https://evil.example/cb"), want{page: true}},
		{"fail/step3 other port", set("redirect_uri", "https://app.example:8443/cb"), want{page: true}},
		{"fail/step3 fragment", set("redirect_uri", "https://app.example/cb#x"), want{page: true}},
		{"fail/step3 upper case", set("redirect_uri", "https://APP.example/cb"), want{page: true}},
		{"fail/step3 omitted with two registered", set("redirect_uri", "<del>", "scope", "docs:read"), want{page: true}},
		{"fail/step3 omitted with openid", set("client_id", "one", "redirect_uri", "<del>"), want{page: true}},
		{"ok/step3 omitted non-OIDC with one registered", set("client_id", "one", "redirect_uri", "<del>", "scope", "docs:read"),
			want{check: func(t *testing.T, r *Request) {
				if r.RedirectURI != "https://one.example/cb" || r.RedirectURISent != "" {
					t.Fatalf("redirect %q sent %q", r.RedirectURI, r.RedirectURISent)
				}
			}}},
		{"ok/step3 registered URI with its own query", set("redirect_uri", "https://app.example/cb2?tenant=a"), want{}},
		// RFC 8252 loopback rule
		{"ok/loopback 127.0.0.1 any port", set("client_id", "native", "redirect_uri", "http://127.0.0.1:54321/cb"),
			want{check: func(t *testing.T, r *Request) {
				if r.RedirectURI != "http://127.0.0.1:54321/cb" {
					t.Fatalf("the response must go to the port sent, got %q", r.RedirectURI)
				}
			}}},
		{"ok/loopback [::1] any port", set("client_id", "native", "redirect_uri", "http://[::1]:61000/cb"), want{}},
		{"fail/loopback other path", set("client_id", "native", "redirect_uri", "http://127.0.0.1:54321/other"), want{page: true}},
		{"fail/localhost other port", set("client_id", "native", "redirect_uri", "http://localhost:6/cb"), want{page: true}},
		{"ok/localhost exact", set("client_id", "native", "redirect_uri", "http://localhost:5/cb"), want{}},
		{"ok/private-use scheme", set("client_id", "native", "redirect_uri", "com.example.app:/cb"), want{}},
		// 4. response_mode
		{"fail/step4 fragment mode", set("response_mode", "fragment"), want{code: ErrInvalidRequest, mode: ModeQuery}},
		{"fail/step4 unknown mode", set("response_mode", "web_message"), want{code: ErrInvalidRequest, mode: ModeQuery}},
		{"ok/step4 form_post", set("response_mode", "form_post"), want{check: func(t *testing.T, r *Request) {
			if r.ResponseMode != ModeFormPost {
				t.Fatal(r.ResponseMode)
			}
		}}},
		{"fail/step5 in form_post mode", set("response_mode", "form_post", "response_type", "token"), want{code: ErrUnsupportedResponseType, mode: ModeFormPost}},
		// 5. response_type
		{"fail/step5 response_type missing", set("response_type", "<del>"), want{code: ErrInvalidRequest}},
		{"fail/step5 token", set("response_type", "token"), want{code: ErrUnsupportedResponseType}},
		{"fail/step5 id_token", set("response_type", "id_token"), want{code: ErrUnsupportedResponseType}},
		{"fail/step5 code id_token", set("response_type", "code id_token"), want{code: ErrUnsupportedResponseType}},
		// 6. grant
		{"fail/step6 client without the grant", set("client_id", "pwonly", "redirect_uri", "https://pw.example/cb"), want{code: ErrUnauthorizedClient}},
		// 7. request objects
		{"fail/step7 request", set("request", "eyJ.x.y"), want{code: ErrRequestNotSupported}},
		{"fail/step7 request_uri", set("request_uri", "urn:x"), want{code: ErrRequestURINotSupported}},
		{"fail/step7 registration", set("registration", "{}"), want{code: ErrRegistrationNotSupported}},
		// 8. scope
		{"fail/step8 unknown permission", set("scope", "openid docs:delete"), want{code: ErrInvalidScope}},
		{"fail/step8 unknown scope", set("scope", "openid phone"), want{code: ErrInvalidScope}},
		{"fail/step8 wildcard", set("scope", "docs:*"), want{code: ErrInvalidScope}},
		{"fail/step8 not allowed to the client", set("client_id", "one", "redirect_uri", "https://one.example/cb", "scope", "openid docs:write"), want{code: ErrInvalidScope}},
		{"ok/step8 permissions and OIDC scopes, reordered", set("scope", "docs:read email openid offline_access"), want{check: func(t *testing.T, r *Request) {
			if !r.WantsOffline() || len(r.Scopes) != 4 {
				t.Fatalf("%v", r.Scopes)
			}
		}}},
		// 9. PKCE
		{"fail/step9 require_pkce without challenge", set("code_challenge", "<del>", "code_challenge_method", "<del>"), want{code: ErrInvalidRequest}},
		{"fail/step9 public without challenge", set("client_id", "native", "redirect_uri", "com.example.app:/cb", "code_challenge", "<del>", "code_challenge_method", "<del>"), want{code: ErrInvalidRequest}},
		{"ok/step9 confidential without require_pkce", set("client_id", "one", "redirect_uri", "https://one.example/cb", "code_challenge", "<del>", "code_challenge_method", "<del>"), want{}},
		{"fail/step9 method plain", set("code_challenge_method", "plain"), want{code: ErrInvalidRequest}},
		{"fail/step9 method missing", set("code_challenge_method", "<del>"), want{code: ErrInvalidRequest}},
		{"fail/step9 method without challenge", set("client_id", "one", "redirect_uri", "https://one.example/cb", "code_challenge", "<del>"), want{code: ErrInvalidRequest}},
		{"fail/step9 challenge 42 chars", set("code_challenge", challenge[:42]), want{code: ErrInvalidRequest}},
		{"fail/step9 challenge 44 chars", set("code_challenge", challenge+"A"), want{code: ErrInvalidRequest}},
		{"fail/step9 challenge bad chars", set("code_challenge", challenge[:42]+"="), want{code: ErrInvalidRequest}},
		// 10. prompt, max_age, id_token_hint, lengths
		{"fail/step10 prompt none login", set("prompt", "none login"), want{code: ErrInvalidRequest}},
		{"fail/step10 prompt unknown", set("prompt", "create"), want{code: ErrInvalidRequest}},
		{"ok/step10 prompt login consent select_account", set("prompt", "login consent select_account"), want{check: func(t *testing.T, r *Request) {
			if !r.Prompt.Login || !r.Prompt.Consent || !r.Prompt.SelectAccount || r.Prompt.None {
				t.Fatalf("%+v", r.Prompt)
			}
		}}},
		{"fail/step10 max_age -1", set("max_age", "-1"), want{code: ErrInvalidRequest}},
		{"fail/step10 max_age x", set("max_age", "x"), want{code: ErrInvalidRequest}},
		{"fail/step10 max_age +5", set("max_age", "+5"), want{code: ErrInvalidRequest}},
		// Any non-negative integer (OIDC Core 3.1.2.1), past int64 too: a
		// relying party's sentinel signs the person in (found by a review:
		// ten digits or more were refused).
		{"ok/step10 max_age 2147483647", set("max_age", "2147483647"), want{check: func(t *testing.T, r *Request) {
			if !r.HasMaxAge || r.MaxAge != 2147483647*time.Second {
				t.Fatalf("%v %v", r.HasMaxAge, r.MaxAge)
			}
		}}},
		{"ok/step10 max_age huge is capped", set("max_age", "99999999999999999999"), want{check: func(t *testing.T, r *Request) {
			if !r.HasMaxAge || r.MaxAge != maxMaxAge {
				t.Fatalf("%v %v", r.HasMaxAge, r.MaxAge)
			}
		}}},
		{"ok/step10 max_age 0", set("max_age", "0"), want{check: func(t *testing.T, r *Request) {
			if !r.HasMaxAge || r.MaxAge != 0 {
				t.Fatalf("%v %v", r.HasMaxAge, r.MaxAge)
			}
		}}},
		{"fail/step10 forged id_token_hint", set("id_token_hint", "eyJhbGciOiJub25lIn0.e30."), want{code: ErrInvalidRequest}},
		{"ok/step10 id_token_hint", set("id_token_hint", "hint-u1"), want{check: func(t *testing.T, r *Request) {
			if r.HintSubject != "u1" {
				t.Fatal(r.HintSubject)
			}
		}}},
		{"fail/step10 nonce over 1 KiB", set("nonce", strings.Repeat("n", 1025)), want{code: ErrInvalidRequest}},
		{"fail/step10 login_hint over 320 B", set("login_hint", strings.Repeat("l", 321)), want{code: ErrInvalidRequest}},
		{"fail/step10 tenant over 63 B", set("tenant", strings.Repeat("t", 64)), want{code: ErrInvalidRequest}},
		{"ok/step10 tenant of 63 B", set("tenant", strings.Repeat("t", 63)), want{}},
		// nonce is any string (OIDC Core §3.1.2.1): only its length counts.
		{"ok/step10 nonce with control characters and non-ASCII", set("nonce", "n\tö\x01"), want{}},
		// accepted and ignored; empty = absent
		{"ok/ignored parameters", set("extra", "foobar", "display", "popup", "ui_locales", "fr", "claims_locales", "de",
			"acr_values", "urn:x", "login_hint", "ada@example.com", "claims", `{"id_token":{"email":{"essential":true}}}`, "resource", "https://api.example"),
			want{check: func(t *testing.T, r *Request) {
				if r.LoginHint != "ada@example.com" {
					t.Fatal(r.LoginHint)
				}
			}}},
		{"ok/empty values are absent", set("request", "", "prompt", "", "max_age", "", "id_token_hint", "", "response_mode", "", "nonce", ""),
			want{check: func(t *testing.T, r *Request) {
				if r.HasMaxAge || r.Prompt != (Prompt{}) || r.ResponseMode != ModeQuery {
					t.Fatalf("%+v", r)
				}
			}}},
		{"ok/no state and no minimum state length", set("state", "<del>"), want{}},
		{"ok/one-character state", set("state", "a"), want{}},
		{"ok/odd state byte for byte", set("state", odd), want{check: func(t *testing.T, r *Request) {
			if r.State != odd {
				t.Fatalf("state %q", r.State)
			}
		}}},
		// the first failure wins
		{"order/response_mode before response_type", set("response_mode", "fragment", "response_type", "token"), want{code: ErrInvalidRequest}},
		{"order/response_type before grant", set("client_id", "pwonly", "redirect_uri", "https://pw.example/cb", "response_type", "token"), want{code: ErrUnsupportedResponseType}},
		{"order/request before scope", set("request", "x", "scope", "nope"), want{code: ErrRequestNotSupported}},
		{"order/scope before PKCE", set("scope", "nope", "code_challenge_method", "plain"), want{code: ErrInvalidScope}},
		{"order/PKCE before prompt", set("prompt", "none login", "code_challenge_method", "plain"), want{code: ErrInvalidRequest}},
		{"order/redirect_uri before response_type", set("redirect_uri", "https://evil.example/cb", "response_type", "token"), want{page: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := baseParams()
			if tc.mod != nil {
				tc.mod(v)
			}
			r, err := ParseRequest(context.Background(), v, testEnv(), testNow)
			var pe *PageError
			var re *RedirectError
			switch {
			case tc.want.page:
				if !errors.As(err, &pe) || pe.Status != http.StatusBadRequest {
					t.Fatalf("want an error page, got %v", err)
				}
			case tc.want.code != "":
				if !errors.As(err, &re) || re.Code != tc.want.code {
					t.Fatalf("want redirect error %s, got %v", tc.want.code, err)
				}
				wantMode := tc.want.mode
				if wantMode == "" {
					wantMode = ModeQuery
				}
				if re.Mode != wantMode || re.Issuer != issuer || re.State != v.Get("state") || re.RedirectURI != v.Get("redirect_uri") {
					t.Fatalf("redirect error %+v", re)
				}
			default:
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if r.Issuer != issuer || r.ClientID != v.Get("client_id") {
					t.Fatalf("%+v", r)
				}
				if tc.want.check != nil {
					tc.want.check(t, r)
				}
			}
		})
	}
}

func TestParseRequestStoreDown(t *testing.T) {
	v := baseParams()
	v.Set("client_id", "broken")
	_, err := ParseRequest(context.Background(), v, testEnv(), testNow)
	var pe *PageError
	if !errors.As(err, &pe) || pe.Status != http.StatusServiceUnavailable || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("store down: %v", err)
	}
}

// TestCheckRedirect: an answer to a request made at testNow that waited
// goes to its redirect URI only while the client exists, was created by
// then (token.IssuedTo: not deleted and created again since; the
// recreated case answered the new client before the change), has the
// authorization_code grant and registers the URI under step 3's rule
// (loopback IP literals on any port); every refusal is a page (400, or
// 503 when the client cannot be read), never a redirect. An allowed answer
// returns the client as it is now.
func TestCheckRedirect(t *testing.T) {
	for _, tc := range []struct {
		name, client, uri string
		status            int // 0: allowed
	}{
		{"ok/created_in_the_requests_millisecond", "same_ms", "https://app.example/cb", 0},
		{"fail/created_again_after_the_request", "recreated", "https://app.example/cb", http.StatusBadRequest},
		{"ok/registered", "web", "https://app.example/cb", 0},
		{"ok/registered_with_query", "web", "https://app.example/cb2?tenant=a", 0},
		{"ok/loopback_any_port", "native", "http://127.0.0.1:49152/cb", 0},
		{"ok/loopback_ipv6_any_port", "native", "http://[::1]:8080/cb", 0},
		{"fail/deleted_client", "gone", "https://app.example/cb", http.StatusBadRequest},
		{"fail/implausible_client_id", "", "https://app.example/cb", http.StatusBadRequest},
		{"fail/uri_no_longer_registered", "one", "https://app.example/cb", http.StatusBadRequest},
		{"fail/trailing_slash", "web", "https://app.example/cb/", http.StatusBadRequest},
		{"fail/loopback_other_path", "native", "http://127.0.0.1:49152/other", http.StatusBadRequest},
		{"fail/localhost_other_port", "native", "http://localhost:6/cb", http.StatusBadRequest},
		{"fail/code_grant_removed", "pwonly", "https://pw.example/cb", http.StatusBadRequest},
		{"fail/store_down", "broken", "https://app.example/cb", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CheckRedirect(context.Background(), testEnv().Clients, tc.client, tc.uri, testNow)
			if tc.status == 0 {
				if err != nil || c.ID != tc.client {
					t.Fatalf("refused: %v (client %q)", err, c.ID)
				}
				return
			}
			var pe *PageError
			if !errors.As(err, &pe) || pe.Status != tc.status || strings.Contains(pe.Message, "example") {
				t.Fatalf("CheckRedirect = %v, want a page with status %d naming no URI", err, tc.status)
			}
		})
	}
}

// FuzzParseRequest: any query never panics, and every refusal is a page or
// a redirect error (never a bare error that could become a 500).
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{baseParams().Encode(), "client_id=web&client_id=web", "client_id=web&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code&prompt=none+login",
		"client_id=native&redirect_uri=http%3A%2F%2F127.0.0.1%3A0%2Fcb", "max_age=%ff&client_id=web", "=&&=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		r, err := ParseRequest(context.Background(), v, testEnv(), testNow)
		var pe *PageError
		var re *RedirectError
		switch {
		case err == nil:
			if r.RedirectURI == "" || r.ClientID == "" {
				t.Fatalf("accepted without a redirect URI: %+v", r)
			}
		case errors.As(err, &pe):
		case errors.As(err, &re):
			if re.RedirectURI == "" || re.Issuer != issuer {
				t.Fatalf("redirect error without a target: %+v", re)
			}
		default:
			t.Fatalf("refusal %v is neither a page nor a redirect", err)
		}
	})
}
