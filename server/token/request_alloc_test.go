package token

import "testing"

// TestParseTokenRequestAllocations: parsing a well-formed token request
// allocates nothing (the request is returned by value through the grant
// registry; it used to escape to the heap there). A scope is split into a
// slice, so only requests without one are held to zero.
func TestParseTokenRequestAllocations(t *testing.T) {
	cred := ClientCredentials{ID: "svc", Secret: "s3cret", Basic: true}
	tests := []struct {
		name   string
		params map[string]string
	}{
		{"client_credentials", map[string]string{"grant_type": GrantClientCredentials}},
		{"refresh_token", map[string]string{"grant_type": GrantRefreshToken, "refresh_token": "pcrt_x"}},
		{"password", map[string]string{"grant_type": GrantPassword, "username": "a@b.c", "password": "pw"}},
		{"authorization_code", map[string]string{"grant_type": GrantAuthorizationCode, "code": "c", "code_verifier": "v"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got TokenRequest
			allocs := testing.AllocsPerRun(200, func() {
				req, err := ParseTokenRequest(tt.params, cred)
				if err != nil {
					t.Fatal(err)
				}
				got = req
			})
			if allocs != 0 {
				t.Fatalf("ParseTokenRequest allocates %.0f times", allocs)
			}
			if got.GrantType != tt.params["grant_type"] || got.Client != cred {
				t.Fatalf("parsed %+v", got)
			}
		})
	}
}
