package server_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// BenchmarkInProcess is the server's own cost per request of the JWKS and
// of a client_credentials grant, in process: the handler and every
// middleware, with no socket and no load driver, so that a change shows in
// ns/op and allocs/op where `make bench`'s HTTP load swings by more than
// it. Their difference is what a grant costs beyond serving any request
// (issue 21 compares the two paths). The embedded store serves the client
// (the path reads it from the cache).
func BenchmarkInProcess(b *testing.B) {
	env := st.NewEnv(b, st.SQLite)
	env["PORTCULLIS_RATE_LIMITS"] = "off"
	env["PORTCULLIS_SIGNING_ALG"] = "EdDSA" // as the HTTP load runs it
	in := st.Start(b, env)
	secret := st.NewFixtures(b, in.App.Core).Client(b, clients.Spec{ID: "svc", Grants: []string{"client_credentials"}, Scopes: []string{"reports:read"}})
	h := in.App.Server.Handler()
	grant := func(b *testing.B) {
		req := httptest.NewRequest(http.MethodPost, "/oauth2/token", strings.NewReader("grant_type=client_credentials&scope=reports%3Aread"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("svc", secret)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("client_credentials: %d %s", rec.Code, rec.Body)
		}
	}
	b.Run("jwks", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/jwks.json", nil))
			if rec.Code != http.StatusOK {
				b.Fatalf("jwks: %d", rec.Code)
			}
		}
	})
	b.Run("client_credentials", func(b *testing.B) {
		grant(b) // the client is cached from here on
		b.ReportAllocs()
		for b.Loop() {
			grant(b)
		}
	})
}
