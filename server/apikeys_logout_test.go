package server_test

import (
	"net/http"
	"testing"

	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestLogoutOfAKeyTokenEndsOnlyThatToken: POST /auth/logout with a token
// exchanged from an API key ends that token alone. The key's sid
// (ak_<key id>) is shared by every token exchanged from it and only the
// key's revocation ends it: before the change the logout revoked that sid,
// so every later exchange from the live key handed out a token dead on
// arrival until the revocation aged out. A person's logout still ends
// their whole session.
func TestLogoutOfAKeyTokenEndsOnlyThatToken(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "ci", "scopes": []string{"projects:read"}})
			t1 := e.exchange(t, k.Key, "").Token().AccessToken
			other := e.exchange(t, k.Key, "").Token().AccessToken
			e.c.PostJSON("/auth/logout", nil, st.Bearer(t1)).ExpectStatus(http.StatusNoContent)
			wantInactive(t, "the token logged out", e.introspect(t, t1))
			e.c.Get("/userinfo", st.Bearer(t1)).ExpectError(http.StatusUnauthorized, "invalid_token")
			if got := e.introspect(t, k.Key); got["active"] != true {
				t.Fatalf("the key after a logout of one of its tokens: %v", got)
			}
			if got := e.introspect(t, other); got["active"] != true {
				t.Fatalf("another token of the key after the logout: %v", got)
			}
			t2 := e.exchange(t, k.Key, "").Token().AccessToken
			if got := e.introspect(t, t2); got["active"] != true {
				t.Fatalf("a token exchanged after the logout: %v", got)
			}
			e.c.Get("/userinfo", st.Bearer(t2)).ExpectStatus(http.StatusOK)

			// Revoking the key still ends every token exchanged from it.
			e.c.Delete("/auth/api-keys/"+k.ID, st.Bearer(e.annTok)).ExpectStatus(http.StatusNoContent)
			wantInactive(t, "a token of the revoked key", e.introspect(t, t2))
			wantInactive(t, "another token of the revoked key", e.introspect(t, other))

			// A person's logout ends their session, as before.
			e.c.PostJSON("/auth/logout", nil, st.Bearer(e.annTok)).ExpectStatus(http.StatusNoContent)
			wantInactive(t, "the person's token after logout", e.introspect(t, e.annTok))
		})
	}
}
