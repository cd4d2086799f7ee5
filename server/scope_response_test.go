package server_test

import (
	"net/http"
	"net/url"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestTokenResponseStatesAnEmptyScope: RFC 6749 §5.1 makes scope REQUIRED
// in a token response whenever the granted scope differs from the
// requested one. A request that asked for permissions and was granted none
// is answered "scope":"": an answer without scope reads, to a standard
// client, as "all you asked for". A request that asked for nothing and was
// granted nothing keeps its answer without scope.
func TestTokenResponseStatesAnEmptyScope(t *testing.T) {
	e := newKeyEnv(t, st.SQLite)
	ctx := t.Context()
	none := ""
	tests := []struct {
		name string
		// answer is the 200 of the token endpoint for the case.
		answer    func(t *testing.T) *st.Response
		wantScope *string // nil: no scope member
	}{
		{name: "must_change_password_login_asking_a_permission", wantScope: &none, answer: func(t *testing.T) *st.Response {
			u := e.fx.User(t, "temp@example.com", keyAnnPass, "editor")
			if _, err := e.in.App.Core.Store.UpdateUser(ctx, u.ID, func(x *store.User) error { x.MustChangePassword = true; return nil }); err != nil {
				t.Fatal(err)
			}
			return e.c.PostForm("/oauth2/token", st.PasswordForm("temp@example.com", keyAnnPass, "projects:read"), st.Basic("web", e.web))
		}},
		{name: "api_key_exchange_naming_a_permission_the_key_lacks", wantScope: &none, answer: func(t *testing.T) *st.Response {
			k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "ci", "scopes": []string{"projects:read"}})
			return e.exchange(t, k.Key, "projects:write")
		}},
		{name: "refresh_whose_named_permissions_are_gone", wantScope: &none, answer: func(t *testing.T) *st.Response {
			u := e.fx.User(t, "gone@example.com", keyAnnPass, "editor", "viewer")
			tr := e.c.PostForm("/oauth2/token", st.PasswordForm("gone@example.com", keyAnnPass, "projects:write"), st.Basic("web", e.web)).Token()
			// At the store: the role goes and the session stays (the
			// admin API would end it), as when the policy file drops a
			// permission from a role.
			if _, err := e.in.App.Core.Store.RevokeRole(ctx, u.ID, "editor"); err != nil {
				t.Fatal(err)
			}
			return e.c.PostForm("/oauth2/token", st.RefreshForm(tr.RefreshToken), st.Basic("web", e.web))
		}},
		{name: "client_credentials_asking_nothing_granted_nothing", wantScope: nil, answer: func(t *testing.T) *st.Response {
			return e.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic("api-rs", e.rs))
		}},
		{name: "login_granted_what_it_asked", wantScope: new("projects:read"), answer: func(t *testing.T) *st.Response {
			return e.c.PostForm("/oauth2/token", st.PasswordForm("ann@example.com", keyAnnPass, "projects:read"), st.Basic("web", e.web))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.answer(t).ExpectStatus(http.StatusOK)
			scope, sent := r.Map()["scope"]
			switch {
			case tt.wantScope == nil && sent:
				t.Fatalf("scope %v sent for a request that asked for none and got none: %s", scope, r.Body)
			case tt.wantScope != nil && !sent:
				t.Fatalf("no scope member, which reads as everything asked for granted; want %q: %s", *tt.wantScope, r.Body)
			case tt.wantScope != nil && scope != *tt.wantScope:
				t.Fatalf("scope %v, want %q: %s", scope, *tt.wantScope, r.Body)
			}
		})
	}
}
