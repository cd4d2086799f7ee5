package servertest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/config"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// Backend selects where an instance keeps its data.
type Backend int

// Backends.
const (
	// PostgresRedis: PostgreSQL for data, Redis for token state (production).
	PostgresRedis Backend = iota
	// Postgres: PostgreSQL for data and token state.
	Postgres
	// SQLite: the embedded default (SQLite file, token state in it).
	SQLite
)

func (b Backend) String() string {
	return [...]string{"postgres+redis", "postgres", "sqlite"}[b]
}

// Env is a set of PORTCULLIS_… settings.
type Env map[string]string

// Clone copies the settings.
func (e Env) Clone() Env {
	out := Env{}
	for k, v := range e {
		out[k] = v
	}
	return out
}

// NewEnv returns settings for a fresh isolated deployment on backend: its
// own database (and Redis key prefix), a fresh key-encryption key, quiet logs
// and short key timings suited to tests. Instances started from the same Env
// share the deployment.
func NewEnv(t testing.TB, backend Backend) Env {
	t.Helper()
	kek, err := keys.GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	env := Env{
		"PORTCULLIS_KEY_ENCRYPTION_KEY": kek,
		"PORTCULLIS_LOG_FORMAT":         "json",
		"PORTCULLIS_LOG_LEVEL":          "warn",
		"PORTCULLIS_JWKS_MAX_AGE":       "2s",
		"PORTCULLIS_KEY_SYNC_INTERVAL":  "500ms",
		// Fast hashing keeps suites quick; the OWASP parameters are exercised by the password package and benchmarks.
		"PORTCULLIS_ARGON2_MEMORY": "8192",
		"PORTCULLIS_ARGON2_TIME":   "1",
	}
	switch backend {
	case PostgresRedis:
		env["PORTCULLIS_DATABASE_URL"] = testservers.PostgresURL(t)
		u, prefix := testservers.RedisURL(t)
		env["PORTCULLIS_REDIS_URL"] = withRedisTimeouts(u)
		env["PORTCULLIS_REDIS_KEY_PREFIX"] = prefix
	case Postgres:
		env["PORTCULLIS_DATABASE_URL"] = testservers.PostgresURL(t)
	case SQLite:
		env["PORTCULLIS_DATABASE_URL"] = "sqlite://" + filepath.Join(t.TempDir(), "portcullis.db")
	}
	return env
}

// sharedRedisTimeout bounds each call to the shared test Redis. The
// product's one-second default fails a request closed (503) when Redis
// is slow; with every suite running in parallel on two cores a healthy but
// starved Redis can take that long, and the request would fail for the
// machine, not for Portcullis. Tests of a slow or absent Redis start
// their own server and keep the defaults.
const sharedRedisTimeout = "5s"

// withRedisTimeouts is the Redis URL u with sharedRedisTimeout for
// dialling, reading, writing and waiting for a pooled connection.
func withRedisTimeouts(u string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	t := sharedRedisTimeout
	return u + sep + "dial_timeout=" + t + "&read_timeout=" + t + "&write_timeout=" + t + "&pool_timeout=" + t
}

// Config validates env into a Config for addr.
func (e Env) Config(t testing.TB, addr string) config.Config {
	t.Helper()
	env := e.Clone()
	env["PORTCULLIS_ADDR"] = addr
	if _, ok := env["PORTCULLIS_ISSUER"]; !ok {
		env["PORTCULLIS_ISSUER"] = "http://" + addr
	}
	cfg, err := config.Load(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("test settings: %v", err)
	}
	return cfg
}

// Instance is an in-process Portcullis server built by the real wiring.
type Instance struct {
	App    *app.App
	URL    string
	Config config.Config
	Logs   *SyncBuffer
	cancel context.CancelFunc
	done   chan error

	// MetricsURL is the base URL of the PORTCULLIS_METRICS_ADDR listener
	// ("" when the setting is empty and /metrics is served at URL).
	MetricsURL string
}

// Start runs an in-process server for env on a free loopback port and stops
// it when the test ends. Several instances started from one Env share the
// database and token state.
func Start(t testing.TB, env Env) *Instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return StartOn(t, env, ln)
}

// StartOn is Start on a listener the test opened (so that it knows the port
// before the settings, for an issuer such as https://auth.app.test:PORT).
// With PORTCULLIS_TLS_CERT in env the instance serves HTTPS, its URL is
// https and readiness is checked without verifying the certificate.
func StartOn(t testing.TB, env Env, ln net.Listener) *Instance {
	t.Helper()
	cfg := env.Config(t, ln.Addr().String())
	logs := &SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.Build(ctx, cfg, log)
	if err != nil {
		cancel()
		ln.Close()
		t.Fatalf("build server: %v", err)
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	in := &Instance{App: a, URL: scheme + "://" + ln.Addr().String(), Config: cfg, Logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- a.Run(ctx, ln, nil) }()
	t.Cleanup(in.Stop)
	waitReady(t, in.URL, 15*time.Second)
	if cfg.MetricsAddr != "" {
		// Run binds the metrics listener before the main one serves.
		addr := a.MetricsAddr()
		if addr == nil {
			t.Fatal("PORTCULLIS_METRICS_ADDR is set but no metrics listener is bound")
		}
		in.MetricsURL = "http://" + addr.String()
	}
	return in
}

// Stop shuts the instance down gracefully.
func (in *Instance) Stop() {
	if in.cancel == nil {
		return
	}
	in.cancel()
	in.cancel = nil
	<-in.done
	_ = in.App.Close()
}

// Client returns the test client for this instance.
func (in *Instance) Client(t testing.TB) *Client { return NewClient(t, in.URL) }

func waitReady(t testing.TB, base string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	hc := &http.Client{Timeout: time.Second}
	if strings.HasPrefix(base, "https:") {
		// A test certificate for test host names: readiness only.
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test harness
	}
	for time.Now().Before(deadline) {
		resp, err := hc.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("server at %s not ready within %s", base, within)
}

// SyncBuffer is a goroutine-safe log sink.
type SyncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{} // closed by the next Write (nil: no one waits)
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if b.written != nil {
		close(b.written)
		b.written = nil
	}
	return n, err
}

// WaitFor reports whether what is written contains s, waiting for it at
// most within. A server writes its logs from its own goroutines (a child
// process through a pipe), so a line it prints just after it starts to
// listen can still be on its way when the readiness check has passed.
func (b *SyncBuffer) WaitFor(s string, within time.Duration) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		if strings.Contains(b.buf.String(), s) {
			b.mu.Unlock()
			return true
		}
		if b.written == nil {
			b.written = make(chan struct{})
		}
		written := b.written
		b.mu.Unlock()
		select {
		case <-written:
		case <-deadline.C:
			return strings.Contains(b.String(), s)
		}
	}
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary builds cmd/portcullis once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "portcullis-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "portcullis")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/portcullis-auth/portcullis/cmd/portcullis")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("build portcullis: %v", binErr)
	}
	return binPath
}

// Process is a real `portcullis serve` process.
type Process struct {
	t   testing.TB
	env Env
	// Dir is the working directory (the embedded store's ./data lives there).
	Dir  string
	Addr string
	URL  string
	Logs *SyncBuffer
	cmd  *exec.Cmd
	done chan struct{}
	// state is how the last run ended.
	state *os.ProcessState
}

// StartProcess runs `portcullis serve` with env on a free port and stops it
// (SIGTERM) when the test ends.
func StartProcess(t testing.TB, env Env) *Process {
	t.Helper()
	return StartProcessIn(t, "", env)
}

// StartProcessIn is StartProcess with dir as the working directory.
func StartProcessIn(t testing.TB, dir string, env Env) *Process {
	t.Helper()
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p := &Process{t: t, env: env.Clone(), Dir: dir, Addr: addr, URL: "http://" + addr, Logs: &SyncBuffer{}}
	if _, ok := p.env["PORTCULLIS_ISSUER"]; !ok {
		p.env["PORTCULLIS_ISSUER"] = p.URL
	}
	p.env["PORTCULLIS_ADDR"] = addr
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

// Start (re)starts the process on its address and waits until it is ready.
func (p *Process) Start() {
	p.t.Helper()
	cmd := exec.Command(Binary(p.t), "serve")
	cmd.Dir = p.Dir
	cmd.Env = cleanEnviron()
	for k, v := range p.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = p.Logs, p.Logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start portcullis: %v", err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.done) }()
	waitReady(p.t, p.URL, 30*time.Second)
}

// Client returns the test client for this process.
func (p *Process) Client(t testing.TB) *Client { return NewClient(t, p.URL) }

// Kill sends SIGKILL and waits for the process to die.
func (p *Process) Kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.state = p.cmd.ProcessState
	p.cmd = nil
}

// Stop sends SIGTERM (graceful shutdown) and waits, killing after 20 s.
func (p *Process) Stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.Kill()
		return
	}
	p.state = p.cmd.ProcessState
	p.cmd = nil
}

// Exited reports whether the process has exited, with its state.
func (p *Process) Exited() (bool, *os.ProcessState) {
	if p.cmd == nil {
		return true, p.state
	}
	select {
	case <-p.done:
		return true, p.cmd.ProcessState
	default:
		return false, nil
	}
}

// RunCLI runs a portcullis command with env and returns stdout, stderr and the exit code.
func RunCLI(t testing.TB, env Env, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return RunCLIIn(t, "", env, stdin, args...)
}

// RunCLIIn is RunCLI with dir as the working directory.
func RunCLIIn(t testing.TB, dir string, env Env, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Dir = dir
	cmd.Env = cleanEnviron()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run portcullis %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

var _ io.Writer = (*SyncBuffer)(nil)

// cleanEnviron is the test process's environment without any PORTCULLIS_
// setting, so a developer's shell cannot change what a test runs.
func cleanEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PORTCULLIS_") {
			out = append(out, kv)
		}
	}
	return out
}
