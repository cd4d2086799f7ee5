package server_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mail/mailtest"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// API keys and machine users over HTTP (contract, "API keys and machine
// users"), with the demo policy: super_admin > admin > editor > viewer,
// editor holding projects:read and projects:write, viewer projects:read.

var keyBackends = []st.Backend{st.PostgresRedis, st.SQLite}

const (
	keyRootPass = "root passphrase for key tests"
	keyAdmPass  = "admin passphrase for key tests"
	keyAnnPass  = "ann passphrase for key tests"
)

var keyPattern = regexp.MustCompile(`^pcak_[0-9A-Za-z]{38}$`)

// keyEnv is a deployment with a super_admin (root), an admin (adm), an
// editor (ann), the password-grant client "web" (issuer audience: its
// tokens work at /admin), "api-rs" (a confidential client that introspects)
// and "xchg" (a confidential client with the token-exchange grant).
type keyEnv struct {
	env                     st.Env
	in                      *st.Instance
	c                       *st.Client
	fx                      *st.Fixtures
	root, adm, ann          store.User
	web, rs, xchg           string // secrets
	rootTok, admTok, annTok string // access tokens through "web"
}

func newKeyEnv(t *testing.T, b st.Backend, extra ...map[string]string) *keyEnv {
	t.Helper()
	policyFile, err := filepath.Abs("../docs/examples/demo-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	env := st.NewEnv(t, b)
	env["PORTCULLIS_POLICY_FILE"] = policyFile
	for _, m := range extra {
		for k, v := range m {
			env[k] = v
		}
	}
	in := st.Start(t, env)
	fx := st.NewFixtures(t, in.App.Core)
	e := &keyEnv{env: env, in: in, c: in.Client(t), fx: fx}
	e.root = fx.User(t, "root@example.com", keyRootPass, "super_admin")
	e.adm = fx.User(t, "adm@example.com", keyAdmPass, "admin")
	e.ann = fx.User(t, "ann@example.com", keyAnnPass, "editor", "viewer")
	e.web = fx.AdminClient(t, "web")
	e.rs = fx.Client(t, clients.Spec{ID: "api-rs", Name: "Resource server", Grants: []string{"client_credentials"}, Scopes: []string{}})
	e.xchg = fx.Client(t, clients.Spec{ID: "xchg", Name: "Gateway", Grants: []string{token.GrantTokenExchange}})
	e.rootTok = e.login(t, "root@example.com", keyRootPass)
	e.admTok = e.login(t, "adm@example.com", keyAdmPass)
	e.annTok = e.login(t, "ann@example.com", keyAnnPass)
	return e
}

func (e *keyEnv) login(t *testing.T, email, pw string) string {
	t.Helper()
	return e.c.PostForm("/oauth2/token", st.PasswordForm(email, pw, ""), st.Basic("web", e.web)).Token().AccessToken
}

type createdKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Key       string    `json:"key"`
	Hint      string    `json:"hint"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedAt time.Time `json:"created_at"`
}

// createKey posts body to path as the holder of tok and wants a 201 with a
// well-formed key.
func (e *keyEnv) createKey(t *testing.T, path, tok string, body map[string]any) createdKey {
	t.Helper()
	var k createdKey
	e.c.PostJSON(path, body, st.Bearer(tok)).ExpectStatus(http.StatusCreated).JSON(&k)
	if !keyPattern.MatchString(k.Key) || k.Hint != k.Key[:8]+"..."+k.Key[len(k.Key)-4:] || !strings.HasPrefix(k.ID, "apk_") {
		t.Fatalf("created key %+v", k)
	}
	return k
}

// introspect asks as "api-rs".
func (e *keyEnv) introspect(t *testing.T, tok string) map[string]any {
	t.Helper()
	return e.c.PostForm("/oauth2/introspect", url.Values{"token": {tok}}, st.Basic("api-rs", e.rs)).ExpectStatus(http.StatusOK).Map()
}

func exchangeKeyForm(key, scope string) url.Values {
	v := url.Values{"grant_type": {token.GrantTokenExchange}, "subject_token": {key},
		"subject_token_type": {token.TokenTypeAPIKey}}
	if scope != "" {
		v.Set("scope", scope)
	}
	return v
}

// exchange trades a key for an access token as "xchg".
func (e *keyEnv) exchange(t *testing.T, key, scope string) *st.Response {
	t.Helper()
	return e.c.PostForm("/oauth2/token", exchangeKeyForm(key, scope), st.Basic("xchg", e.xchg))
}

func (e *keyEnv) audited(t *testing.T, action, target string, details map[string]string) bool {
	t.Helper()
	return auditedIn(t, e.in, action, target, details)
}

// auditedIn reports whether in recorded an event of action on target with
// (at least) details.
func auditedIn(t *testing.T, in *st.Instance, action, target string, details map[string]string) bool {
	t.Helper()
	page, err := in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: action, TargetID: target, Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(page.Items, func(ev store.AuditEvent) bool {
		for k, v := range details {
			if ev.Details[k] != v {
				return false
			}
		}
		return true
	})
}

// eventually polls cond for up to 10 s (the audit of a revoked key is
// written after the answer).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 10 s", what)
}

func wantInactive(t *testing.T, what string, m map[string]any) {
	t.Helper()
	if len(m) != 1 || m["active"] != false {
		t.Fatalf("%s: introspection %v, want {\"active\": false}", what, m)
	}
}

// TestAPIKeysSelfService: a person creates a key (shown once, well formed,
// scopes within their permissions, expiry rules), lists keys without the
// key, introspects and exchanges it (the exchanged token verifies offline
// with go-jose against the JWKS, carries no roles, the exchanging client's
// client_id and audience, sid ak_<id>, at most 15 minutes, and manages
// neither keys nor the owner's sessions or factors), and revokes it: the
// key and its exchanged token die at once.
func TestAPIKeysSelfService(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			ann := st.Bearer(e.annTok)

			// Bad input: 400 in the standard's format, nothing created.
			future := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
			for _, tc := range []struct {
				name string
				body any
				code string
			}{
				{"beyond_the_owner", map[string]any{"name": "x", "scopes": []string{"projects:read", "users:read"}}, "invalid_scope"},
				{"wildcard", map[string]any{"name": "x", "scopes": []string{"projects:*"}}, "invalid_scope"},
				{"oidc_scope", map[string]any{"name": "x", "scopes": []string{"openid"}}, "invalid_scope"},
				{"no_scopes", map[string]any{"name": "x"}, "invalid_request"},
				{"empty_scopes", map[string]any{"name": "x", "scopes": []string{}}, "invalid_request"},
				{"no_name", map[string]any{"scopes": []string{"projects:read"}}, "invalid_request"},
				{"under_an_hour", map[string]any{"name": "x", "scopes": []string{"projects:read"}, "expires_at": time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339)}, "invalid_request"},
				{"past_the_maximum", map[string]any{"name": "x", "scopes": []string{"projects:read"}, "expires_at": time.Now().Add(8761 * time.Hour).UTC().Format(time.RFC3339)}, "invalid_request"},
				{"not_rfc3339", map[string]any{"name": "x", "scopes": []string{"projects:read"}, "expires_at": "tomorrow"}, "invalid_request"},
				{"expiry_a_number", map[string]any{"name": "x", "scopes": []string{"projects:read"}, "expires_at": 1893456000}, "invalid_request"},
				{"unknown_field", map[string]any{"name": "x", "scopes": []string{"projects:read"}, "roles": []string{"admin"}}, "invalid_request"},
			} {
				e.c.PostJSON("/auth/api-keys", tc.body, ann).ExpectError(http.StatusBadRequest, tc.code)
			}
			e.c.PostJSON("/auth/api-keys", map[string]any{"name": "x", "scopes": []string{"projects:read"}}).ExpectStatus(http.StatusUnauthorized)

			k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": " deploy ", "scopes": []string{"projects:write", "projects:read"}})
			if k.Name != "deploy" || !slices.Equal(k.Scopes, []string{"projects:read", "projects:write"}) ||
				(k.ExpiresAt.Sub(k.CreatedAt)-90*24*time.Hour).Abs() > time.Second {
				t.Fatalf("created %+v: want the default 90 days", k)
			}
			withExpiry := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "short", "scopes": []string{"projects:read"}, "expires_at": future})
			if withExpiry.ExpiresAt.Format(time.RFC3339) != future {
				t.Fatalf("expires_at %v, want %s", withExpiry.ExpiresAt, future)
			}
			if !e.audited(t, "api_key.created", e.ann.ID, map[string]string{"key_id": k.ID, "via": "self"}) {
				t.Fatal("no api_key.created event")
			}

			// The list never shows a key.
			r := e.c.Get("/auth/api-keys", ann).ExpectStatus(http.StatusOK)
			if bytes.Contains(r.Body, []byte(k.Key)) || bytes.Contains(r.Body, []byte(`"key"`)) {
				t.Fatalf("the list shows a key: %s", r.Body)
			}
			var list struct {
				Items []struct {
					ID         string     `json:"id"`
					LastUsedAt *time.Time `json:"last_used_at"`
					RevokedAt  *time.Time `json:"revoked_at"`
				} `json:"items"`
				NextCursor string `json:"next_cursor"`
			}
			r.JSON(&list)
			if len(list.Items) != 2 || list.Items[0].ID != withExpiry.ID || list.Items[1].ID != k.ID || list.Items[1].LastUsedAt != nil {
				t.Fatalf("list %+v: want both keys, newest first, unused", list)
			}
			e.c.Get("/auth/api-keys?limit=1", ann).ExpectStatus(http.StatusOK).JSON(&list)
			if len(list.Items) != 1 || list.NextCursor == "" {
				t.Fatalf("a page of one: %+v", list)
			}
			e.c.Get("/auth/api-keys?cursor=garbage", ann).ExpectError(http.StatusBadRequest, "invalid_request")

			// Introspection: the key, its owner, its effective scope, no roles.
			in := e.introspect(t, k.Key)
			if in["active"] != true || in["token_type"] != "api_key" || in["sub"] != e.ann.ID || in["scope"] != "projects:read projects:write" ||
				in["client_id"] != "apikey:"+k.ID || in["exp"] != float64(k.ExpiresAt.Unix()) || fmt.Sprint(in["roles"]) != "[]" {
				t.Fatalf("introspection %v", in)
			}
			e.c.PostForm("/oauth2/introspect", url.Values{"token": {k.Key}}).ExpectStatus(http.StatusUnauthorized)

			// Exchange: an RFC 9068 token that verifies offline and carries no roles.
			tr := e.exchange(t, k.Key, "").Token()
			if tr.RefreshToken != "" || tr.IDToken != "" || tr.ExpiresIn > 900 || tr.Scope != "projects:read projects:write" {
				t.Fatalf("exchange answer %+v", tr)
			}
			jwks := e.c.Get("/.well-known/jwks.json").ExpectStatus(http.StatusOK).Body
			if err := verifyWithJWKS(jwks, tr.AccessToken); err != nil {
				t.Fatalf("the exchanged token does not verify offline: %v", err)
			}
			cl := decodeClaims(t, tr.AccessToken)
			if cl["sub"] != e.ann.ID || cl["client_id"] != "xchg" || cl["aud"] != "api" || cl["sid"] != "ak_"+k.ID ||
				fmt.Sprint(cl["roles"]) != "[]" || cl["scope"] != "projects:read projects:write" ||
				cl["exp"].(float64)-cl["iat"].(float64) > 900 || decodeHeader(t, tr.AccessToken)["typ"] != "at+jwt" {
				t.Fatalf("exchanged token claims %v", cl)
			}
			narrowed := e.exchange(t, k.Key, "projects:read openid").Token()
			if decodeClaims(t, narrowed.AccessToken)["scope"] != "projects:read" || narrowed.IDToken != "" {
				t.Fatalf("narrowed exchange %+v", narrowed)
			}
			if got := e.introspect(t, tr.AccessToken); got["active"] != true || got["sid"] != "ak_"+k.ID || fmt.Sprint(got["roles"]) != "[]" {
				t.Fatalf("the exchanged token at introspection: %v", got)
			}
			// A client without the grant may not exchange.
			e.c.PostForm("/oauth2/token", exchangeKeyForm(k.Key, ""), st.Basic("web", e.web)).ExpectError(http.StatusBadRequest, "unauthorized_client")

			// A token exchanged from a key never manages keys.
			keyTok := st.Bearer(tr.AccessToken)
			e.c.PostJSON("/auth/api-keys", map[string]any{"name": "escalate", "scopes": []string{"projects:write"}}, keyTok).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Get("/auth/api-keys", keyTok).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Delete("/auth/api-keys/"+withExpiry.ID, keyTok).ExpectError(http.StatusForbidden, "forbidden")
			// Nor the owner's sessions, consents or second factors: a leaked key
			// must not end the owner's sign-ins or enrol a factor on the account.
			e.c.Get("/auth/sessions", keyTok).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Get("/auth/consents", keyTok).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Get("/auth/mfa", keyTok).ExpectError(http.StatusForbidden, "forbidden")
			e.c.PostJSON("/auth/mfa/totp", nil, keyTok).ExpectError(http.StatusForbidden, "forbidden")

			// The list shows the use.
			e.c.Get("/auth/api-keys", ann).ExpectStatus(http.StatusOK).JSON(&list)
			if list.Items[1].ID != k.ID || list.Items[1].LastUsedAt == nil {
				t.Fatalf("last_used_at not recorded: %+v", list.Items)
			}

			// Revoking kills the key and the tokens exchanged from it, at once.
			e.c.Delete("/auth/api-keys/apk_unknown", ann).ExpectError(http.StatusNotFound, "not_found")
			e.c.Delete("/auth/api-keys/"+k.ID, ann).ExpectStatus(http.StatusNoContent)
			e.c.Delete("/auth/api-keys/"+k.ID, ann).ExpectStatus(http.StatusNoContent)
			wantInactive(t, "revoked key", e.introspect(t, k.Key))
			wantInactive(t, "token exchanged from a revoked key", e.introspect(t, tr.AccessToken))
			e.c.Get("/userinfo", keyTok).ExpectError(http.StatusUnauthorized, "invalid_token")
			e.exchange(t, k.Key, "").ExpectError(http.StatusBadRequest, "invalid_request")
			if !e.audited(t, "api_key.revoked", e.ann.ID, map[string]string{"key_id": k.ID, "via": "self"}) {
				t.Fatal("no api_key.revoked event")
			}
			eventually(t, "api_key.rejected for the revoked key", func() bool {
				return e.audited(t, "api_key.rejected", e.ann.ID, map[string]string{"key_id": k.ID, "reason": "revoked"})
			})
			// Another person's key is not theirs to revoke.
			e.fx.User(t, "bob@example.com", "bob passphrase for key tests", "viewer")
			bobTok := e.login(t, "bob@example.com", "bob passphrase for key tests")
			e.c.Delete("/auth/api-keys/"+withExpiry.ID, st.Bearer(bobTok)).ExpectError(http.StatusNotFound, "not_found")
			if got := e.introspect(t, withExpiry.Key); got["active"] != true {
				t.Fatalf("another person revoked ann's key: %v", got)
			}
			// A garbage key is inactive and costs nothing; a malformed subject token is 400.
			wantInactive(t, "garbage key", e.introspect(t, "pcak_"+strings.Repeat("A", 38)))
			e.exchange(t, "pcak_nope", "").ExpectError(http.StatusBadRequest, "invalid_request")
		})
	}
}

// TestAPIKeyOnlyHashStored: after a key is created, used and revoked, no
// row of any table, and no log line, holds the key.
func TestAPIKeyOnlyHashStored(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "ci", "scopes": []string{"projects:read"}})
			e.introspect(t, k.Key)
			e.exchange(t, k.Key, "").Token()
			e.c.PostForm("/oauth2/revoke", url.Values{"token": {k.Key}}).ExpectStatus(http.StatusOK)
			e.introspect(t, k.Key)
			secret := []byte(k.Key[8 : len(k.Key)-4]) // what the hint does not show
			db := e.in.App.Core.Store.DB()
			var tables []string
			q := "SELECT name FROM sqlite_master WHERE type = 'table'"
			if e.in.App.Core.Store.Dialect() == "postgres" {
				q = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
			}
			if err := db.Raw(q).Scan(&tables).Error; err != nil || len(tables) < 10 {
				t.Fatalf("tables %v, %v", tables, err)
			}
			rowsSeen := 0
			for _, table := range tables {
				rows, err := db.Raw(`SELECT * FROM "` + table + `"`).Rows()
				if err != nil {
					t.Fatalf("read %s: %v", table, err)
				}
				cols, _ := rows.Columns()
				for rows.Next() {
					vals := make([]sql.RawBytes, len(cols))
					ptrs := make([]any, len(cols))
					for i := range vals {
						ptrs[i] = &vals[i]
					}
					if err := rows.Scan(ptrs...); err != nil {
						t.Fatalf("scan %s: %v", table, err)
					}
					rowsSeen++
					for i, v := range vals {
						if bytes.Contains(v, secret) {
							t.Errorf("%s.%s holds the key", table, cols[i])
						}
					}
				}
				rows.Close()
			}
			var stored []byte
			if err := db.Raw("SELECT hash FROM api_keys WHERE id = ?", k.ID).Row().Scan(&stored); err != nil ||
				!bytes.Equal(stored, apikey.Hash(k.Key)) {
				t.Fatalf("stored hash %x, %v; want SHA-256 of the key", stored, err)
			}
			if rowsSeen < 10 {
				t.Fatalf("only %d rows scanned", rowsSeen)
			}
			if strings.Contains(e.in.Logs.String(), string(secret)) {
				t.Fatal("the log holds the key")
			}
		})
	}
}

// TestAPIKeyFollowsItsOwner: a demoted owner's key narrows at once, a
// deactivated owner's key is refused (and works again on reactivation),
// and an expired key is refused, each at introspection and at the
// exchange, with api_key.rejected saying why.
func TestAPIKeyFollowsItsOwner(t *testing.T) {
	e := newKeyEnv(t, st.PostgresRedis)
	root := st.Bearer(e.rootTok)
	k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "ci", "scopes": []string{"projects:read", "projects:write"}})
	before := e.exchange(t, k.Key, "").Token()

	// Demoted from editor to viewer: only projects:read is left.
	e.c.Delete("/admin/users/"+e.ann.ID+"/roles/editor", root).ExpectStatus(http.StatusOK)
	if got := e.introspect(t, k.Key); got["active"] != true || got["scope"] != "projects:read" {
		t.Fatalf("after demotion: %v", got)
	}
	if tr := e.exchange(t, k.Key, "").Token(); tr.Scope != "projects:read" {
		t.Fatalf("exchange after demotion: scope %q", tr.Scope)
	}
	if tr := e.exchange(t, k.Key, "projects:write").Token(); tr.Scope != "" {
		t.Fatalf("asking for a permission the owner lost: scope %q", tr.Scope)
	}
	// The role removal ended the owner's sessions: the token exchanged before is dead too.
	wantInactive(t, "token exchanged before the demotion", e.introspect(t, before.AccessToken))

	// Deactivated: refused; reactivated: back.
	e.c.PatchJSON("/admin/users/"+e.ann.ID, map[string]bool{"active": false}, root).ExpectStatus(http.StatusOK)
	wantInactive(t, "deactivated owner", e.introspect(t, k.Key))
	e.exchange(t, k.Key, "").ExpectError(http.StatusBadRequest, "invalid_request")
	if !e.audited(t, "api_key.rejected", e.ann.ID, map[string]string{"key_id": k.ID, "reason": "owner_deactivated"}) {
		t.Fatal("no api_key.rejected event for the deactivated owner")
	}
	e.c.PatchJSON("/admin/users/"+e.ann.ID, map[string]bool{"active": true}, root).ExpectStatus(http.StatusOK)
	if got := e.introspect(t, k.Key); got["active"] != true {
		t.Fatalf("after reactivation: %v", got)
	}

	// Expired: the key's expiry moved into the past in the database.
	if err := e.in.App.Core.Store.DB().Exec("UPDATE api_keys SET expires_at = ? WHERE id = ?", time.Now().Add(-time.Second).UTC(), k.ID).Error; err != nil {
		t.Fatal(err)
	}
	wantInactive(t, "expired key", e.introspect(t, k.Key))
	e.exchange(t, k.Key, "").ExpectError(http.StatusBadRequest, "invalid_request")
	if !e.audited(t, "api_key.rejected", e.ann.ID, map[string]string{"key_id": k.ID, "reason": "expired"}) {
		t.Fatal("no api_key.rejected event for the expired key")
	}
}

// TestUserinfoRolesOfKeyToken: /userinfo's roles are those the presented
// token itself carries, still held and covered: a token exchanged from an
// API key carries none (the contract), so /userinfo shows none, though its
// scope covers a role its owner holds; a login's token shows its own.
func TestUserinfoRolesOfKeyToken(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			e := newKeyEnv(t, b)
			k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "ci", "scopes": []string{"projects:read"}})
			keyTok := e.exchange(t, k.Key, "").ExpectStatus(http.StatusOK).Token().AccessToken
			for _, tc := range []struct{ name, tok string }{
				{"key token", keyTok},
				{"login token", e.annTok},
			} {
				claimed, _ := decodeClaims(t, tc.tok)["roles"].([]any)
				info := e.c.Get("/userinfo", st.Bearer(tc.tok)).ExpectStatus(http.StatusOK).Map()
				shown, _ := info["roles"].([]any)
				if fmt.Sprint(shown) != fmt.Sprint(claimed) {
					t.Errorf("%s: /userinfo roles %v, the token's own roles %v", tc.name, shown, claimed)
				}
			}
		})
	}
}

// TestAPIKeyRevokeByValue: whoever holds a key revokes it at
// /oauth2/revoke without client authentication (200 whatever it was); a
// revocation through one instance holds at once on another, for the key and
// for the tokens exchanged from it.
func TestAPIKeyRevokeByValue(t *testing.T) {
	e := newKeyEnv(t, st.PostgresRedis)
	other := st.Start(t, e.env).Client(t)
	k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "leaked", "scopes": []string{"projects:read"}})
	tr := e.exchange(t, k.Key, "").Token()
	for _, tok := range []string{"pcak_garbage", "pcak_" + strings.Repeat("0", 38)} {
		e.c.PostForm("/oauth2/revoke", url.Values{"token": {tok}}).ExpectStatus(http.StatusOK)
	}
	// No client, and even a wrong Authorization header: the key is revoked.
	e.c.PostForm("/oauth2/revoke", url.Values{"token": {k.Key}, "token_type_hint": {"access_token"}},
		st.WithHeader("Authorization", "Bearer nonsense")).ExpectStatus(http.StatusOK)
	introspectOther := func(tok string) map[string]any {
		return other.PostForm("/oauth2/introspect", url.Values{"token": {tok}}, st.Basic("api-rs", e.rs)).ExpectStatus(http.StatusOK).Map()
	}
	wantInactive(t, "revoked key on the other instance", introspectOther(k.Key))
	wantInactive(t, "its exchanged token on the other instance", introspectOther(tr.AccessToken))
	other.PostForm("/oauth2/token", exchangeKeyForm(k.Key, ""), st.Basic("xchg", e.xchg)).ExpectError(http.StatusBadRequest, "invalid_request")
	e.c.PostForm("/oauth2/revoke", url.Values{"token": {k.Key}}).ExpectStatus(http.StatusOK)
	if !e.audited(t, "api_key.revoked", e.ann.ID, map[string]string{"key_id": k.ID, "via": "revoke_endpoint"}) {
		t.Fatal("no api_key.revoked event")
	}
	// Other tokens still need client authentication.
	e.c.PostForm("/oauth2/revoke", url.Values{"token": {"pcrt_x"}}).ExpectError(http.StatusUnauthorized, "invalid_client")
}

// TestMachineUsers: admins create machine users under the privilege
// ceiling; a machine user has no password (refused at the password grant,
// temporary passwords, reset links and invites); its keys are managed only
// by someone who may grant every role it holds, never with a token
// exchanged from a key.
func TestMachineUsers(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			root, adm, ann := st.Bearer(e.rootTok), st.Bearer(e.admTok), st.Bearer(e.annTok)

			type user struct {
				ID    string   `json:"id"`
				Kind  string   `json:"kind"`
				Email string   `json:"email"`
				Name  string   `json:"name"`
				Roles []string `json:"roles"`
			}
			var ed, boss user
			e.c.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "ci editor", "roles": []string{"editor"}}, adm).
				ExpectStatus(http.StatusCreated).JSON(&ed)
			if ed.Kind != "machine" || ed.Email != "" || ed.Name != "ci editor" || !slices.Equal(ed.Roles, []string{"editor"}) {
				t.Fatalf("machine user %+v", ed)
			}
			// An admin may not make a machine admin (not below them); a super_admin may.
			e.c.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "boss", "roles": []string{"admin"}}, adm).ExpectError(http.StatusForbidden, "forbidden")
			e.c.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "boss", "roles": []string{"admin"}}, root).
				ExpectStatus(http.StatusCreated).JSON(&boss)
			for _, body := range []map[string]any{
				{"kind": "human", "name": "someone"},
				{"name": "someone"},
				{"kind": "machine", "name": "  "},
				{"kind": "machine", "name": "x", "roles": []string{"no_such_role"}},
				{"kind": "machine", "name": "x", "email": "x@example.com"},
			} {
				e.c.PostJSON("/admin/users", body, root).ExpectError(http.StatusBadRequest, "invalid_request")
			}
			e.c.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "x"}, ann).ExpectError(http.StatusForbidden, "insufficient_scope")
			if got := e.c.Get("/admin/users/"+e.ann.ID, root).ExpectStatus(http.StatusOK).Map(); got["kind"] != "human" {
				t.Fatalf("a person's kind %v", got["kind"])
			}

			e.c.PatchJSON("/admin/users/"+ed.ID, map[string]string{"name": " "}, adm).ExpectError(http.StatusBadRequest, "invalid_request")
			if got := e.c.PatchJSON("/admin/users/"+ed.ID, map[string]string{"name": "ci editor 2"}, adm).ExpectStatus(http.StatusOK).Map(); got["kind"] != "machine" || got["name"] != "ci editor 2" {
				t.Fatalf("renamed machine user %v", got)
			}

			// No password, no email flows.
			e.c.PostJSON("/admin/users/"+ed.ID+"/temp-password", map[string]string{"password": "a long temporary passphrase"}, root).ExpectError(http.StatusBadRequest, "invalid_request")
			e.c.PostJSON("/admin/users/"+ed.ID+"/password-reset", nil, root).ExpectError(http.StatusBadRequest, "invalid_request")
			e.c.PostJSON("/admin/invites", map[string]string{"email": "bot@example.com", "role": "editor", "kind": "machine"}, root).ExpectError(http.StatusBadRequest, "invalid_request")
			for _, login := range []string{ed.ID, "ci editor", ""} {
				e.c.PostForm("/oauth2/token", st.PasswordForm(login, "anything at all", ""), st.Basic("web", e.web)).ExpectStatus(http.StatusBadRequest)
			}

			// Keys of a machine: by those who may grant its every role.
			edPath, bossPath := "/admin/users/"+ed.ID+"/api-keys", "/admin/users/"+boss.ID+"/api-keys"
			body := map[string]any{"name": "deploy", "scopes": []string{"projects:write"}}
			edKey := e.createKey(t, edPath, e.admTok, body)
			e.c.PostJSON(bossPath, body, adm).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Get(bossPath, adm).ExpectError(http.StatusForbidden, "forbidden")
			bossKey := e.createKey(t, bossPath, e.rootTok, map[string]any{"name": "admin bot", "scopes": []string{"users:read", "users:write"}})
			e.c.Delete(bossPath+"/"+bossKey.ID, adm).ExpectError(http.StatusForbidden, "forbidden")
			e.c.PostJSON(edPath, map[string]any{"name": "x", "scopes": []string{"users:read"}}, adm).ExpectError(http.StatusBadRequest, "invalid_scope")
			e.c.PostJSON("/admin/users/"+e.ann.ID+"/api-keys", body, root).ExpectError(http.StatusBadRequest, "invalid_request")
			e.c.Get("/admin/users/usr_nobody/api-keys", root).ExpectError(http.StatusNotFound, "not_found")
			e.c.Get(edPath, ann).ExpectError(http.StatusForbidden, "insufficient_scope")
			if !e.audited(t, "api_key.created", ed.ID, map[string]string{"key_id": edKey.ID, "via": "admin"}) {
				t.Fatal("no api_key.created event")
			}
			var list struct {
				Items []map[string]any `json:"items"`
			}
			e.c.Get(edPath, adm).ExpectStatus(http.StatusOK).JSON(&list)
			if len(list.Items) != 1 || list.Items[0]["id"] != edKey.ID || list.Items[0]["created_by"] != e.adm.ID || list.Items[0]["key"] != nil {
				t.Fatalf("machine key list %+v", list.Items)
			}

			// The machine's key works: an exchanged token of the machine, no roles.
			tr := e.exchange(t, edKey.Key, "").Token()
			if cl := decodeClaims(t, tr.AccessToken); cl["sub"] != ed.ID || fmt.Sprint(cl["roles"]) != "[]" || tr.Scope != "projects:write" {
				t.Fatalf("machine token %v", cl)
			}
			// Even a machine admin's key, exchanged through the built-in client
			// (whose tokens reach /admin), never manages keys.
			pf := exchangeKeyForm(bossKey.Key, "")
			pf.Set("client_id", "portcullis")
			bossTok := st.Bearer(e.c.PostForm("/oauth2/token", pf).Token().AccessToken)
			e.c.Get("/admin/users/"+ed.ID, bossTok).ExpectStatus(http.StatusOK)
			e.c.PostJSON(edPath, body, bossTok).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Get(edPath, bossTok).ExpectError(http.StatusForbidden, "forbidden")
			e.c.Delete(edPath+"/"+edKey.ID, bossTok).ExpectError(http.StatusForbidden, "forbidden")

			// Revocation by an admin who may.
			e.c.Delete(edPath+"/apk_unknown", adm).ExpectError(http.StatusNotFound, "not_found")
			e.c.Delete(bossPath+"/"+edKey.ID, root).ExpectError(http.StatusNotFound, "not_found")
			e.c.Delete(edPath+"/"+edKey.ID, adm).ExpectStatus(http.StatusNoContent)
			wantInactive(t, "revoked machine key", e.introspect(t, edKey.Key))
			wantInactive(t, "the machine's exchanged token", e.introspect(t, tr.AccessToken))
		})
	}
}

// TestAPIKeyTimingUnknownVsRevoked: an unknown and a revoked key cost an
// introspection the same work (the checksum, then one miss in the index of
// live keys; which of the two it was is looked up after the answer), so
// they take the same time within 10%. Measured in process on the token
// service's introspection (client authentication and the key check, no HTTP
// noise), with the samples interleaved in alternating order and medians
// compared; another suite's burst of work on the shared cores can skew a
// round, so it fails only when three rounds in a row disagree.
func TestAPIKeyTimingUnknownVsRevoked(t *testing.T) {
	e := newKeyEnv(t, st.PostgresRedis)
	k := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "revoked", "scopes": []string{"projects:read"}})
	e.c.Delete("/auth/api-keys/"+k.ID, st.Bearer(e.annTok)).ExpectStatus(http.StatusNoContent)
	unknown, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	svc, ctx := e.in.App.Tokens, context.Background()
	cred := token.ClientCredentials{ID: "api-rs", Secret: e.rs, Basic: true}
	measure := func(raw string) time.Duration {
		start := time.Now()
		out, err := svc.Introspect(ctx, cred, raw)
		d := time.Since(start)
		if err != nil || len(out) != 1 || out["active"] != false {
			t.Fatalf("introspection = %v, %v", out, err)
		}
		return d
	}
	for i := 0; i < 20; i++ { // warm the connection pool and the statement cache alike
		measure(k.Key)
		measure(unknown.String())
	}
	var mr, mu time.Duration
	for round := 0; round < 3; round++ {
		var revoked, unknowns []time.Duration
		for i := 0; i < 201; i++ { // interleaved, in alternating order, so drift hits both alike
			if i%2 == 0 {
				revoked = append(revoked, measure(k.Key))
				unknowns = append(unknowns, measure(unknown.String()))
			} else {
				unknowns = append(unknowns, measure(unknown.String()))
				revoked = append(revoked, measure(k.Key))
			}
		}
		mr, mu = median(revoked), median(unknowns)
		ratio := float64(mu) / float64(mr)
		t.Logf("round %d: median introspection of a revoked key %s, of an unknown key %s (ratio %.3f)", round, mr, mu, ratio)
		if ratio >= 0.9 && ratio <= 1.1 {
			return
		}
	}
	t.Fatalf("unknown and revoked keys differ by more than 10%% in three rounds: revoked %s vs unknown %s", mr, mu)
}

// TestAPIKeyExpiryNotices: a week before a key expires, the people who use
// it get one email, over real SMTP, on PostgreSQL+Redis and on SQLite: a
// person's own key is announced to them, a machine user's to the admin who
// created it. Two instances running their rounds at once send each notice
// once; no notice holds the key itself; a key far from its expiry is not
// announced.
func TestAPIKeyExpiryNotices(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			smtp := mailtest.NewServer(t)
			e := newKeyEnv(t, b, map[string]string{"PORTCULLIS_SMTP_URL": smtp.URL()})
			in := func(d time.Duration) string { return time.Now().Add(d).UTC().Format(time.RFC3339) }
			deploy := e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "deploy", "scopes": []string{"projects:read"},
				"expires_at": in(72 * time.Hour)})
			e.createKey(t, "/auth/api-keys", e.annTok, map[string]any{"name": "long-lived", "scopes": []string{"projects:read"}})
			var bot struct {
				ID string `json:"id"`
			}
			e.c.PostJSON("/admin/users", map[string]any{"kind": "machine", "name": "ci-bot", "roles": []string{"viewer"}},
				st.Bearer(e.admTok)).ExpectStatus(http.StatusCreated).JSON(&bot)
			botKey := e.createKey(t, "/admin/users/"+bot.ID+"/api-keys", e.admTok, map[string]any{"name": "ci",
				"scopes": []string{"projects:read"}, "expires_at": in(48 * time.Hour)})

			second := st.Start(t, e.env)
			instances := []*st.Instance{e.in, second}
			st.AtOnce(len(instances), func(i int) {
				if _, err := instances[i].App.KeyNotices.RunOnce(context.Background()); err != nil {
					t.Errorf("instance %d: %v", i, err)
				}
			})
			own := smtp.WaitFor(t, "ann@example.com", 10*time.Second)
			if !strings.Contains(own.Text, `"deploy" (`+deploy.Hint+`)`) || strings.Contains(string(own.Raw), deploy.Key) ||
				!strings.Contains(own.Subject, "expires soon") {
				t.Fatalf("the owner's notice:\n%s", own.Text)
			}
			forBot := smtp.WaitFor(t, "adm@example.com", 10*time.Second)
			if !strings.Contains(forBot.Text, "the machine user ci-bot") || strings.Contains(string(forBot.Raw), botKey.Key) {
				t.Fatalf("the creator's notice:\n%s", forBot.Text)
			}
			// Once each: another round anywhere sends nothing more.
			if n, err := second.App.KeyNotices.RunOnce(context.Background()); err != nil || n != 0 {
				t.Fatalf("a later round sent %d, %v", n, err)
			}
			if msgs := smtp.Messages(); len(msgs) != 2 {
				t.Fatalf("%d emails, want 2 (one per key about to expire)", len(msgs))
			}
			page, err := e.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "api_key.expiry_notified", Limit: 10})
			if err != nil || len(page.Items) != 2 {
				t.Fatalf("api_key.expiry_notified events: %d, %v", len(page.Items), err)
			}
		})
	}
}

// exchangeThroughBuiltIn trades a key for an access token through the
// public built-in client (no secret), as anyone holding the key may.
func (e *keyEnv) exchangeThroughBuiltIn(t *testing.T, key string) string {
	t.Helper()
	form := exchangeKeyForm(key, "")
	form.Set("client_id", "portcullis")
	return e.c.PostForm("/oauth2/token", form).Token().AccessToken
}

// TestOwnKeyWithinItsToken: a person's own key holds only permissions the
// token creating it was granted. A super_admin's token narrowed to
// users:read, by the scope it asked for or by its client's scopes, is
// refused a key holding more with 400 invalid_scope (what a permission the
// owner lacks answers), and nothing is created; within the token's scope
// the key is made. A full token still makes a key with keys:rotate, which
// the built-in client exchanges into a token that rotates the signing keys.
// Fails before the change: the narrowed tokens made keys with keys:rotate,
// roles:assign and users:write.
func TestOwnKeyWithinItsToken(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			// A client of Portcullis's own audience limited to users:read
			// (the fixture bypasses the ceiling, as the operator may).
			narrow := e.fx.Client(t, clients.Spec{ID: "narrow", Name: "Narrow", Scopes: []string{"users:read"},
				Audiences: []string{e.fx.Issuer()}})
			asked := e.c.PostForm("/oauth2/token", st.PasswordForm("root@example.com", keyRootPass, "users:read"),
				st.Basic("web", e.web)).Token().AccessToken
			byClient := e.c.PostForm("/oauth2/token", st.PasswordForm("root@example.com", keyRootPass, ""),
				st.Basic("narrow", narrow)).Token().AccessToken
			for what, tok := range map[string]string{"asked": asked, "client": byClient} {
				if s := decodeClaims(t, tok)["scope"]; s != "users:read" {
					t.Fatalf("the %s-narrowed token has scope %v", what, s)
				}
			}
			admin := []string{"keys:rotate", "roles:assign", "users:write"}
			for _, tc := range []struct {
				name   string
				tok    string
				scopes []string
				code   string // "" for 201
			}{
				{"fail/asked_users_read_makes_admin_key", asked, admin, "invalid_scope"},
				{"fail/asked_users_read_makes_one_more", asked, []string{"users:read", "users:write"}, "invalid_scope"},
				{"fail/client_users_read_makes_admin_key", byClient, admin, "invalid_scope"},
				{"fail/client_users_read_makes_keys_rotate", byClient, []string{"keys:rotate"}, "invalid_scope"},
				{"fail/the_owner_lacks_it", e.annTok, []string{"users:read"}, "invalid_scope"},
				{"ok/asked_within", asked, []string{"users:read"}, ""},
				{"ok/client_within", byClient, []string{"users:read"}, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					resp := e.in.Client(t).PostJSON("/auth/api-keys", map[string]any{"name": tc.name, "scopes": tc.scopes}, st.Bearer(tc.tok))
					if tc.code != "" {
						resp.ExpectError(http.StatusBadRequest, tc.code)
						return
					}
					var k createdKey
					resp.ExpectStatus(http.StatusCreated).JSON(&k)
					if !slices.Equal(k.Scopes, tc.scopes) {
						t.Fatalf("scopes %v", k.Scopes)
					}
				})
			}
			var list struct{ Items []createdKey }
			e.c.Get("/auth/api-keys", st.Bearer(e.rootTok)).ExpectStatus(http.StatusOK).JSON(&list)
			if len(list.Items) != 2 {
				t.Fatalf("root holds %d keys, want the 2 made within their tokens: %+v", len(list.Items), list.Items)
			}

			// The ordinary flow: a full token of the issuer audience.
			full := e.createKey(t, "/auth/api-keys", e.rootTok, map[string]any{"name": "full", "scopes": admin})
			exchanged := e.exchangeThroughBuiltIn(t, full.Key)
			e.c.PostJSON("/admin/keys/rotate", map[string]any{"force": true}, st.Bearer(exchanged)).ExpectStatus(http.StatusOK)
		})
	}
}

// TestOwnKeyFromAnotherAudience: a token minted for a downstream API (aud
// api), which /admin refuses whoever it belongs to, makes no key holding a
// permission of the admin API, whatever the token's scope: the key,
// exchanged through the built-in client, would be an issuer-audience token
// (the review's path around the audience rule). /auth still accepts the
// token, as the contract says; the request is refused as any scope the
// token may not pass on is (400 invalid_scope), and nothing is made.
func TestOwnKeyFromAnotherAudience(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			e := newKeyEnv(t, b)
			shop := e.fx.Client(t, clients.Spec{ID: "shop", Name: "Shop"})
			down := e.c.PostForm("/oauth2/token", st.PasswordForm("root@example.com", keyRootPass, ""),
				st.Basic("shop", shop)).Token().AccessToken
			if aud := claimStrings(t, decodeClaims(t, down), "aud"); slices.Contains(aud, e.fx.Issuer()) {
				t.Fatalf("the downstream token's aud %v holds the issuer", aud)
			}
			e.c.Get("/admin/users", st.Bearer(down)).ExpectError(http.StatusUnauthorized, "invalid_token")
			for _, scopes := range [][]string{{"keys:rotate"}, {"users:read"}, {"keys:rotate", "roles:assign", "users:write"}} {
				e.c.PostJSON("/auth/api-keys", map[string]any{"name": "k", "scopes": scopes}, st.Bearer(down)).
					ExpectError(http.StatusBadRequest, "invalid_scope")
			}
			var list struct{ Items []createdKey }
			e.c.Get("/auth/api-keys", st.Bearer(down)).ExpectStatus(http.StatusOK).JSON(&list)
			if len(list.Items) != 0 {
				t.Fatalf("keys made with the downstream token: %+v", list.Items)
			}
		})
	}
}
