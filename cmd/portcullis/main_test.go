package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/config"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

func TestMain(m *testing.M) { testservers.Main(m) }

func TestBadSettingsNameTheSetting(t *testing.T) {
	cases := []struct {
		name    string
		env     st.Env
		args    []string
		setting string
	}{
		{"fail/alg", st.Env{"PORTCULLIS_SIGNING_ALG": "HS256"}, []string{"serve"}, "PORTCULLIS_SIGNING_ALG"},
		{"fail/ttl", st.Env{"PORTCULLIS_ACCESS_TOKEN_TTL": "forever"}, []string{"serve"}, "PORTCULLIS_ACCESS_TOKEN_TTL"},
		{"fail/postgres without kek", st.Env{"PORTCULLIS_DATABASE_URL": "postgres://u:hunter2@127.0.0.1:1/x"}, []string{"serve"}, "PORTCULLIS_KEY_ENCRYPTION_KEY"},
		{"fail/flag", nil, []string{"serve", "--addr", "not-an-address"}, "PORTCULLIS_ADDR"},
		{"fail/migrate too", st.Env{"PORTCULLIS_RATE_LIMITS": "sometimes"}, []string{"migrate"}, "PORTCULLIS_RATE_LIMITS"},
		{"fail/keys too", st.Env{"PORTCULLIS_JWKS_MAX_AGE": "x"}, []string{"keys", "list"}, "PORTCULLIS_JWKS_MAX_AGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := st.RunCLIIn(t, t.TempDir(), tc.env, "", tc.args...)
			if code == 0 || !strings.Contains(stderr, tc.setting) {
				t.Fatalf("exit %d, stderr %q: want a failure naming %s", code, stderr, tc.setting)
			}
			if strings.Contains(stderr, "hunter2") {
				t.Fatalf("secret in error output: %s", stderr)
			}
		})
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	for _, cmd := range [][]string{{"serve", "--help"}, {"migrate", "--help"}, {"bootstrap", "--help"}, {"keys", "rotate", "--help"}} {
		_, stderr, code := st.RunCLIIn(t, t.TempDir(), nil, "", cmd...)
		if code != 0 {
			t.Fatalf("%v: exit %d", cmd, code)
		}
		for _, s := range config.Settings() {
			if !strings.Contains(stderr, "--"+s.Flag()) || !strings.Contains(stderr, s.Env) {
				t.Fatalf("%v --help does not list %s", cmd, s.Env)
			}
			if s.Default != "" && !strings.Contains(stderr, "default "+s.Default) {
				t.Fatalf("%v --help does not show the default of %s", cmd, s.Env)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	out, _, code := st.RunCLIIn(t, t.TempDir(), nil, "", "version")
	if code != 0 || !strings.HasPrefix(out, "portcullis ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: %d %q", code, out)
	}
}

// TestEmbeddedDefault is `make run` on a fresh clone: no settings at all
// (only a free port), SQLite under ./data, ready within seconds; the data
// survives a SIGKILL and restart.
func TestEmbeddedDefault(t *testing.T) {
	dir := t.TempDir()
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := st.Env{"PORTCULLIS_ADDR": fmt.Sprintf("127.0.0.1:%d", port)}
	p := st.StartProcessIn(t, dir, env)
	if _, err := os.Stat(filepath.Join(dir, "data", "portcullis.db")); err != nil {
		t.Fatalf("no SQLite database under ./data: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "data", "portcullis.kek")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key-encryption key missing or readable by others: %v", err)
	}
	// The next steps follow the "listening" line, which readiness may beat.
	if !p.Logs.WaitFor("Next steps", 10*time.Second) || !strings.Contains(p.Logs.String(), "GENERATED A KEY-ENCRYPTION KEY") {
		t.Fatalf("missing warning or next steps:\n%s", p.Logs.String())
	}
	out, stderr, code := st.RunCLIIn(t, dir, env, "a long enough passphrase\n", "bootstrap", "--email", "root@example.com", "--password-stdin")
	if code != 0 {
		t.Fatalf("bootstrap: %d %s %s", code, out, stderr)
	}
	out, stderr, code = st.RunCLIIn(t, dir, env, "a long enough passphrase\n", "bootstrap", "--email", "root@example.com", "--password-stdin")
	if code != 0 || !strings.Contains(out, "already exists") {
		t.Fatalf("second bootstrap must be a no-op: %d %s %s", code, out, stderr)
	}
	out, stderr, code = st.RunCLIIn(t, dir, env, "", "clients", "create", "--id", "web", "--name", "Web app")
	if code != 0 {
		t.Fatalf("clients create: %d %s", code, stderr)
	}
	var created struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ClientID != "web" || len(created.ClientSecret) < 43 {
		t.Fatalf("clients create output %q: %v", out, err)
	}
	if _, stderr, code := st.RunCLIIn(t, dir, env, "", "clients", "create", "--id", "Bad ID!"); code == 0 || !strings.Contains(strings.ToLower(stderr), "client id") {
		t.Fatalf("bad client id accepted: %s", stderr)
	}
	login := func() {
		t.Helper()
		p.Client(t).PostForm("/oauth2/token", url.Values{"grant_type": {"password"}, "username": {"root@example.com"},
			"password": {"a long enough passphrase"}}, st.Basic("web", created.ClientSecret)).Token()
	}
	login()
	p.Kill()
	p.Start()
	login()
	if out, _, code := st.RunCLIIn(t, dir, env, "", "migrate", "status"); code != 0 || strings.Contains(out, "pending") {
		t.Fatalf("migrate status after start: %s", out)
	}
	if out, _, code := st.RunCLIIn(t, dir, env, "", "keys", "list"); code != 0 || !strings.Contains(out, "active") || !strings.Contains(out, "next") {
		t.Fatalf("keys list: %s", out)
	}
}

func TestBootstrapRefusesWeakPassword(t *testing.T) {
	dir := t.TempDir()
	_, stderr, code := st.RunCLIIn(t, dir, nil, "password\n", "bootstrap", "--email", "root@example.com", "--password-stdin")
	if code == 0 || !strings.Contains(stderr, "password refused") {
		t.Fatalf("weak bootstrap password: %d %s", code, stderr)
	}
}

// TestBootstrapNeverPromotesAnExistingAccount: someone registers the
// address the operator then bootstraps (public registration on, the
// server started first, as the quick start does). Bootstrap refuses with
// a non-zero exit and says why; the registrant's account gets no role,
// and a bootstrap with another address then creates the first super_admin.
func TestBootstrapNeverPromotesAnExistingAccount(t *testing.T) {
	dir := t.TempDir()
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	env := st.Env{"PORTCULLIS_ADDR": fmt.Sprintf("127.0.0.1:%d", port), "PORTCULLIS_PUBLIC_REGISTRATION": "true"}
	p := st.StartProcessIn(t, dir, env)
	p.Client(t).PostJSON("/auth/register", map[string]string{"email": "root@example.com", "password": "attacker chosen passphrase"}).
		ExpectStatus(201)
	out, stderr, code := st.RunCLIIn(t, dir, env, "the operator's own passphrase\n", "bootstrap", "--email", "root@example.com", "--password-stdin")
	if code == 0 || strings.Contains(out, "created") || !strings.Contains(stderr, "already exists") {
		t.Fatalf("bootstrap with a registered address: exit %d, stdout %q, stderr %q; want a refusal", code, out, stderr)
	}
	out, stderr, code = st.RunCLIIn(t, dir, env, "", "clients", "create", "--id", "web", "--name", "Web app")
	if code != 0 {
		t.Fatalf("clients create: %d %s", code, stderr)
	}
	var created struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatal(err)
	}
	tok := p.Client(t).PostForm("/oauth2/token", url.Values{"grant_type": {"password"}, "username": {"root@example.com"},
		"password": {"attacker chosen passphrase"}}, st.Basic("web", created.ClientSecret)).Token()
	var me struct {
		Roles []string `json:"roles"`
	}
	p.Client(t).Get("/userinfo", st.Bearer(tok.AccessToken)).JSON(&me)
	if slices.Contains(me.Roles, "super_admin") {
		t.Fatalf("the registrant's account holds %v after bootstrap", me.Roles)
	}
	out, stderr, code = st.RunCLIIn(t, dir, env, "the operator's own passphrase\n", "bootstrap", "--email", "ops@example.com", "--password-stdin")
	if code != 0 || !strings.Contains(out, "created super_admin ops@example.com") {
		t.Fatalf("bootstrap with a new address: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// A kid may begin with "-" (base64url); the flag parser must not take it for a flag.
func TestTakeKID(t *testing.T) {
	const dashKID = "-5V3oME0xIv3fl2e2UxuwFR1LsF5QY115tCYJlYMRCs"
	cases := []struct {
		name    string
		args    []string
		wantKID string
		rest    []string
	}{
		{"leading dash", []string{dashKID}, dashKID, []string{}},
		{"after flags", []string{"--database-url", "sqlite://x", dashKID}, dashKID, []string{"--database-url", "sqlite://x"}},
		{"not a kid", []string{"nope"}, "", []string{"nope"}},
		{"flag value of kid length is still taken only once", []string{dashKID, dashKID}, dashKID, []string{dashKID}},
		{"after --", []string{"--", dashKID}, "", []string{"--", dashKID}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kid, rest := takeKID(tc.args)
			if kid != tc.wantKID || strings.Join(rest, " ") != strings.Join(tc.rest, " ") {
				t.Fatalf("takeKID(%q) = %q, %q; want %q, %q", tc.args, kid, rest, tc.wantKID, tc.rest)
			}
		})
	}
}

// TestClientsCommandsRunAsOperator: `portcullis clients …` goes through the
// accounts service as the operator. An unknown scope is refused (exit 2);
// the built-in client cannot be deleted (exit 1, a clear message, the client
// stays); everything else an operator asks is allowed, --audience repeats,
// and the audit log records each action with actor_id operator:cli and
// via cli. Fails before this change: `clients delete portcullis` deleted the
// built-in client and the audit events had no actor.
func TestClientsCommandsRunAsOperator(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			env["PORTCULLIS_ISSUER"] = "http://auth.portcullis.test"
			in := st.Start(t, env)
			fx := st.NewFixtures(t, in.App.Core)
			fx.User(t, "root@example.com", "a long enough passphrase", "super_admin")

			if _, stderr, code := st.RunCLI(t, env, "", "clients", "create", "--id", "bad", "--scopes", "users:read nope:read"); code != 2 || !strings.Contains(stderr, `"nope:read"`) {
				t.Fatalf("unknown scope: exit %d, %s", code, stderr)
			}
			out, stderr, code := st.RunCLI(t, env, "", "clients", "create", "--id", "tools", "--name", "Admin tools",
				"--scopes", "keys:rotate users:read", "--audience", "api", "--audience", "http://auth.portcullis.test")
			if code != 0 {
				t.Fatalf("clients create: exit %d, %s", code, stderr)
			}
			var created struct {
				ClientSecret string `json:"client_secret"`
			}
			if err := json.Unmarshal([]byte(out), &created); err != nil || created.ClientSecret == "" {
				t.Fatalf("clients create output %q: %v", out, err)
			}
			c, err := in.App.Core.Store.GetClient(t.Context(), "tools")
			if err != nil || !slices.Equal(c.Audiences, []string{"api", "http://auth.portcullis.test"}) || !slices.Equal(c.Scopes, []string{"keys:rotate", "users:read"}) {
				t.Fatalf("created client %+v: %v", c, err)
			}
			// The issuer audience makes the tools' tokens admin tokens.
			hc := in.Client(t)
			tok := hc.PostForm("/oauth2/token", st.PasswordForm("root@example.com", "a long enough passphrase", ""), st.Basic("tools", created.ClientSecret)).Token()
			hc.Get("/admin/users", st.Bearer(tok.AccessToken)).ExpectStatus(200)

			_, stderr, code = st.RunCLI(t, env, "", "clients", "delete", "portcullis")
			if code != 1 || !strings.Contains(stderr, "built-in first-party client cannot be deleted") {
				t.Fatalf("clients delete portcullis: exit %d, %s", code, stderr)
			}
			if _, err := in.App.Core.Store.GetClient(t.Context(), "portcullis"); err != nil {
				t.Fatalf("the built-in client is gone: %v", err)
			}
			if _, stderr, code := st.RunCLI(t, env, "", "clients", "rotate-secret", "tools"); code != 0 {
				t.Fatalf("rotate-secret: exit %d, %s", code, stderr)
			}
			if _, stderr, code := st.RunCLI(t, env, "", "clients", "delete", "tools"); code != 0 {
				t.Fatalf("delete: exit %d, %s", code, stderr)
			}
			if _, stderr, code := st.RunCLI(t, env, "", "clients", "delete", "tools"); code != 1 || !strings.Contains(stderr, "No client has this id") {
				t.Fatalf("delete again: exit %d, %s", code, stderr)
			}
			page, err := in.App.Core.Store.ListAudit(t.Context(), store.AuditFilter{ActorID: accounts.OperatorActorID})
			if err != nil {
				t.Fatal(err)
			}
			var actions []string
			for _, e := range page.Items {
				if e.TargetID != "tools" || e.Details["via"] != "cli" {
					t.Fatalf("operator audit event %+v", e)
				}
				actions = append(actions, e.Action)
			}
			if want := []string{"client.deleted", "client.secret_rotated", "client.created"}; !slices.Equal(actions, want) {
				t.Fatalf("operator audit actions %v, want %v (newest first)", actions, want)
			}
		})
	}
}

// TestClientsCreateKeepsAudiencesApartFromClientIDs: `portcullis clients
// create` meets the rule of the admin API (clients.Clashes), the operator
// included: an audience that is a client id (its own included), or an id
// that is an audience a client lists or PORTCULLIS_DEFAULT_AUDIENCE, exits
// 2 saying why and stores nothing. Found by a review: before the change
// each of them was created.
func TestClientsCreateKeepsAudiencesApartFromClientIDs(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			in := st.Start(t, env)
			for _, tc := range []struct {
				name string
				args []string
				code int
			}{
				{"ok/victim", []string{"--id", "victim"}, 0},
				{"ok/an audience that is no client id", []string{"--id", "lister", "--audience", "orders-api"}, 0},
				{"fail/audience is a client id", []string{"--id", "evil", "--audience", "victim"}, 2},
				{"fail/audience is the built-in client id", []string{"--id", "evil2", "--audience", "api,portcullis"}, 2},
				{"fail/audience is its own id", []string{"--id", "selfie", "--audience", "selfie"}, 2},
				{"fail/id is an audience a client lists", []string{"--id", "orders-api"}, 2},
				{"fail/id is the default audience", []string{"--id", "api"}, 2},
			} {
				t.Run(tc.name, func(t *testing.T) {
					_, stderr, code := st.RunCLI(t, env, "", append([]string{"clients", "create"}, tc.args...)...)
					_, err := in.App.Core.Store.GetClient(t.Context(), tc.args[1])
					if tc.code == 0 {
						if code != 0 || err != nil {
							t.Fatalf("exit %d, %s; stored: %v", code, stderr, err)
						}
						return
					}
					if code != tc.code || !strings.Contains(stderr, "never") {
						t.Fatalf("exit %d, %s; want exit %d saying the rule", code, stderr, tc.code)
					}
					if !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("refused client %s stored: %v", tc.args[1], err)
					}
				})
			}
		})
	}
}

// TestKeysAndBootstrapRunAsOperator: `bootstrap`, `keys rotate` and `keys
// revoke` run as the operator, through the accounts service where there is
// one (keys): every event they record has actor_id operator:cli and via cli
// (bootstrap: via bootstrap), and revoking a key twice records, as the
// service does for the console, the state it was in and that the second
// revocation found it revoked already. Found by a review: before the change
// the commands called the key manager directly and recorded no actor, and
// the second revocation recorded a second event just like the first.
func TestKeysAndBootstrapRunAsOperator(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			in := st.Start(t, env)
			if out, stderr, code := st.RunCLI(t, env, "a long enough passphrase\n", "bootstrap", "--email", "root@example.com", "--password-stdin"); code != 0 {
				t.Fatalf("bootstrap: %d %s %s", code, out, stderr)
			}
			if out, stderr, code := st.RunCLI(t, env, "", "keys", "rotate", "--force"); code != 0 {
				t.Fatalf("keys rotate: %d %s %s", code, out, stderr)
			}
			list, err := in.App.Core.Keys.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var retired string
			for _, k := range list {
				if k.State == store.KeyRetired {
					retired = k.KID
				}
			}
			for range 2 {
				if out, stderr, code := st.RunCLI(t, env, "", "keys", "revoke", retired); code != 0 {
					t.Fatalf("keys revoke: %d %s %s", code, out, stderr)
				}
			}
			via := map[string]string{"user.created": "bootstrap", "key.rotated": "cli", "key.revoked": "cli"}
			var revocations []map[string]string
			for action, wantVia := range via {
				page, err := in.App.Core.Store.ListAudit(t.Context(), store.AuditFilter{Action: action})
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Items) == 0 {
					t.Fatalf("no %s event", action)
				}
				for _, e := range page.Items {
					if e.ActorID != accounts.OperatorActorID || e.Details["via"] != wantVia {
						t.Errorf("%s event with actor_id %q, via %q; want %s, %s", action, e.ActorID, e.Details["via"], accounts.OperatorActorID, wantVia)
					}
					if action == "key.revoked" {
						revocations = append(revocations, e.Details)
					}
				}
			}
			// Newest first: the second revocation found the key revoked already.
			if len(revocations) != 2 || revocations[0]["already_revoked"] != "true" || revocations[0]["previous_state"] != string(store.KeyRevoked) ||
				revocations[1]["already_revoked"] != "false" || revocations[1]["previous_state"] != string(store.KeyRetired) {
				t.Fatalf("key.revoked details %v", revocations)
			}
		})
	}
}

// TestClientsCreateCodeFlow: `clients create` registers clients of the
// authorization code flow with every flag of the contract (--redirect-uri
// and --post-logout-redirect-uri repeat and keep commas, --first-party is
// allowed to the operator, --native, --no-pkce on a confidential client,
// --require-par);
// `clients list` shows the fields; what registration refuses exits 2 with a
// message that says why. Fails before this change: the flags were unknown.
func TestClientsCreateCodeFlow(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := st.NewEnv(t, b)
			in := st.Start(t, env)
			_, stderr, code := st.RunCLI(t, env, "", "clients", "create", "--id", "spa", "--public", "--first-party",
				"--grants", "authorization_code,refresh_token",
				"--redirect-uri", "https://app.example.com/cb?a=1,2", "--redirect-uri", "http://127.0.0.1/cb",
				"--post-logout-redirect-uri", "https://app.example.com/bye",
				"--backchannel-logout-uri", "https://app.example.com/bcl",
				"--logo-uri", "https://cdn.example.com/logo.png", "--client-uri", "https://app.example.com/")
			if code != 0 {
				t.Fatalf("clients create spa: exit %d, %s", code, stderr)
			}
			out, stderr, code := st.RunCLI(t, env, "", "clients", "create", "--id", "desktop", "--native", "--no-pkce", "--require-par",
				"--grants", "authorization_code", "--redirect-uri", "com.example.desktop:/cb")
			if code != 0 || !strings.Contains(out, "client_secret") {
				t.Fatalf("clients create desktop: exit %d, %s %s", code, out, stderr)
			}
			spa, err := in.App.Core.Store.GetClient(t.Context(), "spa")
			if err != nil || !spa.FirstParty || !spa.RequirePKCE || spa.ApplicationType != store.ApplicationWeb ||
				!slices.Equal(spa.RedirectURIs, []string{"https://app.example.com/cb?a=1,2", "http://127.0.0.1/cb"}) ||
				!slices.Equal(spa.PostLogoutRedirectURIs, []string{"https://app.example.com/bye"}) ||
				spa.BackchannelLogoutURI != "https://app.example.com/bcl" || spa.LogoURI != "https://cdn.example.com/logo.png" ||
				spa.ClientURI != "https://app.example.com/" {
				t.Fatalf("spa stored as %+v, %v", spa, err)
			}
			desktop, err := in.App.Core.Store.GetClient(t.Context(), "desktop")
			if err != nil || desktop.RequirePKCE || desktop.ApplicationType != store.ApplicationNative || desktop.FirstParty ||
				!desktop.RequirePushedAuthorizationRequests || spa.RequirePushedAuthorizationRequests {
				t.Fatalf("desktop stored as %+v, %v", desktop, err)
			}

			out, stderr, code = st.RunCLI(t, env, "", "clients", "list")
			var views []clients.ClientView
			if code != 0 || json.Unmarshal([]byte(out), &views) != nil {
				t.Fatalf("clients list: exit %d, %s %s", code, out, stderr)
			}
			i := slices.IndexFunc(views, func(v clients.ClientView) bool { return v.ClientID == "desktop" })
			if i < 0 || views[i].ApplicationType != "native" || views[i].RequirePKCE || !views[i].RequirePushedAuthorizationRequests ||
				!slices.Equal(views[i].RedirectURIs, []string{"com.example.desktop:/cb"}) {
				t.Fatalf("clients list: %s", out)
			}

			for _, tc := range []struct {
				name string
				args []string
				want string
			}{
				{"fail/no_pkce_on_public", []string{"--public", "--no-pkce", "--grants", "authorization_code", "--redirect-uri", "https://a.example.com/cb"}, "always needs PKCE"},
				{"fail/require_par_without_code_grant", []string{"--require-par"}, "needs the authorization_code grant"},
				{"fail/redirect_uri_without_grant", []string{"--redirect-uri", "https://a.example.com/cb"}, "authorization_code grant"},
				{"fail/wildcard", []string{"--grants", "authorization_code", "--redirect-uri", "https://*.example.com/cb"}, "wildcard"},
				{"fail/http_not_loopback", []string{"--grants", "authorization_code", "--redirect-uri", "http://a.example.com/cb"}, "plain http"},
				{"fail/native_scheme_without_period", []string{"--native", "--grants", "authorization_code", "--redirect-uri", "myapp:/cb"}, "period"},
				{"fail/logo_http", []string{"--grants", "authorization_code", "--redirect-uri", "https://a.example.com/cb", "--logo-uri", "http://a.example.com/l.png"}, "absolute https URI"},
			} {
				args := append([]string{"clients", "create", "--id", "refused"}, tc.args...)
				if _, stderr, code := st.RunCLI(t, env, "", args...); code != 2 || !strings.Contains(stderr, tc.want) {
					t.Fatalf("%s: exit %d, %s", tc.name, code, stderr)
				}
			}
			if _, err := in.App.Core.Store.GetClient(t.Context(), "refused"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("a refused client was created: %v", err)
			}
		})
	}
}

// TestClientsCreateRefreshCookie: `clients create --refresh-cookie
// --allowed-origin O` (repeatable) registers a cookie client; without the
// 2 s reuse grace, without an origin, or with an origin that is not exact it
// exits 2 saying why. Fails before this change: the flags were unknown.
func TestClientsCreateRefreshCookie(t *testing.T) {
	t.Parallel()
	env := st.NewEnv(t, st.SQLite)
	env["PORTCULLIS_REFRESH_REUSE_GRACE"] = "2s"
	in := st.Start(t, env)
	_, stderr, code := st.RunCLI(t, env, "", "clients", "create", "--id", "spa", "--public", "--refresh-cookie",
		"--allowed-origin", "https://app.example.com", "--allowed-origin", "http://localhost:5173")
	if code != 0 {
		t.Fatalf("clients create spa: exit %d, %s", code, stderr)
	}
	spa, err := in.App.Core.Store.GetClient(t.Context(), "spa")
	if err != nil || !spa.RefreshByCookie() || !slices.Equal(spa.AllowedOrigins, []string{"https://app.example.com", "http://localhost:5173"}) {
		t.Fatalf("spa stored as %+v, %v", spa, err)
	}
	short := env.Clone()
	short["PORTCULLIS_REFRESH_REUSE_GRACE"] = "1s"
	for _, tc := range []struct {
		name string
		env  st.Env
		args []string
		want string
	}{
		{"grace", short, []string{"--refresh-cookie", "--allowed-origin", "https://app.example.com"}, "PORTCULLIS_REFRESH_REUSE_GRACE"},
		{"no origin", env, []string{"--refresh-cookie"}, "--allowed-origin"},
		{"path", env, []string{"--refresh-cookie", "--allowed-origin", "https://app.example.com/app"}, "exact origin"},
		{"origin without cookie", env, []string{"--allowed-origin", "https://app.example.com"}, "--refresh-cookie"},
	} {
		args := append([]string{"clients", "create", "--id", "refused", "--public"}, tc.args...)
		if _, stderr, code := st.RunCLI(t, tc.env, "", args...); code != 2 || !strings.Contains(stderr, tc.want) {
			t.Fatalf("%s: exit %d, %s", tc.name, code, stderr)
		}
	}
}

// TestKeysReencryptReSealsTOTP: `keys reencrypt` re-seals the TOTP secrets
// with the signing keys (app.Core.Reencrypt), so the old key-encryption key
// can go. Before, it re-sealed the signing keys alone and every TOTP user
// was locked out once the old key was removed.
func TestKeysReencryptReSealsTOTP(t *testing.T) {
	env := st.NewEnv(t, st.SQLite)
	in := st.Start(t, env)
	u := store.User{Email: "totp@example.com", Name: "T", Active: true, Roles: []string{"user"}}
	if err := in.App.Store.CreateUser(t.Context(), &u); err != nil {
		t.Fatal(err)
	}
	st.EnrolTOTP(t, in.App.MFA, u)
	in.Stop()

	newKEK, err := keys.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	both := env.Clone()
	both["PORTCULLIS_KEY_ENCRYPTION_KEY"] = newKEK + "," + env["PORTCULLIS_KEY_ENCRYPTION_KEY"]
	for _, want := range []string{"re-encrypted 2 private keys and 1 TOTP secrets", "re-encrypted 0 private keys and 0 TOTP secrets"} {
		out, stderr, code := st.RunCLI(t, both, "", "keys", "reencrypt")
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("keys reencrypt: exit %d, %q (%s); want %q", code, out, stderr, want)
		}
	}
}

// TestCommandsRefuseUnmigratedDatabase: with PORTCULLIS_AUTO_MIGRATE=false,
// every command but `migrate` refuses a database lacking migrations, naming
// `portcullis migrate`; `migrate status` lists them and `migrate` applies
// them, after which the commands run. (Before, they ran on it.)
func TestCommandsRefuseUnmigratedDatabase(t *testing.T) {
	dir := t.TempDir()
	env := st.Env{"PORTCULLIS_AUTO_MIGRATE": "false"}
	steps := []struct {
		name    string
		args    []string
		code    int
		outWant string // in stdout (ok) or stderr (fail)
	}{
		{"fail/keys list", []string{"keys", "list"}, 1, "portcullis migrate"},
		{"fail/clients list", []string{"clients", "list"}, 1, "0001 relational_schema"},
		{"ok/migrate status", []string{"migrate", "status"}, 0, "pending; run `portcullis migrate`"},
		{"ok/migrate", []string{"migrate"}, 0, "migrations up to date"},
		{"ok/keys list after migrate", []string{"keys", "list"}, 0, "active"},
	}
	for _, s := range steps {
		out, stderr, code := st.RunCLIIn(t, dir, env, "", s.args...)
		got := out
		if s.code != 0 {
			got = stderr
		}
		if code != s.code || !strings.Contains(got, s.outWant) {
			t.Fatalf("%s: exit %d (want %d), stdout %q, stderr %q: want %q", s.name, code, s.code, out, stderr, s.outWant)
		}
	}
}

// TestSettingsWarningsLoggedOnce: what the settings allow but an operator
// must hear about (config.Config.Warnings: an http issuer off loopback, a
// PORTCULLIS_ variable that is no setting, a secret given as a flag) is
// logged once, at Warn, by every command that loads the settings, never
// with a secret.
func TestSettingsWarningsLoggedOnce(t *testing.T) {
	cases := []struct {
		name string
		env  st.Env
		args []string
		want string // in exactly one line of stderr
	}{
		{"http issuer/migrate status", st.Env{"PORTCULLIS_ISSUER": "http://auth.example.com"}, []string{"migrate", "status"}, "RFC 8414"},
		{"http issuer/keys list", st.Env{"PORTCULLIS_ISSUER": "http://auth.example.com"}, []string{"keys", "list"}, "RFC 8414"},
		{"secret flag/migrate status", nil, []string{"migrate", "status", "--smtp-url", "smtp://u:hunter2@127.0.0.1:25"}, "--smtp-url: the command line"},
		{"misspelt variable/migrate status", st.Env{"PORTCULLIS_METRIC_ADDR": "127.0.0.1:9090"}, []string{"migrate", "status"}, "did you mean PORTCULLIS_METRICS_ADDR?"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := st.RunCLIIn(t, t.TempDir(), tc.env, "", tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if n := strings.Count(stderr, tc.want); n != 1 {
				t.Fatalf("%q logged %d times, want once:\n%s", tc.want, n, stderr)
			}
			if strings.Contains(stderr, "hunter2") {
				t.Fatalf("a secret in the log:\n%s", stderr)
			}
			for _, line := range strings.Split(stderr, "\n") {
				if strings.Contains(line, tc.want) && !strings.Contains(line, "WARN") {
					t.Fatalf("not logged at Warn: %s", line)
				}
			}
		})
	}
}
