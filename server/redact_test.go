package server_test

import (
	"net/url"
	"testing"

	"github.com/portcullis-auth/portcullis/server"
)

// TestRedactQuery: what the access log keeps of a query. Tokens, codes,
// secrets, id token hints, email addresses given as hints, and the state
// and nonce of a sign-in are replaced; everything else is kept.
func TestRedactQuery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		query  string
		hidden []string
		kept   map[string]string
	}{
		{"token=abc&x=1", []string{"token"}, map[string]string{"x": "1"}},
		{"id_token_hint=eyJ.a.b&post_logout_redirect_uri=https%3A%2F%2Fa.example%2F&state=s1",
			[]string{"id_token_hint", "state"}, map[string]string{"post_logout_redirect_uri": "https://a.example/"}},
		{"client_id=web&login_hint=ann%40example.com&nonce=n1&scope=openid&request_uri=urn%3Ax",
			[]string{"login_hint", "nonce", "request_uri"}, map[string]string{"client_id": "web", "scope": "openid"}},
		{"code=c&Code_Verifier=v&logout_hint=ann", []string{"code", "Code_Verifier", "logout_hint"}, nil},
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
