package server_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestNodeClients drives Portcullis with the clients Node services use:
// panva's openid-client (discovery, password grant with id token
// validation, refresh with reuse detection, client_credentials,
// introspection, userinfo, revocation) and jose (remote JWKS verification of
// RFC 9068 access tokens, refusing an id token). Node and npm come from
// Debian's packages and the two libraries from the npm registry, pinned by
// server/testdata/node/package-lock.json.
func TestNodeClients(t *testing.T) {
	node, dir := nodeProject(t)
	for _, alg := range []string{"RS256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			env := st.NewEnv(t, st.PostgresRedis)
			env["PORTCULLIS_SIGNING_ALG"] = alg
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			fx.User(t, userEmail, userPass, "user")
			web := fx.Client(t, clients.Spec{ID: "web"})
			svc := fx.Client(t, clients.Spec{ID: "svc", Grants: []string{"client_credentials"}})
			run := exec.Command(node, "interop.mjs", in.Config.Issuer, "web", web, userEmail, userPass, "svc", svc, alg)
			run.Dir = dir
			out, err := run.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("Node clients against Portcullis (%s): %v\n%s", alg, err, out)
			}
		})
	}
}

// nodeProject copies server/testdata/node into a temporary directory and
// installs its pinned packages there with npm ci; it returns node's path
// and the directory.
func nodeProject(t *testing.T) (node, dir string) {
	t.Helper()
	node, npm := nodeTools(t)
	dir = t.TempDir()
	for _, f := range []string{"package.json", "package-lock.json", "interop.mjs", "authcode.mjs", "extra.mjs", "browser.mjs"} {
		b, err := os.ReadFile(filepath.Join("testdata", "node", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	install := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--prefer-offline")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	return node, dir
}

// TestNodeCodeFlow: panva's openid-client completes browser sign-in with
// PKCE against Portcullis, with RS256 and EdDSA id tokens, as a
// confidential and as a public client (authcode.mjs):
// discovery, the authorization URL, the login and consent forms submitted
// over HTTP with a cookie jar, the callback validated by openid-client
// (state and iss, tampered ones refused), the code exchanged once, the id
// token validated (nonce, auth_time, sid, at_hash), userinfo, a refresh
// that keeps auth_time, and single sign-on for the next request (the
// public client, on a loopback redirect, sees the consent page again:
// RFC 8252 §8.6).
func TestNodeCodeFlow(t *testing.T) {
	node, dir := nodeProject(t)
	for _, alg := range []string{"RS256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			env := st.NewEnv(t, st.PostgresRedis)
			env["PORTCULLIS_SIGNING_ALG"] = alg
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			fx.User(t, userEmail, userPass, "user")
			const callback = "http://127.0.0.1:9/node/callback" // never fetched: openid-client reads the redirect
			secret := fx.Client(t, clients.Spec{ID: "node-web", Name: "Node Web", RedirectURIs: []string{callback},
				Grants: []string{"authorization_code", "refresh_token"}})
			fx.Client(t, clients.Spec{ID: "node-spa", Name: "Node SPA", Public: true, RedirectURIs: []string{callback},
				Grants: []string{"authorization_code", "refresh_token"}})
			for id, secret := range map[string]string{"node-web": secret, "node-spa": "-"} {
				run := exec.Command(node, "authcode.mjs", in.Config.Issuer, id, secret, callback, userEmail, userPass, alg)
				run.Dir = dir
				out, err := run.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "OK") {
					t.Fatalf("openid-client's code flow against Portcullis (%s, %s): %v\n%s", alg, id, err, out)
				}
			}
			if logs := in.Logs.String(); strings.Contains(logs, userPass) {
				t.Fatal("the server log holds the password")
			}
		})
	}
}

// TestOpenIDClientExtraPaths drives the paths TestNodeClients and
// TestNodeCodeFlow leave out with openid-client and jose (extra.mjs), on
// RS256, ES256 and EdDSA: a pushed authorization request and the
// authorization URL openid-client builds from it; a refresh with the
// TokenSet (sub, sid and auth_time kept); jose verifying the RFC 9068
// access token (typ at+jwt, required claims); introspection of refresh and
// access tokens with their hints; the errors openid-client parses from
// /userinfo (401 invalid_token with a Bearer challenge) and from the token
// endpoint (401 invalid_client); access_denied and login_required at the
// callback with iss and state; RP-initiated logout through endSessionUrl;
// jose verifying the back-channel logout token (typ logout+jwt); revocation
// of a refresh token. The back-channel receiver is the script's, on a
// socket the test opens and hands it, so its address is known before the
// client is registered.
func TestOpenIDClientExtraPaths(t *testing.T) {
	t.Parallel()
	node, dir := nodeProject(t)
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, st.PostgresRedis)
			env["PORTCULLIS_SIGNING_ALG"] = alg
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			fx.User(t, userEmail, userPass, "user")
			receiver, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer receiver.Close()
			socket, err := receiver.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
			defer socket.Close()
			const callback = "http://127.0.0.1:9/node/callback" // never fetched: openid-client reads the redirect
			const postLogout = "http://127.0.0.1:9/node/bye"
			secret := fx.Client(t, clients.Spec{ID: "node-web", Name: "Node Web", RedirectURIs: []string{callback},
				PostLogoutRedirectURIs: []string{postLogout}, BackchannelLogoutURI: "http://" + receiver.Addr().String() + "/logout",
				Grants: []string{"authorization_code", "refresh_token", "password"}})
			run := exec.Command(node, "extra.mjs", in.Config.Issuer, "node-web", secret, callback, postLogout, userEmail, userPass, alg)
			run.Dir = dir
			run.ExtraFiles = []*os.File{socket} // fd 3 in the script
			out, err := run.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK") {
				t.Fatalf("openid-client and jose on the extra paths (%s): %v\n%s", alg, err, out)
			}
		})
	}
}

// nodeTools finds node and npm, installing Debian's nodejs and npm when
// missing and allowed; a machine without them fails the test.
func nodeTools(t *testing.T) (node, npm string) {
	t.Helper()
	find := func() (string, string, bool) {
		n, err1 := exec.LookPath("node")
		p, err2 := exec.LookPath("npm")
		return n, p, err1 == nil && err2 == nil
	}
	if n, p, ok := find(); ok {
		return n, p
	}
	if err := testservers.EnsureDebianPackages("nodejs", "npm"); err != nil {
		t.Fatalf("node and npm are needed for the Node interop test: %v", err)
	}
	n, p, ok := find()
	if !ok {
		t.Fatal("node or npm still missing after installing nodejs and npm")
	}
	return n, p
}
