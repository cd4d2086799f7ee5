// Package testservers starts real PostgreSQL and Redis servers for tests and
// hands every test its own database and Redis key space.
//
// Tests use the servers named by TEST_DATABASE_URL and TEST_REDIS_URL when set
// (`make test` starts one of each for the whole run); otherwise the first test
// that needs one starts a throwaway server of its own on a free loopback port,
// stopped when the package's tests end (see Main). Tests that stop and restart
// a dependency get a private server from NewRedis or NewPostgres.
//
// Missing server binaries are installed from Debian's packages when the
// process may (root with apt-get); otherwise the error says what to install.
// Nothing here is used by the product.
package testservers

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver for admin statements
)

// Environment variables naming shared servers.
const (
	EnvDatabaseURL = "TEST_DATABASE_URL"
	EnvRedisURL    = "TEST_REDIS_URL"
)

var (
	mu        sync.Mutex
	sharedPG  *Postgres
	sharedRD  *Redis
	started   []interface{ stop() }
	installMu sync.Mutex
)

// Main runs a package's tests and stops any server started for them.
// Use it from TestMain: func TestMain(m *testing.M) { testservers.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	StopAll()
	os.Exit(code)
}

// StartPostgres starts a PostgreSQL server that StopAll stops.
func StartPostgres() (*Postgres, error) {
	pg, err := startPostgres()
	if err != nil {
		return nil, err
	}
	mu.Lock()
	started = append(started, pg)
	mu.Unlock()
	return pg, nil
}

// StartRedis starts a Redis server that StopAll stops.
func StartRedis() (*Redis, error) {
	rd, err := startRedis(false)
	if err != nil {
		return nil, err
	}
	mu.Lock()
	started = append(started, rd)
	mu.Unlock()
	return rd, nil
}

// StopAll stops every server this process started.
func StopAll() {
	mu.Lock()
	defer mu.Unlock()
	for i := len(started) - 1; i >= 0; i-- {
		started[i].stop()
	}
	started = nil
	sharedPG, sharedRD = nil, nil
}

// PostgresURL creates a fresh database for the test on the shared PostgreSQL
// server and returns its URL; the database is dropped when the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	admin, err := sharedPostgresAdminURL()
	if err != nil {
		t.Fatalf("testservers: PostgreSQL: %v", err)
	}
	u, err := CreateDatabase(admin)
	if err != nil {
		t.Fatalf("testservers: %v", err)
	}
	t.Cleanup(func() { _ = DropDatabase(admin, u) })
	return u
}

// RedisURL returns the shared Redis server's URL and a key prefix unique to
// the test, so tests never see each other's keys.
func RedisURL(t testing.TB) (redisURL, keyPrefix string) {
	t.Helper()
	u, err := sharedRedisURL()
	if err != nil {
		t.Fatalf("testservers: Redis: %v", err)
	}
	return u, "t" + randomHex(6) + ":"
}

func sharedPostgresAdminURL() (string, error) {
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		return u, nil
	}
	mu.Lock()
	defer mu.Unlock()
	if sharedPG == nil {
		pg, err := startPostgres()
		if err != nil {
			return "", err
		}
		sharedPG = pg
		started = append(started, pg)
	}
	return sharedPG.URL(), nil
}

func sharedRedisURL() (string, error) {
	if u := os.Getenv(EnvRedisURL); u != "" {
		return u, nil
	}
	mu.Lock()
	defer mu.Unlock()
	if sharedRD == nil {
		rd, err := startRedis(false)
		if err != nil {
			return "", err
		}
		sharedRD = rd
		started = append(started, rd)
	}
	return sharedRD.URL(), nil
}

// CreateDatabase creates a uniquely named database on the server of adminURL
// and returns the URL of the new database.
func CreateDatabase(adminURL string) (string, error) {
	name := "pc_test_" + randomHex(8)
	db, err := sql.Open("pgx", adminURL)
	if err != nil {
		return "", fmt.Errorf("open admin connection: %w", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("parse admin URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// DropDatabase drops the database named by dbURL, disconnecting its sessions.
func DropDatabase(adminURL, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(u.Path, "/")
	if !strings.HasPrefix(name, "pc_test_") {
		return fmt.Errorf("refusing to drop %q", name)
	}
	db, err := sql.Open("pgx", adminURL)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	return err
}

// Postgres is a PostgreSQL server started by this package.
type Postgres struct {
	dir  string
	port int
	bin  string
	cmd  *exec.Cmd
	pmu  sync.Mutex
}

// NewPostgres starts a private PostgreSQL server for the test (for tests that
// stop and restart it); it is removed when the test ends.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	pg, err := startPostgres()
	if err != nil {
		t.Fatalf("testservers: PostgreSQL: %v", err)
	}
	t.Cleanup(pg.stop)
	return pg
}

// URL is the admin URL (database postgres, user postgres, no password).
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
}

// Stop stops the server (fast shutdown), keeping its data.
func (p *Postgres) Stop() error {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	if p.cmd == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
	return nil
}

// Start starts a stopped server again on the same port with the same data.
func (p *Postgres) Start() error {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	if p.cmd != nil {
		return nil
	}
	return p.launch()
}

func (p *Postgres) stop() {
	_ = p.Stop()
	_ = os.RemoveAll(p.dir)
}

func startPostgres() (*Postgres, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "portcullis-pg-")
	if err != nil {
		return nil, err
	}
	_ = os.Chmod(dir, 0o755)
	p := &Postgres{dir: dir, bin: bin}
	if err := chownForPostgres(dir); err != nil {
		return nil, err
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "postgres",
		"--auth=trust", "--encoding=UTF8", "--no-sync", "--locale=C")
	setPostgresUser(initdb)
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	p.port = port
	if err := p.launch(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Postgres) launch() error {
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), "-D", filepath.Join(p.dir, "data"),
		"-p", strconv.Itoa(p.port), "-k", p.dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=500", "-c", "shared_buffers=64MB")
	setPostgresUser(cmd)
	logf, err := os.OpenFile(filepath.Join(p.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	p.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		db, err := sql.Open("pgx", p.URL())
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err = db.PingContext(ctx)
			cancel()
			db.Close()
			if err == nil {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
	return fmt.Errorf("postgres did not become ready: %s", log)
}

// Redis is a redis-server started by this package.
type Redis struct {
	dir     string
	port    int
	tlsPort int            // also listens for TLS when not 0 (NewTLSRedis)
	roots   *x509.CertPool // the authority of its TLS certificate
	bin     string
	cmd     *exec.Cmd
	rmu     sync.Mutex
}

// NewRedis starts a private Redis server for the test (for tests that stop,
// restart or flush it); it is removed when the test ends.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	return privateRedis(t, false)
}

// NewTLSRedis starts a private Redis server that also listens for TLS on
// TLSAddr, with a certificate for the loopback addresses and localhost that
// only RootCAs trusts (clients are not asked for one); it is removed when
// the test ends.
func NewTLSRedis(t testing.TB) *Redis {
	t.Helper()
	return privateRedis(t, true)
}

// privateRedis starts a Redis server for the test alone, removed when the
// test ends (NewRedis, NewTLSRedis).
func privateRedis(t testing.TB, withTLS bool) *Redis {
	t.Helper()
	rd, err := startRedis(withTLS)
	if err != nil {
		t.Fatalf("testservers: Redis (TLS %t): %v", withTLS, err)
	}
	t.Cleanup(rd.stop)
	return rd
}

// TLSAddr is the host:port of a NewTLSRedis server's TLS listener.
func (r *Redis) TLSAddr() string { return fmt.Sprintf("127.0.0.1:%d", r.tlsPort) }

// RootCAs trusts a NewTLSRedis server's certificate (and nothing else).
func (r *Redis) RootCAs() *x509.CertPool { return r.roots }

// URL is the server's redis:// URL.
func (r *Redis) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// Addr is host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

// Stop kills the server. It runs without persistence, so a restarted server is empty.
func (r *Redis) Stop() error {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	if r.cmd == nil {
		return nil
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
	return nil
}

// Start starts a stopped server again on the same port (empty).
func (r *Redis) Start() error {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	if r.cmd != nil {
		return nil
	}
	return r.launch()
}

func (r *Redis) stop() {
	_ = r.Stop()
	_ = os.RemoveAll(r.dir)
}

func startRedis(withTLS bool) (*Redis, error) {
	bin, err := redisBinary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "portcullis-redis-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{dir: dir, port: port, bin: bin}
	if withTLS {
		if r.tlsPort, err = FreePort(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
		if r.roots, err = writeSelfSigned(r.tlsFiles()); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("TLS certificate: %w", err)
		}
	}
	if err := r.launch(); err != nil {
		return nil, err
	}
	return r, nil
}

// tlsFiles are the files of a NewTLSRedis server's certificate and key.
func (r *Redis) tlsFiles() (cert, key string) {
	return filepath.Join(r.dir, "tls.crt"), filepath.Join(r.dir, "tls.key")
}

func (r *Redis) launch() error {
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir, "--protected-mode", "no",
		"--maxclients", "10000")
	if r.tlsPort != 0 {
		crt, key := r.tlsFiles()
		cmd.Args = append(cmd.Args, "--tls-port", strconv.Itoa(r.tlsPort), "--tls-cert-file", crt,
			"--tls-key-file", key, "--tls-ca-cert-file", crt, "--tls-auth-clients", "no")
	}
	logf, err := os.OpenFile(filepath.Join(r.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", r.Addr(), 200*time.Millisecond)
		if err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "+PONG") {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	return fmt.Errorf("redis-server did not become ready: %s", log)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// postgresBinDir finds PostgreSQL's server binaries, installing them if it may.
func postgresBinDir() (string, error) {
	find := func() string {
		if p, err := exec.LookPath("postgres"); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil {
				return filepath.Dir(real)
			}
			return filepath.Dir(p)
		}
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
				return d
			}
		}
		return ""
	}
	if d := find(); d != "" {
		return d, nil
	}
	if err := EnsureDebianPackages("postgresql"); err != nil {
		return "", err
	}
	if d := find(); d != "" {
		return d, nil
	}
	return "", errors.New("PostgreSQL server binaries not found after installing; install the Debian package postgresql")
}

func versionOf(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

func redisBinary() (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	if err := EnsureDebianPackages("redis-server"); err != nil {
		return "", err
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	return "", errors.New("redis-server not found after installing; install the Debian package redis-server")
}

// EnsureDebianPackages installs the named Debian packages with apt-get when
// running as root; otherwise it returns an error naming what to install.
func EnsureDebianPackages(pkgs ...string) error {
	installMu.Lock()
	defer installMu.Unlock()
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing; install the Debian packages: sudo apt-get install -y %s", strings.Join(pkgs, " "))
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("missing and apt-get is not available; install: %s", strings.Join(pkgs, " "))
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	update := exec.Command("apt-get", "update", "-qq")
	update.Env = env
	if out, err := update.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %v: %s", err, out)
	}
	args := append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)
	install := exec.Command("apt-get", args...)
	install.Env = env
	if out, err := install.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %v: %s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// postgres refuses to run as root: run it as the postgres user when we are root.
func setPostgresUser(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() != 0 {
		return
	}
	uid, gid, err := postgresIDs()
	if err != nil {
		return
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
	cmd.Env = append(os.Environ(), "HOME="+os.TempDir())
}

func chownForPostgres(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, gid, err := postgresIDs()
	if err != nil {
		return err
	}
	return os.Chown(dir, int(uid), int(gid))
}

func postgresIDs() (uint32, uint32, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("running as root needs a postgres user (the Debian package postgresql creates it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid), nil
}
