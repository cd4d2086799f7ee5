package server_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestAuthCodeCurlScript runs docs/examples/authcode-curl.sh (the API
// guide's browser sign-in with curl: authorize, login page, consent, code
// with state and iss, token exchange with PKCE, single sign-on) against the
// real server on both backends, so the documented walk-through keeps working.
func TestAuthCodeCurlScript(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			in := st.Start(t, st.NewEnv(t, b))
			fx := st.NewFixtures(t, in.App.Core)
			fx.User(t, "reader@example.com", "a long enough passphrase", "user")
			secret := fx.Client(t, clients.Spec{ID: "photos", Name: "Photo Album",
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{"http://127.0.0.1:9999/callback"}})
			cmd := exec.Command("bash", "../docs/examples/authcode-curl.sh")
			cmd.Env = append(os.Environ(), "ISSUER="+in.Config.Issuer, "CLIENT_ID=photos", "CLIENT_SECRET="+secret,
				"REDIRECT_URI=http://127.0.0.1:9999/callback", "EMAIL=reader@example.com", "PASSWORD=a long enough passphrase")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("authcode-curl.sh: %v\n%s", err, out)
			}
			for _, want := range []string{
				"1. authorize        -> 200 login page",
				"2. login            -> 200 consent page",
				"3. consent (allow)  -> 303 to the redirect URI",
				"state and iss checked",
				"4. token            -> 200 access, refresh and id tokens",
				"5. authorize again  -> 303 with a code, no login page",
			} {
				if !strings.Contains(string(out), want) {
					t.Fatalf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}
