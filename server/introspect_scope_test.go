package server_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestIntrospectedRefreshScopeIsTheRefreshGrant: RFC 7662 §2.2 scope is
// the token's scope, and a refresh token's is what a refresh with it
// grants now: the OIDC scopes of the session as well as its permissions,
// and, for a session that named none, the permissions the user holds
// now. So the introspected scope of a refresh token equals the scope of
// the answer to a refresh with it, and, while nothing has changed since
// the login, the login's scope and its access token's. Found by a review:
// introspection answered the permissions the login granted (the family's
// Scope), leaving out every OIDC scope ("" for a password grant of
// "openid email offline_access" whose access token says that scope) and
// never following a change of the user's roles.
func TestIntrospectedRefreshScopeIsTheRefreshGrant(t *testing.T) {
	t.Parallel()
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newDeployment(t, b)
			web, svc := st.Basic("web", d.webSecret), st.Basic("svc", d.svcSecret)
			introspect := func(tok string) map[string]any {
				return d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok}}, svc).ExpectStatus(http.StatusOK).Map()
			}
			for _, tc := range []struct {
				name, email, scope string
				roles              []string
				// change runs after the login (nil: nothing changes, and the
				// introspected scope is also the login's).
				change func(t *testing.T, userID string)
			}{
				{name: "oidc_scopes_of_a_user_without_permissions", email: "plain@example.com", roles: []string{"user"},
					scope: "openid email offline_access"},
				{name: "oidc_scopes_following_the_roles", email: "oidc@example.com", roles: []string{"admin"},
					scope: "openid email offline_access"},
				{name: "named_permission", email: "named@example.com", roles: []string{"admin"}, scope: "openid users:read"},
				{name: "no_scope", email: "none@example.com", roles: []string{"admin"}},
				{name: "role_removed_since_the_login", email: "demoted@example.com", roles: []string{"admin", "user"},
					scope: "openid offline_access", change: func(t *testing.T, userID string) {
						// At the store: the role goes and the session stays,
						// as when the policy file drops a permission.
						if _, err := d.in.App.Core.Store.RevokeRole(t.Context(), userID, "admin"); err != nil {
							t.Fatal(err)
						}
					}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					u := d.fx.User(t, tc.email, userPass, tc.roles...)
					tok := d.c.PostForm("/oauth2/token", st.PasswordForm(tc.email, userPass, tc.scope), web).Token()
					at := introspect(tok.AccessToken)
					if tc.change != nil {
						tc.change(t, u.ID)
					}
					rt := introspect(tok.RefreshToken)
					if rt["active"] != true {
						t.Fatalf("introspection of a live refresh token: %v", rt)
					}
					refreshed := d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), web).ExpectStatus(http.StatusOK).Map()
					if rt["scope"] != refreshed["scope"] {
						t.Errorf("refresh token introspected with scope %q, a refresh with it grants %q", rt["scope"], refreshed["scope"])
					}
					if tc.change == nil && (rt["scope"] != tok.Scope || rt["scope"] != at["scope"]) {
						t.Errorf("refresh token introspected with scope %q; the login granted %q, its access token has %q",
							rt["scope"], tok.Scope, at["scope"])
					}
					if tc.change != nil && rt["scope"] == tok.Scope {
						t.Errorf("refresh token introspected with the login's scope %q after the change", tok.Scope)
					}
				})
			}
		})
	}
}

// TestIntrospectedRefreshScopeOfTheCodeFlow: the refresh token of a
// browser sign-in (authorization code) granting openid offline_access to
// a user without permissions is introspected with that scope, its access
// token's and its refresh's, not "" (found by a review).
func TestIntrospectedRefreshScopeOfTheCodeFlow(t *testing.T) {
	t.Parallel()
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newShortSessions(t, b, nil)
			_, tok := d.browserScoped(t, siEmail, siPassword, "introspect-scope-ua", oidc.ScopeOpenID, oidc.ScopeOfflineAccess)
			granted, _ := tok.Extra("scope").(string)
			at, rt := d.introspect(tok.AccessToken), d.introspect(tok.RefreshToken)
			refreshed := d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), st.Basic("first", d.firstSecret)).
				ExpectStatus(http.StatusOK).Map()
			if rt["active"] != true || rt["scope"] != granted || rt["scope"] != at["scope"] || rt["scope"] != refreshed["scope"] {
				t.Errorf("refresh token introspected %v; the code granted %q, its access token has %q, a refresh grants %q",
					rt, granted, at["scope"], refreshed["scope"])
			}
		})
	}
}
