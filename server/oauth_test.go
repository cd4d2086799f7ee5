package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

// deployment is one running instance with a user and clients.
type deployment struct {
	in        *st.Instance
	c         *st.Client
	fx        *st.Fixtures
	webSecret string // confidential "web": password + refresh_token
	svcSecret string // confidential "svc": client_credentials, scopes reports:read
}

const (
	userEmail = "alice@example.com"
	userPass  = "correct horse battery staple"
)

func newDeployment(t *testing.T, backend st.Backend, env ...map[string]string) *deployment {
	t.Helper()
	e := st.NewEnv(t, backend)
	for _, m := range env {
		for k, v := range m {
			e[k] = v
		}
	}
	return deploy(t, st.Start(t, e))
}

func deploy(t *testing.T, in *st.Instance) *deployment {
	t.Helper()
	d := &deployment{in: in, c: in.Client(t), fx: st.NewFixtures(t, in.App.Core)}
	d.fx.User(t, userEmail, userPass, "admin")
	// "web" tokens are for the API and for the admin API (the issuer audience).
	d.webSecret = d.fx.Client(t, clients.Spec{ID: "web", Name: "Web", Audiences: []string{"api", d.fx.Issuer()}})
	d.svcSecret = d.fx.Client(t, clients.Spec{ID: "svc", Grants: []string{"client_credentials"}, Scopes: []string{"reports:read"}})
	d.fx.Client(t, clients.Spec{ID: "spa", Public: true})
	return d
}

func (d *deployment) login(t *testing.T, scope string) st.TokenResponse {
	t.Helper()
	return d.c.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, scope), st.Basic("web", d.webSecret)).Token()
}

func decodeClaims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWS: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func decodeHeader(t *testing.T, jwt string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRealClients drives Portcullis with golang.org/x/oauth2 and verifies the
// access token with coreos/go-oidc's remote JWKS verifier.
func TestRealClients(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			d := newDeployment(t, st.PostgresRedis, map[string]string{"PORTCULLIS_SIGNING_ALG": alg})
			ctx := context.Background()
			provider, err := oidc.NewProvider(ctx, d.in.Config.Issuer)
			if err != nil {
				t.Fatalf("go-oidc discovery: %v", err)
			}
			conf := &oauth2.Config{ClientID: "web", ClientSecret: d.webSecret, Endpoint: provider.Endpoint()}
			conf.Endpoint.AuthStyle = oauth2.AuthStyleInHeader
			tok, err := conf.PasswordCredentialsToken(ctx, userEmail, userPass)
			if err != nil {
				t.Fatalf("x/oauth2 password grant: %v", err)
			}
			if tok.RefreshToken == "" || !strings.HasPrefix(tok.RefreshToken, "pcrt_") {
				t.Fatalf("no refresh token: %+v", tok)
			}
			verifier := provider.VerifierContext(ctx, &oidc.Config{ClientID: "api", SupportedSigningAlgs: []string{alg}})
			idt, err := verifier.Verify(ctx, tok.AccessToken)
			if err != nil {
				t.Fatalf("go-oidc verifier refused the access token: %v", err)
			}
			if idt.Issuer != d.in.Config.Issuer {
				t.Fatalf("iss %q", idt.Issuer)
			}
			h := decodeHeader(t, tok.AccessToken)
			if h["typ"] != "at+jwt" || h["alg"] != alg || h["kid"] == "" {
				t.Fatalf("header %v", h)
			}
			c := decodeClaims(t, tok.AccessToken)
			for _, k := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "roles", "sid"} {
				if _, ok := c[k]; !ok {
					t.Fatalf("claim %s missing: %v", k, c)
				}
			}
			if !strings.Contains(c["scope"].(string), "users:read") {
				t.Fatalf("admin's permissions missing from scope: %v", c["scope"])
			}
			// Refresh through x/oauth2's TokenSource: an expired token is refreshed and rotated.
			expired := *tok
			expired.Expiry = time.Now().Add(-time.Minute)
			next, err := conf.TokenSource(ctx, &expired).Token()
			if err != nil {
				t.Fatalf("x/oauth2 refresh: %v", err)
			}
			if next.RefreshToken == tok.RefreshToken || next.AccessToken == tok.AccessToken {
				t.Fatal("refresh did not rotate")
			}
			if _, err := verifier.Verify(ctx, next.AccessToken); err != nil {
				t.Fatalf("refreshed token refused: %v", err)
			}
			// client_credentials through x/oauth2/clientcredentials.
			cc := &clientcredentials.Config{ClientID: "svc", ClientSecret: d.svcSecret, TokenURL: provider.Endpoint().TokenURL}
			ctok, err := cc.Token(ctx)
			if err != nil {
				t.Fatalf("clientcredentials: %v", err)
			}
			if ctok.RefreshToken != "" {
				t.Fatal("client_credentials must not issue a refresh token")
			}
			cl := decodeClaims(t, ctok.AccessToken)
			if cl["sub"] != "svc" || cl["scope"] != "reports:read" || len(cl["roles"].([]any)) != 0 {
				t.Fatalf("client_credentials claims %v", cl)
			}
			if _, err := verifier.Verify(ctx, ctok.AccessToken); err != nil {
				t.Fatalf("client_credentials token refused: %v", err)
			}
		})
	}
}

// TestTokenErrorMatrix checks RFC 6749 §5.2 over the wire.
func TestTokenErrorMatrix(t *testing.T) {
	d := newDeployment(t, st.PostgresRedis)
	good := st.Basic("web", d.webSecret)
	form := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}
	cases := []struct {
		name   string
		body   string
		ctype  string
		opts   []st.Option
		status int
		code   string
		www    bool
	}{
		{name: "fail/no grant_type", body: form("username", "x").Encode(), opts: []st.Option{good}, status: 400, code: "invalid_request"},
		// RFC 6749 §5.2: error_description is printable ASCII without '"' and
		// the backslash (ExpectError checks it); a description naming the
		// scope or the grant type once quoted them and kept non-ASCII.
		{name: "fail/unknown permission named in the description", body: st.PasswordForm(userEmail, userPass, "nothing:here").Encode(), opts: []st.Option{good}, status: 400, code: "invalid_scope"},
		{name: "fail/non-ASCII grant type named in the description", body: form("grant_type", "urn:x:\u00e9").Encode(), opts: []st.Option{good}, status: 400, code: "unsupported_grant_type"},
		{name: "fail/unsupported grant", body: form("grant_type", "urn:ietf:params:oauth:grant-type:device_code", "device_code", "x").Encode(), opts: []st.Option{good}, status: 400, code: "unsupported_grant_type"},
		{name: "fail/repeated parameter", body: "grant_type=password&username=a&username=b&password=p", opts: []st.Option{good}, status: 400, code: "invalid_request"},
		{name: "fail/missing password", body: form("grant_type", "password", "username", userEmail).Encode(), opts: []st.Option{good}, status: 400, code: "invalid_request"},
		{name: "fail/wrong password", body: st.PasswordForm(userEmail, "wrong password!", "").Encode(), opts: []st.Option{good}, status: 400, code: "invalid_grant"},
		{name: "fail/unknown user", body: st.PasswordForm("nobody@example.com", userPass, "").Encode(), opts: []st.Option{good}, status: 400, code: "invalid_grant"},
		{name: "fail/bad client secret basic", body: st.PasswordForm(userEmail, userPass, "").Encode(), opts: []st.Option{st.Basic("web", "nope")}, status: 401, code: "invalid_client", www: true},
		{name: "fail/unknown client basic", body: st.PasswordForm(userEmail, userPass, "").Encode(), opts: []st.Option{st.Basic("ghost", "nope")}, status: 401, code: "invalid_client", www: true},
		{name: "fail/bad client secret post", body: form("grant_type", "password", "username", userEmail, "password", userPass, "client_id", "web", "client_secret", "nope").Encode(), status: 401, code: "invalid_client", www: true},
		{name: "fail/no client auth", body: st.PasswordForm(userEmail, userPass, "").Encode(), status: 401, code: "invalid_client", www: true},
		{name: "fail/two auth methods", body: form("grant_type", "password", "username", userEmail, "password", userPass, "client_secret", d.webSecret).Encode(), opts: []st.Option{good}, status: 400, code: "invalid_request"},
		{name: "fail/client_secret_post with a client assertion", body: form("grant_type", "password", "username", userEmail, "password", userPass, "client_id", "web", "client_secret", d.webSecret,
			"client_assertion_type", jwtBearerAssertion, "client_assertion", "a.b.c").Encode(), status: 401, code: "invalid_client", www: true},
		{name: "fail/grant not allowed", body: form("grant_type", "client_credentials").Encode(), opts: []st.Option{good}, status: 400, code: "unauthorized_client"},
		{name: "fail/password grant for cc client", body: st.PasswordForm(userEmail, userPass, "").Encode(), opts: []st.Option{st.Basic("svc", d.svcSecret)}, status: 400, code: "unauthorized_client"},
		{name: "fail/scope the user lacks", body: st.PasswordForm(userEmail, userPass, "keys:rotate").Encode(), opts: []st.Option{good}, status: 400, code: "invalid_scope"},
		{name: "fail/cc scope not listed", body: form("grant_type", "client_credentials", "scope", "users:read").Encode(), opts: []st.Option{st.Basic("svc", d.svcSecret)}, status: 400, code: "invalid_scope"},
		{name: "fail/bad refresh token", body: st.RefreshForm("pcrt_garbage").Encode(), opts: []st.Option{good}, status: 400, code: "invalid_grant"},
		{name: "fail/json body", body: `{"grant_type":"password"}`, ctype: "application/json", opts: []st.Option{good}, status: 400, code: "invalid_request"},
		{name: "fail/public client with secret", body: form("grant_type", "password", "username", userEmail, "password", userPass, "client_id", "spa", "client_secret", "x").Encode(), status: 401, code: "invalid_client", www: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ct := tc.ctype
			if ct == "" {
				ct = "application/x-www-form-urlencoded"
			}
			r := d.in.Client(t).Do(http.MethodPost, "/oauth2/token", []byte(tc.body), ct, tc.opts...).ExpectError(tc.status, tc.code)
			if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Pragma") != "no-cache" {
				t.Fatalf("error response cacheable: %v", r.Header)
			}
			if got := r.Header.Get("WWW-Authenticate"); tc.www != (got != "") {
				t.Fatalf("WWW-Authenticate %q", got)
			}
		})
	}
	t.Run("ok/public client with none", func(t *testing.T) {
		r := d.c.PostForm("/oauth2/token", form("grant_type", "password", "username", "ALICE@example.com", "password", userPass, "client_id", "spa"))
		tok := r.Token()
		if r.Header.Get("Cache-Control") != "no-store" || tok.RefreshToken == "" {
			t.Fatalf("public client login: %s %v", r.Body, r.Header)
		}
	})
	t.Run("ok/client_secret_post and narrowed scope", func(t *testing.T) {
		tok := d.c.PostForm("/oauth2/token", form("grant_type", "password", "username", userEmail, "password", userPass,
			"client_id", "web", "client_secret", d.webSecret, "scope", "users:read openid")).Token()
		if tok.Scope != "users:read openid" || tok.IDToken == "" {
			t.Fatalf("scope %q id_token %q", tok.Scope, tok.IDToken)
		}
		idc := decodeClaims(t, tok.IDToken)
		if idc["aud"] != "web" {
			t.Fatalf("id token aud %v", idc["aud"])
		}
	})
}

// TestRefreshRotationAndReuse pins rotation and theft detection over HTTP.
func TestRefreshRotationAndReuse(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			d := newDeployment(t, b)
			web := st.Basic("web", d.webSecret)
			first := d.login(t, "")
			second := d.c.PostForm("/oauth2/token", st.RefreshForm(first.RefreshToken), web).Token()
			if second.RefreshToken == first.RefreshToken {
				t.Fatal("refresh token not rotated")
			}
			// Replaying the rotated token is theft: the whole family dies.
			d.c.PostForm("/oauth2/token", st.RefreshForm(first.RefreshToken), web).ExpectError(400, "invalid_grant")
			d.c.PostForm("/oauth2/token", st.RefreshForm(second.RefreshToken), web).ExpectError(400, "invalid_grant")
			// ...including access tokens issued in it.
			d.c.Get("/userinfo", st.Bearer(second.AccessToken)).ExpectError(401, "invalid_token")
			d.c.Get("/userinfo", st.Bearer(first.AccessToken)).ExpectError(401, "invalid_token")
			// Another client presenting the token gets nothing.
			third := d.login(t, "")
			d.c.PostForm("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {third.RefreshToken}, "client_id": {"spa"}}).
				ExpectError(400, "invalid_grant")
		})
	}
}

func TestRevocationAndIntrospection(t *testing.T) {
	d := newDeployment(t, st.PostgresRedis)
	web := st.Basic("web", d.webSecret)
	svc := st.Basic("svc", d.svcSecret)
	introspect := func(tok string, opts ...st.Option) map[string]any {
		return d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok}}, opts...).ExpectStatus(200).Map()
	}
	tok := d.login(t, "")
	m := introspect(tok.AccessToken, svc)
	if m["active"] != true || m["sub"] == "" || m["client_id"] != "web" || m["scope"] == "" {
		t.Fatalf("introspection of a live token: %v", m)
	}
	if m := introspect(tok.RefreshToken, svc); m["active"] != true || m["token_type"] != "refresh_token" {
		t.Fatalf("introspection of a live refresh token: %v", m)
	}
	for _, bad := range []string{"garbage", tok.AccessToken + "x", "a.b.c", strings.Repeat("x", 5000)} {
		if m := introspect(bad, svc); len(m) != 1 || m["active"] != false {
			t.Fatalf("inactive token must answer only active:false, got %v", m)
		}
	}
	// Introspection needs a confidential client.
	d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok.AccessToken}, "client_id": {"spa"}}).ExpectError(401, "invalid_client")
	d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok.AccessToken}}).ExpectError(401, "invalid_client")

	// RFC 7009: unknown tokens are 200; revoking an access token denies its jti.
	d.c.PostForm("/oauth2/revoke", url.Values{"token": {"nonsense"}}, web).ExpectStatus(200)
	d.c.PostForm("/oauth2/revoke", url.Values{"token": {tok.AccessToken}, "token_type_hint": {"refresh_token"}}, web).ExpectStatus(200)
	if m := introspect(tok.AccessToken, svc); m["active"] != false {
		t.Fatalf("revoked access token still active: %v", m)
	}
	d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectError(401, "invalid_token")
	// The session itself lives on until its refresh token is revoked.
	next := d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), web).Token()
	// Revoking a refresh token (hint says access_token: not trusted) ends the family and its access tokens.
	d.c.PostForm("/oauth2/revoke", url.Values{"token": {next.RefreshToken}, "token_type_hint": {"access_token"}}, web).ExpectStatus(200)
	d.c.PostForm("/oauth2/token", st.RefreshForm(next.RefreshToken), web).ExpectError(400, "invalid_grant")
	if m := introspect(next.AccessToken, svc); m["active"] != false {
		t.Fatalf("access token of a revoked family still active: %v", m)
	}
	// Revocation requires client authentication.
	d.c.PostForm("/oauth2/revoke", url.Values{"token": {"x"}}).ExpectError(401, "invalid_client")
	// A client cannot revoke another client's token.
	other := d.login(t, "")
	d.c.PostForm("/oauth2/revoke", url.Values{"token": {other.AccessToken}}, svc).ExpectError(400, "unauthorized_client")
	if m := introspect(other.AccessToken, svc); m["active"] != true {
		t.Fatal("another client's revocation took effect")
	}
}

// TestRevokeRotatedTokenInGrace: inside PORTCULLIS_REFRESH_REUSE_GRACE the
// token just rotated still refreshes (a grace replay), so it is the
// session's token for introspection (active, with the session's data) and
// for revocation, which then ends the session, successor included (RFC
// 7009 §2.2: once 200 is returned the token is invalid). Without grace it
// is already spent: inactive, and revoking it by its client is reuse (RFC
// 9700 §4.14.2), which ends the session, successor included, as presenting
// it at the token endpoint does. Before a review found it, the revocation
// without grace revoked nothing (a thief who had refreshed first kept the
// session).
func TestRevokeRotatedTokenInGrace(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace string
	}{
		{"ok/inside_grace_ends_the_session", "30s"},
		{"fail/without_grace_is_reuse_and_ends_the_session", "0s"},
	} {
		for _, b := range []st.Backend{st.SQLite, st.PostgresRedis} {
			t.Run(tc.name+"/"+b.String(), func(t *testing.T) {
				d := newDeployment(t, b, map[string]string{"PORTCULLIS_REFRESH_REUSE_GRACE": tc.grace})
				inGrace := tc.grace != "0s"
				web, svc := st.Basic("web", d.webSecret), st.Basic("svc", d.svcSecret)
				introspect := func(tok string) map[string]any {
					return d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok}}, svc).ExpectStatus(200).Map()
				}
				refresh := func(rt string) *st.Response {
					return d.c.PostForm("/oauth2/token", st.RefreshForm(rt), web)
				}
				t0 := d.login(t, "")
				t1 := refresh(t0.RefreshToken).Token()
				got, cur := introspect(t0.RefreshToken), introspect(t1.RefreshToken)
				if inGrace && !reflect.DeepEqual(got, cur) || !inGrace && !reflect.DeepEqual(got, map[string]any{"active": false}) {
					t.Errorf("introspection of the rotated token: %v; the current one: %v (want the same answer: %v)", got, cur, inGrace)
				}
				d.c.PostForm("/oauth2/revoke", url.Values{"token": {t0.RefreshToken}, "token_type_hint": {"refresh_token"}}, web).ExpectStatus(200)
				for _, want := range []struct{ what, tok string }{
					{"the revoked token", t0.RefreshToken},
					{"its successor", t1.RefreshToken},
					{"the successor's access token", t1.AccessToken},
				} {
					if active := introspect(want.tok)["active"] == true; active {
						t.Errorf("after revoking the rotated token, %s is active", want.what)
					}
				}
				refresh(t0.RefreshToken).ExpectError(400, "invalid_grant")
				refresh(t1.RefreshToken).ExpectError(400, "invalid_grant")
			})
		}
	}
}

func TestUserinfoAndLogout(t *testing.T) {
	d := newDeployment(t, st.PostgresRedis)
	tok := d.login(t, "openid email")
	r := d.c.Get("/userinfo")
	r.ExpectStatus(401)
	if r.Header.Get("WWW-Authenticate") != `Bearer realm="portcullis"` {
		t.Fatalf("no-token WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
	}
	bad := d.c.Get("/userinfo", st.Bearer("abc.def.ghi")).ExpectError(401, "invalid_token")
	if !strings.Contains(bad.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("WWW-Authenticate %q", bad.Header.Get("WWW-Authenticate"))
	}
	// An id token is not an access token.
	d.c.Get("/userinfo", st.Bearer(tok.IDToken)).ExpectError(401, "invalid_token")
	// Nor is a client_credentials token a user's.
	cc := d.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic("svc", d.svcSecret)).Token()
	d.c.Get("/userinfo", st.Bearer(cc.AccessToken)).ExpectError(401, "invalid_token")
	info := d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectStatus(200).Map()
	if info["email"] != userEmail || info["email_verified"] != true || info["sub"] == "" {
		t.Fatalf("userinfo %v", info)
	}
	if roles, _ := info["roles"].([]any); len(roles) != 1 || roles[0] != "admin" {
		t.Fatalf("roles %v", info["roles"])
	}
	d.c.PostJSON("/auth/logout", nil, st.Bearer(tok.AccessToken)).ExpectStatus(204)
	d.c.Get("/userinfo", st.Bearer(tok.AccessToken)).ExpectError(401, "invalid_token")
	d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), st.Basic("web", d.webSecret)).ExpectError(400, "invalid_grant")
}
