package server_test

import (
	"net/http"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestTemporaryPasswordRevokesAPIKeys: an admin sets a temporary password
// when the account's password may be another's (it leaked), so, as a reset
// does, it ends the person's sessions and revokes every live API key of
// theirs and the tokens exchanged from them (api_key.revoked with
// details.via temporary_password). Failed before the change: the key and
// its token stayed active.
func TestTemporaryPasswordRevokesAPIKeys(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "ci", "scopes": []string{"projects:read"}})
			revoked := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "old", "scopes": []string{"projects:read"}})
			e.c.Delete("/auth/api-keys/"+revoked.ID, st.Bearer(e.annTok)).ExpectStatus(http.StatusNoContent)
			exchanged := e.exchange(t, k.Key, "").Token().AccessToken

			e.c.PostJSON("/admin/users/"+e.ann.ID+"/temp-password", map[string]string{"password": "a long temporary passphrase"},
				st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK)
			wantInactive(t, "the key after a temporary password", e.introspect(t, k.Key))
			wantInactive(t, "its exchanged token", e.introspect(t, exchanged))
			e.exchange(t, k.Key, "").ExpectError(http.StatusBadRequest, "invalid_request")
			if !e.audited(t, "api_key.revoked", e.ann.ID, map[string]string{"key_id": k.ID, "via": "temporary_password"}) {
				t.Fatal("no api_key.revoked event via temporary_password")
			}
			// The admin's own keys are untouched.
			mine := e.createKey(t, "/auth/api-keys", e.rootTok, map[string]any{"name": "root", "scopes": []string{"users:read"}})
			e.c.PostJSON("/admin/users/"+e.ann.ID+"/temp-password", map[string]string{"password": "another long temporary passphrase"},
				st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK)
			if got := e.introspect(t, mine.Key); got["active"] != true {
				t.Fatalf("the admin's own key: %v", got)
			}
		})
	}
}
