package token

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

const (
	testIssuer   = "https://id.example"
	testRedirect = "https://app.example/cb"
	testVerifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-extra-chars"
)

type codeEnv struct {
	svc     *Service
	clock   *fakeClock
	once    *fakeOnce
	state   *fakeState
	dir     *fakeDirectory
	audit   *fakeAudit
	metrics *countMetrics
}

func newCodeEnv(t *testing.T, alg string) *codeEnv {
	t.Helper()
	e := &codeEnv{clock: &fakeClock{t: time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)}, once: newFakeOnce(), state: newFakeState(),
		audit: &fakeAudit{}, metrics: &countMetrics{n: map[string]int{}}}
	code := []string{GrantAuthorizationCode, GrantRefreshToken}
	e.dir = &fakeDirectory{
		clients: map[string]store.Client{
			"web":   {ID: "web", SecretHash: HashSecret("s3cret"), Grants: code, RedirectURIs: []string{testRedirect}},
			"spa":   {ID: "spa", Public: true, FirstParty: true, Grants: code, RedirectURIs: []string{"http://127.0.0.1/cb"}},
			"other": {ID: "other", SecretHash: HashSecret("s3cret"), Grants: code, RedirectURIs: []string{testRedirect}},
			// recreated was deleted and created again under its id 500 ms
			// after the clock's start.
			"recreated": {ID: "recreated", SecretHash: HashSecret("s3cret"), Grants: code, RedirectURIs: []string{testRedirect},
				CreatedAt: e.clock.Now().Add(500 * time.Millisecond)},
			"pwonly":    {ID: "pwonly", SecretHash: HashSecret("s3cret"), Grants: []string{GrantPassword}},
			"norefresh": {ID: "norefresh", SecretHash: HashSecret("s3cret"), Grants: []string{GrantAuthorizationCode}, RedirectURIs: []string{testRedirect}},
		},
		users: map[string]store.User{
			"u1": {ID: "u1", Email: "ada@example.com", Active: true, Roles: []string{"editor"}},
			"u2": {ID: "u2", Email: "bob@example.com", Active: false, Roles: []string{"editor"}},
		},
	}
	e.svc = NewService(Config{Issuer: testIssuer, DefaultAudience: "api", AccessTokenTTL: 15 * time.Minute,
		RefreshIdleTTL: 24 * time.Hour, RefreshMaxAge: 720 * time.Hour},
		Deps{Clients: e.dir, Users: e.dir, State: e.state, Signer: fakeSigner{alg: alg}, Sealer: plainSealer{},
			Permissions: fakePerms{}, Audit: e.audit, Metrics: e.metrics, Codes: e.once, Now: e.clock.Now})
	return e
}

// authTime of the test logins: a minute before the code.
func (e *codeEnv) authTime() time.Time { return e.clock.Now().Add(-time.Minute) }

// putCode stores a code for u1 at web (or as changed by mod) valid for 60 s.
func (e *codeEnv) putCode(t *testing.T, mod func(*AuthCode)) (string, AuthCode) {
	t.Helper()
	rec := AuthCode{ClientID: "web", UserID: "u1", RedirectURI: testRedirect, Scopes: []string{"openid", "email"},
		CodeChallenge: S256Challenge(testVerifier), Nonce: "n-0S6_WzA2Mj", AuthTime: e.authTime(), AMR: []string{"pwd"},
		SID: NewSID(), IssuedAt: e.clock.Now()}
	if mod != nil {
		mod(&rec)
	}
	val, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	code := randomID(32)
	if err := e.once.PutOnce(context.Background(), store.OnceAuthCode, HashSecret(code), val, e.clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	return code, rec
}

func codeRequest(client, code string, kv ...string) TokenRequest {
	p := map[string]string{"grant_type": GrantAuthorizationCode, "code": code, "redirect_uri": testRedirect, "code_verifier": testVerifier}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(p, kv[i])
		} else {
			p[kv[i]] = kv[i+1]
		}
	}
	cred := ClientCredentials{ID: client, Secret: "s3cret"}
	if client == "spa" {
		cred.Secret = ""
	}
	req, err := ParseTokenRequest(p, cred)
	if err != nil {
		panic(err)
	}
	return req
}

func (e *codeEnv) exchange(req TokenRequest) (Response, error) {
	return e.svc.Exchange(context.Background(), req, RequestMeta{IP: "192.0.2.1"})
}

func wantOAuthError(t *testing.T, err error, code string) {
	t.Helper()
	var ae *apierr.Error
	if !errors.As(err, &ae) || ae.Code != code || ae.Status >= 500 {
		t.Fatalf("error %v, want %s (4xx)", err, code)
	}
}

func TestGrantRegistryIsSupportedGrants(t *testing.T) {
	got, want := registeredGrants(), slices.Sorted(slices.Values(SupportedGrants))
	if !slices.Equal(got, want) {
		t.Fatalf("registry %v, SupportedGrants %v: one list of grants", got, want)
	}
	if _, err := ParseTokenRequest(map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:device_code"}, ClientCredentials{ID: "web"}); !errors.Is(err, apierr.ErrUnsupportedGrantType) {
		t.Fatalf("unknown grant: %v", err)
	}
	if _, err := ParseTokenRequest(map[string]string{"grant_type": GrantAuthorizationCode}, ClientCredentials{ID: "web"}); !errors.Is(err, apierr.ErrInvalidRequest) {
		t.Fatalf("code grant without code: %v", err)
	}
}

func TestAuthorizationCodeRedemption(t *testing.T) {
	cases := []struct {
		name   string
		mod    func(*AuthCode)
		client string
		kv     []string
		before func(e *codeEnv)
		err    string // "" = success
	}{
		{name: "ok/confidential with verifier", client: "web"},
		{name: "ok/public with client_id only", client: "spa", mod: func(c *AuthCode) {
			c.ClientID, c.RedirectURI = "spa", "http://127.0.0.1:54321/cb"
		}, kv: []string{"redirect_uri", "http://127.0.0.1:54321/cb"}},
		{name: "ok/redirect_uri omitted at authorize and at token", client: "web", mod: func(c *AuthCode) { c.RedirectURI = "" },
			kv: []string{"redirect_uri", ""}},
		{name: "ok/redirect_uri omitted at authorize, registered one at token", client: "web", mod: func(c *AuthCode) { c.RedirectURI = "" }},
		{name: "ok/no challenge, no verifier", client: "web", mod: func(c *AuthCode) { c.CodeChallenge = "" }, kv: []string{"code_verifier", ""}},
		{name: "fail/unknown code", client: "web", kv: []string{"code", "nope"}, err: "invalid_grant"},
		{name: "fail/expired code", client: "web", before: func(e *codeEnv) { e.clock.Add(61 * time.Second) }, err: "invalid_grant"},
		{name: "fail/issued to another client", client: "other", err: "invalid_grant"},
		{name: "fail/issued to a deleted client of the same id", client: "recreated", mod: func(c *AuthCode) {
			c.ClientID, c.IssuedAt = "recreated", c.IssuedAt.Add(499*time.Millisecond)
		}, err: "invalid_grant"},
		{name: "ok/issued in the millisecond the client was created", client: "recreated", mod: func(c *AuthCode) {
			c.ClientID, c.IssuedAt = "recreated", c.IssuedAt.Add(500*time.Millisecond+999*time.Microsecond)
		}},
		{name: "fail/redirect_uri differs", client: "web", kv: []string{"redirect_uri", testRedirect + "/"}, err: "invalid_grant"},
		{name: "fail/redirect_uri missing", client: "web", kv: []string{"redirect_uri", ""}, err: "invalid_grant"},
		{name: "fail/redirect_uri unregistered when omitted at authorize", client: "web", mod: func(c *AuthCode) { c.RedirectURI = "" },
			kv: []string{"redirect_uri", "https://evil.example/cb"}, err: "invalid_grant"},
		{name: "fail/verifier wrong", client: "web", kv: []string{"code_verifier", strings.Repeat("a", 43)}, err: "invalid_grant"},
		{name: "fail/verifier missing", client: "web", kv: []string{"code_verifier", ""}, err: "invalid_grant"},
		{name: "fail/verifier 42 chars", client: "web", mod: func(c *AuthCode) { c.CodeChallenge = S256Challenge(testVerifier[:42]) },
			kv: []string{"code_verifier", testVerifier[:42]}, err: "invalid_grant"},
		{name: "fail/verifier 129 chars", client: "web", mod: func(c *AuthCode) { c.CodeChallenge = S256Challenge(strings.Repeat("a", 129)) },
			kv: []string{"code_verifier", strings.Repeat("a", 129)}, err: "invalid_grant"},
		{name: "fail/verifier bad charset", client: "web", mod: func(c *AuthCode) { c.CodeChallenge = S256Challenge(strings.Repeat("a", 42) + "+") },
			kv: []string{"code_verifier", strings.Repeat("a", 42) + "+"}, err: "invalid_grant"},
		{name: "fail/verifier without challenge (downgrade)", client: "web", mod: func(c *AuthCode) { c.CodeChallenge = "" }, err: "invalid_grant"},
		{name: "fail/user deactivated", client: "web", mod: func(c *AuthCode) { c.UserID = "u2" }, err: "invalid_grant"},
		{name: "fail/user deleted", client: "web", mod: func(c *AuthCode) { c.UserID = "gone" }, err: "invalid_grant"},
		{name: "fail/user's sessions ended after the login", client: "web", before: func(e *codeEnv) {
			_ = e.state.RevokeUserSessions(context.Background(), "u1", e.clock.Now().Add(-time.Second))
		}, err: "invalid_grant"},
		{name: "fail/client without the grant", client: "pwonly", mod: func(c *AuthCode) { c.ClientID = "pwonly" }, err: "unauthorized_client"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newCodeEnv(t, "RS256")
			code, rec := e.putCode(t, tc.mod)
			if tc.before != nil {
				tc.before(e)
			}
			kv := append([]string{"code", code}, tc.kv...)
			resp, err := e.exchange(codeRequest(tc.client, code, kv...))
			if tc.err != "" {
				wantOAuthError(t, err, tc.err)
				if tc.err == "invalid_grant" && tc.name != "fail/unknown code" && tc.name != "fail/expired code" {
					// One attempt per code: the right request now fails too.
					good := codeRequest(rec.ClientID, code, "code", code, "redirect_uri", rec.RedirectURI)
					if _, err := e.exchange(good); err == nil {
						t.Fatal("a code that failed once was redeemed afterwards")
					}
				}
				if e.metrics.n[GrantAuthorizationCode] != 0 {
					t.Fatal("a failure counted as issued")
				}
				return
			}
			if err != nil {
				t.Fatalf("redeem: %v", err)
			}
			if resp.AccessToken == "" || resp.RefreshToken == "" || resp.IDToken == "" {
				t.Fatalf("response %+v", resp)
			}
			if e.metrics.n[GrantAuthorizationCode] != 1 {
				t.Fatalf("metrics %v, want authorization_code=1", e.metrics.n)
			}
		})
	}
}

func TestCodeReuseRevokesTheGrant(t *testing.T) {
	e := newCodeEnv(t, "RS256")
	code, rec := e.putCode(t, nil)
	resp, err := e.exchange(codeRequest("web", code, "code", code))
	if err != nil {
		t.Fatal(err)
	}
	at := decodeClaims[AccessClaims](t, resp.AccessToken)
	if at.SID != rec.SID {
		t.Fatalf("access token sid %q, want the code's %q", at.SID, rec.SID)
	}
	if e.state.familyRevoked(rec.SID) {
		t.Fatal("family revoked before reuse")
	}
	e.clock.Add(30 * time.Second) // oidcc-codereuse-30seconds
	_, err = e.exchange(codeRequest("web", code, "code", code))
	wantOAuthError(t, err, "invalid_grant")
	if !e.state.familyRevoked(rec.SID) {
		t.Fatal("reuse did not revoke the code's family")
	}
	revoked, _ := e.state.IsAccessTokenRevoked(context.Background(), store.AccessTokenRef{JTI: at.JTI, SID: at.SID, UserID: at.Subject, IssuedAt: e.clock.Now()})
	if !revoked {
		t.Fatal("the first access token is still active after reuse")
	}
	if _, err := e.svc.refreshGrant(context.Background(), e.dir.clients["web"], TokenRequest{RefreshToken: resp.RefreshToken}, RequestMeta{}); err == nil {
		t.Fatal("the refresh token still works after reuse")
	}
	if !slices.Contains(e.audit.actions(), "token.code_reuse_detected") {
		t.Fatalf("audit %v", e.audit.actions())
	}
}

// TestCodeConcurrentRedemption: 32 redemptions of one code released at
// once, over two service instances sharing an atomic single-use store and
// token state, yield exactly one token response.
func TestCodeConcurrentRedemption(t *testing.T) {
	e := newCodeEnv(t, "EdDSA")
	code, rec := e.putCode(t, nil)
	sid := rec.SID
	second := newCodeEnv(t, "EdDSA")
	instances := []*Service{e.svc, NewService(e.svc.Config(), Deps{Clients: e.dir, Users: e.dir, State: e.state,
		Signer: fakeSigner{alg: "EdDSA"}, Sealer: plainSealer{}, Permissions: fakePerms{}, Audit: second.audit, Codes: e.once, Now: e.clock.Now})}
	const n = 32
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := instances[i%2].Exchange(context.Background(), codeRequest("web", code, "code", code), RequestMeta{})
			results <- err
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	ok := 0
	for err := range results {
		if err == nil {
			ok++
		} else if !errors.Is(err, apierr.ErrInvalidGrant) {
			t.Fatalf("unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d successes, want exactly 1", ok)
	}
	// The replays revoked what the one success issued, whenever they ran.
	if !e.state.familyRevoked(sid) {
		t.Fatal("the grant outlived the replays")
	}
}

func decodeClaims[T any](t *testing.T, tok string) T {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCodeIDTokenClaims(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			e := newCodeEnv(t, alg)
			code, rec := e.putCode(t, nil)
			resp, err := e.exchange(codeRequest("web", code, "code", code))
			if err != nil {
				t.Fatal(err)
			}
			id := decodeClaims[IDClaims](t, resp.IDToken)
			raw := decodeClaims[map[string]any](t, resp.IDToken)
			switch {
			case id.Issuer != testIssuer, id.Subject != "u1", !slices.Equal(id.Audience, Audience{"web"}), id.AuthorizedBy != "web":
				t.Fatalf("iss/sub/aud/azp: %+v", id)
			case id.Nonce != rec.Nonce:
				t.Fatalf("nonce %q", id.Nonce)
			case id.AuthTime != rec.AuthTime.Unix():
				t.Fatalf("auth_time %d, want %d", id.AuthTime, rec.AuthTime.Unix())
			case id.SID != rec.SID:
				t.Fatalf("sid %q", id.SID)
			case !slices.Equal(id.AMR, []string{"pwd"}):
				t.Fatalf("amr %v", id.AMR)
			case id.AtHash != AtHash(alg, resp.AccessToken) || id.AtHash == "":
				t.Fatalf("at_hash %q", id.AtHash)
			case id.Email != "ada@example.com":
				t.Fatalf("email %q", id.Email)
			}
			// The session is issued now from the earlier login: its idle
			// window counts from now, the cut-off and auth_time from the login.
			fam := e.state.fams[rec.SID].fam
			if !fam.CreatedAt.Equal(e.clock.Now()) || !fam.AuthTime.Equal(rec.AuthTime) {
				t.Fatalf("family created %v (want %v), auth time %v (want %v)", fam.CreatedAt, e.clock.Now(), fam.AuthTime, rec.AuthTime)
			}
			// at_hash by hand: the left half of SHA-256 (RS256, ES256) or SHA-512 (EdDSA).
			if want := map[string]int{"RS256": 22, "ES256": 22, "EdDSA": 43}[alg]; len(id.AtHash) != want {
				t.Fatalf("at_hash length %d, want %d", len(id.AtHash), want)
			}
			if raw["acr"] != "pwd" {
				t.Fatalf("acr %v, want pwd (the login's amr is [pwd])", raw["acr"])
			}
			// Refresh: same iss, sub, aud, azp, auth_time, sid; newer iat; no nonce.
			e.clock.Add(10 * time.Minute)
			r2, err := e.exchange(TokenRequest{GrantType: GrantRefreshToken, Client: ClientCredentials{ID: "web", Secret: "s3cret"}, RefreshToken: resp.RefreshToken})
			if err != nil {
				t.Fatal(err)
			}
			id2 := decodeClaims[IDClaims](t, r2.IDToken)
			switch {
			case id2.Issuer != id.Issuer, id2.Subject != id.Subject, !slices.Equal(id2.Audience, id.Audience), id2.AuthorizedBy != id.AuthorizedBy:
				t.Fatalf("refreshed iss/sub/aud/azp: %+v", id2)
			case id2.AuthTime != id.AuthTime, id2.SID != id.SID:
				t.Fatalf("refreshed auth_time/sid %d %q, want %d %q", id2.AuthTime, id2.SID, id.AuthTime, id.SID)
			case id2.IssuedAt <= id.IssuedAt:
				t.Fatalf("refreshed iat %d not after %d", id2.IssuedAt, id.IssuedAt)
			case id2.Nonce != "":
				t.Fatal("refreshed id token carries a nonce")
			case !slices.Equal(id2.AMR, id.AMR) || id2.ACR != "pwd":
				t.Fatalf("refreshed amr %v acr %q, want %v pwd", id2.AMR, id2.ACR, id.AMR)
			}
			if at := decodeClaims[AccessClaims](t, r2.AccessToken); !slices.Equal(at.AMR, id.AMR) || at.ACR != "pwd" {
				t.Fatalf("refreshed access token amr %v acr %q", at.AMR, at.ACR)
			}
		})
	}
}

func TestCodeWithoutNonceHasNoNonceClaim(t *testing.T) {
	e := newCodeEnv(t, "RS256")
	code, _ := e.putCode(t, func(c *AuthCode) { c.Nonce = "" })
	resp, err := e.exchange(codeRequest("web", code, "code", code))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := decodeClaims[map[string]any](t, resp.IDToken)["nonce"]; ok {
		t.Fatal("nonce claim without a nonce sent")
	}
}

func TestCodeScopes(t *testing.T) {
	cases := []struct {
		name, client string
		firstParty   bool
		scopes       []string
		want         string
	}{
		{"third-party naming no permission gets none", "web", false, []string{"openid"}, "openid"},
		{"third-party gets what it names", "web", false, []string{"openid", "docs:read"}, "docs:read openid"},
		{"first-party naming no permission follows the password grant", "web", true, []string{"openid"}, "docs:read docs:write openid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newCodeEnv(t, "RS256")
			c := e.dir.clients[tc.client]
			c.FirstParty = tc.firstParty
			e.dir.clients[tc.client] = c
			code, _ := e.putCode(t, func(c *AuthCode) { c.Scopes = tc.scopes })
			resp, err := e.exchange(codeRequest(tc.client, code, "code", code))
			if err != nil {
				t.Fatal(err)
			}
			if scopeOf(resp) != tc.want {
				t.Fatalf("scope %q, want %q", scopeOf(resp), tc.want)
			}
			// A refresh never widens a third-party grant, even when the user gains a role.
			u := e.dir.users["u1"]
			u.Roles = []string{"editor", "viewer"}
			e.dir.users["u1"] = u
			r2, err := e.exchange(TokenRequest{GrantType: GrantRefreshToken, Client: ClientCredentials{ID: tc.client, Secret: "s3cret"}, RefreshToken: resp.RefreshToken})
			if err != nil {
				t.Fatal(err)
			}
			if scopeOf(r2) != tc.want {
				t.Fatalf("refreshed scope %q, want %q", scopeOf(r2), tc.want)
			}
		})
	}
}

func TestCodeWithoutRefreshGrantStillRevocable(t *testing.T) {
	e := newCodeEnv(t, "RS256")
	code, rec := e.putCode(t, func(c *AuthCode) { c.ClientID = "norefresh" })
	resp, err := e.exchange(codeRequest("norefresh", code, "code", code))
	if err != nil {
		t.Fatal(err)
	}
	if resp.RefreshToken != "" {
		t.Fatal("refresh token for a client without the grant")
	}
	if at := decodeClaims[AccessClaims](t, resp.AccessToken); at.SID != rec.SID {
		t.Fatalf("access token sid %q, want %q (reuse must reach it)", at.SID, rec.SID)
	}
}

func TestVerifyIDTokenHint(t *testing.T) {
	e := newCodeEnv(t, "RS256")
	signer := fakeSigner{alg: "RS256"}
	good, _ := signer.Sign(IDClaims{Issuer: testIssuer, Subject: "u1", Expiry: 1}, TypeIDToken) // long expired: fine
	foreign, _ := signer.Sign(IDClaims{Issuer: "https://evil.example", Subject: "u1"}, TypeIDToken)
	access, _ := signer.Sign(AccessClaims{Issuer: testIssuer, Subject: "u1"}, TypeAccessToken)
	if sub, err := e.svc.VerifyIDTokenHint(good); err != nil || sub != "u1" {
		t.Fatalf("expired hint: %q %v", sub, err)
	}
	for name, bad := range map[string]string{"foreign iss": foreign, "access token": access, "forged": good[:len(good)-3] + "bad", "empty": ""} {
		if _, err := e.svc.VerifyIDTokenHint(bad); err == nil {
			t.Fatalf("%s hint accepted", name)
		}
	}
}

// TestCodeReplayDuringRedemption: a replay that arrives after the first
// redemption took the code but before it created the family still leaves
// nothing alive: the family created afterwards is revoked too, while the
// first redemption still answers (exactly one token response).
func TestCodeReplayDuringRedemption(t *testing.T) {
	e := newCodeEnv(t, "RS256")
	code, rec := e.putCode(t, nil)
	var replayErr error
	e.state.beforeCreate = func() {
		_, replayErr = e.exchange(codeRequest("web", code, "code", code))
	}
	resp, err := e.exchange(codeRequest("web", code, "code", code))
	if err != nil {
		t.Fatalf("first redemption: %v", err)
	}
	wantOAuthError(t, replayErr, "invalid_grant")
	if !e.state.familyRevoked(rec.SID) {
		t.Fatal("the family created after the replay is alive")
	}
	at := decodeClaims[AccessClaims](t, resp.AccessToken)
	if r, _ := e.state.IsAccessTokenRevoked(context.Background(), store.AccessTokenRef{JTI: at.JTI, SID: at.SID}); !r {
		t.Fatal("the access token is alive")
	}
}

func TestCodeGrantWithoutCodeStore(t *testing.T) {
	e := newCodeEnv(t, "RS256")
	e.svc.codes = nil
	_, err := e.exchange(codeRequest("web", "whatever", "code", "whatever"))
	wantOAuthError(t, err, "invalid_grant")
}

// TestEndGrants: the grants of an ended browser session end (their sids are
// revoked); a revocation recorded durably but not yet applied counts as
// done; one that fails does not keep the others alive, and the answer is
// 503.
func TestEndGrants(t *testing.T) {
	for _, tc := range []struct {
		name    string
		errs    map[string]error
		revoked []string
		fails   bool
	}{
		{name: "ok/all", revoked: []string{"g1", "g2", "g3"}},
		{name: "ok/pending_counts_as_done", errs: map[string]error{"g2": fmt.Errorf("redis down: %w", store.ErrRevocationPending)},
			revoked: []string{"g1", "g2", "g3"}},
		{name: "fail/one_fails_the_others_still_end", errs: map[string]error{"g2": errors.New("connection refused")},
			revoked: []string{"g1", "g3"}, fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newCodeEnv(t, "EdDSA")
			e.state.revokeErr = tc.errs
			err := e.svc.EndGrants(context.Background(), []string{"g1", "g2", "g3"})
			if tc.fails != (err != nil) || (err != nil && apierr.From(err).Status != http.StatusServiceUnavailable) {
				t.Fatalf("EndGrants = %v, want failure %v (503)", err, tc.fails)
			}
			for _, sid := range []string{"g1", "g2", "g3"} {
				if want := slices.Contains(tc.revoked, sid); e.state.revokedSIDs[sid] != want {
					t.Fatalf("sid %s revoked %v, want %v", sid, e.state.revokedSIDs[sid], want)
				}
			}
		})
	}
}

// TestCodeRedemptionFromTheAccountSnapshot: a code that carries the account
// as the authorization request read it (CodeUser) is redeemed without
// reading the account again, and its tokens show the snapshot; what keeps
// that safe is the user's cut-off, so a code whose account was deactivated,
// demoted or reset meanwhile (every such change ends the user's sessions) is
// refused, its family revoked, even when the change lands while it issues.
func TestCodeRedemptionFromTheAccountSnapshot(t *testing.T) {
	snapshot := &CodeUser{Email: "snap@example.com", Active: true, EmailVerified: true, Roles: []string{"editor"}}
	endSessions := func(e *codeEnv) {
		_ = e.state.RevokeUserSessions(context.Background(), "u1", e.clock.Now().Add(-time.Second))
	}
	cases := []struct {
		name string
		user *CodeUser
		// before runs before the redemption; during, inside it (just
		// before the family is created).
		before, during func(e *codeEnv)
		err            string
	}{
		{name: "ok/issued from the snapshot", user: snapshot},
		{name: "fail/snapshot of a deactivated account", user: &CodeUser{Email: "snap@example.com", Roles: []string{}}, err: "invalid_grant"},
		{name: "fail/sessions ended after the snapshot", user: snapshot, before: endSessions, err: "invalid_grant"},
		{name: "fail/sessions ended while issuing", user: snapshot, during: endSessions, err: "invalid_grant"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newCodeEnv(t, "EdDSA")
			code, rec := e.putCode(t, func(c *AuthCode) { c.User = tc.user })
			if tc.before != nil {
				tc.before(e)
			}
			if tc.during != nil {
				e.state.beforeCreate = func() { tc.during(e) }
			}
			resp, err := e.exchange(codeRequest("web", code, "code", code))
			if reads := e.dir.userReads; reads != 0 {
				t.Fatalf("the account was read %d times; the code carries it", reads)
			}
			if tc.err != "" {
				wantOAuthError(t, err, tc.err)
				if !e.state.familyRevoked(rec.SID) && e.state.fams[rec.SID] != nil {
					t.Fatal("the refused redemption left a live refresh family")
				}
				return
			}
			if err != nil {
				t.Fatalf("redeem: %v", err)
			}
			claims := decodeClaims[struct {
				Email string `json:"email"`
			}](t, resp.IDToken)
			if claims.Email != "snap@example.com" {
				t.Fatalf("id token email %q, want the snapshot's", claims.Email)
			}
		})
	}
	t.Run("ok/a code without a snapshot reads the account", func(t *testing.T) {
		t.Parallel()
		e := newCodeEnv(t, "EdDSA")
		code, _ := e.putCode(t, nil)
		if _, err := e.exchange(codeRequest("web", code, "code", code)); err != nil {
			t.Fatal(err)
		}
		if e.dir.userReads != 1 {
			t.Fatalf("account reads %d, want 1", e.dir.userReads)
		}
	})
}

// TestIssuedTo: what a client was given belongs to it only when issued
// since it was created, to the millisecond; an access token's iat (whole
// seconds) counts as the last instant of its second, so a token of the
// client's first second is its own and one of the second before is not.
func TestIssuedTo(t *testing.T) {
	created := time.Date(2026, 12, 7, 10, 0, 0, 500_400_000, time.UTC)
	cases := []struct {
		name     string
		created  time.Time
		clientID string
		at       time.Time
		want     bool
	}{
		{"ok/after", created, "app", created.Add(time.Hour), true},
		{"ok/same_millisecond", created, "app", created.Truncate(time.Millisecond), true},
		{"ok/token_of_the_first_second", created, "app", latestIn(created.Unix()), true},
		{"ok/record_without_creation_time", time.Time{}, "app", created, true},
		{"fail/millisecond_before", created, "app", created.Truncate(time.Millisecond).Add(-time.Nanosecond), false},
		{"fail/token_of_the_second_before", created, "app", latestIn(created.Unix() - 1), false},
		{"fail/other_client", created, "other", created.Add(time.Hour), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := store.Client{ID: "app", CreatedAt: tc.created}
			if got := IssuedTo(client, tc.clientID, tc.at); got != tc.want {
				t.Fatalf("IssuedTo(%v, %q, %v) = %v, want %v", tc.created, tc.clientID, tc.at, got, tc.want)
			}
		})
	}
}

// TestCodeFamilyGrantedAt: the session a code's redemption starts keeps
// when the code was issued (the client's grant) apart from its creation
// (the redemption), so that the user's cut-off at the client judges it as
// it judges the grant's access tokens: a code issued before the consent
// was withdrawn and redeemed after the cut-off starts a session the
// cut-off ends.
func TestCodeFamilyGrantedAt(t *testing.T) {
	e := newCodeEnv(t, "RS256")
	code, rec := e.putCode(t, func(c *AuthCode) { c.IssuedAt = e.clock.Now().Add(-30 * time.Second) })
	if _, err := e.exchange(codeRequest("web", code, "code", code)); err != nil {
		t.Fatal(err)
	}
	fam := e.state.fams[rec.SID].fam
	if !fam.GrantedAt.Equal(rec.IssuedAt) || !fam.CreatedAt.Equal(e.clock.Now()) {
		t.Fatalf("family granted %v (want the code's issue %v), created %v (want %v)", fam.GrantedAt, rec.IssuedAt, fam.CreatedAt, e.clock.Now())
	}
}
