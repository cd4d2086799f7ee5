package server_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestAPIKeysPerOwnerCapped: a user holds at most store.MaxLiveAPIKeys live
// keys; another is 409 conflict in the API's problem format, at
// /auth/api-keys and at /admin/users/{id}/api-keys alike, and nothing is
// made; revoking one makes room. Failed before the change: keys were made
// without bound (and never deleted but with their owner).
func TestAPIKeysPerOwnerCapped(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			db := e.in.App.Core.Store
			fill := func(t *testing.T, owner string, n int) {
				for i := range n {
					k := &store.APIKey{OwnerID: owner, Name: fmt.Sprintf("k%d", i), Hint: "pcak_abc...wxyz",
						Hash: []byte(fmt.Sprintf("%s-%d-%032d", owner, i, i)), Scopes: []string{"projects:read"},
						ExpiresAt: time.Now().Add(time.Hour), CreatedBy: owner}
					if err := db.CreateAPIKey(context.Background(), k); err != nil {
						t.Fatal(err)
					}
				}
			}
			body := map[string]any{"name": "one more", "scopes": []string{"projects:read"}}

			fill(t, e.ann.ID, store.MaxLiveAPIKeys-1)
			last := e.createKey(t, "/auth/api-keys", e.annTok, body)
			e.c.PostJSON("/auth/api-keys", body, st.Bearer(e.annTok)).ExpectError(http.StatusConflict, "conflict")
			e.c.Delete("/auth/api-keys/"+last.ID, st.Bearer(e.annTok)).ExpectStatus(http.StatusNoContent)
			e.createKey(t, "/auth/api-keys", e.annTok, body)

			var bot struct{ ID string }
			e.c.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "bot", "roles": []string{"editor"}},
				st.Bearer(e.admTok)).ExpectStatus(http.StatusCreated).JSON(&bot)
			fill(t, bot.ID, store.MaxLiveAPIKeys)
			e.c.PostJSON("/admin/users/"+bot.ID+"/api-keys", body, st.Bearer(e.admTok)).ExpectError(http.StatusConflict, "conflict")
			page, err := db.ListAPIKeys(context.Background(), bot.ID, "", 200)
			if err != nil || len(page.Items) != store.MaxLiveAPIKeys {
				t.Fatalf("the machine holds %d keys (%v), want %d", len(page.Items), err, store.MaxLiveAPIKeys)
			}
		})
	}
}
