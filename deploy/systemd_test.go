package deploy

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

const unitPath = "systemd/portcullis.service"

// unit is a parsed systemd unit: section → key → values in order (a key may
// repeat; an empty assignment resets the list, as systemd does).
type unit map[string]map[string][]string

// unitKeys are the directives this unit may use, per section. A misspelt
// directive (ProtectSytem=) is only a warning to systemd, which then runs the
// service unprotected; here it fails.
var unitKeys = map[string][]string{
	"Unit":    {"Description", "Documentation", "Wants", "Requires", "After", "Before"},
	"Install": {"WantedBy"},
	"Service": {
		"Type", "ExecStart", "EnvironmentFile", "Environment", "DynamicUser", "User", "Group",
		"StateDirectory", "StateDirectoryMode", "WorkingDirectory", "UMask",
		"KillSignal", "KillMode", "TimeoutStopSec", "TimeoutStartSec", "Restart", "RestartSec", "LimitNOFILE",
		"NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateUsers",
		"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
		"ProtectClock", "ProtectHostname", "ProtectProc", "ProcSubset", "RestrictAddressFamilies",
		"RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
		"MemoryDenyWriteExecute", "RemoveIPC", "CapabilityBoundingSet", "AmbientCapabilities",
		"SystemCallArchitectures", "SystemCallFilter", "SystemCallErrorNumber", "ReadWritePaths",
	},
}

func parseUnit(src string) (unit, error) {
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			return nil, fmt.Errorf("line %d: keep each directive on one line", n)
		}
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			section = l[1 : len(l)-1]
			if _, ok := unitKeys[section]; !ok {
				return nil, fmt.Errorf("line %d: unknown section [%s]", n, section)
			}
			if _, dup := u[section]; dup {
				return nil, fmt.Errorf("line %d: section [%s] twice", n, section)
			}
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: expects Key=value inside a section: %q", n, l)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !slices.Contains(unitKeys[section], k) {
			return nil, fmt.Errorf("line %d: %s= is not a directive this unit uses in [%s] (misspelt?)", n, k, section)
		}
		if v == "" {
			u[section][k] = []string{""}
			continue
		}
		u[section][k] = append(u[section][k], v)
	}
	return u, sc.Err()
}

// last is the effective value of a single-valued directive.
func (u unit) last(section, key string) (string, bool) {
	vs, ok := u[section][key]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// systemdDuration parses "30s", "1min 30s", "90" (seconds).
func systemdDuration(v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	r := strings.NewReplacer("min", "m", "sec", "s", " ", "")
	return time.ParseDuration(r.Replace(v))
}

func yes(v string) bool {
	switch strings.ToLower(v) {
	case "yes", "true", "on", "1":
		return true
	}
	return false
}

// checkUnit holds every rule for the systemd unit.
func checkUnit(u unit, shutdown time.Duration) []string {
	var p []string
	get := func(k string) string { v, _ := u.last("Service", k); return v }
	exec := strings.Fields(get("ExecStart"))
	if len(exec) < 2 || !strings.HasPrefix(exec[0], "/") || !strings.HasSuffix(exec[0], "/portcullis") || exec[1] != "serve" {
		p = append(p, fmt.Sprintf("ExecStart=%q, want an absolute path to portcullis with serve", get("ExecStart")))
	}
	if get("EnvironmentFile") != "/etc/portcullis/portcullis.env" {
		p = append(p, fmt.Sprintf("EnvironmentFile=%q, want /etc/portcullis/portcullis.env (without '-': a missing file must stop the start)", get("EnvironmentFile")))
	}
	for _, e := range u["Service"]["Environment"] {
		k, _, _ := strings.Cut(e, "=")
		if bad := unknownSettings([]string{k}); len(bad) > 0 {
			p = append(p, fmt.Sprintf("Environment=%s is not a Portcullis setting", k))
		}
		if settingNames()[k].Secret {
			p = append(p, fmt.Sprintf("Environment=%s puts a secret in the unit file; use the EnvironmentFile", k))
		}
	}
	if !yes(get("DynamicUser")) {
		if user := get("User"); user == "" || user == "root" || user == "0" {
			p = append(p, "the service runs as root: set DynamicUser=yes or a dedicated User=")
		}
	}
	for k, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
		"PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
		"ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
		"Restart": "on-failure", "KillSignal": "SIGTERM",
	} {
		if got := get(k); got != want {
			p = append(p, fmt.Sprintf("%s=%q, want %s", k, got, want))
		}
	}
	if caps, ok := u.last("Service", "CapabilityBoundingSet"); !ok || caps != "" {
		p = append(p, fmt.Sprintf("CapabilityBoundingSet=%q: the server needs no capability, leave it empty", caps))
	}
	if fams := get("RestrictAddressFamilies"); fams == "" || strings.Contains(fams, "AF_PACKET") || strings.Contains(fams, "AF_NETLINK") {
		p = append(p, fmt.Sprintf("RestrictAddressFamilies=%q", fams))
	}
	if len(u["Service"]["SystemCallFilter"]) == 0 {
		p = append(p, "no SystemCallFilter")
	}
	stop, err := systemdDuration(get("TimeoutStopSec"))
	if err != nil || stop <= shutdown {
		p = append(p, fmt.Sprintf("TimeoutStopSec=%q is not above the server's shutdown timeout %s: systemd would SIGKILL in-flight requests", get("TimeoutStopSec"), shutdown))
	}
	if _, ok := u.last("Install", "WantedBy"); !ok {
		p = append(p, "no [Install] WantedBy: systemctl enable would do nothing")
	}
	if after := strings.Join(u["Unit"]["After"], " "); !strings.Contains(after, "network-online.target") {
		p = append(p, "the service does not start after network-online.target")
	}
	return p
}

func readUnit(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSystemdUnit(t *testing.T) {
	u, err := parseUnit(readUnit(t))
	if err != nil {
		t.Fatal(err)
	}
	report(t, checkUnit(u, defaultDuration(t, "PORTCULLIS_SHUTDOWN_TIMEOUT")))
}

func TestSystemdChecksCatchMistakes(t *testing.T) {
	src := readUnit(t)
	shutdown := defaultDuration(t, "PORTCULLIS_SHUTDOWN_TIMEOUT")
	cases := []struct {
		name, from, to, want string
	}{
		{"fail/misspelt", "ProtectSystem=strict", "ProtectSytem=strict", "misspelt"},
		{"fail/protect-full", "ProtectSystem=strict", "ProtectSystem=full", "ProtectSystem"},
		{"fail/no-nnp", "NoNewPrivileges=yes", "NoNewPrivileges=no", "NoNewPrivileges"},
		{"fail/root", "DynamicUser=yes", "User=root", "root"},
		{"fail/short-stop", "TimeoutStopSec=30s", "TimeoutStopSec=10s", "TimeoutStopSec"},
		{"fail/stop-equal", "TimeoutStopSec=30s", "TimeoutStopSec=" + strconv.Itoa(int(shutdown.Seconds())), "TimeoutStopSec"},
		{"fail/always", "Restart=on-failure", "Restart=no", "Restart"},
		{"fail/optional-env", "EnvironmentFile=/etc/portcullis/portcullis.env", "EnvironmentFile=-/etc/portcullis/portcullis.env", "EnvironmentFile"},
		{"fail/secret-inline", "UMask=0077", "UMask=0077\nEnvironment=PORTCULLIS_KEY_ENCRYPTION_KEY=abc", "secret"},
		{"fail/caps", "CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n", "CapabilityBoundingSet"},
		{"fail/unknown-section", "[Install]", "[Instal]", "unknown section"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(src, c.from) {
				t.Fatalf("the unit no longer contains %q; update the test", c.from)
			}
			var problems []string
			u, err := parseUnit(strings.Replace(src, c.from, c.to, 1))
			if err != nil {
				problems = []string{err.Error()}
			} else {
				problems = checkUnit(u, shutdown)
			}
			sort.Strings(problems)
			if !strings.Contains(strings.Join(problems, "\n"), c.want) {
				t.Fatalf("no problem mentions %q; got %q", c.want, problems)
			}
		})
	}
}

func TestSystemdDuration(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"30", 30 * time.Second, true},
		{"1min 30s", 90 * time.Second, true},
		{"2min", 2 * time.Minute, true},
		{"soon", 0, false},
	}
	for _, c := range cases {
		name := "ok/" + c.in
		if !c.ok {
			name = "fail/" + c.in
		}
		t.Run(name, func(t *testing.T) {
			got, err := systemdDuration(c.in)
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("systemdDuration(%q) = %s, %v", c.in, got, err)
			}
		})
	}
}
