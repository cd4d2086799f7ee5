package server_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestUserCopiesAcrossInstances: instance A keeps a copy of a user
// (store/usercache) for single sign-on, refresh and userinfo; role changes
// made through instance B show on A's very next request, with no wait,
// because every write of the user (but the record of a login, whose time
// the copies do not serve) changes its version in Redis and A checks the
// version on every read (TestSSORoundTrips and
// TestGrantRoundTrips show A reading no SQL while the copy holds).
func TestUserCopiesAcrossInstances(t *testing.T) {
	t.Parallel()
	d := newSignIn(t, st.PostgresRedis)
	b := st.Start(t, d.env)
	fx := st.NewFixtures(t, d.in.App.Core)
	const rootEmail, rootPass = "root@example.com", "a-long-passphrase-root"
	fx.User(t, rootEmail, rootPass, "super_admin")
	// B is its own issuer (this deployment names none): B's admin API wants B's audience.
	adminSecret := fx.Client(t, clients.Spec{ID: "admin-cli", Name: "Admin CLI", Audiences: []string{b.Config.Issuer}})
	onB := b.Client(t)
	root := onB.PostForm("/oauth2/token", st.PasswordForm(rootEmail, rootPass, ""), st.Basic("admin-cli", adminSecret)).Token()

	e := &oidccEnv{d: d, mode: "query", hc: siBrowser(t), email: siEmail}
	conf := d.oauth("first", d.firstSecret, oidc.ScopeOpenID, "offline_access")
	e.signIn(t, conf)
	// sso is a single sign-on round trip on A: the access token's roles
	// and the refresh token.
	sso := func() ([]string, *oauth2.Token) {
		t.Helper()
		verifier := oauth2.GenerateVerifier()
		res := e.run(t, e.authURL(conf, "copies", oauth2.S256ChallengeOption(verifier)))
		if res.sawLogin || res.params.Get("code") == "" {
			t.Fatalf("not a single sign-on: %+v", res)
		}
		tok, err := conf.Exchange(context.Background(), res.params.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		return claimStrings(t, decodeClaims(t, tok.AccessToken), "roles"), tok
	}
	onA := d.in.Client(t)
	userinfo := func(at string) []string {
		t.Helper()
		m := onA.Get("/userinfo", st.Bearer(at)).ExpectStatus(http.StatusOK).Map()
		var roles []string
		for _, r := range m["roles"].([]any) {
			roles = append(roles, r.(string))
		}
		return roles
	}
	refresh := func(rt string) ([]string, string) {
		t.Helper()
		tok := onA.PostForm("/oauth2/token", st.RefreshForm(rt), st.Basic("first", d.firstSecret)).Token()
		return claimStrings(t, decodeClaims(t, tok.AccessToken), "roles"), tok.RefreshToken
	}
	check := func(what string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("%s: roles %v, want %v", what, got, want)
		}
	}

	roles, tok := sso()
	check("first sign-on", roles, []string{"user"})
	used := userCopiesUsed(t, d.in)
	roles, tok = sso() // A now holds a copy
	check("second sign-on", roles, []string{"user"})
	if userCopiesUsed(t, d.in) <= used {
		t.Fatal("the second sign-on did not use A's copy of the user (portcullis_user_copies_total{outcome=\"copy\"})")
	}
	check("userinfo", userinfo(tok.AccessToken), []string{"user"})
	roles, rt := refresh(tok.RefreshToken)
	check("refresh", roles, []string{"user"})
	uid := decodeClaims(t, tok.AccessToken)["sub"].(string)

	onB.PostJSON("/admin/users/"+uid+"/roles", map[string]string{"role": "admin"}, st.Bearer(root.AccessToken)).ExpectStatus(http.StatusOK)
	roles, _ = refresh(rt)
	check("refresh on A after B granted admin", roles, []string{"admin", "user"})
	roles, tok = sso() // (a new grant of the client in the session ends the one refreshed above)
	check("sign-on on A after the grant", roles, []string{"admin", "user"})
	check("userinfo on A after the grant", userinfo(tok.AccessToken), []string{"admin", "user"})
	roles, _ = sso()
	check("sign-on on A with the new copy", roles, []string{"admin", "user"})

	// A removal ends the user's sessions (its own rule); signing in again
	// on A gets the roles as they are now.
	onB.Delete("/admin/users/"+uid+"/roles/"+url.PathEscape("admin"), st.Bearer(root.AccessToken)).ExpectStatus(http.StatusOK)
	l := e.signIn(t, conf)
	if !l.sawLogin {
		t.Fatal("the removal did not end the browser session")
	}
	check("sign-in on A after B removed admin", claimStrings(t, decodeClaims(t, l.tok.AccessToken), "roles"), []string{"user"})
	check("userinfo on A after the removal", userinfo(l.tok.AccessToken), []string{"user"})
	roles, _ = sso()
	check("sign-on on A after the removal", roles, []string{"user"})
}

// userCopiesUsed reads portcullis_user_copies_total{outcome="copy"} of the
// instance.
func userCopiesUsed(t *testing.T, in *st.Instance) int {
	t.Helper()
	return metricCounts(t, in, "portcullis_user_copies_total")[`outcome="copy"`]
}
