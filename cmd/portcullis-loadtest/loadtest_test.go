package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

var sink int // keeps the busy loop below from being optimised away

// TestCPUReadings: the readings from /proc see this process's own work
// and the machine's, and the split adds up.
func TestCPUReadings(t *testing.T) {
	u := startCPU(os.Getpid())
	deadline := time.Now().Add(5 * time.Second)
	for procCPU(os.Getpid())-u.startDriver < 3*clockTick {
		if time.Now().After(deadline) {
			t.Fatal("no CPU time seen for a busy loop in 5 s")
		}
		for i := 0; i < 1e6; i++ {
			sink += i * i
		}
	}
	u.stop()
	if u.Driver < 3*clockTick || u.Server != u.Driver {
		t.Errorf("driver %v, server (the same process) %v: want at least %v, equal", u.Driver, u.Server, 3*clockTick)
	}
	if u.MachineBusy <= 0 || u.MachineBusy > 1 {
		t.Errorf("machine busy %v, want in (0, 1]", u.MachineBusy)
	}
	if c := u.cores(u.Driver); c <= 0 || c > 2.5 {
		t.Errorf("driver %v cores over %v", c, u.Wall)
	}
	if procCPU(1<<30) != 0 || namedCPU("no-such-command-here") != 0 {
		t.Error("a process that does not exist used CPU")
	}
	if preemptions(1<<30) != 0 {
		t.Error("a process that does not exist was preempted")
	}
}

// TestSwitchCounts: the machine's task switches are read from /proc/stat
// and grow when a thread sleeps; the counters are read from their own
// lines only; a counter that went down counts nothing.
func TestSwitchCounts(t *testing.T) {
	_, _, before := machineCPU()
	for range 5 {
		time.Sleep(time.Millisecond) // the thread sleeps: its core switches
	}
	if _, _, after := machineCPU(); before == 0 || after <= before {
		t.Errorf("machine switches %d then %d, want growing", before, after)
	}
	status := "Name:\tportcullis\nvoluntary_ctxt_switches:\t900\nnonvoluntary_ctxt_switches:\t42\n"
	stat := "cpu  1 2 3\nintr 7 8\nctxt 12345\nbtime 1\n"
	tests := []struct {
		text, prefix string
		want         uint64
	}{
		{status, "nonvoluntary_ctxt_switches:", 42},
		{status, "voluntary_ctxt_switches:", 900},
		{stat, "ctxt ", 12345},
		{stat, "processes ", 0},
		{"ctxt x\n", "ctxt ", 0},
	}
	for _, tt := range tests {
		if got := field(tt.text, tt.prefix); got != tt.want {
			t.Errorf("field(%q, %q) = %d, want %d", tt.text, tt.prefix, got, tt.want)
		}
	}
	if counted(10, 4) != 0 || counted(4, 10) != 6 {
		t.Error("counted: want 0 for a counter that went down, the increase otherwise")
	}
}

// TestCostReason: the stack's cost per request, the bound it sets, and
// the cut a target needs, from measured CPU.
func TestCostReason(t *testing.T) {
	r := Result{Scenario: "sso", Requests: 1000, CPU: &CPUUse{Wall: time.Second, Server: 800 * time.Millisecond,
		Driver: 300 * time.Millisecond, Redis: 350 * time.Millisecond, Postgres: 150 * time.Millisecond, MachineBusy: 0.9}}
	if got := stackCost(r); got != 1600*time.Microsecond {
		t.Fatalf("stack cost %v, want 1.6ms", got)
	}
	if got := stackBound(r, 2); got < 1249 || got > 1251 {
		t.Fatalf("bound %v/s, want 1250", got)
	}
	for _, tc := range []struct {
		target float64
		want   []string
		not    string
	}{
		{1500, []string{"1.6ms of CPU", "server 800µs", "driver 300µs", "Redis 350µs", "PostgreSQL 150µs", "90% busy",
			"at most 1250/s", "at or under 1.333ms", "(17% less) even with no idle time", "at the 90% busy measured, at or under 1.2ms (25% less)"}, ""},
		// Under the fully busy bound, but over what the measured 90% allows.
		{1200, []string{"at most 1250/s", "at the 90% busy measured, at or under 1.5ms (6% less)"}, "no idle time"},
		{1000, []string{"at most 1250/s"}, "less)"},
	} {
		got := costReason(r, tc.target, 2)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("target %v: %q lacks %q", tc.target, got, w)
			}
		}
		if tc.not != "" && strings.Contains(got, tc.not) {
			t.Errorf("target %v under the bound: %q says a cut is needed", tc.target, got)
		}
	}
	if costReason(Result{Requests: 10}, 1, 2) != "" || stackBound(Result{}, 2) != 0 {
		t.Error("a result without CPU readings gave a reason")
	}
}

// TestCategorize: each sample counts once, for the first category that
// matches anywhere on its stack.
func TestPathFloor(t *testing.T) {
	us := time.Microsecond
	// 10,000 requests each: per-request costs are the totals / 10,000.
	use := func(server, driver, redis time.Duration) *CPUUse {
		return &CPUUse{Server: server * 10000, Driver: driver * 10000, Redis: redis * 10000}
	}
	jwks := Result{Requests: 10000, RPS: 25000, CPU: use(35*us, 29*us, 0)}
	crypto := func(share float64) []CPUShare { return []CPUShare{{Category: categories[0].name, Share: share}} }
	tests := []struct {
		name   string
		r      Result
		target float64
		want   []string
		cannot bool
	}{
		{"client_credentials: the floor is above the target's cost", Result{Requests: 10000, CPU: use(100*us, 60*us, 0), Shares: crypto(0.3)}, 17000,
			// floor = 64 + 30 + 0 + 31 = 125 µs: 25,000 × 64/125 = 12,800/s at JWKS's load, 2/125 µs = 16,000/s on two busy cores
			[]string{"(64µs)", "verification (30µs", "(0s)", "(31µs)", "cost 125µs and the path would run at 12800/s at the JWKS run's load (51% of the JWKS rate), at most 16000/s"}, true},
		{"client_credentials: room left for the rest", Result{Requests: 10000, CPU: use(80*us, 35*us, 0), Shares: crypto(0.25)}, 15000,
			// floor = 64 + 20 + 6 = 90 µs; the rest is 115 - 90 = 25 µs; the target allows 64 × 25,000/15,000 - 90 = 16.67 → 17 µs
			[]string{"cost 90µs", "cost 25µs and must come to 17µs or less"}, false},
		{"above the rate at JWKS's load, under the rate of busy cores: not impossible", Result{Requests: 10000, CPU: use(100*us, 60*us, 0), Shares: crypto(0.3)}, 15000,
			[]string{"at most 16000/s", "even the floor is under the target, which needs the machine busier"}, false},
		{"introspection: Redis counts in the floor", Result{Requests: 10000, CPU: use(200*us, 50*us, 25*us), Shares: crypto(0.25)}, 20000,
			// floor = 64 + 50 + 25 + 21 = 160 µs: 10,000/s at JWKS's load, 12,500/s on two busy cores
			[]string{"Redis and PostgreSQL (25µs)", "cost 160µs and the path would run at 10000/s at the JWKS run's load (40% of the JWKS rate), at most 12500/s"}, true},
		{"a driver cheaper than JWKS's adds nothing", Result{Requests: 10000, CPU: use(80*us, 20*us, 0), Shares: crypto(0.25)}, 15000,
			[]string{"answer over the JWKS one (0s)", "cost 84µs"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pathFloor(tc.r, jwks, tc.target, 2)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("pathFloor = %q\nwant it to contain %q", got, w)
				}
			}
			if strings.Contains(got, "cannot be met") != tc.cannot {
				t.Errorf("pathFloor = %q: want cannot-be-met %v", got, tc.cannot)
			}
		})
	}
	if got := pathFloor(Result{Requests: 10000, CPU: use(80*us, 35*us, 0)}, jwks, 15000, 2); got != "" {
		t.Errorf("without a profile pathFloor = %q, want nothing", got)
	}
}

func TestCategorize(t *testing.T) {
	fns := map[string]*profile.Function{}
	var locs []*profile.Location
	loc := func(name string) *profile.Location {
		f, ok := fns[name]
		if !ok {
			f = &profile.Function{ID: uint64(len(fns) + 1), Name: name}
			fns[name] = f
		}
		l := &profile.Location{ID: uint64(len(locs) + 1), Line: []profile.Line{{Function: f}}}
		locs = append(locs, l)
		return l
	}
	stack := func(names ...string) []*profile.Location { // leaf first
		var out []*profile.Location
		for _, n := range names {
			out = append(out, loc(n))
		}
		return out
	}
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{
			// A signature made inside a Redis call counts as signing.
			{Value: []int64{1, 40}, Location: stack("crypto/ed25519.Sign", "github.com/redis/go-redis/v9.(*Client).Process",
				"github.com/labstack/echo/v4.(*Echo).ServeHTTP", "net/http.(*conn).serve")},
			{Value: []int64{1, 30}, Location: stack("syscall.Syscall6", "github.com/redis/go-redis/v9.(*Client).Process",
				"github.com/labstack/echo/v4.(*Echo).ServeHTTP", "net/http.(*conn).serve")},
			{Value: []int64{1, 10}, Location: stack("strings.Cut", "github.com/labstack/echo/v4.(*Echo).ServeHTTP", "net/http.(*conn).serve")},
			{Value: []int64{1, 10}, Location: stack("syscall.Syscall6", "net/http.(*conn).serve")},
			{Value: []int64{1, 10}, Location: stack("runtime.futex", "runtime.schedule")},
		}}
	p.Function = make([]*profile.Function, 0, len(fns))
	for _, f := range fns {
		p.Function = append(p.Function, f)
	}
	p.Location = locs
	file := filepath.Join(t.TempDir(), "cpu.pprof")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	shares, err := categorize(file)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"signing and verifying": 0.4, "Redis client, its system calls included": 0.3,
		"handlers and middleware (Echo and Portcullis)": 0.1, "HTTP server: reading requests, writing responses": 0.1,
		"other (scheduler, timers, background work)": 0.1}
	var sum float64
	for _, s := range shares {
		sum += s.Share
		if d := s.Share - want[s.Category]; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: %.2f, want %.2f", s.Category, s.Share, want[s.Category])
		}
	}
	if sum < 0.999 || sum > 1.001 {
		t.Errorf("shares add up to %v", sum)
	}
	table := shareTable(shares, 100*time.Microsecond)
	if !strings.Contains(table, "| signing and verifying | 40% | 40µs |") || strings.Index(table, "signing") > strings.Index(table, "Redis") {
		t.Errorf("table not sorted by share or missing the cost per request:\n%s", table)
	}
	if _, err := categorize(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing profile categorized")
	}
}

// TestCeilingReplaysTheResponse: the bare server sends back exactly the
// recorded body and headers, whatever is asked.
func TestCeilingReplaysTheResponse(t *testing.T) {
	real := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = io.WriteString(w, `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"abc"}]}`)
	}))
	defer real.Close()
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := recordJWKS(real.URL, file); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var r replay
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	if r.Header.Get("Date") != "" || r.Header.Get("Content-Length") != "" {
		t.Errorf("recorded headers net/http sets itself: %v", r.Header)
	}
	bare := httptest.NewServer(r)
	defer bare.Close()
	resp, err := http.Get(bare.URL + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"abc"}]}` ||
		resp.Header.Get("Cache-Control") != "public, max-age=300" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("replayed %d %v %q", resp.StatusCode, resp.Header, body)
	}
	broken := httptest.NewServer(http.NotFoundHandler())
	defer broken.Close()
	if err := recordJWKS(broken.URL, file); err == nil {
		t.Error("a 404 was recorded as the JWKS")
	}
}

// TestRunPreparesWorkersFirst: every worker is prepared before the
// warm-up starts, so slow preparation (a password login per refresh
// worker) never competes with measured requests.
func TestRunPreparesWorkersFirst(t *testing.T) {
	var mu sync.Mutex
	var prepared []time.Time
	var measureAt time.Time
	o := Options{Concurrency: 4, Warmup: 20 * time.Millisecond, Duration: 50 * time.Millisecond, MaxRequests: 1 << 30,
		OnMeasure: func() { mu.Lock(); measureAt = time.Now(); mu.Unlock() }}
	mk := func() (worker, error) {
		time.Sleep(30 * time.Millisecond) // longer than the warm-up
		mu.Lock()
		prepared = append(prepared, time.Now())
		mu.Unlock()
		return func(context.Context) bool { time.Sleep(time.Millisecond); return true }, nil
	}
	r, err := run(context.Background(), o, "fake", mk, make(chan struct{}), make(chan struct{}))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(prepared) != 4 {
		t.Fatalf("%d workers prepared", len(prepared))
	}
	for i, p := range prepared {
		if !p.Before(measureAt) {
			t.Errorf("worker %d prepared %v after measuring started", i, p.Sub(measureAt))
		}
	}
	if r.Requests == 0 || r.Errors != 0 {
		t.Errorf("result %+v", r)
	}
}

// TestRunCountsCompletionsInTheMeasuredTime: a request counts when it
// completes in the measured time, even if it began in the warm-up (with a
// latency of hundreds of milliseconds, those were a tenth of a 4 s
// slice); one still in flight when the run ends does not count.
func TestRunCountsCompletionsInTheMeasuredTime(t *testing.T) {
	measuring := make(chan struct{})
	var calls atomic.Int32
	o := Options{Concurrency: 1, Warmup: 20 * time.Millisecond, Duration: 50 * time.Millisecond, MaxRequests: 1 << 30}
	mk := func() (worker, error) {
		return func(ctx context.Context) bool {
			if calls.Add(1) == 1 {
				<-measuring // begun in the warm-up, completed in the measured time
				return true
			}
			<-ctx.Done() // in flight when the run ends
			return false
		}, nil
	}
	r, err := run(context.Background(), o, "fake", mk, make(chan struct{}), measuring)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 1 || r.Errors != 0 || calls.Load() != 2 {
		t.Fatalf("%d requests counted (%d errors) of %d made, want the one completed in the measured time", r.Requests, r.Errors, calls.Load())
	}
}

// TestFailureLog: the first n failures of a scenario reach the run's log
// with their reason, concurrently logged failures included; none after n,
// none once the run is over; fail always answers false.
func TestFailureLog(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n        int32
		failures int
		over     bool
		want     int
	}{
		{"ok/fewer_than_n", 3, 2, false, 2},
		{"ok/capped_at_n", 3, 40, false, 3},
		{"ok/none_when_n_is_0", 0, 5, false, 0},
		{"ok/none_once_the_run_is_over", 3, 5, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf strings.Builder
			var mu sync.Mutex
			saved := logOut
			logOut = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
			defer func() { logOut = saved }()
			ctx, cancel := context.WithCancel(context.Background())
			if tc.over {
				cancel()
			}
			defer cancel()
			f := newFailureLog("apikey_verify", tc.n)
			var wg sync.WaitGroup
			for i := range tc.failures {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if f.fail(ctx, "status %d", 400+i) {
						t.Error("fail answered true")
					}
				}()
			}
			wg.Wait()
			lines := strings.Count(buf.String(), "apikey_verify: a request failed: status 4")
			if lines != tc.want || strings.Count(buf.String(), "\n") != tc.want {
				t.Fatalf("logged %d failures, want %d:\n%s", lines, tc.want, buf.String())
			}
		})
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

// The probe counts signatures (it cannot report zero work for a real
// interval), and the report sets each scenario's probe against the run's
// first one taken.
func TestProbeReport(t *testing.T) {
	if got := probeSpeed(20 * time.Millisecond); got <= 0 {
		t.Fatalf("probeSpeed = %v, want signatures counted", got)
	}
	all := []StackResult{
		{Results: []Result{{Scenario: "http_ceiling"}, {Scenario: "jwks", Probe: 1000}}},
		{Results: []Result{{Scenario: "sso", Probe: 800}}},
	}
	if got := firstProbe(all); got != 1000 {
		t.Fatalf("firstProbe = %v, want 1000 (the first scenario with a probe)", got)
	}
	for _, tc := range []struct {
		probe, first float64
		want         string
	}{
		{800, 1000, "800/s (80%)"},
		{1000, 1000, "1000/s (100%)"},
		{0, 1000, ""},
		{800, 0, ""},
	} {
		if got := probeCell(tc.probe, tc.first); got != tc.want {
			t.Errorf("probeCell(%v, %v) = %q, want %q", tc.probe, tc.first, got, tc.want)
		}
	}
}

// TestHashBoundAround: the password-hash bound is measured just before and
// just after the password scenario, and the target takes their mean, not
// the bound of the run's start; a failed scenario measures no second bound.
func TestHashBoundAround(t *testing.T) {
	bounds := []time.Duration{10 * time.Millisecond, 12500 * time.Microsecond}
	var calls []string
	measure := func() time.Duration {
		calls = append(calls, "bound")
		return bounds[len(calls)/2]
	}
	r, err := hashBoundAround(measure, func() (Result, error) {
		calls = append(calls, "scenario")
		return Result{Scenario: "password", RPS: 85, Requests: 850}, nil
	})
	if err != nil || strings.Join(calls, " ") != "bound scenario bound" || r.HashBound != [2]time.Duration{bounds[0], bounds[1]} {
		t.Fatalf("calls %v, result %+v, %v", calls, r, err)
	}
	// Before 100/s, after 80/s: the bound is 90/s and 85/s is 94% of it,
	// while against the run's start (20 ms: 50/s) it would read 170%.
	report := renderReport(StackOptions{}, []StackResult{{Alg: "EdDSA", Results: []Result{r}}},
		Bounds{PasswordHash: 20 * time.Millisecond, SignPerAlg: map[string]time.Duration{}, VerifyPerAlg: map[string]time.Duration{}})
	want := "- EdDSA password 85/s = 94.4% of the password-hash bound 90/s, measured around the scenario (100/s just before it, 80/s just after; 50/s at the run's start) (target ≥ 90%): met"
	if !strings.Contains(report, want) {
		t.Fatalf("report lacks %q:\n%s", want, report)
	}

	calls = nil
	if _, err := hashBoundAround(measure, func() (Result, error) { return Result{}, errors.New("refused") }); err == nil || len(calls) != 1 {
		t.Fatalf("a failed scenario: %v, %d bounds measured", err, len(calls))
	}
}

// TestReportServerLog: only the server's warnings and errors are written,
// at most twenty, with how many more; a clean log writes nothing.
func TestReportServerLog(t *testing.T) {
	errLine := `{"time":"t","level":"ERROR","msg":"request failed","err":"redis: i/o timeout"}`
	warnLine := `{"time":"t","level":"WARN","msg":"slow"}`
	infoLine := `{"time":"t","level":"INFO","msg":"request"}`
	many := strings.Repeat(errLine+"\n", 25)
	for _, tc := range []struct {
		name, logs string
		want       []string
		notWant    []string
	}{
		{"clean", infoLine + "\nlistening\n", nil, []string{"logged"}},
		{"empty", "", nil, []string{"logged"}},
		{"mixed", infoLine + "\n" + errLine + "\n" + warnLine + "\n", []string{"EdDSA: the server logged 2 warnings and errors", "redis: i/o timeout", `"WARN"`}, []string{`"INFO"`, "more"}},
		{"many", many, []string{"logged 25 warnings", "… and 5 more"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			reportServerLog(&b, "EdDSA", tc.logs)
			got := b.String()
			if tc.want == nil && got != "" {
				t.Fatalf("wrote %q for a clean log", got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(got, w) {
					t.Errorf("unexpected %q in:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "redis: i/o timeout"); tc.name == "many" && n != 20 {
				t.Errorf("%d error lines written, want 20", n)
			}
		})
	}
}
