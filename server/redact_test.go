package server_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestRedactQuery: what the access log keeps of a query: the values of
// the public parameters (a client, a flow, a page of a list). Every other
// value is replaced: tokens, codes, secrets, API keys and upstream id
// tokens sent as subject_token, mfa_tokens, one-time and recovery codes,
// request objects and pending sign-ins' ids, hints naming a person, the
// state and nonce of a sign-in, a search for people, and names nobody
// listed.
func TestRedactQuery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		query  string
		hidden []string
		kept   map[string]string
	}{
		{"token=abc&x=1", []string{"token", "x"}, nil},
		{"id_token_hint=eyJ.a.b&post_logout_redirect_uri=https%3A%2F%2Fa.example%2F&state=s1",
			[]string{"id_token_hint", "state"}, map[string]string{"post_logout_redirect_uri": "https://a.example/"}},
		{"client_id=web&login_hint=ann%40example.com&nonce=n1&scope=openid&request_uri=urn%3Ax",
			[]string{"login_hint", "nonce", "request_uri"}, map[string]string{"client_id": "web", "scope": "openid"}},
		{"code=c&Code_Verifier=v&logout_hint=ann", []string{"code", "Code_Verifier", "logout_hint"}, nil},
		{"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=pcak_k&subject_token_type=urn%3Aportcullis%3Aparams%3Aoauth%3Atoken-type%3Aapi_key&actor_token=a&client_assertion=eyJ",
			[]string{"subject_token", "actor_token", "client_assertion"},
			map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token_type": "urn:portcullis:params:oauth:token-type:api_key"}},
		{"mfa_token=m&otp=123456&recovery_code=ABCD-EFGH&request=pending-id&q=ann%40example.com",
			[]string{"mfa_token", "otp", "recovery_code", "request", "q"}, nil},
		{"cursor=c1&limit=50&action=login.failed&response_type=code&prompt=none",
			nil, map[string]string{"cursor": "c1", "limit": "50", "action": "login.failed", "response_type": "code", "prompt": "none"}},
	} {
		got, err := url.ParseQuery(server.RedactQuery(tc.query))
		if err != nil {
			t.Fatalf("%q: %v", tc.query, err)
		}
		for _, k := range tc.hidden {
			if got.Get(k) != "REDACTED" {
				t.Errorf("%q: %s = %q, want REDACTED", tc.query, k, got.Get(k))
			}
		}
		for k, v := range tc.kept {
			if got.Get(k) != v {
				t.Errorf("%q: %s = %q, want %q", tc.query, k, got.Get(k), v)
			}
		}
	}
	if got := server.RedactQuery("a=%zz"); got != "[unparseable query redacted]" {
		t.Errorf("unparseable: %q", got)
	}
}

// TestQuerySecretsNeverLogged: a client that puts a token exchange's
// secrets in the URL (an API key as subject_token, an mfa_token, a
// recovery code, a client assertion) is refused, and the access log's
// line of that request, and of a GET the endpoint does not allow (405),
// holds none of them.
func TestQuerySecretsNeverLogged(t *testing.T) {
	t.Parallel()
	e := newKeyEnv(t, st.SQLite)
	k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "ci", "scopes": []string{"projects:read"}})
	secrets := []string{k.Key, "MFA-TOKEN-SECRET-VALUE", "ABCD-EFGH-IJKL-MNOP", "eyJASSERTION", "PENDING-SIGN-IN-ID"}
	q := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {k.Key},
		"subject_token_type": {"urn:portcullis:params:oauth:token-type:api_key"}, "mfa_token": {secrets[1]},
		"otp": {"123456"}, "recovery_code": {secrets[2]}, "client_assertion": {secrets[3]}, "request": {secrets[4]}}
	e.c.PostForm("/oauth2/token?"+q.Encode(), exchangeKeyForm(k.Key, ""), st.Basic("xchg", e.xchg))
	e.c.Get("/oauth2/introspect?" + q.Encode())
	logs := e.in.Logs.String()
	if !strings.Contains(logs, `"path":"/oauth2/token"`) || !strings.Contains(logs, `"path":"/oauth2/introspect"`) {
		t.Fatalf("the access log has no line of the requests:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds the secret %q", s)
		}
	}
}
