package deploy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const composePath = "compose.yaml"

// composeFile is the subset of the Compose specification this repository
// uses. Decoding with KnownFields refuses anything else, so a misspelt key
// (depends_on: {condtion: …}) fails here instead of being ignored by Docker.
type composeFile struct {
	Name        string                    `yaml:"name"`
	XPortcullis yaml.Node                 `yaml:"x-portcullis"`
	Services    map[string]composeService `yaml:"services"`
	Networks    map[string]composeNetwork `yaml:"networks"`
	Volumes     map[string]*composeVolume `yaml:"volumes"`
}

type composeService struct {
	Image           string                      `yaml:"image"`
	Build           *composeBuild               `yaml:"build"`
	Command         []string                    `yaml:"command"`
	Restart         string                      `yaml:"restart"`
	Environment     map[string]string           `yaml:"environment"`
	Volumes         []string                    `yaml:"volumes"`
	Networks        map[string]*composeAttach   `yaml:"networks"`
	Ports           []string                    `yaml:"ports"`
	DependsOn       map[string]composeDependsOn `yaml:"depends_on"`
	Healthcheck     *composeHealthcheck         `yaml:"healthcheck"`
	ReadOnly        bool                        `yaml:"read_only"`
	CapDrop         []string                    `yaml:"cap_drop"`
	CapAdd          []string                    `yaml:"cap_add"`
	SecurityOpt     []string                    `yaml:"security_opt"`
	StopGracePeriod string                      `yaml:"stop_grace_period"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

type composeAttach struct {
	IPv4Address string `yaml:"ipv4_address"`
}

type composeDependsOn struct {
	Condition string `yaml:"condition"`
}

type composeHealthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

type composeNetwork struct {
	IPAM struct {
		Config []struct {
			Subnet string `yaml:"subnet"`
		} `yaml:"config"`
	} `yaml:"ipam"`
}

type composeVolume struct{}

func decodeCompose(data []byte) (*composeFile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f composeFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode %s: %w", composePath, err)
	}
	return &f, nil
}

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := decodeCompose(data)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// interpolation matches ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}
// and ${VAR?err}; $$ is a literal dollar.
var interpolation = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate resolves variables the way `docker compose --env-file` does,
// failing where compose would (a required variable unset or empty).
func interpolate(s string, vars map[string]string) (string, error) {
	var err error
	out := interpolation.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := interpolation.FindStringSubmatch(m)
		name, op, arg := sub[1], sub[2], sub[3]
		v, set := vars[name]
		switch op {
		case "":
			return v
		case ":-":
			if v == "" {
				return arg
			}
		case "-":
			if !set {
				return arg
			}
		case ":?":
			if v == "" && err == nil {
				err = fmt.Errorf("required variable %s is empty: %s", name, arg)
			}
		case "?":
			if !set && err == nil {
				err = fmt.Errorf("required variable %s is unset: %s", name, arg)
			}
		}
		return v
	})
	if strings.Contains(interpolation.ReplaceAllString(s, ""), "${") {
		return "", fmt.Errorf("unresolved interpolation in %q", s)
	}
	return out, err
}

// variables returns every variable compose.yaml interpolates and whether it
// has a default.
func variables(data []byte) map[string]bool {
	out := map[string]bool{}
	for _, m := range interpolation.FindAllSubmatch(data, -1) {
		if len(m[1]) == 0 {
			continue
		}
		hasDefault := strings.HasSuffix(string(m[2]), "-")
		out[string(m[1])] = out[string(m[1])] || hasDefault
	}
	return out
}

// servers are the services running `portcullis serve`.
func (f *composeFile) servers() []string {
	var out []string
	for name, s := range f.Services {
		if slices.Equal(s.Command, []string{"serve"}) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// checkCompose holds every rule for compose.yaml; vars are the env file's.
func checkCompose(f *composeFile, vars map[string]string) []string {
	var p []string
	servers := f.servers()
	if len(servers) != 2 {
		p = append(p, fmt.Sprintf("%d services run `portcullis serve` (%v), want 2", len(servers), servers))
	}
	var migrate []string
	for name, s := range f.Services {
		if slices.Equal(s.Command, []string{"migrate"}) {
			migrate = append(migrate, name)
		}
	}
	if len(migrate) != 1 {
		return append(p, fmt.Sprintf("%d services run `portcullis migrate`, want 1", len(migrate)))
	}
	mig := f.Services[migrate[0]]
	if mig.Restart != "no" && mig.Restart != "" {
		p = append(p, fmt.Sprintf("the migrate service restarts (%q): it is a one-shot job", mig.Restart))
	}
	pg, redis := findImage(f, "postgres:"), findImage(f, "redis:")
	if pg == "" || redis == "" {
		return append(p, "compose has no PostgreSQL or no Redis service")
	}
	if c := mig.DependsOn[pg].Condition; c != "service_healthy" {
		p = append(p, fmt.Sprintf("migrate depends on %s with %q, want service_healthy", pg, c))
	}
	portcullis := append(slices.Clone(servers), migrate[0])
	for _, name := range portcullis {
		s := f.Services[name]
		if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" || s.Build.Context != ".." {
			p = append(p, fmt.Sprintf("%s is not built from deploy/Dockerfile with the repository as context", name))
		}
		if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			p = append(p, fmt.Sprintf("%s is not read_only with cap_drop ALL and no-new-privileges", name))
		}
		if len(s.Ports) > 0 {
			p = append(p, fmt.Sprintf("%s publishes ports: only the proxy should", name))
		}
		p = append(p, checkComposeEnv(name, s, vars)...)
	}
	shutdown := 20 * time.Second
	for _, name := range servers {
		s := f.Services[name]
		want := map[string]string{migrate[0]: "service_completed_successfully", pg: "service_healthy", redis: "service_healthy"}
		for dep, cond := range want {
			if got := s.DependsOn[dep].Condition; got != cond {
				p = append(p, fmt.Sprintf("%s depends on %s with %q, want %s", name, dep, got, cond))
			}
		}
		if s.Environment["PORTCULLIS_AUTO_MIGRATE"] != "false" {
			p = append(p, fmt.Sprintf("%s does not set PORTCULLIS_AUTO_MIGRATE=false (the migrate service migrates)", name))
		}
		if env, err := composeEnv(s, vars); err == nil {
			if cfg, err := loadConfig(env); err == nil {
				shutdown = cfg.ShutdownTimeout
			}
		}
		if g, err := time.ParseDuration(s.StopGracePeriod); err != nil || g <= shutdown {
			p = append(p, fmt.Sprintf("%s stop_grace_period %q is not above the shutdown timeout %s (Docker's default is 10s)", name, s.StopGracePeriod, shutdown))
		}
		if s.Restart == "" || s.Restart == "no" {
			p = append(p, fmt.Sprintf("%s never restarts", name))
		}
	}
	p = append(p, checkBackingServices(f, pg, redis)...)
	p = append(p, checkProxy(f, servers, vars)...)
	return p
}

// composeEnv is a service's environment after interpolation.
func composeEnv(s composeService, vars map[string]string) (map[string]string, error) {
	env := map[string]string{}
	for k, v := range s.Environment {
		iv, err := interpolate(v, vars)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		env[k] = iv
	}
	return env, nil
}

func checkComposeEnv(name string, s composeService, vars map[string]string) []string {
	var p []string
	var names []string
	for k := range s.Environment {
		names = append(names, k)
	}
	if bad := unknownSettings(names); len(bad) > 0 {
		p = append(p, fmt.Sprintf("%s sets variables that are not Portcullis settings: %v", name, bad))
	}
	env, err := composeEnv(s, vars)
	if err != nil {
		return append(p, fmt.Sprintf("%s: %v", name, err))
	}
	cfg, err := loadConfig(env)
	if err != nil {
		return append(p, fmt.Sprintf("%s: the server refuses its settings: %v", name, err))
	}
	if cfg.Embedded() {
		p = append(p, name+" uses the embedded SQLite store; the two servers must share PostgreSQL")
	}
	if cfg.RedisURL == "" {
		p = append(p, name+" keeps token state in the database; compose provides Redis")
	}
	if host, port, _ := net.SplitHostPort(cfg.Addr); port != "8080" || (host != "0.0.0.0" && host != "") {
		p = append(p, fmt.Sprintf("%s listens on %s, want 0.0.0.0:8080 (reachable by the proxy)", name, cfg.Addr))
	}
	for k, v := range s.Environment {
		if settingNames()[k].Secret && !strings.Contains(v, "${") && v != "" {
			p = append(p, fmt.Sprintf("%s: secret %s is written in compose.yaml; take it from the env file", name, k))
		}
	}
	return p
}

func findImage(f *composeFile, prefix string) string {
	for name, s := range f.Services {
		if strings.HasPrefix(s.Image, prefix) {
			return name
		}
	}
	return ""
}

// checkBackingServices: PostgreSQL and Redis keep their data in named volumes,
// report health, and Redis persists with an append-only file and never evicts.
func checkBackingServices(f *composeFile, pg, redis string) []string {
	var p []string
	mounts := func(name, target string) {
		s := f.Services[name]
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == target {
				if _, ok := f.Volumes[parts[0]]; !ok {
					p = append(p, fmt.Sprintf("%s mounts %s on %s, which is not a named volume of the file", name, parts[0], target))
				}
				return
			}
		}
		p = append(p, fmt.Sprintf("%s keeps %s in the container: mount a named volume there", name, target))
	}
	mounts(pg, "/var/lib/postgresql/data")
	mounts(redis, "/data")
	for _, name := range []string{pg, redis} {
		hc := f.Services[name].Healthcheck
		if hc == nil || len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL") {
			p = append(p, name+" has no healthcheck command")
			continue
		}
		for _, d := range []string{hc.Interval, hc.Timeout} {
			if _, err := time.ParseDuration(d); err != nil {
				p = append(p, fmt.Sprintf("%s healthcheck duration %q: %v", name, d, err))
			}
		}
		if hc.Retries < 1 {
			p = append(p, name+" healthcheck retries below 1")
		}
	}
	args := f.Services[redis].Command
	flag := func(k string) string {
		for i, a := range args {
			if a == "--"+k && i+1 < len(args) {
				return args[i+1]
			}
		}
		return ""
	}
	if flag("appendonly") != "yes" {
		p = append(p, "Redis runs without --appendonly yes: token state would not survive a restart")
	}
	if flag("maxmemory-policy") != "noeviction" {
		p = append(p, "Redis may evict keys: revocations and refresh families would disappear")
	}
	return p
}

// checkProxy: the proxy publishes the only port, has the fixed address the
// servers trust for X-Forwarded-For, and balances over both servers.
func checkProxy(f *composeFile, servers []string, vars map[string]string) []string {
	var p []string
	proxy := findImage(f, "caddy:")
	if proxy == "" {
		return []string{"compose has no Caddy proxy"}
	}
	s := f.Services[proxy]
	if len(s.Ports) == 0 {
		p = append(p, "the proxy publishes no port")
	}
	for _, port := range s.Ports {
		if !strings.HasPrefix(port, "127.0.0.1:") {
			p = append(p, fmt.Sprintf("the proxy publishes %s on every interface; plain HTTP belongs on loopback", port))
		}
	}
	for _, dep := range servers {
		if _, ok := s.DependsOn[dep]; !ok {
			p = append(p, fmt.Sprintf("the proxy does not depend on %s", dep))
		}
	}
	// The proxy's fixed address must be inside its network and trusted by
	// every server.
	var proxyAddr netip.Addr
	for netName, at := range s.Networks {
		if at == nil || at.IPv4Address == "" {
			continue
		}
		a, err := netip.ParseAddr(at.IPv4Address)
		if err != nil {
			p = append(p, fmt.Sprintf("proxy ipv4_address %q: %v", at.IPv4Address, err))
			continue
		}
		proxyAddr = a
		n, ok := f.Networks[netName]
		if !ok || len(n.IPAM.Config) == 0 {
			p = append(p, fmt.Sprintf("network %s has no fixed subnet", netName))
			continue
		}
		sub, err := netip.ParsePrefix(n.IPAM.Config[0].Subnet)
		if err != nil || !sub.Contains(a) {
			p = append(p, fmt.Sprintf("proxy address %s is not in network %s's subnet %s", a, netName, n.IPAM.Config[0].Subnet))
		}
		for _, srv := range servers {
			if _, ok := f.Services[srv].Networks[netName]; !ok {
				p = append(p, fmt.Sprintf("%s is not on the proxy's network %s", srv, netName))
			}
		}
	}
	if !proxyAddr.IsValid() {
		p = append(p, "the proxy has no fixed address for PORTCULLIS_TRUSTED_PROXIES to name")
	}
	for _, srv := range servers {
		env, err := composeEnv(f.Services[srv], vars)
		if err != nil {
			continue
		}
		cfg, err := loadConfig(env)
		if err != nil {
			continue
		}
		trusted := false
		for _, tp := range cfg.TrustedProxies {
			if proxyAddr.IsValid() && tp.Contains(proxyAddr) {
				trusted = true
			}
			if tp.Bits() < 24 {
				p = append(p, fmt.Sprintf("%s trusts %s: wider than the compose network", srv, tp))
			}
		}
		if !trusted {
			p = append(p, fmt.Sprintf("%s does not trust the proxy %s (PORTCULLIS_TRUSTED_PROXIES=%v): every client would share the proxy's rate limit", srv, proxyAddr, cfg.TrustedProxies))
		}
	}
	// The Caddyfile mounted into the proxy balances over both servers.
	caddyfile := ""
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == "/etc/caddy/Caddyfile" {
			caddyfile = strings.TrimPrefix(parts[0], "./")
		}
	}
	if caddyfile == "" {
		return append(p, "the proxy mounts no /etc/caddy/Caddyfile")
	}
	data, err := os.ReadFile(caddyfile)
	if err != nil {
		return append(p, fmt.Sprintf("read the proxy's Caddyfile: %v", err))
	}
	var want []string
	for _, srv := range servers {
		want = append(want, srv+":8080")
	}
	return append(p, checkCaddyfile(string(data), want)...)
}

// caddyDirectives returns the non-comment lines of a Caddyfile, split into words.
func caddyDirectives(src string) [][]string {
	var out [][]string
	for _, l := range strings.Split(src, "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		if w := strings.Fields(l); len(w) > 0 {
			out = append(out, w)
		}
	}
	return out
}

// checkCaddyfile: one reverse_proxy over exactly the servers, with active
// health checks on /readyz, and the client address passed on.
func checkCaddyfile(src string, upstreams []string) []string {
	var p []string
	var proxies [][]string
	healthURI := ""
	for _, w := range caddyDirectives(src) {
		switch w[0] {
		case "reverse_proxy":
			proxies = append(proxies, w[1:])
		case "health_uri":
			if len(w) > 1 {
				healthURI = w[1]
			}
		case "header_up":
			if len(w) > 1 && strings.EqualFold(w[1], "-X-Forwarded-For") {
				p = append(p, "the Caddyfile drops X-Forwarded-For: every client would share one rate limit")
			}
		case "trusted_proxies":
			p = append(p, "the Caddyfile trusts incoming X-Forwarded-For; only set trusted_proxies for a real load balancer in front")
		}
	}
	if len(proxies) != 1 {
		return append(p, fmt.Sprintf("the Caddyfile has %d reverse_proxy directives, want 1", len(proxies)))
	}
	got := slices.DeleteFunc(slices.Clone(proxies[0]), func(s string) bool { return s == "{" })
	sort.Strings(got)
	want := slices.Clone(upstreams)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		p = append(p, fmt.Sprintf("the Caddyfile proxies to %v, want both servers %v", got, want))
	}
	if healthURI != "/readyz" {
		p = append(p, fmt.Sprintf("the Caddyfile's health_uri is %q, want /readyz", healthURI))
	}
	return p
}

// composeVars are the env file's variables with placeholders replaced.
func composeVars(t *testing.T) map[string]string {
	t.Helper()
	env, _, err := readEnvFile("portcullis.env.example")
	if err != nil {
		t.Fatal(err)
	}
	return realize(t, env)
}

func TestCompose(t *testing.T) {
	report(t, checkCompose(loadCompose(t), composeVars(t)))
}

// TestComposeVariables: every variable compose.yaml interpolates is in the
// example env file or has a default, and the example holds nothing unused.
func TestComposeVariables(t *testing.T) {
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	example, _, err := readEnvFile("portcullis.env.example")
	if err != nil {
		t.Fatal(err)
	}
	used := variables(data)
	if len(used) == 0 {
		t.Fatal("compose.yaml interpolates no variable: where do its secrets come from?")
	}
	for v, hasDefault := range used {
		if _, ok := example[v]; !ok && !hasDefault {
			t.Errorf("compose.yaml needs ${%s}, which portcullis.env.example does not show", v)
		}
	}
	for v := range example {
		if _, ok := used[v]; !ok {
			t.Errorf("portcullis.env.example sets %s, which compose.yaml never uses", v)
		}
	}
	// Without the env file compose must stop, not start with empty secrets.
	f := loadCompose(t)
	for _, name := range f.servers() {
		if _, err := composeEnv(f.Services[name], map[string]string{}); err == nil {
			t.Errorf("%s starts without the env file", name)
		}
	}
}

func TestInterpolate(t *testing.T) {
	vars := map[string]string{"A": "a", "E": ""}
	cases := []struct {
		name, in, want string
		ok             bool
	}{
		{"ok/plain", "x${A}y", "xay", true},
		{"ok/default-unset", "${B:-d}", "d", true},
		{"ok/default-empty", "${E:-d}", "d", true},
		{"ok/dash-empty-kept", "${E-d}", "", true},
		{"ok/dollar", "$${A}", "${A}", true},
		{"ok/required-set", "${A:?need A}", "a", true},
		{"fail/required-unset", "${B:?need B}", "", false},
		{"fail/required-empty", "${E:?need E}", "", false},
		{"fail/unclosed", "${A", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := interpolate(c.in, vars)
			if (err == nil) != c.ok || (c.ok && got != c.want) {
				t.Fatalf("interpolate(%q) = %q, %v; want %q, ok %v", c.in, got, err, c.want, c.ok)
			}
		})
	}
}

// TestComposeDecodeStrict: the compose decoder refuses keys it does not know.
func TestComposeDecodeStrict(t *testing.T) {
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	cases := []struct {
		name, from, to string
	}{
		{"fail/misspelt-condition", "condition: service_completed_successfully", "condtion: service_completed_successfully"},
		{"fail/unknown-service-key", "stop_grace_period: 30s", "stop_grace_periods: 30s"},
		{"fail/unknown-top-level", "\nvolumes:\n", "\nvolume:\n"},
		{"fail/healthcheck-key", "start_period: 10s", "startperiod: 10s"},
	}
	t.Run("ok/real-file", func(t *testing.T) {
		if _, err := decodeCompose(data); err != nil {
			t.Fatal(err)
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(src, c.from) {
				t.Fatalf("compose.yaml no longer contains %q; update the test", c.from)
			}
			if _, err := decodeCompose([]byte(strings.Replace(src, c.from, c.to, 1))); err == nil {
				t.Fatalf("accepted compose.yaml with %q", c.to)
			}
		})
	}
}

// TestComposeChecksCatchMistakes breaks the real file one way at a time.
func TestComposeChecksCatchMistakes(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(f *composeFile)
		want   string
	}{
		{"fail/one-server", func(f *composeFile) { delete(f.Services, "portcullis-2") }, "want 2"},
		{"fail/depends-started", func(f *composeFile) {
			s := f.Services["portcullis-1"]
			s.DependsOn = map[string]composeDependsOn{"migrate": {Condition: "service_started"}, "postgres": {Condition: "service_healthy"}, "redis": {Condition: "service_healthy"}}
			f.Services["portcullis-1"] = s
		}, "service_completed_successfully"},
		{"fail/redis-no-aof", func(f *composeFile) {
			s := f.Services["redis"]
			s.Command = []string{"redis-server", "--maxmemory-policy", "noeviction"}
			f.Services["redis"] = s
		}, "appendonly"},
		{"fail/redis-evicts", func(f *composeFile) {
			s := f.Services["redis"]
			s.Command = []string{"redis-server", "--appendonly", "yes"}
			f.Services["redis"] = s
		}, "evict"},
		{"fail/postgres-no-healthcheck", func(f *composeFile) {
			s := f.Services["postgres"]
			s.Healthcheck = nil
			f.Services["postgres"] = s
		}, "healthcheck"},
		{"fail/postgres-no-volume", func(f *composeFile) {
			s := f.Services["postgres"]
			s.Volumes = nil
			f.Services["postgres"] = s
		}, "named volume"},
		{"fail/unknown-setting", func(f *composeFile) {
			s := f.Services["portcullis-2"]
			s.Environment = map[string]string{"PORTCULLIS_REDIS": "redis://redis:6379"}
			f.Services["portcullis-2"] = s
		}, "not Portcullis settings"},
		{"fail/bad-value", func(f *composeFile) {
			s := f.Services["portcullis-1"]
			env := map[string]string{}
			for k, v := range s.Environment {
				env[k] = v
			}
			env["PORTCULLIS_TRUSTED_PROXIES"] = "the proxy"
			s.Environment = env
			f.Services["portcullis-1"] = s
		}, "refuses its settings"},
		{"fail/proxy-untrusted", func(f *composeFile) {
			s := f.Services["proxy"]
			s.Networks = map[string]*composeAttach{"backend": {IPv4Address: "172.30.80.99"}}
			f.Services["proxy"] = s
		}, "does not trust the proxy"},
		{"fail/short-grace", func(f *composeFile) {
			s := f.Services["portcullis-1"]
			s.StopGracePeriod = ""
			f.Services["portcullis-1"] = s
		}, "stop_grace_period"},
		{"fail/public-port", func(f *composeFile) {
			s := f.Services["proxy"]
			s.Ports = []string{"8080:80"}
			f.Services["proxy"] = s
		}, "every interface"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := loadCompose(t)
			c.mutate(f)
			problems := checkCompose(f, composeVars(t))
			for _, p := range problems {
				if strings.Contains(p, c.want) {
					return
				}
			}
			t.Fatalf("no problem mentions %q; got %q", c.want, problems)
		})
	}
}

func TestCaddyfileChecks(t *testing.T) {
	ups := []string{"portcullis-1:8080", "portcullis-2:8080"}
	good := "# c\n:80 {\n\treverse_proxy portcullis-1:8080 portcullis-2:8080 {\n\t\thealth_uri /readyz\n\t}\n}\n"
	cases := []struct {
		name, src, want string
	}{
		{"ok/good", good, ""},
		{"fail/one-upstream", strings.Replace(good, " portcullis-2:8080", "", 1), "want both servers"},
		{"fail/wrong-port", strings.ReplaceAll(good, ":8080", ":8081"), "want both servers"},
		{"fail/health", strings.Replace(good, "/readyz", "/healthz", 1), "health_uri"},
		{"fail/drops-xff", strings.Replace(good, "health_uri /readyz", "health_uri /readyz\n\t\theader_up -X-Forwarded-For", 1), "drops X-Forwarded-For"},
		{"fail/trusts-all", strings.Replace(good, "# c", "{\n\tservers {\n\t\ttrusted_proxies static 0.0.0.0/0\n\t}\n}", 1), "trusts incoming"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := checkCaddyfile(c.src, ups)
			if c.want == "" {
				if len(p) > 0 {
					t.Fatalf("problems in a good Caddyfile: %q", p)
				}
				return
			}
			if !strings.Contains(strings.Join(p, "\n"), c.want) {
				t.Fatalf("no problem mentions %q; got %q", c.want, p)
			}
		})
	}
}

// TestComposeHealthcheckTimes: a healthcheck whose timeout is not below its
// interval piles up probes.
func TestComposeHealthcheckTimes(t *testing.T) {
	f := loadCompose(t)
	for name, s := range f.Services {
		hc := s.Healthcheck
		if hc == nil {
			continue
		}
		iv, err1 := time.ParseDuration(hc.Interval)
		to, err2 := time.ParseDuration(hc.Timeout)
		if err1 != nil || err2 != nil || to >= iv {
			t.Errorf("%s healthcheck interval %q timeout %q", name, hc.Interval, hc.Timeout)
		}
		if hc.Retries < 3 {
			t.Errorf("%s healthcheck retries %d: a slow first start marks it unhealthy", name, hc.Retries)
		}
	}
}
