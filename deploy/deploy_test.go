package deploy

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/config"
)

// placeholder marks every value in the example files that must be replaced.
const placeholder = "CHANGE_ME"

// settingNames is every PORTCULLIS_ setting the server knows.
func settingNames() map[string]config.Setting {
	out := map[string]config.Setting{}
	for _, s := range config.Settings() {
		out[s.Env] = s
	}
	return out
}

// unknownSettings returns the names in env that are not Portcullis settings.
func unknownSettings(env []string) []string {
	known := settingNames()
	var bad []string
	for _, name := range env {
		if _, ok := known[name]; !ok {
			bad = append(bad, name)
		}
	}
	sort.Strings(bad)
	return bad
}

// defaultDuration is the documented default of a duration setting.
func defaultDuration(t *testing.T, env string) time.Duration {
	t.Helper()
	s, ok := settingNames()[env]
	if !ok {
		t.Fatalf("%s is not a setting", env)
	}
	d, err := time.ParseDuration(s.Default)
	if err != nil {
		t.Fatalf("default of %s = %q: %v", env, s.Default, err)
	}
	return d
}

// realize replaces the placeholders of an example environment with values a
// real operator would put there: a freshly generated key-encryption key, and
// "x" inside URLs and passwords.
func realize(t *testing.T, env map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range env {
		switch {
		case k == "PORTCULLIS_KEY_ENCRYPTION_KEY" && strings.Contains(v, placeholder):
			kek, err := keys.GenerateKEK()
			if err != nil {
				t.Fatalf("generate KEK: %v", err)
			}
			out[k] = kek
		default:
			out[k] = strings.ReplaceAll(v, placeholder, "x")
		}
	}
	return out
}

// loadConfig runs the server's own settings parser on env, as `portcullis
// serve` would with that environment and no flags.
func loadConfig(env map[string]string) (config.Config, error) {
	return config.Load(nil, func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
}

// readEnvFile parses a KEY=VALUE file (comments and blank lines ignored),
// refusing malformed and repeated keys.
func readEnvFile(path string) (map[string]string, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	env := map[string]string{}
	var order []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\"'") {
			return nil, nil, fmt.Errorf("%s:%d: expects KEY=VALUE, got %q", path, n, line)
		}
		if _, dup := env[k]; dup {
			return nil, nil, fmt.Errorf("%s:%d: %s set twice", path, n, k)
		}
		env[k] = v
		order = append(order, k)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return env, order, nil
}

// TestKEKPlaceholderIsRefused: a server started with an example file as it
// is must refuse to start, not run with a guessable key.
func TestKEKPlaceholderIsRefused(t *testing.T) {
	for _, v := range []string{placeholder, "CHANGE_ME-openssl-rand-base64-32"} {
		if _, err := keys.ParseKEKs(v); err == nil {
			t.Errorf("the placeholder key-encryption key %q is accepted by keys.ParseKEKs", v)
		}
	}
}

// TestEnvFiles: every example environment file sets only real settings (or
// the compose file's own variables) and, once its placeholders are replaced,
// passes the server's configuration parser.
func TestEnvFiles(t *testing.T) {
	cases := []struct {
		name  string
		path  string
		extra map[string]bool // variables that are not settings, allowed in this file
	}{
		{"ok/compose", "portcullis.env.example", map[string]bool{"POSTGRES_PASSWORD": true, "REDIS_PASSWORD": true}},
		{"ok/systemd", "systemd/portcullis.env.example", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, order, err := readEnvFile(c.path)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			settings := map[string]string{}
			for _, k := range order {
				if c.extra[k] {
					continue
				}
				names = append(names, k)
				settings[k] = env[k]
			}
			if bad := unknownSettings(names); len(bad) > 0 {
				t.Fatalf("%s sets variables that are not Portcullis settings: %v", c.path, bad)
			}
			for k, v := range env {
				if settingNames()[k].Secret || c.extra[k] {
					if v != "" && !strings.Contains(v, placeholder) {
						t.Errorf("%s: secret %s holds a value that is not a %s placeholder", c.path, k, placeholder)
					}
				}
			}
			if _, ok := env["PORTCULLIS_KEY_ENCRYPTION_KEY"]; !ok {
				t.Errorf("%s does not show PORTCULLIS_KEY_ENCRYPTION_KEY, which PostgreSQL requires", c.path)
			}
			if c.path == "systemd/portcullis.env.example" {
				if _, err := loadConfig(realize(t, settings)); err != nil {
					t.Fatalf("%s, placeholders replaced, is refused by the server: %v", c.path, err)
				}
			}
		})
	}
}

func TestReadEnvFileRefusesBadLines(t *testing.T) {
	cases := []struct {
		name, body string
		ok         bool
	}{
		{"ok/comments", "# c\n\nA=1\nB=two words\n", true},
		{"fail/no-equals", "A\n", false},
		{"fail/repeated", "A=1\nA=2\n", false},
		{"fail/quoted-key", "\"A\"=1\n", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := t.TempDir() + "/f.env"
			if err := os.WriteFile(p, []byte(c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := readEnvFile(p)
			if (err == nil) != c.ok {
				t.Fatalf("readEnvFile: err = %v, want ok = %v", err, c.ok)
			}
		})
	}
}
