package server_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestDroppedGrantsSendBackchannelLogout: a browser session keeps at most
// store.MaxSessionGrants grants, so later authorizations (of another
// client, e.g. a prompt=none loop) drop the oldest. A dropped grant is
// ended as ending its session would end it: its relying party (with a
// backchannel_logout_uri) gets a logout token with the grant's sid and the
// user as sub at once, whether or not the grant has offline_access, since
// no later logout of the session can name it any more. The family of a
// dropped grant without offline_access is revoked; an offline_access
// grant's refresh token goes on working, as it does after a logout.
func TestDroppedGrantsSendBackchannelLogout(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newSignIn(t, b, map[string]string{"PORTCULLIS_RATE_LIMITS": "off"})
			rcv := newBCLReceiver(t, d.in)
			fx := st.NewFixtures(t, d.in.App.Core)
			secret := fx.Client(t, clients.Spec{ID: "bcl-rp", Name: "BCL RP", FirstParty: true,
				Grants: []string{"authorization_code", "refresh_token"}, RedirectURIs: []string{siCallback},
				PostLogoutRedirectURIs: []string{siPostLogout}, BackchannelLogoutURI: rcv.url})
			e := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: siEmail}
			online := e.signIn(t, d.oauth("bcl-rp", secret, oidc.ScopeOpenID))
			offline := e.signIn(t, d.oauth("bcl-rp", secret, oidc.ScopeOpenID, oidc.ScopeOfflineAccess))
			sub := online.idt.Subject

			// Client "first" (no back-channel URI) fills the session: the
			// last two authorizations drop bcl-rp's two grants.
			first := d.oauth("first", d.firstSecret, oidc.ScopeOpenID)
			for i := range store.MaxSessionGrants {
				u := first.AuthCodeURL("fill", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
					oauth2.SetAuthURLParam("prompt", "none"))
				resp, err := e.hc.Get(u)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				loc, _ := url.Parse(resp.Header.Get("Location"))
				if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), siCallback) || loc.Query().Get("code") == "" {
					t.Fatalf("authorization %d: %d %q, want a code", i, resp.StatusCode, resp.Header.Get("Location"))
				}
			}
			rcv.expect(t, "dropped grants", sub, sidOf(t, online), sidOf(t, offline))
			c := d.in.Client(t)
			c.Get("/userinfo", st.Bearer(online.tok.AccessToken)).ExpectError(http.StatusUnauthorized, "invalid_token")
			if online.tok.RefreshToken != "" {
				c.PostForm("/oauth2/token", st.RefreshForm(online.tok.RefreshToken), st.Basic("bcl-rp", secret)).
					ExpectError(http.StatusBadRequest, "invalid_grant")
			}
			c.PostForm("/oauth2/token", st.RefreshForm(offline.tok.RefreshToken), st.Basic("bcl-rp", secret)).
				ExpectStatus(http.StatusOK)
		})
	}
}
