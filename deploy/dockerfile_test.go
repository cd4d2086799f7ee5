package deploy

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	Line int
	Cmd  string // upper case: FROM, RUN, …
	Args string
}

// stage is the instructions from one FROM to the next.
type stage struct {
	Name, Base string
	Body       []instruction
}

func parseDockerfile(src string) ([]instruction, error) {
	var out []instruction
	sc := bufio.NewScanner(strings.NewReader(src))
	var cur strings.Builder
	start := 0
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(t, "#") {
			continue // comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\") + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{Line: start, Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: instruction continues past the end of the file", start)
	}
	return out, sc.Err()
}

var fromArgs = regexp.MustCompile(`^(?:--platform=\S+\s+)?(\S+)(?:\s+[Aa][Ss]\s+(\S+))?$`)

func stages(ins []instruction) ([]stage, error) {
	var out []stage
	for _, in := range ins {
		if in.Cmd == "FROM" {
			m := fromArgs.FindStringSubmatch(in.Args)
			if m == nil {
				return nil, fmt.Errorf("line %d: FROM %q", in.Line, in.Args)
			}
			out = append(out, stage{Base: m[1], Name: m[2]})
			continue
		}
		if len(out) == 0 {
			if in.Cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", in.Line, in.Cmd)
			}
			continue
		}
		out[len(out)-1].Body = append(out[len(out)-1].Body, in)
	}
	return out, nil
}

// envPairs parses ENV k=v k2=v2 (values without spaces, or quoted).
func envPairs(args string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range strings.Fields(args) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("ENV %q: use the KEY=VALUE form", args)
		}
		out[k] = strings.Trim(v, `"`)
	}
	return out, nil
}

// ldflagsX returns the -X variables set by an ldflags string.
func ldflagsX(s string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`-X\s+([^=\s]+)=`).FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return out
}

// checkDockerfile holds every rule for deploy/Dockerfile; makefile is the
// repository's Makefile, whose build the image must match.
func checkDockerfile(src, makefile string) []string {
	ins, err := parseDockerfile(src)
	if err != nil {
		return []string{err.Error()}
	}
	st, err := stages(ins)
	if err != nil {
		return []string{err.Error()}
	}
	if len(st) < 2 {
		return []string{fmt.Sprintf("%d stages, want a build stage and a runtime stage", len(st))}
	}
	var p []string
	build, final := st[0], st[len(st)-1]
	if !strings.HasPrefix(build.Base, "golang:") {
		p = append(p, fmt.Sprintf("the build stage starts from %s, want golang", build.Base))
	}
	switch {
	case strings.HasPrefix(final.Base, "gcr.io/distroless/static"):
		if !strings.Contains(final.Base, "nonroot") {
			p = append(p, "the runtime stage is distroless/static but not its :nonroot variant")
		}
	case final.Base == "scratch":
	default:
		p = append(p, fmt.Sprintf("the runtime stage starts from %s: want distroless/static or scratch (no shell, no package manager)", final.Base))
	}
	// The build: static, reproducible, the same -X variables as the Makefile.
	var goBuild string
	cacheMount := false
	for _, in := range build.Body {
		if in.Cmd == "RUN" && strings.Contains(in.Args, "go build") {
			goBuild = in.Args
		}
		if in.Cmd == "RUN" && strings.Contains(in.Args, "--mount=type=cache,target=/go/pkg/mod") {
			cacheMount = true
		}
	}
	if goBuild == "" {
		return append(p, "the build stage has no `go build`")
	}
	if !cacheMount {
		p = append(p, "the build stage does not cache the module download (--mount=type=cache,target=/go/pkg/mod)")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/portcullis", "-s -w"} {
		if !strings.Contains(goBuild, want) {
			p = append(p, fmt.Sprintf("go build lacks %s", want))
		}
	}
	if got, want := ldflagsX(goBuild), ldflagsX(makefile); !slices.Equal(got, want) || len(want) == 0 {
		p = append(p, fmt.Sprintf("go build sets -X %v, the Makefile %v", got, want))
	}
	// The runtime: only the binary copied in, a non-root user, the port.
	user, entry, copied := "", "", false
	env := map[string]string{}
	var expose []string
	for _, in := range final.Body {
		switch in.Cmd {
		case "USER":
			user = in.Args
		case "ENTRYPOINT":
			entry = in.Args
		case "COPY":
			if strings.Contains(in.Args, "--from="+build.Name) && build.Name != "" {
				copied = true
			}
		case "ENV":
			kv, err := envPairs(in.Args)
			if err != nil {
				p = append(p, err.Error())
			}
			for k, v := range kv {
				env[k] = v
			}
		case "EXPOSE":
			expose = append(expose, strings.Fields(in.Args)...)
		case "RUN":
			p = append(p, fmt.Sprintf("line %d: RUN in the runtime stage: it has no shell", in.Line))
		case "HEALTHCHECK":
			p = append(p, fmt.Sprintf("line %d: HEALTHCHECK cannot run in an image without a shell or HTTP client; probe /healthz and /readyz from the orchestrator", in.Line))
		}
	}
	if !copied {
		p = append(p, "the runtime stage does not copy the binary from the named build stage")
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); user == "" || uid == "root" || (err == nil && n == 0) {
		p = append(p, fmt.Sprintf("the runtime stage runs as %q, want a non-root user", user))
	} else if err != nil && uid != "nonroot" {
		p = append(p, fmt.Sprintf("USER %q: use a numeric uid so Kubernetes runAsNonRoot can verify it", user))
	}
	if !strings.HasPrefix(entry, "[") {
		p = append(p, fmt.Sprintf("ENTRYPOINT %q is not the exec form: signals would go to a shell", entry))
	}
	var names []string
	for k := range env {
		names = append(names, k)
	}
	if bad := unknownSettings(names); len(bad) > 0 {
		p = append(p, fmt.Sprintf("ENV sets variables that are not Portcullis settings: %v", bad))
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return append(p, fmt.Sprintf("the server refuses the image's settings: %v", err))
	}
	host, port, _ := net.SplitHostPort(cfg.Addr)
	if host != "0.0.0.0" && host != "" {
		p = append(p, fmt.Sprintf("PORTCULLIS_ADDR %s: in a container the server must listen on every interface", cfg.Addr))
	}
	if !slices.Contains(expose, port) && !slices.Contains(expose, port+"/tcp") {
		p = append(p, fmt.Sprintf("EXPOSE %v does not include the listen port %s", expose, port))
	}
	return p
}

func readDockerInputs(t *testing.T) (string, string) {
	t.Helper()
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	return string(df), string(mk)
}

func TestDockerfile(t *testing.T) {
	df, mk := readDockerInputs(t)
	report(t, checkDockerfile(df, mk))
}

func TestDockerfileChecksCatchMistakes(t *testing.T) {
	df, mk := readDockerInputs(t)
	cases := []struct {
		name, from, to, want string
	}{
		{"fail/cgo", "CGO_ENABLED=0", "CGO_ENABLED=1", "CGO_ENABLED=0"},
		{"fail/root", "USER 65532:65532", "USER 0", "non-root"},
		{"fail/no-user", "USER 65532:65532\n", "\n", "non-root"},
		{"fail/fat-base", "FROM gcr.io/distroless/static-debian12:nonroot AS runtime", "FROM debian:bookworm AS runtime", "distroless"},
		{"fail/loopback", "PORTCULLIS_ADDR=0.0.0.0:8080", "PORTCULLIS_ADDR=127.0.0.1:8080", "every interface"},
		{"fail/expose", "EXPOSE 8080", "EXPOSE 9090", "EXPOSE"},
		{"fail/shell-entrypoint", `ENTRYPOINT ["/usr/local/bin/portcullis"]`, "ENTRYPOINT /usr/local/bin/portcullis", "exec form"},
		{"fail/healthcheck", "EXPOSE 8080", "EXPOSE 8080\nHEALTHCHECK CMD wget -q localhost:8080/healthz", "HEALTHCHECK"},
		{"fail/unknown-env", "PORTCULLIS_LOG_FORMAT=json", "PORTCULLIS_LOGFORMAT=json", "not Portcullis settings"},
		{"fail/ldflags-drift", "buildinfo.Commit=${COMMIT}", "buildinfo.Revision=${COMMIT}", "-X"},
		{"fail/no-cache", "--mount=type=cache,target=/go/pkg/mod", "--mount=type=bind,target=/x", "cache"},
	}
	t.Run("ok/real", func(t *testing.T) {
		if p := checkDockerfile(df, mk); len(p) > 0 {
			t.Fatalf("%q", p)
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(df, c.from) {
				t.Fatalf("the Dockerfile no longer contains %q; update the test", c.from)
			}
			p := checkDockerfile(strings.ReplaceAll(df, c.from, c.to), mk)
			if !strings.Contains(strings.Join(p, "\n"), c.want) {
				t.Fatalf("no problem mentions %q; got %q", c.want, p)
			}
		})
	}
}

// TestDockerignore: secrets and local state never enter the build context.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			rules = append(rules, l)
		}
		if strings.HasPrefix(l, "!") {
			t.Errorf("re-include rule %q: keep the ignore file simple to audit", l)
		}
	}
	for _, want := range []string{".git", "data", "**/*.kek", "**/*.env", "**/*.db", "bin"} {
		if !slices.Contains(rules, want) {
			t.Errorf("Dockerfile.dockerignore does not exclude %s", want)
		}
	}
}
