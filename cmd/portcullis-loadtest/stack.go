package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// StackOptions configure a -stack run: start Portcullis on real PostgreSQL +
// Redis (TEST_DATABASE_URL, TEST_REDIS_URL), seed it, load it, report.
type StackOptions struct {
	Binary      string
	Algs        []string
	Scenarios   []string
	Duration    time.Duration
	Concurrency int
	Report      string // markdown file to write ("" for none)
	Section     string // the section of Report to replace
	Rate        float64
}

// StackResult is the load of one algorithm's stack plus the bounds measured beside it.
type StackResult struct {
	Alg     string
	Results []Result
	// Profiles are `go tool pprof -top` of the server during the profiled
	// scenarios (profiledScenarios), by scenario.
	Profiles map[string]string
	// RSS samples of the server process (every 10 s), for soak runs.
	RSS []int64
	// Paired is the cc_paired measurement (paired.go), when run.
	Paired Paired
	// PasswordPaired is the password_paired measurement (paired.go), when run.
	PasswordPaired Paired
}

// Bounds are the machine's throughput ceilings measured in the same run:
// each operation run on every core at once (testing.B.RunParallel), so the
// figure includes what cores running it together cost each other (memory
// bandwidth for argon2id). Cost is the wall time per operation; the bound is
// 1/Cost operations per second.
type Bounds struct {
	SignPerAlg   map[string]time.Duration
	VerifyPerAlg map[string]time.Duration
	PasswordHash time.Duration // argon2id verify with the server's parameters
	Argon2       password.Params
	// Probe is the machine's speed just before the bounds (probe.go).
	Probe float64
}

func runStack(so StackOptions) error {
	admin := os.Getenv(testservers.EnvDatabaseURL)
	redisURL := os.Getenv(testservers.EnvRedisURL)
	if admin == "" || redisURL == "" {
		return fmt.Errorf("-stack needs TEST_DATABASE_URL and TEST_REDIS_URL (run it through `go run ./cmd/testenv`)")
	}
	var all []StackResult
	for _, alg := range so.Algs {
		r, err := loadOneStack(so, alg, admin, redisURL)
		if err != nil {
			return fmt.Errorf("%s: %w", alg, err)
		}
		all = append(all, r)
	}
	b := measureBounds()
	report := renderReport(so, all, b)
	fmt.Print(report)
	if so.Report != "" {
		if err := WriteSection(so.Report, so.Section, report); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", so.Report)
	}
	for _, s := range all {
		for _, r := range s.Results {
			if so.Rate > 0 && r.Errors > 0 {
				return fmt.Errorf("%s %s: %d errors at a steady %.0f req/s", s.Alg, r.Scenario, r.Errors, so.Rate)
			}
		}
	}
	return nil
}

// WriteSection replaces the part of the markdown file between
// "<!-- begin NAME -->" and "<!-- end NAME -->" with content, appending the
// section when the file or the markers do not exist yet.
func WriteSection(path, name, content string) error {
	begin, end := "<!-- begin "+name+" -->", "<!-- end "+name+" -->"
	block := begin + "\n" + strings.TrimSpace(content) + "\n" + end + "\n"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i >= 0 && j > i {
		doc = doc[:i] + block + strings.TrimPrefix(doc[j+len(end):], "\n")
	} else {
		if doc != "" && !strings.HasSuffix(doc, "\n\n") {
			doc += "\n"
		}
		doc += block
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

func loadOneStack(so StackOptions, alg, admin, redisURL string) (StackResult, error) {
	dbURL, err := testservers.CreateDatabase(admin)
	if err != nil {
		return StackResult{}, err
	}
	defer testservers.DropDatabase(admin, dbURL)
	kek, err := keys.GenerateKEK()
	if err != nil {
		return StackResult{}, err
	}
	port, err := testservers.FreePort()
	if err != nil {
		return StackResult{}, err
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	debugPort, err := testservers.FreePort()
	if err != nil {
		return StackResult{}, err
	}
	debugAddr := fmt.Sprintf("127.0.0.1:%d", debugPort)
	env := append(os.Environ(),
		"PORTCULLIS_ADDR=127.0.0.1:"+fmt.Sprint(port), "PORTCULLIS_DATABASE_URL="+dbURL, "PORTCULLIS_REDIS_URL="+redisURL,
		"PORTCULLIS_REDIS_KEY_PREFIX=bench"+alg+":", "PORTCULLIS_KEY_ENCRYPTION_KEY="+kek, "PORTCULLIS_SIGNING_ALG="+alg,
		"PORTCULLIS_RATE_LIMITS=off", "PORTCULLIS_LOG_LEVEL=error", "PORTCULLIS_LOG_FORMAT=json", "PORTCULLIS_DEBUG_ADDR="+debugAddr,
		// One user logs in thousands of times while other workers refresh
		// their own sessions of the same user: the per-user session cap
		// would end those sessions mid-run.
		"PORTCULLIS_MAX_SESSIONS_PER_USER=100000",
		// The mfa scenario registers its users (each with ten recovery codes).
		"PORTCULLIS_PUBLIC_REGISTRATION=true")
	cli := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(so.Binary, args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("portcullis %v: %v: %s", args, err, errb.String())
		}
		return out.String(), nil
	}
	const user, pw = "bench@example.com", "bench password that is long"
	if _, err := cli(pw+"\n", "bootstrap", "--email", user, "--password-stdin"); err != nil {
		return StackResult{}, err
	}
	secretOf := func(out string) (string, error) {
		var v struct {
			Secret string `json:"client_secret"`
		}
		return v.Secret, json.Unmarshal([]byte(out), &v)
	}
	out, err := cli("", "clients", "create", "--id", "bench-web", "--name", "bench web")
	if err != nil {
		return StackResult{}, err
	}
	webSecret, err := secretOf(out)
	if err != nil {
		return StackResult{}, err
	}
	// Its tokens carry the issuer audience: the API key scenarios create
	// their keys with them.
	out, err = cli("", "clients", "create", "--id", "bench-account", "--name", "bench account", "--audience", base)
	if err != nil {
		return StackResult{}, err
	}
	accountSecret, err := secretOf(out)
	if err != nil {
		return StackResult{}, err
	}
	out, err = cli("", "clients", "create", "--id", "bench-svc", "--name", "bench svc", "--grants", "client_credentials", "--scopes", "users:read")
	if err != nil {
		return StackResult{}, err
	}
	svcSecret, err := secretOf(out)
	if err != nil {
		return StackResult{}, err
	}
	out, err = cli("", "clients", "create", "--id", "bench-app", "--name", "bench app", "--first-party",
		"--grants", "authorization_code,refresh_token", "--redirect-uri", benchRedirectURI)
	if err != nil {
		return StackResult{}, err
	}
	appSecret, err := secretOf(out)
	if err != nil {
		return StackResult{}, err
	}
	srv := exec.Command(so.Binary, "serve")
	srv.Env = env
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var logs bytes.Buffer
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		return StackResult{}, err
	}
	defer func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
		reportServerLog(os.Stderr, alg, logs.String())
	}()
	if err := waitReady(base, 30*time.Second); err != nil {
		return StackResult{}, fmt.Errorf("%w: %s", err, logs.String())
	}
	o := Options{URL: base, Duration: so.Duration, Warmup: 2 * time.Second, Concurrency: so.Concurrency,
		Username: user, Password: pw, UserClient: "bench-web", UserSecret: webSecret,
		KeyClient: "bench-account", KeySecret: accountSecret, CCClient: "bench-svc", CCSecret: svcSecret,
		CodeClient: "bench-app", CodeSecret: appSecret, RedirectURI: benchRedirectURI,
		MaxRequests: 50_000_000, Rate: so.Rate}
	sr := StackResult{Alg: alg, Profiles: map[string]string{}}
	stopSampling := make(chan struct{})
	sampled := make(chan []int64, 1)
	go func() {
		var samples []int64
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				sampled <- samples
				return
			case <-t.C:
				samples = append(samples, rssKiB(srv.Process.Pid))
			}
		}
	}()
	for _, sc := range so.Scenarios {
		if sc == pairedScenario {
			if alg != "EdDSA" { // issue 21's targets are EdDSA's
				continue
			}
			p, err := measurePaired(Run, o, pairedRounds, pairedSlice, pairedWarmup)
			if err != nil {
				return sr, err
			}
			fmt.Fprintf(os.Stderr, "%s %s: %.1f%% over %d pairs\n", alg, pairedScenario, 100*p.Ratio(), len(p.Pairs))
			sr.Paired = p
			continue
		}
		if sc == passwordPairedScenario {
			if alg != "EdDSA" || so.Rate > 0 {
				continue
			}
			p, err := measurePasswordPaired(Run, hashRate(stackArgon2), o, passwordPairedRounds, passwordPairedSlice, pairedWarmup)
			if err != nil {
				return sr, err
			}
			fmt.Fprintf(os.Stderr, "%s %s", alg, passwordPairedLine(p))
			sr.PasswordPaired = p
			continue
		}
		var r Result
		var err error
		scenario := func() (Result, error) {
			return measureScenario(o, sc, srv.Process.Pid, func() (string, string) {
				if profiledScenarios[sc] == "" || so.Rate > 0 {
					return "", ""
				}
				return cpuProfile(so.Binary, debugAddr, alg, sc, o.Duration)
			})
		}
		switch {
		case sc == "http_ceiling":
			r, err = measureCeiling(o, base)
		case sc == "password" && so.Rate == 0:
			r, err = hashBoundAround(func() time.Duration { return measureHashBound(stackArgon2) }, scenario)
		default:
			r, err = scenario()
		}
		if err != nil {
			return sr, err
		}
		if r.Profile != "" {
			sr.Profiles[sc] = r.Profile
		}
		fmt.Fprintf(os.Stderr, "%s %s\n", alg, r)
		sr.Results = append(sr.Results, r)
	}
	close(stopSampling)
	sr.RSS = <-sampled
	return sr, nil
}

// measureScenario runs scenario sc with the CPU of the stack's processes
// read over its measured time (serverPid: the server's process) and,
// when profile returns one (its top and its file), the server's CPU
// profile taken meanwhile, split by categories.
func measureScenario(o Options, sc string, serverPid int, profile func() (top, file string)) (Result, error) {
	probe := probeSpeed(probeDuration)
	started := make(chan *CPUUse, 1)
	profiled := make(chan [2]string, 1)
	o.OnMeasure = func() {
		started <- startCPU(serverPid)
		top, file := profile()
		profiled <- [2]string{top, file}
	}
	r, err := Run(context.Background(), o, sc)
	r.Probe = probe
	if err != nil {
		return r, err
	}
	cpu := <-started // Run succeeds only after measuring started
	cpu.stop()
	r.CPU = cpu
	p := <-profiled
	r.Profile = p[0]
	if p[1] != "" {
		if r.Shares, err = categorize(p[1]); err != nil {
			r.Profile += "\n(" + err.Error() + ")"
		}
	}
	return r, nil
}

// measureCeiling measures the HTTP ceiling (ceiling.go) with the JWKS
// response of the server at base: the jwks scenario against the bare server.
func measureCeiling(o Options, base string) (Result, error) {
	f, err := os.CreateTemp("", "portcullis-ceiling-*.json")
	if err != nil {
		return Result{}, err
	}
	f.Close()
	defer os.Remove(f.Name())
	if err := recordJWKS(base, f.Name()); err != nil {
		return Result{}, err
	}
	port, err := testservers.FreePort()
	if err != nil {
		return Result{}, err
	}
	ceilingURL, stop, pid, err := startCeiling(f.Name(), port)
	if err != nil {
		return Result{}, err
	}
	defer stop()
	o.URL = ceilingURL
	r, err := measureScenario(o, "jwks", pid, func() (string, string) { return "", "" })
	r.Scenario = "http_ceiling"
	return r, err
}

// profiledScenarios are the scenarios whose server CPU profile the report
// shows, with how the report names them.
var profiledScenarios = map[string]string{"password": "the password grant", "sso": "the SSO round trip", "userinfo": "userinfo", "refresh": "the refresh grant",
	"jwks": "the JWKS", "client_credentials": "the client_credentials grant", "introspection": "introspection",
	"code_redemption": "code redemption", "mfa": "the MFA grant",
	"apikey_introspection": "the introspection of an API key"}

// cpuProfile records the server's CPU profile for most of a scenario's
// measured time (it is called when measuring starts) and returns
// `go tool pprof -top` of it (or why it could not) and its file ("" when
// not saved).
func cpuProfile(binary, debugAddr, alg, scenario string, duration time.Duration) (top, file string) {
	secs := int((duration - time.Second).Seconds())
	if secs < 1 {
		secs = 1
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", debugAddr, secs))
	if err != nil {
		return "profile not taken: " + err.Error(), ""
	}
	defer resp.Body.Close()
	_ = os.MkdirAll(".bench", 0o755)
	path := fmt.Sprintf(".bench/cpu-%s-%s.pprof", alg, scenario)
	f, err := os.Create(path)
	if err != nil {
		return "profile not saved: " + err.Error(), ""
	}
	_, err = io.Copy(f, resp.Body)
	f.Close()
	if err != nil {
		return "profile not saved: " + err.Error(), ""
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=12", binary, path).CombinedOutput()
	if err != nil {
		return "pprof failed: " + err.Error(), path
	}
	return strings.TrimSpace(string(out)), path
}

// rssKiB reads a process's resident set size from /proc.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var n int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &n)
			return n
		}
	}
	return -1
}

func waitReady(base string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server at %s not ready", base)
}

// measureBounds times signatures per algorithm and password verification
// with the server's default parameters, on all cores at once.
func measureBounds() Bounds {
	b := Bounds{SignPerAlg: map[string]time.Duration{}, VerifyPerAlg: map[string]time.Duration{}, Argon2: stackArgon2,
		Probe: probeSpeed(probeDuration)}
	digest := sha256.Sum256([]byte(`{"iss":"http://127.0.0.1:8080","sub":"usr_x","aud":"api","scope":"reports:read"}`))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	signers := map[string]func(){
		"RS256": func() { _, _ = rsa.SignPKCS1v15(rand.Reader, rsaKey, crypto.SHA256, digest[:]) },
		"ES256": func() { _, _ = ecdsa.SignASN1(rand.Reader, ecKey, digest[:]) },
		"EdDSA": func() { _ = ed25519.Sign(edKey, digest[:]) },
	}
	rsaSig, _ := rsa.SignPKCS1v15(rand.Reader, rsaKey, crypto.SHA256, digest[:])
	ecSig, _ := ecdsa.SignASN1(rand.Reader, ecKey, digest[:])
	edSig := ed25519.Sign(edKey, digest[:])
	verifiers := map[string]func(){
		"RS256": func() { _ = rsa.VerifyPKCS1v15(&rsaKey.PublicKey, crypto.SHA256, digest[:], rsaSig) },
		"ES256": func() { _ = ecdsa.VerifyASN1(&ecKey.PublicKey, digest[:], ecSig) },
		"EdDSA": func() { _ = ed25519.Verify(edKey.Public().(ed25519.PublicKey), digest[:], edSig) },
	}
	parallel := func(f func()) time.Duration {
		r := testing.Benchmark(func(tb *testing.B) {
			tb.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					f()
				}
			})
		})
		return time.Duration(r.NsPerOp())
	}
	for alg, f := range signers {
		b.SignPerAlg[alg] = parallel(f)
	}
	for alg, f := range verifiers {
		b.VerifyPerAlg[alg] = parallel(f)
	}
	b.PasswordHash = measureHashBound(b.Argon2)
	return b
}

// stackArgon2 are the argon2id parameters of the stack's server (the
// defaults: the stack sets none), which every password-hash bound uses.
var stackArgon2 = password.DefaultParams()

// measureHashBound is the password-hash bound: wall time per argon2id
// verification with the server's parameters and hasher, both cores
// verifying (0 when the parameters are refused).
func measureHashBound(p password.Params) time.Duration {
	h, err := password.NewHasher(p)
	if err != nil {
		return 0
	}
	hash, _ := h.Hash(context.Background(), "bench password that is long")
	r := testing.Benchmark(func(tb *testing.B) {
		tb.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _, _, _ = h.Verify(context.Background(), hash, "bench password that is long")
			}
		})
	})
	return time.Duration(r.NsPerOp())
}

// hashRate returns the password-hash bound over a given time, for the
// password pairing: argon2id verifications per second with the server's
// parameters and hasher, one verifier per core, counted until the last
// one finishes (0 when the parameters are refused).
func hashRate(p password.Params) func(time.Duration) float64 {
	h, err := password.NewHasher(p)
	if err != nil {
		return func(time.Duration) float64 { return 0 }
	}
	ctx := context.Background()
	const pw = "bench password that is long"
	hash, _ := h.Hash(ctx, pw)
	verifyOnEveryCore := func(until time.Time) int64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		for range runtime.GOMAXPROCS(0) {
			wg.Go(func() {
				for first := true; first || time.Now().Before(until); first = false {
					_, _, _, _ = h.Verify(ctx, hash, pw)
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return n.Load()
	}
	verifyOnEveryCore(time.Time{}) // every slot's memory allocated before the first slice
	return func(d time.Duration) float64 {
		start := time.Now()
		n := verifyOnEveryCore(start.Add(d))
		return float64(n) / time.Since(start).Seconds()
	}
}

// hashBoundAround measures the password-hash bound just before and just
// after run (the password scenario), so that the target compares the
// scenario with the machine it ran on: this host's speed drifts by a
// quarter within a run, and the bound measured at the run's start read
// anywhere from 69% to 192% of the rate that followed.
func hashBoundAround(measure func() time.Duration, run func() (Result, error)) (Result, error) {
	before := measure()
	r, err := run()
	if err != nil {
		return r, err
	}
	after := measure()
	if before > 0 && after > 0 {
		r.HashBound = [2]time.Duration{before, after}
	}
	return r, nil
}

func renderReport(so StackOptions, all []StackResult, b Bounds) string {
	var w strings.Builder
	cores := runtime.NumCPU()
	if so.Rate > 0 {
		fmt.Fprintf(&w, "## Soak (`make soak`): steady %.0f req/s of mixed traffic\n\n", so.Rate)
	} else {
		fmt.Fprintf(&w, "## HTTP load (`make bench`)\n\n")
	}
	fmt.Fprintf(&w, "Measured %s on %s/%s, %d cores (%s), Go %s. PostgreSQL + Redis + one `portcullis serve` + this load driver all on the same machine; "+
		"%d workers%s, %s per scenario after a 2 s warm-up, rate limits off, argon2id %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, cores, cpuModel(), runtime.Version(),
		so.Concurrency, pacing(so.Rate), so.Duration, b.Argon2)
	fmt.Fprintf(&w, "| alg | scenario | req/s | p50 | p99 | errors | server CPU per request | whole stack's CPU per request | cores: server / driver / Redis / PostgreSQL, machine | machine speed before it |\n"+
		"|---|---|---:|---:|---:|---:|---:|---:|---|---:|\n")
	first := firstProbe(all)
	for _, s := range all {
		for _, r := range s.Results {
			server, stack, split := "", "", ""
			if r.CPU != nil && r.Requests > 0 {
				server = perRequest(r.CPU.Server, r.Requests).String()
				stack = stackCost(r).String()
				split = r.CPU.String()
			}
			fmt.Fprintf(&w, "| %s | %s | %.0f | %s | %s | %d | %s | %s | %s | %s |\n", s.Alg, r.Scenario, r.RPS, r.P50.Round(10*time.Microsecond),
				r.P99.Round(10*time.Microsecond), r.Errors, server, stack, split, probeCell(r.Probe, first))
		}
	}
	if first > 0 {
		fmt.Fprintf(&w, "\nMachine speed before it: the probe (cmd/portcullis-loadtest/probe.go) just before the scenario, with nothing else running: "+
			"Ed25519 signatures per second on all %d cores for %s, and that as a share of the run's first probe (%.0f/s). "+
			"The host slows this machine under sustained load without reporting steal time; a probe below the first means "+
			"every process of that scenario ran on a slower machine. `portcullis-loadtest -probe` measures a rested machine.\n",
			cores, probeDuration, first)
	}
	fmt.Fprintf(&w, "\nCPU is read from /proc over each scenario's measured time: the server's process (for http_ceiling, the bare server's), "+
		"this driver, every Redis and every PostgreSQL process, and how busy the whole machine was. The whole stack's CPU per request "+
		"is the four together over the requests completed; %d cores divided by it is the most the machine could complete at that cost "+
		"(the stack bound below). http_ceiling is the jwks scenario against a bare net/http server in its own process that replays "+
		"the real server's JWKS response (same bytes and headers, no Echo, no middleware): no request can be cheaper on this machine. "+
		"apikey_verify runs keys/verify inside this driver (the downstream service's side), so its cost is the driver's.\n", cores)
	fmt.Fprintf(&w, "\nBounds measured in the same run, with nothing else running: the operation alone on all %d cores at once "+
		"(Go `RunParallel`), so a bound is what the machine could do if the server did nothing but that operation", cores)
	if first := firstProbe(all); b.Probe > 0 && first > 0 {
		fmt.Fprintf(&w, ". They are measured after every scenario; the machine-speed probe before them read %.0f/s, %.0f%% of the run's first, "+
			"so a share of a bound compares a scenario with the machine as it was at the end of the run", b.Probe, 100*b.Probe/first)
	}
	w.WriteString(":\n\n")
	fmt.Fprintf(&w, "| operation | wall time per op, %d cores busy | bound |\n|---|---:|---:|\n", cores)
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		if d := b.SignPerAlg[alg]; d > 0 {
			fmt.Fprintf(&w, "| sign %s | %s | %.0f/s |\n", alg, d.Round(time.Microsecond), 1/d.Seconds())
		}
	}
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		if d := b.VerifyPerAlg[alg]; d > 0 {
			fmt.Fprintf(&w, "| verify %s | %s | %.0f/s |\n", alg, d.Round(time.Microsecond), 1/d.Seconds())
		}
	}
	if b.PasswordHash > 0 {
		fmt.Fprintf(&w, "| argon2id verify | %s | %.0f/s |\n", b.PasswordHash.Round(time.Microsecond), 1/b.PasswordHash.Seconds())
	}
	for _, s := range all {
		if so.Rate > 0 && len(s.RSS) >= 3 { // memory is only meaningful at a steady rate
			first, last, max := s.RSS[0], s.RSS[len(s.RSS)-1], int64(0)
			for _, v := range s.RSS {
				if v > max {
					max = v
				}
			}
			fmt.Fprintf(&w, "\nServer memory (%s, RSS every 10 s, %d samples): first %.1f MiB, last %.1f MiB, max %.1f MiB; growth first→last %+.1f%%.\n",
				s.Alg, len(s.RSS), float64(first)/1024, float64(last)/1024, float64(max)/1024, 100*float64(last-first)/float64(first))
		}
	}
	if so.Rate > 0 {
		return w.String() // a soak checks errors and memory, not the throughput targets
	}
	for _, s := range all {
		for _, r := range s.Results {
			p := s.Profiles[r.Scenario]
			if p == "" {
				continue
			}
			fmt.Fprintf(&w, "\nWhere the time goes in %s (%s): the server's CPU profile over the scenario (`.bench/cpu-%s-%s.pprof`)",
				profiledScenarios[r.Scenario], s.Alg, s.Alg, r.Scenario)
			if len(r.Shares) > 0 && r.CPU != nil {
				fmt.Fprintf(&w, ", by what the samples were doing (each sample counted once, cmd/portcullis-loadtest/profilecat.go), then its top functions:\n\n%s", shareTable(r.Shares, perRequest(r.CPU.Server, r.Requests)))
			} else {
				w.WriteString(":\n")
			}
			fmt.Fprintf(&w, "\n```\n%s\n```\n", p)
		}
	}
	for _, s := range all {
		for _, r := range s.Results {
			if r.Scenario == "mfa" {
				fmt.Fprintf(&w, "\nmfa (%s) is the `mfa-recovery-code` grant that finishes a password login with a second factor "+
					"(mfa_tokens minted before the clock; see cmd/portcullis-loadtest/mfa.go for why not `mfa-otp`): %.0f/s.\n", s.Alg, r.RPS)
			}
		}
	}
	writeIssue21(&w, all, b, cores)
	w.WriteString("\nTargets (issue 4; sso: issue 13; API keys: issue 18):\n\n")
	for _, s := range all {
		for _, r := range s.Results {
			switch {
			case s.Alg == "EdDSA" && r.Scenario == "client_credentials":
				fmt.Fprintf(&w, "- EdDSA client_credentials %.0f/s (target ≥ 4,000/s): %s\n", r.RPS, verdict(r.RPS >= 4000))
			case s.Alg == "EdDSA" && r.Scenario == "refresh":
				fmt.Fprintf(&w, "- EdDSA refresh %.0f/s (target ≥ 1,500/s): %s\n", r.RPS, verdict(r.RPS >= 1500))
			case s.Alg == "EdDSA" && r.Scenario == "sso":
				fmt.Fprintf(&w, "- EdDSA SSO round trips %.0f/s (target ≥ 1,500/s, 0 errors): %s\n", r.RPS, verdict(r.RPS >= 1500 && r.Errors == 0))
			case s.Alg == "EdDSA" && r.Scenario == "introspection":
				fmt.Fprintf(&w, "- EdDSA introspection %.0f/s (target ≥ 4,000/s): %s\n", r.RPS, verdict(r.RPS >= 4000))
			case s.Alg == "EdDSA" && (r.Scenario == "apikey_introspection" || r.Scenario == "apikey_verify"):
				fmt.Fprintf(&w, "- EdDSA %s %.0f/s (target ≥ 4,000/s, 0 errors): %s\n", r.Scenario, r.RPS, verdict(r.RPS >= 4000 && r.Errors == 0))
			case s.Alg == "RS256" && r.Scenario == "client_credentials":
				bound := 1 / b.SignPerAlg["RS256"].Seconds()
				fmt.Fprintf(&w, "- RS256 client_credentials %.0f/s = %.0f%% of the RSA-signing bound %.0f/s (target ≥ 70%%): %s\n", r.RPS, 100*r.RPS/bound, bound, verdict(r.RPS >= 0.7*bound))
			case r.Scenario == "password" && r.HashBound[0] > 0:
				before, after := 1/r.HashBound[0].Seconds(), 1/r.HashBound[1].Seconds()
				bound := (before + after) / 2
				fmt.Fprintf(&w, "- %s password %.0f/s = %.1f%% of the password-hash bound %.0f/s, measured around the scenario "+
					"(%.0f/s just before it, %.0f/s just after; %.0f/s at the run's start) (target ≥ 90%%): %s\n",
					s.Alg, r.RPS, 100*r.RPS/bound, bound, before, after, 1/b.PasswordHash.Seconds(), verdict(r.RPS >= 0.9*bound))
			case r.Scenario == "password" && b.PasswordHash > 0:
				bound := 1 / b.PasswordHash.Seconds()
				fmt.Fprintf(&w, "- %s password %.0f/s = %.1f%% of the password-hash bound %.0f/s (target ≥ 90%%): %s\n", s.Alg, r.RPS, 100*r.RPS/bound, bound, verdict(r.RPS >= 0.9*bound))
			}
		}
	}
	return w.String()
}

// firstProbe is the run's first machine-speed probe (0 when none was taken).
func firstProbe(all []StackResult) float64 {
	for _, s := range all {
		for _, r := range s.Results {
			if r.Probe > 0 {
				return r.Probe
			}
		}
	}
	return 0
}

// probeCell is a scenario's probe for the report: the rate and its share
// of the run's first.
func probeCell(probe, first float64) string {
	if probe <= 0 || first <= 0 {
		return ""
	}
	return fmt.Sprintf("%.0f/s (%.0f%%)", probe, 100*probe/first)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

func pacing(rate float64) string {
	if rate > 0 {
		return fmt.Sprintf(" paced together at %.0f req/s (mixed: client_credentials, introspection, userinfo, refresh, JWKS, and one password login in 20)", rate)
	}
	return " in a closed loop"
}

// reportServerLog writes the server's warnings and errors of a stack run
// (at most 20 lines, then how many more) to w, so that a request the report
// counts as an error has the server's side of it in the run's log. The
// server runs at PORTCULLIS_LOG_LEVEL=error; a clean run writes nothing.
func reportServerLog(w io.Writer, alg, logs string) {
	const most = 20
	var lines []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, `"level":"WARN"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "%s: the server logged %d warnings and errors:\n", alg, len(lines))
	for _, l := range lines[:min(most, len(lines))] {
		fmt.Fprintln(w, "  "+l)
	}
	if len(lines) > most {
		fmt.Fprintf(w, "  … and %d more\n", len(lines)-most)
	}
}
