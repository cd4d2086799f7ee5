package server_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestRotatedSecretAcrossInstances: a client's secret rotated through
// instance B stops working at once on B and, on A (which holds the client
// in its cache, clients.Cache), within app.ClientCacheTTL, at
// client_credentials and at introspection (docs/security.md); the new
// secret then works on A. Adopted from a review. (The wait is the cache's
// documented staleness across instances; it is polled with a bound, not
// slept through.)
func TestRotatedSecretAcrossInstances(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			a, bIn := st.Start(t, env), st.Start(t, env)
			fx := st.NewFixtures(t, a.App.Core)
			secret := fx.Client(t, clients.Spec{ID: "svc", Name: "svc", Grants: []string{"client_credentials"}})
			onA, onB := a.Client(t), bIn.Client(t)
			cc := url.Values{"grant_type": {"client_credentials"}}
			tok := onA.PostForm("/oauth2/token", cc, st.Basic("svc", secret)).Token() // A caches svc
			onB.PostForm("/oauth2/token", cc, st.Basic("svc", secret)).Token()        // so does B
			fresh, err := bIn.App.Accounts.RotateClientSecret(context.Background(), accounts.Operator(), "svc")
			if err != nil {
				t.Fatal(err)
			}
			rotated := time.Now()
			onB.PostForm("/oauth2/token", cc, st.Basic("svc", secret)).ExpectError(http.StatusUnauthorized, "invalid_client")
			for _, ep := range []struct {
				path string
				form url.Values
			}{{"/oauth2/token", cc}, {"/oauth2/introspect", url.Values{"token": {tok.AccessToken}}}} {
				for {
					r := onA.PostForm(ep.path, ep.form, st.Basic("svc", secret))
					if r.StatusCode == http.StatusUnauthorized {
						break
					}
					if since := time.Since(rotated); since > app.ClientCacheTTL+500*time.Millisecond {
						t.Fatalf("%s on A still takes the rotated secret %v after the rotation on B: %d", ep.path, since, r.StatusCode)
					}
					time.Sleep(50 * time.Millisecond) // the cache's TTL has no clock to advance from here
				}
			}
			onA.PostForm("/oauth2/token", cc, st.Basic("svc", fresh)).Token()
		})
	}
}
