package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestUnknownEnvironmentReported: a PORTCULLIS_ variable that no setting
// has is reported, naming the closest setting, and never with its value
// (it may be a misspelt secret); settings and other variables are not.
// Found by a review: PORTCULLIS_METRIC_ADDR was ignored without a word,
// leaving /metrics on the public listener.
func TestUnknownEnvironmentReported(t *testing.T) {
	cases := []struct {
		name    string
		environ []string
		want    []string // each warning names its variable and the closest setting
	}{
		{"warn/misspelt metrics address", []string{"PORTCULLIS_METRIC_ADDR=127.0.0.1:9090"},
			[]string{"PORTCULLIS_METRIC_ADDR PORTCULLIS_METRICS_ADDR"}},
		{"warn/misspelt issuer", []string{"PORTCULLIS_ISUER=https://auth.example.com"},
			[]string{"PORTCULLIS_ISUER PORTCULLIS_ISSUER"}},
		{"warn/misspelt secret, value hidden", []string{"PORTCULLIS_DATABSE_URL=postgres://u:hunter2@db/x"},
			[]string{"PORTCULLIS_DATABSE_URL PORTCULLIS_DATABASE_URL"}},
		{"quiet/lower case (another variable)", []string{"portcullis_addr=:8080"}, nil},
		{"warn/two, in order", []string{"PORTCULLIS_TLS_CRT=/c", "HOME=/root", "PORTCULLIS_LOGLEVEL=debug"},
			[]string{"PORTCULLIS_TLS_CRT PORTCULLIS_TLS_CERT", "PORTCULLIS_LOGLEVEL PORTCULLIS_LOG_LEVEL"}},
		{"quiet/settings", []string{"PORTCULLIS_METRICS_ADDR=127.0.0.1:9090", "PORTCULLIS_ISSUER=https://a.example", "PORTCULLIS_REDIS_URL="}, nil},
		{"quiet/other variables", []string{"PATH=/bin", "GOOGLE_CLIENT_SECRET=x", "PORTCULLISX=1"}, nil},
		{"quiet/empty", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := UnknownEnvironment(tc.environ)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d warnings %q, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				for _, word := range strings.Fields(w) {
					if !strings.Contains(got[i], word) {
						t.Errorf("warning %q does not name %s", got[i], word)
					}
				}
				if strings.Contains(got[i], "hunter2") || strings.Contains(got[i], "=") {
					t.Errorf("warning %q shows the value", got[i])
				}
			}
		})
	}
}

// TestHarnessSetsOnlySettings: the PORTCULLIS_ variables that the make
// targets, CI, the test environment, the test harness, the load test and
// the deployment files set are settings, so they are never reported.
func TestHarnessSetsOnlySettings(t *testing.T) {
	name := regexp.MustCompile(`PORTCULLIS_[A-Z0-9_]*[A-Z0-9]`)
	var files []string
	for _, glob := range []string{"../../Makefile", "../../.ci/*", "../../cmd/testenv/*.go", "../../store/testservers/*.go",
		"../../server/servertest/*.go", "../../cmd/portcullis-loadtest/*.go", "../../deploy/*", "../../deploy/*/*"} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	var environ []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, ".md") {
			continue // tests hold misspelt names on purpose; prose names Kubernetes' own
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a directory
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue // a comment of a YAML, env or Docker file
			}
			for _, n := range name.FindAllString(line, -1) {
				environ = append(environ, n+"=x")
			}
		}
	}
	if len(environ) < 20 {
		t.Fatalf("found only %d names: the globs are wrong", len(environ))
	}
	if got := UnknownEnvironment(environ); len(got) > 0 {
		t.Errorf("the harness or deployment files set variables that are no setting:\n%s", strings.Join(got, "\n"))
	}
}
