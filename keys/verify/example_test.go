package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// A resource server finds the issuer's keys through discovery and checks
// each token offline.
func ExampleNew() {
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: "https://auth.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	v, err := verify.New(keys, verify.Config{Issuer: "https://auth.example.com", Audience: "api"})
	if err != nil {
		log.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), os.Getenv("ACCESS_TOKEN"))
	switch {
	case errors.Is(err, verify.ErrExpired):
		fmt.Println("expired: refresh it")
	case err != nil:
		fmt.Println("refused:", err)
	default:
		fmt.Println(claims.Subject, claims.Scopes, claims.Roles)
	}
}

// Waiting for the first key set at start-up is optional: Verify fetches it
// on demand. A short timeout keeps start-up from hanging on a down issuer.
func ExampleRemoteKeySet_Refresh() {
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{
		JWKSURL:            "https://auth.example.com/.well-known/jwks.json",
		UnknownKIDInterval: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := keys.Refresh(ctx); err != nil {
		log.Printf("JWKS not available yet (%v); it keeps being fetched in the background", err)
	}
}

// The guard turns requirements into RFC 6750 answers; handlers read the
// verified claims from the request context.
func ExampleNewGuard() {
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: "https://auth.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	v, err := verify.New(keys, verify.Config{Issuer: "https://auth.example.com", Audience: "api"})
	if err != nil {
		log.Fatal(err)
	}
	// "admin or higher" needs the levels of the roles, as in the Portcullis policy file.
	levels := verify.RoleLevels{"super_admin": 100, "admin": 80, "editor": 20, "viewer": 10}
	g := verify.NewGuard(v, verify.GuardOptions{Roles: levels})

	mux := http.NewServeMux()
	mux.Handle("GET /me", g.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verify.ClaimsFromContext(r.Context())
		_ = json.NewEncoder(w).Encode(map[string]any{"sub": c.Subject, "roles": c.Roles})
	})))
	mux.Handle("GET /projects", g.RequireScope("projects:read")(http.HandlerFunc(listProjects)))
	mux.Handle("POST /projects", g.RequireScope("projects:write")(http.HandlerFunc(createProject)))
	mux.Handle("GET /admin/metrics", g.Require(verify.Role("admin"), verify.MFA())(http.HandlerFunc(metrics)))
	log.Fatal(http.ListenAndServe("127.0.0.1:8081", mux))
}

// Requirements combine: here an editor may archive a project, and so may
// anyone holding projects:admin, but only with a token the issuer confirms
// is still active.
func ExampleGuard_Require() {
	var g *verify.Guard // from NewGuard, with GuardOptions.Introspector set
	archive := g.Require(
		verify.Any(verify.Role("editor"), verify.Scope("projects:admin")),
		verify.Online(),
	)
	http.Handle("POST /projects/{id}/archive", archive(http.HandlerFunc(createProject)))
}

// Sensitive routes can ask for a sign-in with a second factor: a token from
// a password alone gets 401 with `WWW-Authenticate: Bearer
// error="insufficient_user_authentication", …, acr_values="mfa"` (RFC
// 9470), telling the client to sign the user in again with MFA.
func ExampleGuard_RequireMFA() {
	var g *verify.Guard // from NewGuard
	http.Handle("POST /keys/rotate", g.RequireMFA()(http.HandlerFunc(createProject)))
	http.Handle("GET /admin/audit", g.Require(verify.Role("admin"), verify.MFA())(http.HandlerFunc(metrics)))
}

// Routes that must see a revocation at once ask the issuer's introspection
// endpoint, with the resource server's own confidential client.
func ExampleNewIntrospector() {
	in, err := verify.NewIntrospector(verify.IntrospectorOptions{
		Issuer:       "https://auth.example.com", // introspection_endpoint from discovery
		ClientID:     "projects-api",
		ClientSecret: os.Getenv("PROJECTS_API_CLIENT_SECRET"),
		CacheTTL:     5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	var v *verify.Verifier // from New
	g := verify.NewGuard(v, verify.GuardOptions{Introspector: in})
	http.Handle("DELETE /projects/{id}", g.Require(verify.Scope("projects:write"), verify.Online())(http.HandlerFunc(createProject)))
}

// The role levels can come from the same policy file Portcullis runs with.
func ExampleLoadRoleLevels() {
	levels, err := verify.LoadRoleLevels("docs/examples/demo-policy.yaml")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(levels.AtLeast([]string{"super_admin"}, "admin"))
}

// Denials can be logged and counted; the Denial never holds the token.
func ExampleGuardOptions_onDenied() {
	opts := verify.GuardOptions{OnDenied: func(r *http.Request, d *verify.Denial) {
		log.Printf("%s %s refused: %d %v", r.Method, r.URL.Path, d.Status, d.Err)
	}}
	_ = opts
}

func listProjects(w http.ResponseWriter, r *http.Request)  {}
func createProject(w http.ResponseWriter, r *http.Request) {}
func metrics(w http.ResponseWriter, r *http.Request)       {}

// A resource server that is also a relying party with a back-channel logout
// endpoint: the logout ends the session, and the Guard refuses its access
// tokens from then on.
func ExampleLogoutHandler() {
	keys, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: "https://id.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	access, err := verify.New(keys, verify.Config{Issuer: "https://id.example.com", Audience: "api"})
	if err != nil {
		log.Fatal(err)
	}
	logout, err := verify.NewLogoutVerifier(keys, verify.LogoutConfig{Issuer: "https://id.example.com", ClientID: "my-api"})
	if err != nil {
		log.Fatal(err)
	}
	loggedOut := verify.NewLoggedOut(verify.LoggedOutOptions{MaxAccessTokenLifetime: 15 * time.Minute})
	guard := verify.NewGuard(access, verify.GuardOptions{Revocations: loggedOut})

	mux := http.NewServeMux()
	mux.Handle("POST /backchannel-logout", verify.LogoutHandler(logout, func(_ context.Context, c *verify.LogoutClaims) error {
		return loggedOut.Add(c) // and drop whatever else is kept for c.SessionID
	}))
	mux.Handle("GET /me", guard.Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verify.ClaimsFromContext(r.Context())
		fmt.Fprintln(w, c.Subject)
	})))
	_ = mux // http.ListenAndServe(":8081", mux)
}

// Scripts and CI jobs call the API with a Portcullis API key, in an
// X-API-Key header or as "Authorization: Bearer pcak_…". The guard checks
// the key's format locally, asks the issuer through introspection (the
// answer cached at most 5 s), and hands the handler the same Claims as for
// an access token, so the scope requirements need no change; a key carries
// no roles, so role-guarded routes stay closed to it.
func ExampleGuardOptions_apiKeys() {
	in, err := verify.NewIntrospector(verify.IntrospectorOptions{
		Issuer:       "https://auth.example.com",
		ClientID:     "projects-api", // a confidential client of the issuer
		ClientSecret: os.Getenv("PROJECTS_API_CLIENT_SECRET"),
	})
	if err != nil {
		log.Fatal(err)
	}
	var v *verify.Verifier // from New: access tokens keep being checked offline
	g := verify.NewGuard(v, verify.GuardOptions{APIKeys: in})
	http.Handle("GET /projects", g.RequireScope("projects:read")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := verify.ClaimsFromContext(r.Context())
		if c.IsAPIKey() {
			log.Printf("projects listed by %s with the API key %s", c.Subject, c.APIKeyID) // the id, never the key
		}
	})))
	http.Handle("GET /admin/metrics", g.RequireRole("admin")(http.HandlerFunc(metrics))) // 403 for every key
}

// A key's format (prefix, base62, CRC-32 checksum) is checked without any
// request, as secret scanners do.
func ExampleCheckAPIKey() {
	fmt.Println(verify.CheckAPIKey("pcak_0123456789ABCDEFGHIJKLMNOPQRSTUV3bzNgN") == nil)
	fmt.Println(verify.CheckAPIKey("pcak_0123456789ABCDEFGHIJKLMNOPQRSTUV3bzNgM") == nil)
	// Output:
	// true
	// false
}
