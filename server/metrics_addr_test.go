package server_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestMetricsAddr: with PORTCULLIS_METRICS_ADDR, /metrics is served on that
// listener only (404 on PORTCULLIS_ADDR, so the public listener no longer
// exposes it) and that listener serves nothing else; it still counts the
// public listener's requests, and it closes with the server. Without the
// setting, /metrics stays on PORTCULLIS_ADDR.
func TestMetricsAddr(t *testing.T) {
	t.Run("ok/separate listener", func(t *testing.T) {
		t.Parallel()
		env := st.NewEnv(t, st.SQLite)
		env["PORTCULLIS_METRICS_ADDR"] = "127.0.0.1:0"
		in := st.Start(t, env)
		if in.MetricsURL == "" || in.MetricsURL == in.URL {
			t.Fatalf("metrics URL %q (main %q)", in.MetricsURL, in.URL)
		}
		c := in.Client(t)
		c.Get("/healthz").ExpectStatus(http.StatusOK)
		c.Get("/metrics").ExpectError(http.StatusNotFound, "not_found")

		status, body := plainGet(t, in.MetricsURL+"/metrics")
		if status != http.StatusOK || !strings.Contains(body, `portcullis_http_requests_total{code="200",method="GET",route="/healthz"}`) {
			t.Fatalf("metrics listener: %d\n%.400s", status, body)
		}
		for _, path := range []string{"/", "/healthz", "/oauth2/token", "/metrics/x", "/debug/pprof/"} {
			if status, _ := plainGet(t, in.MetricsURL+path); status != http.StatusNotFound {
				t.Errorf("metrics listener %s: %d, want 404", path, status)
			}
		}

		in.Stop()
		if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(in.MetricsURL, "http://"), time.Second); err == nil {
			conn.Close()
			t.Fatal("the metrics listener is still open after the server stopped")
		}
	})
	t.Run("ok/portcullis serve, SIGTERM closes both", func(t *testing.T) {
		t.Parallel()
		port, err := testservers.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		metricsAddr := fmt.Sprintf("127.0.0.1:%d", port)
		env := st.NewEnv(t, st.SQLite)
		env["PORTCULLIS_METRICS_ADDR"] = metricsAddr
		p := st.StartProcessIn(t, t.TempDir(), env)
		p.Client(t).Get("/metrics").ExpectError(http.StatusNotFound, "not_found")
		if status, body := plainGet(t, "http://"+metricsAddr+"/metrics"); status != http.StatusOK || !strings.Contains(body, "portcullis_http_requests_total") {
			t.Fatalf("metrics listener of the process: %d\n%.400s", status, body)
		}
		p.Stop()
		if exited, state := p.Exited(); !exited || state == nil || !state.Success() {
			t.Fatalf("portcullis serve after SIGTERM: exited=%v state=%v\n%s", exited, state, p.Logs)
		}
		if conn, err := net.DialTimeout("tcp", metricsAddr, time.Second); err == nil {
			conn.Close()
			t.Fatal("the metrics listener is still open after the process stopped")
		}
	})
	t.Run("ok/unset: on the main listener", func(t *testing.T) {
		t.Parallel()
		in := st.Start(t, st.NewEnv(t, st.SQLite))
		if in.MetricsURL != "" {
			t.Fatalf("metrics URL %q without the setting", in.MetricsURL)
		}
		r := in.Client(t).Get("/metrics").ExpectStatus(http.StatusOK)
		if !strings.Contains(string(r.Body), "portcullis_http_requests_total") {
			t.Fatalf("main listener /metrics:\n%.400s", r.Body)
		}
	})
}

func plainGet(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}
