package server_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// TestLoginThrottleIsGlobal: failures spread over two instances sharing Redis
// throttle the account on both; the throttle looks the same for an unknown
// account; a success after the delay takes back only its own attempt, so
// the failures stay as an unknown login's would (docs/security.md).
func TestLoginThrottleIsGlobal(t *testing.T) {
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_LOGIN_FAILURE_LIMIT"] = "3"
	a, b := st.Start(t, env), st.Start(t, env)
	fx := st.NewFixtures(t, a.App.Core)
	fx.User(t, userEmail, userPass, "user")
	secret := fx.Client(t, clients.Spec{ID: "web"})
	web := st.Basic("web", secret)
	ca, cb := a.Client(t), b.Client(t)
	for _, login := range []string{userEmail, "ghost@example.com"} {
		for i := 0; i < 3; i++ {
			c := ca
			if i%2 == 1 {
				c = cb
			}
			c.PostForm("/oauth2/token", st.PasswordForm(login, "wrong password!", ""), web).ExpectError(400, "invalid_grant")
		}
		for _, c := range []*st.Client{ca, cb} {
			r := c.PostForm("/oauth2/token", st.PasswordForm(login, userPass, ""), web).ExpectError(429, "rate_limited")
			if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 300 {
				t.Fatalf("%s: Retry-After %q", login, r.Header.Get("Retry-After"))
			}
			if r.Header.Get("Cache-Control") != "no-store" {
				t.Fatal("429 from the token endpoint must not be cached")
			}
		}
	}
	// The first delay is one second: then the right password works. It
	// clears no failure: a wrong password opens the next delay (2 s), in
	// which even the right one waits, as after a fourth failure of a login
	// nobody has.
	time.Sleep(1100 * time.Millisecond)
	cb.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), web).Token()
	ca.PostForm("/oauth2/token", st.PasswordForm(userEmail, "wrong password!", ""), web).ExpectError(400, "invalid_grant")
	ca.PostForm("/oauth2/token", st.PasswordForm(userEmail, userPass, ""), web).ExpectError(429, "rate_limited")
}

// TestPerIPLimitTrustsOnlyConfiguredProxies: X-Forwarded-For decides the
// client IP only when the peer is a trusted proxy; limits are global.
func TestPerIPLimitTrustsOnlyConfiguredProxies(t *testing.T) {
	forgot := func(c *st.Client, ip string, i int) *st.Response {
		return c.PostJSON("/auth/password/forgot", map[string]string{"email": fmt.Sprintf("someone%d@example.com", i)},
			st.WithHeader("X-Forwarded-For", ip))
	}
	t.Run("trusted", func(t *testing.T) {
		env := st.NewEnv(t, st.PostgresRedis)
		env["PORTCULLIS_TRUSTED_PROXIES"] = "127.0.0.1/32"
		a, b := st.Start(t, env), st.Start(t, env)
		ca, cb := a.Client(t), b.Client(t)
		for i := 0; i < 10; i++ {
			c := ca
			if i%2 == 1 {
				c = cb
			}
			forgot(c, "203.0.113.7", i).ExpectStatus(202)
		}
		forgot(cb, "203.0.113.7", 99).ExpectError(429, "rate_limited")
		forgot(ca, "198.51.100.9", 100).ExpectStatus(202) // another client behind the proxy
	})
	t.Run("untrusted", func(t *testing.T) {
		in := st.Start(t, st.NewEnv(t, st.PostgresRedis))
		c := in.Client(t)
		for i := 0; i < 10; i++ {
			forgot(c, fmt.Sprintf("203.0.113.%d", i), i).ExpectStatus(202) // spoofed headers do not help
		}
		forgot(c, "203.0.113.200", 99).ExpectError(429, "rate_limited")
	})
}

func scrape(t *testing.T, c *st.Client) map[string]*dto.MetricFamily {
	t.Helper()
	r := c.Get("/metrics").ExpectStatus(200)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("Prometheus text parser: %v", err)
	}
	return fams
}

func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	var sum float64
	found := false
	for _, m := range f.Metric {
		match := true
		for k, v := range labels {
			ok := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					ok = true
				}
			}
			match = match && ok
		}
		if !match {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	if !found {
		return -1
	}
	return sum
}

func TestMetrics(t *testing.T) {
	env := st.NewEnv(t, st.PostgresRedis)
	env["PORTCULLIS_LOGIN_FAILURE_LIMIT"] = "2"
	d := deploy(t, st.Start(t, env))
	web := st.Basic("web", d.webSecret)
	before := scrape(t, d.c)
	tok := d.login(t, "")
	d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), web).Token()
	d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), web).ExpectError(400, "invalid_grant") // reuse
	d.c.PostForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, st.Basic("svc", d.svcSecret)).Token()
	// Three wrong guesses with a limit of 2: the first fails; of the next
	// two, sent at once, the throttle admits one (which fails) and refuses
	// the other, whatever the timing (a sequential third guess would find
	// the 1 s delay over when argon2id runs slow on a loaded machine).
	guess := func(int) {
		d.c.PostForm("/oauth2/token", st.PasswordForm("mallory@example.com", "guess guess guess", ""), web)
	}
	guess(0)
	st.AtOnce(2, guess)
	after := scrape(t, d.c)
	moved := []struct {
		name   string
		labels map[string]string
		delta  float64
	}{
		{"portcullis_tokens_issued_total", map[string]string{"grant": "password"}, 1},
		{"portcullis_tokens_issued_total", map[string]string{"grant": "refresh_token"}, 1},
		{"portcullis_tokens_issued_total", map[string]string{"grant": "client_credentials"}, 1},
		{"portcullis_refresh_reuse_detected_total", nil, 1},
		{"portcullis_login_failures_total", nil, 2},
		{"portcullis_rate_limited_total", map[string]string{"endpoint": "login_account"}, 1},
		{"portcullis_http_requests_total", map[string]string{"route": "/oauth2/token", "method": "POST", "code": "200"}, 3},
		{"portcullis_http_request_duration_seconds", map[string]string{"route": "/oauth2/token"}, 7},
	}
	for _, m := range moved {
		b, a := metricValue(before, m.name, m.labels), metricValue(after, m.name, m.labels)
		if b < 0 {
			b = 0
		}
		if a-b != m.delta {
			t.Errorf("%s%v moved by %v, want %v", m.name, m.labels, a-b, m.delta)
		}
	}
	if v := metricValue(after, "portcullis_signing_key_age_seconds", nil); v < 0 {
		t.Error("signing key age missing")
	}
	for _, dep := range []string{"database", "redis"} {
		if v := metricValue(after, "portcullis_dependency_duration_seconds", map[string]string{"dependency": dep}); v <= 0 {
			t.Errorf("no %s latency observed", dep)
		}
	}
	// No user data in labels.
	for name, f := range after {
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if bytes.Contains([]byte(lp.GetValue()), []byte("@")) || bytes.Contains([]byte(lp.GetValue()), []byte("usr_")) {
					t.Errorf("%s has user data in label %s=%s", name, lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

// TestMetricsMethodLabelBounded: a client may send any token as the HTTP
// method, and each distinct one must not become a series of its own
// (unbounded label values are a memory and scrape-size denial of service).
// Methods outside the standard ones are counted as "other", on matched and
// unmatched routes alike.
func TestMetricsMethodLabelBounded(t *testing.T) {
	t.Parallel()
	in := st.Start(t, st.NewEnv(t, st.SQLite))
	c := in.Client(t)
	for i := range 20 {
		for _, path := range []string{"/.well-known/jwks.json", "/no/such/route"} {
			if r := c.Do(fmt.Sprintf("BREW%d", i), path, nil, ""); r.StatusCode < 400 || r.StatusCode >= 500 {
				t.Fatalf("BREW%d %s: %d", i, path, r.StatusCode)
			}
		}
	}
	c.Get("/.well-known/jwks.json").ExpectStatus(http.StatusOK)
	methods := map[string]bool{}
	for _, m := range scrape(t, c)["portcullis_http_requests_total"].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == "method" {
				methods[lp.GetValue()] = true
			}
		}
	}
	for m := range methods {
		if !slices.Contains([]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, m) {
			t.Errorf("method label %q: a client's method became a series", m)
		}
	}
	if !methods["other"] || !methods["GET"] {
		t.Errorf("method labels %v: want GET and other", methods)
	}
	if v := metricValue(scrape(t, c), "portcullis_http_requests_total", map[string]string{"method": "other"}); v != 40 {
		t.Errorf("%v requests counted as other, want 40", v)
	}
}
