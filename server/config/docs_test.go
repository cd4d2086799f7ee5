package config_test

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/server/config"
)

var update = flag.Bool("update", false, "rewrite the generated settings table of docs/configuration.md")

const (
	docPath    = "../../docs/configuration.md"
	tableBegin = "<!-- settings table: generated from server/config.Settings() by `go test ./server/config -run TestConfigurationReference -update`; do not edit by hand -->"
	tableEnd   = "<!-- end of settings table -->"
)

// settingsTable renders every setting as a Markdown table row: environment
// variable, flag, default and meaning, in the order --help shows them.
func settingsTable() string {
	var b strings.Builder
	b.WriteString("| environment variable | flag of `serve` | default | meaning |\n|---|---|---|---|\n")
	for _, s := range config.Settings() {
		def := "(empty)"
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		help := strings.ReplaceAll(s.Help, "|", `\|`)
		if s.Secret {
			help += " (secret: never logged, never echoed in errors)"
		}
		b.WriteString("| `" + s.Env + "` | `--" + s.Flag() + "` | " + def + " | " + help + " |\n")
	}
	return b.String()
}

// TestConfigurationReference fails when docs/configuration.md does not list
// every setting exactly as server/config.Settings() defines it (name, flag,
// default, meaning). With -update it rewrites the generated table.
func TestConfigurationReference(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatalf("read docs/configuration.md: %v", err)
	}
	doc := string(raw)
	begin, end := strings.Index(doc, tableBegin), strings.Index(doc, tableEnd)
	if begin < 0 || end < begin {
		t.Fatalf("docs/configuration.md lacks the generated-table markers %q … %q", tableBegin, tableEnd)
	}
	want := settingsTable()
	got := doc[begin+len(tableBegin)+1 : end]
	if *update {
		doc = doc[:begin+len(tableBegin)] + "\n" + want + doc[end:]
		if err := os.WriteFile(docPath, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, s := range config.Settings() {
		if !strings.Contains(got, "| `"+s.Env+"` | `--"+s.Flag()+"` |") {
			t.Errorf("docs/configuration.md does not list %s (--%s)", s.Env, s.Flag())
		}
	}
	if got != want {
		t.Errorf("the settings table of docs/configuration.md is out of date with server/config.Settings(): " +
			"run `go test ./server/config -run TestConfigurationReference -update`")
	}
}

// TestConfigurationNotesNameRealSettings: every PORTCULLIS_ name the prose
// of docs/configuration.md mentions is a real setting (no stale names).
func TestConfigurationNotesNameRealSettings(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, s := range config.Settings() {
		known[s.Env] = true
	}
	for _, word := range strings.FieldsFunc(string(raw), func(r rune) bool {
		return !(r == '_' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) {
		if strings.HasPrefix(word, "PORTCULLIS_") && !known[word] && !strings.HasSuffix(word, "_") {
			t.Errorf("docs/configuration.md mentions %s, which is not a setting", word)
		}
	}
}
