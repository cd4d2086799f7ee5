package server_test

import (
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestRefusedRefreshScopeKeepsToken: a refresh refused for its scope
// (asking for more than the session was granted, or for a permission the
// user does not hold) answers invalid_scope and spends nothing: the same
// refresh token then refreshes, as RFC 6749 §6 lets the client retry with
// it, and the session's access token stays valid; before, the refusal had
// already rotated the token, so the retry counted as reuse and ended the
// session. A replayed token that asks for a scope is still reuse.
func TestRefusedRefreshScopeKeepsToken(t *testing.T) {
	t.Parallel()
	for _, b := range cookieBackends() {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newDeployment(t, b)
			refresh := func(c *st.Client, rt, scope string) *st.Response {
				f := st.RefreshForm(rt)
				if scope != "" {
					f.Set("scope", scope)
				}
				return c.PostForm("/oauth2/token", f, st.Basic("web", d.webSecret))
			}
			for _, tc := range []struct{ name, login, ask string }{
				{"widening", "users:read", "users:read users:write"},
				{"oidc_widening", "users:read", "users:read openid"},
				{"not_held", "", "no:such-permission"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					c := d.in.Client(t)
					tok := c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, tc.login), st.Basic("web", d.webSecret)).Token()
					refresh(c, tok.RefreshToken, tc.ask).ExpectError(400, "invalid_scope")
					c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(200)
					next := refresh(c, tok.RefreshToken, "").Token()
					c.Get("/userinfo", st.Bearer(next.AccessToken)).ExpectStatus(200)
				})
			}
			t.Run("replay_asking_scope_is_reuse", func(t *testing.T) {
				c := d.in.Client(t)
				tok := c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, "users:read"), st.Basic("web", d.webSecret)).Token()
				next := refresh(c, tok.RefreshToken, "").Token()
				refresh(c, tok.RefreshToken, "users:read users:write").ExpectError(400, "invalid_grant")
				refresh(c, next.RefreshToken, "").ExpectError(400, "invalid_grant")
				c.Get("/userinfo", st.Bearer(next.AccessToken)).ExpectStatus(401)
			})
		})
	}
}
