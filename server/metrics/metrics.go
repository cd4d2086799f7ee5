// Package metrics holds Portcullis's Prometheus metrics, with the names fixed
// by the contract, and the hooks that measure the database and Redis.
//
// Labels never carry user data: routes are templates (/admin/users/:id),
// never concrete paths; grants, endpoints and dependencies are fixed words.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"
)

// Metrics is one server instance's registry and instruments. Its methods are
// safe for concurrent use and on a nil *Metrics (they do nothing).
type Metrics struct {
	reg           *prometheus.Registry
	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	tokensIssued  *prometheus.CounterVec
	reuse         prometheus.Counter
	rotationLimit prometheus.Counter
	loginFailures prometheus.Counter
	rateLimited   *prometheus.CounterVec
	depErrors     *prometheus.CounterVec
	depDuration   *prometheus.HistogramVec
	userCopies    *prometheus.CounterVec

	// requests keeps each (route, method, code)'s bound instruments
	// (requestKey → requestInstruments), so that a request costs one map
	// read instead of two label lookups with their hashing and checks. Its
	// keys are as bounded as the labels: routes are templates, methods
	// and codes are bounded by methodLabel and statusText.
	requests sync.Map
}

type requestKey struct{ route, method, code string }

type requestInstruments struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// New returns the metrics of one instance. keyAge reports the age of the
// active signing key.
func New(keyAge func() time.Duration) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_http_requests_total", Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portcullis_http_request_duration_seconds", Help: "HTTP request latency by route template.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		tokensIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_tokens_issued_total", Help: "Token responses issued, by grant.",
		}, []string{"grant"}),
		reuse: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portcullis_refresh_reuse_detected_total", Help: "Rotated refresh tokens presented again (theft detected; the session was revoked).",
		}),
		rotationLimit: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portcullis_refresh_rotation_limit_total", Help: "Refresh sessions ended at their rotation limit (store.MaxFamilyRotations refreshes; not a theft).",
		}),
		loginFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portcullis_login_failures_total", Help: "Failed password logins.",
		}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_rate_limited_total", Help: "Requests refused by a rate limit or the login throttle, by endpoint.",
		}, []string{"endpoint"}),
		depErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_dependency_errors_total", Help: "Failed calls to the database or Redis.",
		}, []string{"dependency"}),
		depDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portcullis_dependency_duration_seconds", Help: "Latency of calls to the database or Redis.",
			Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"dependency"}),
		userCopies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portcullis_user_copies_total",
			Help: "Reads of a user on the authorize leg, refresh and userinfo, by outcome: copy (the instance's copy used), read (read from the database, copy kept), unsure (read from the database, nothing kept).",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.httpRequests, m.httpDuration, m.tokensIssued, m.reuse, m.rotationLimit, m.loginFailures, m.rateLimited,
		m.depErrors, m.depDuration, m.userCopies,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portcullis_signing_key_age_seconds", Help: "Age of the active signing key.",
		}, func() float64 { return keyAge().Seconds() }),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveHashing publishes load, the password hasher's saturation
// (password.Hasher.Load), as portcullis_password_hashes_running (hashes
// running now, at most the CPU count) and portcullis_password_hashes_waiting
// (requests queued for a hashing slot: a queue that grows is logins
// arriving faster than the instance can hash them).
func (m *Metrics) ObserveHashing(load func() (running, waiting int)) {
	if m == nil {
		return
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portcullis_password_hashes_running", Help: "Password hashes running now (at most one per CPU).",
		}, func() float64 { r, _ := load(); return float64(r) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portcullis_password_hashes_waiting", Help: "Requests waiting for a password hashing slot.",
		}, func() float64 { _, w := load(); return float64(w) }))
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveRequest records one HTTP request (a method outside the standard
// ones is counted as "other": see methodLabel).
func (m *Metrics) ObserveRequest(route, method string, code int, d time.Duration) {
	if m == nil {
		return
	}
	k := requestKey{route, methodLabel(method), statusText(code)}
	v, ok := m.requests.Load(k)
	if !ok {
		v, _ = m.requests.LoadOrStore(k, requestInstruments{
			count: m.httpRequests.WithLabelValues(k.route, k.method, k.code), duration: m.httpDuration.WithLabelValues(k.route)})
	}
	in := v.(requestInstruments)
	in.count.Inc()
	in.duration.Observe(d.Seconds())
}

// methodLabel is the method label of a request: a client may send any
// token as its method, and each would otherwise be a series of its own.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// TokenIssued counts a token response of grant.
func (m *Metrics) TokenIssued(grant string) {
	if m != nil {
		m.tokensIssued.WithLabelValues(grant).Inc()
	}
}

// RefreshReuseDetected counts a detected refresh-token theft.
func (m *Metrics) RefreshReuseDetected() {
	if m != nil {
		m.reuse.Inc()
	}
}

// RefreshRotationLimitReached counts a refresh session ended at its
// rotation limit (store.MaxFamilyRotations).
func (m *Metrics) RefreshRotationLimitReached() {
	if m != nil {
		m.rotationLimit.Inc()
	}
}

// LoginFailed counts a failed login.
func (m *Metrics) LoginFailed() {
	if m != nil {
		m.loginFailures.Inc()
	}
}

// RateLimited counts a refused request.
func (m *Metrics) RateLimited(endpoint string) {
	if m != nil {
		m.rateLimited.WithLabelValues(endpoint).Inc()
	}
}

// UserCopy counts one read of a user through the instance's copies
// (store/usercache) by its outcome.
func (m *Metrics) UserCopy(outcome string) {
	if m != nil {
		m.userCopies.WithLabelValues(outcome).Inc()
	}
}

// ObserveDependency records one call to "database" or "redis".
func (m *Metrics) ObserveDependency(dep string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.depDuration.WithLabelValues(dep).Observe(d.Seconds())
	if err != nil {
		m.depErrors.WithLabelValues(dep).Inc()
	}
}

var codes = func() map[int]string {
	out := map[int]string{}
	for c := 100; c < 600; c++ {
		out[c] = itoa(c)
	}
	return out
}()

func statusText(code int) string {
	if s, ok := codes[code]; ok {
		return s
	}
	return "other"
}

func itoa(n int) string {
	b := [3]byte{byte('0' + n/100), byte('0' + n/10%10), byte('0' + n%10)}
	return string(b[:])
}

// InstrumentGORM measures every statement of db.
func (m *Metrics) InstrumentGORM(db *gorm.DB) error {
	if m == nil {
		return nil
	}
	const key = "portcullis:metrics_start"
	before := func(tx *gorm.DB) { tx.InstanceSet(key, time.Now()) }
	after := func(tx *gorm.DB) {
		v, ok := tx.InstanceGet(key)
		if !ok {
			return
		}
		err := tx.Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			err = nil
		}
		m.ObserveDependency("database", time.Since(v.(time.Time)), err)
	}
	cb := db.Callback()
	for _, p := range []struct {
		name string
		reg  interface {
			Register(string, func(*gorm.DB)) error
		}
		regAfter interface {
			Register(string, func(*gorm.DB)) error
		}
	}{
		{"create", cb.Create().Before("gorm:create"), cb.Create().After("gorm:create")},
		{"query", cb.Query().Before("gorm:query"), cb.Query().After("gorm:query")},
		{"update", cb.Update().Before("gorm:update"), cb.Update().After("gorm:update")},
		{"delete", cb.Delete().Before("gorm:delete"), cb.Delete().After("gorm:delete")},
		{"row", cb.Row().Before("gorm:row"), cb.Row().After("gorm:row")},
		{"raw", cb.Raw().Before("gorm:raw"), cb.Raw().After("gorm:raw")},
	} {
		if err := p.reg.Register("metrics:before_"+p.name, before); err != nil {
			return err
		}
		if err := p.regAfter.Register("metrics:after_"+p.name, after); err != nil {
			return err
		}
	}
	return nil
}

// RedisHook measures every Redis command and pipeline.
func (m *Metrics) RedisHook() redis.Hook { return redisHook{m} }

type redisHook struct{ m *Metrics }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		start := time.Now()
		c, err := next(ctx, network, addr)
		if err != nil {
			h.m.ObserveDependency("redis", time.Since(start), err)
		}
		return c, err
	}
}

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.m.ObserveDependency("redis", time.Since(start), redisErr(err))
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.m.ObserveDependency("redis", time.Since(start), redisErr(err))
		return err
	}
}

// redisErr ignores redis.Nil (a missing key is an answer, not a failure) and
// NOSCRIPT (go-redis loads the script and retries).
func redisErr(err error) error {
	if errors.Is(err, redis.Nil) || (err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")) {
		return nil
	}
	return err
}
