// Command portcullis-loadtest drives a running Portcullis with closed-loop
// HTTP load (a fixed number of concurrent workers) for a fixed duration per
// scenario and prints requests/s with p50/p99 latency.
//
// Scenarios: password, refresh, client_credentials, introspection, userinfo,
// jwks, sso and code_redemption (browser sign-in, see sso.go), mfa (the
// mfa-recovery-code grant, see mfa.go), and apikey_introspection and
// apikey_verify (API keys at introspection and through keys/verify, see
// apikeys.go). It needs a user and clients (see -help); `make bench` sets all of it
// up on real PostgreSQL + Redis and writes docs/benchmarks.md. Against a
// server of your own, raise PORTCULLIS_MAX_SESSIONS_PER_USER: the one test
// user's logins would otherwise end the sessions the refresh workers use.
//
// It only ever sends traffic to the -url it is given; use loopback.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a run.
type Options struct {
	URL         string
	Duration    time.Duration
	Warmup      time.Duration
	Concurrency int
	Username    string
	Password    string
	UserClient  string // confidential client with password + refresh_token
	UserSecret  string
	// KeyClient is a confidential password-grant client whose tokens carry
	// the issuer audience, which creating an API key with an admin
	// permission needs (the API key scenarios); "" means UserClient.
	KeyClient   string
	KeySecret   string
	CCClient    string // confidential client with client_credentials
	CCSecret    string
	CodeClient  string // confidential first-party client of the code flow (sso, code_redemption)
	CodeSecret  string
	RedirectURI string // its registered redirect URI
	MaxRequests int64  // safety bound on requests per scenario
	// Rate, when positive, paces all workers together to this many requests/s (open loop).
	Rate float64
	// OnMeasure, when set, is called (on its own goroutine) when the
	// warm-up ends and measuring starts.
	OnMeasure func()
}

// Result is one scenario's figures.
type Result struct {
	Scenario    string
	Requests    int64
	Errors      int64
	Duration    time.Duration
	RPS         float64
	P50, P99    time.Duration
	Concurrency int
	// CPU is where the machine's CPU went during the measured time (-stack
	// runs only); Profile the server's `go tool pprof -top`, when taken.
	CPU     *CPUUse
	Profile string
	Shares  []CPUShare // the server profile by category, when taken
	// Probe is the machine's speed just before the scenario (probe.go):
	// Ed25519 signatures per second on every core, nothing else running.
	Probe float64
	// HashBound is, for the password scenario of a stack run, the
	// password-hash bound measured just before and just after it
	// (hashBoundAround).
	HashBound [2]time.Duration
}

func main() {
	var o Options
	scenarios := flag.String("scenarios", "jwks,client_credentials,introspection,userinfo,refresh,password", "comma-separated scenarios")
	flag.StringVar(&o.URL, "url", "http://127.0.0.1:8080", "Portcullis base URL (loopback only)")
	flag.DurationVar(&o.Duration, "duration", 10*time.Second, "measured time per scenario")
	flag.DurationVar(&o.Warmup, "warmup", 2*time.Second, "unmeasured warm-up per scenario")
	flag.IntVar(&o.Concurrency, "concurrency", 32, "concurrent workers")
	flag.StringVar(&o.Username, "username", "bench@example.com", "user for password/refresh/userinfo")
	flag.StringVar(&o.Password, "password", "", "that user's password")
	flag.StringVar(&o.UserClient, "user-client", "bench-web", "client for user grants")
	flag.StringVar(&o.UserSecret, "user-secret", "", "its secret")
	flag.StringVar(&o.KeyClient, "key-client", "", "client whose tokens carry the issuer audience, to create the API key scenarios' keys (default: -user-client)")
	flag.StringVar(&o.KeySecret, "key-secret", "", "its secret")
	flag.StringVar(&o.CCClient, "cc-client", "bench-svc", "client_credentials client (also introspects)")
	flag.StringVar(&o.CCSecret, "cc-secret", "", "its secret")
	flag.StringVar(&o.CodeClient, "code-client", "bench-app", "first-party client with authorization_code (sso, code_redemption)")
	flag.StringVar(&o.CodeSecret, "code-secret", "", "its secret")
	flag.StringVar(&o.RedirectURI, "redirect-uri", benchRedirectURI, "its registered redirect URI")
	flag.Int64Var(&o.MaxRequests, "max-requests", 5_000_000, "stop a scenario after this many requests")
	stack := flag.String("stack", "", "path of a portcullis binary: start it on TEST_DATABASE_URL + TEST_REDIS_URL, seed it and load it")
	algs := flag.String("algs", "EdDSA,RS256", "with -stack: signing algorithms to run the stack with")
	report := flag.String("report", "", "with -stack: write the markdown report here")
	section := flag.String("section", "http", "with -report: the section of the file to replace")
	goBench := flag.String("go-bench", "", "write this `go test -bench` output as the \"go\" section of -report and exit")
	flag.Float64Var(&o.Rate, "rate", 0, "steady request rate for all workers together (0: as fast as possible)")
	cpuProfile := flag.String("cpuprofile", "", "write the load driver's own CPU profile here")
	probe := flag.Bool("probe", false, "print the machine's speed (probe.go: Ed25519 signatures per second on every core, over 1 s) and exit")
	ceilingAddr := flag.String("serve-ceiling", "", "run the bare HTTP server of the http_ceiling scenario on this address (used by -stack)")
	ceilingResponse := flag.String("ceiling-response", "", "with -serve-ceiling: the recorded response to replay")
	flag.Parse()
	if *probe {
		fmt.Printf("%.0f Ed25519 signatures/s on %d cores\n", probeSpeed(time.Second), runtime.NumCPU())
		return
	}
	if *ceilingAddr != "" {
		if err := serveCeiling(*ceilingAddr, *ceilingResponse); err != nil {
			fmt.Fprintln(os.Stderr, "portcullis-loadtest:", err)
			os.Exit(1)
		}
		return
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "portcullis-loadtest:", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "portcullis-loadtest:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	if *goBench != "" {
		out, err := os.ReadFile(*goBench)
		if err == nil {
			err = WriteSection(*report, "go", "## Go benchmarks (`make bench`)\n\n"+
				"`go test -run '^$' -bench . -benchmem` on the same machine; ns/op is per operation on one goroutine.\n\n```\n"+
				strings.TrimSpace(string(out))+"\n```\n")
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "portcullis-loadtest:", err)
			os.Exit(1)
		}
		return
	}
	if *stack != "" {
		err := runStack(StackOptions{Binary: *stack, Algs: strings.Split(*algs, ","), Scenarios: strings.Split(*scenarios, ","),
			Duration: o.Duration, Concurrency: o.Concurrency, Report: *report, Section: *section, Rate: o.Rate})
		if err != nil {
			fmt.Fprintln(os.Stderr, "portcullis-loadtest:", err)
			os.Exit(1)
		}
		return
	}
	if err := checkLoopback(o.URL); err != nil {
		fmt.Fprintln(os.Stderr, "portcullis-loadtest:", err)
		os.Exit(2)
	}
	for _, sc := range strings.Split(*scenarios, ",") {
		r, err := Run(context.Background(), o, strings.TrimSpace(sc))
		if err != nil {
			fmt.Fprintln(os.Stderr, "portcullis-loadtest:", err)
			os.Exit(1)
		}
		fmt.Println(r)
	}
}

// String formats a result line.
func (r Result) String() string {
	return fmt.Sprintf("%-20s %9.0f req/s  p50 %8s  p99 %8s  (%d requests, %d errors, %d workers, %s)",
		r.Scenario, r.RPS, r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Requests, r.Errors, r.Concurrency, r.Duration.Round(time.Millisecond))
}

func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to load %s: only loopback targets are allowed", host)
	}
	return nil
}

// worker sends one request and reports whether it succeeded.
type worker func(ctx context.Context) bool

// failureLog writes the first few failures of a scenario to logOut, so
// that an error the report counts has its reason in the run's log.
type failureLog struct {
	scenario string
	left     atomic.Int32
}

// newFailureLog logs at most n failures of scenario.
func newFailureLog(scenario string, n int32) *failureLog {
	f := &failureLog{scenario: scenario}
	f.left.Store(n)
	return f
}

// fail logs one failure (format and args say why) unless the run is over
// (ctx done: the driver counts nothing then) or n were logged; it returns
// false, the worker's answer for a failed request.
func (f *failureLog) fail(ctx context.Context, format string, args ...any) bool {
	if ctx.Err() == nil && f.left.Add(-1) >= 0 {
		fmt.Fprintf(logOut, "%s: a request failed: %s\n", f.scenario, fmt.Sprintf(format, args...))
	}
	return false
}

// driverClient is the HTTP client of a run against o.URL: the driver's own
// transport for plain http (transport.go), net/http's for https, which
// directTransport does not speak. Requests time out after 10 s. No
// Client.Timeout with directTransport: the client would run a timer
// goroutine per request; the transport applies the timeout itself.
func driverClient(o Options) *http.Client {
	const timeout = 10 * time.Second
	if strings.HasPrefix(o.URL, "https://") {
		return &http.Client{Timeout: timeout, Transport: &http.Transport{
			MaxIdleConns: o.Concurrency * 2, MaxIdleConnsPerHost: o.Concurrency * 2, IdleConnTimeout: time.Minute,
		}}
	}
	return &http.Client{Transport: newDirectTransport(timeout)}
}

// Run executes one scenario.
func Run(ctx context.Context, o Options, scenario string) (Result, error) {
	client := driverClient(o)
	defer client.CloseIdleConnections()
	// A scenario with a finite supply (code_redemption's minted codes, mfa's
	// minted mfa_tokens) calls
	// end when it runs out; the run stops then and is timed up to there.
	ended, measuring := make(chan struct{}), make(chan struct{})
	var endOnce sync.Once
	fin := finite{end: func() { endOnce.Do(func() { close(ended) }) }, measuring: measuring}
	mk, err := scenarioWorker(ctx, client, o, scenario, fin)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", scenario, err)
	}
	return run(ctx, o, scenario, mk, ended, measuring)
}

// run drives the workers mk makes: all of them prepared first, then a
// warm-up, then the measured time (or until ended is closed); measuring is
// closed when the warm-up ends.
func run(ctx context.Context, o Options, scenario string, mk func() (worker, error), ended <-chan struct{}, measuring chan struct{}) (Result, error) {
	var err error
	var (
		measured  atomic.Bool
		requests  atomic.Int64
		errors    atomic.Int64
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, 1<<16)
	)
	// Every worker is prepared before the clock starts: a worker's
	// preparation (a password login for refresh) would otherwise compete
	// with the others' measured requests.
	workers := make([]worker, o.Concurrency)
	for i := range workers {
		if workers[i], err = mk(); err != nil {
			return Result{}, fmt.Errorf("%s: prepare worker: %w", scenario, err)
		}
	}
	runCtx, cancel := context.WithTimeout(ctx, o.Warmup+o.Duration)
	defer cancel()
	go func() {
		select {
		case <-ended:
			cancel()
		case <-runCtx.Done():
		}
	}()
	var start time.Time
	time.AfterFunc(o.Warmup, func() {
		start = time.Now()
		measured.Store(true)
		close(measuring)
		if o.OnMeasure != nil {
			o.OnMeasure()
		}
	})
	var pace chan struct{}
	if o.Rate > 0 {
		pace = make(chan struct{}, o.Concurrency)
		go func() {
			interval := time.Duration(float64(time.Second) / o.Rate)
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
					select {
					case pace <- struct{}{}:
					default: // all workers busy: the server is behind; counted by latency
					}
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for runCtx.Err() == nil {
				if pace != nil {
					select {
					case <-pace:
					case <-runCtx.Done():
						continue
					}
				}
				t0 := time.Now()
				ok := w(runCtx)
				d := time.Since(t0)
				// A request counts when it completes in the measured
				// time, whenever it began: the rate is completions per
				// second. Counting only those begun in it left out, at
				// the start, the requests in flight then: it
				// under-counted a path by its latency over the measured
				// time (4% for 10 s of logins at 400 ms, 10% for a 4 s
				// slice of them).
				if !measured.Load() || runCtx.Err() != nil {
					continue
				}
				if requests.Add(1) > o.MaxRequests {
					cancel()
				}
				if !ok {
					errors.Add(1)
				}
				local = append(local, d)
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if !measured.Load() {
		return Result{}, fmt.Errorf("%s: the run ended during the warm-up", scenario)
	}
	elapsed := time.Since(start)
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	r := Result{Scenario: scenario, Requests: requests.Load(), Errors: errors.Load(), Duration: elapsed, Concurrency: o.Concurrency}
	if n := len(latencies); n > 0 {
		r.P50, r.P99 = latencies[n/2], latencies[n*99/100]
		r.RPS = float64(n) / elapsed.Seconds()
	}
	return r, nil
}

// finite is what a scenario with a finite supply (minted codes or
// mfa_tokens) needs of the run: end stops it when the supply runs out, and
// measuring is closed when the warm-up ends (a scenario may spare its
// supply until then).
type finite struct {
	end       func()
	measuring <-chan struct{}
}

func scenarioWorker(ctx context.Context, c *http.Client, o Options, scenario string, fin finite) (func() (worker, error), error) {
	tokenURL := o.URL + "/oauth2/token"
	switch scenario {
	case "jwks":
		return func() (worker, error) {
			return func(ctx context.Context) bool { return get(ctx, c, o.URL+"/.well-known/jwks.json", "") == 200 }, nil
		}, nil
	case "client_credentials":
		form := url.Values{"grant_type": {"client_credentials"}}.Encode()
		return func() (worker, error) {
			return func(ctx context.Context) bool {
				code, _ := post(ctx, c, tokenURL, form, o.CCClient, o.CCSecret)
				return code == 200
			}, nil
		}, nil
	case "password":
		form := url.Values{"grant_type": {"password"}, "username": {o.Username}, "password": {o.Password}}.Encode()
		return func() (worker, error) {
			return func(ctx context.Context) bool {
				code, _ := post(ctx, c, tokenURL, form, o.UserClient, o.UserSecret)
				return code == 200
			}, nil
		}, nil
	case "refresh":
		// Each worker owns a session and rotates its refresh token on every request.
		return func() (worker, error) {
			tok, err := login(ctx, c, o)
			if err != nil {
				return nil, err
			}
			rt := tok.RefreshToken
			return func(ctx context.Context) bool {
				code, body := post(ctx, c, tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}.Encode(), o.UserClient, o.UserSecret)
				if code != 200 {
					if t, err := login(ctx, c, o); err == nil {
						rt = t.RefreshToken
					}
					return false
				}
				var tr tokenResponse
				if json.Unmarshal(body, &tr) != nil || tr.RefreshToken == "" {
					return false
				}
				rt = tr.RefreshToken
				return true
			}, nil
		}, nil
	case "introspection":
		tok, err := login(ctx, c, o)
		if err != nil {
			return nil, err
		}
		form := url.Values{"token": {tok.AccessToken}}.Encode()
		return func() (worker, error) {
			return func(ctx context.Context) bool {
				code, body := post(ctx, c, o.URL+"/oauth2/introspect", form, o.CCClient, o.CCSecret)
				return code == 200 && bytes.Contains(body, []byte(`"active":true`))
			}, nil
		}, nil
	case "sso":
		return ssoWorker(ctx, c, o, fin.end)
	case "code_redemption":
		return codeRedemptionWorker(ctx, c, o, fin.end)
	case "mfa":
		return mfaWorker(ctx, c, o, fin)
	case "apikey_introspection":
		return apiKeyIntrospectionWorker(ctx, c, o)
	case "apikey_verify":
		return apiKeyVerifyWorker(ctx, c, o)
	case "userinfo":
		tok, err := login(ctx, c, o)
		if err != nil {
			return nil, err
		}
		return func() (worker, error) {
			return func(ctx context.Context) bool { return get(ctx, c, o.URL+"/userinfo", tok.AccessToken) == 200 }, nil
		}, nil
	}
	if scenario == "mixed" {
		// Every worker rotates through the paths: mostly token and
		// verification traffic, a password login one time in 20.
		parts := []string{"client_credentials", "introspection", "userinfo", "refresh", "jwks"}
		makers := map[string]func() (worker, error){}
		for _, p := range append(parts, "password") {
			mk, err := scenarioWorker(ctx, c, o, p, fin)
			if err != nil {
				return nil, err
			}
			makers[p] = mk
		}
		return func() (worker, error) {
			ws := map[string]worker{}
			for name, mk := range makers {
				w, err := mk()
				if err != nil {
					return nil, err
				}
				ws[name] = w
			}
			i := 0
			return func(ctx context.Context) bool {
				i++
				if i%20 == 0 {
					return ws["password"](ctx)
				}
				return ws[parts[i%len(parts)]](ctx)
			}, nil
		}, nil
	}
	return nil, fmt.Errorf("unknown scenario %q", scenario)
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

func login(ctx context.Context, c *http.Client, o Options) (tokenResponse, error) {
	form := url.Values{"grant_type": {"password"}, "username": {o.Username}, "password": {o.Password}}.Encode()
	code, body := post(ctx, c, o.URL+"/oauth2/token", form, o.UserClient, o.UserSecret)
	if code != 200 {
		return tokenResponse{}, fmt.Errorf("login: status %d: %s", code, body)
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return tr, err
	}
	return tr, nil
}

func post(ctx context.Context, c *http.Client, u, form, id, secret string) (int, []byte) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form))
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return do(c, req)
}

func get(ctx context.Context, c *http.Client, u, bearer string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	code, _ := do(c, req)
	return code
}

func do(c *http.Client, req *http.Request) (int, []byte) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}
