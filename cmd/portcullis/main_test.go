package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/config"
	st "github.com/portcullis-auth/portcullis/server/servertest"
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
	logs := p.Logs.String()
	if !strings.Contains(logs, "GENERATED A KEY-ENCRYPTION KEY") || !strings.Contains(logs, "Next steps") {
		t.Fatalf("missing warning or next steps:\n%s", logs)
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
	if _, stderr, code := st.RunCLIIn(t, dir, env, "", "clients", "create", "--id", "Bad ID!"); code == 0 || !strings.Contains(stderr, "client id") {
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
