package backchannel_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/backchannel"
	"github.com/portcullis-auth/portcullis/store"
)

const issuer = "https://id.example.test"

// harness runs one Notifier over a memQueue with a fake clock and ticker.
type harness struct {
	q     *memQueue
	audit *memAudit
	clk   *clock
	tick  chan time.Time
	keys  *keys.Manager
	logs  *syncBuffer
	n     *backchannel.Notifier
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newHarness(t *testing.T, q *memQueue, km *keys.Manager, mutate func(*backchannel.Config)) *harness {
	t.Helper()
	h := &harness{q: q, audit: &memAudit{}, clk: &clock{t: time.Now().Truncate(time.Second)}, tick: make(chan time.Time),
		keys: km, logs: &syncBuffer{}}
	cfg := backchannel.Config{
		Issuer: issuer, Signer: km, Queue: q, Audit: h.audit,
		Log: slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now: h.clk.Now,
		NewTicker: func(time.Duration) (<-chan time.Time, func()) {
			return h.tick, func() {}
		},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	n, err := backchannel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.n = n
	return h
}

// run runs the Notifier until the test ends.
func (h *harness) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// poke advances the clock to d's next attempt and ticks.
func (h *harness) poke(d store.BackchannelLogout) {
	if wait := d.NextAttemptAt.Sub(h.clk.Now()); wait > 0 {
		h.clk.Advance(wait)
	}
	h.tick <- h.clk.Now()
}

// receiver is an httptest back-channel logout endpoint whose i-th request
// gets answers[min(i, last)].
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	tokens  []string
	answers []http.HandlerFunc
}

func newReceiver(t *testing.T, answers ...http.HandlerFunc) *receiver {
	rc := &receiver{answers: answers}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			http.Error(w, "want a form POST", http.StatusMethodNotAllowed)
			return
		}
		if err := r.ParseForm(); err != nil || len(r.PostForm["logout_token"]) != 1 || len(r.PostForm) != 1 {
			http.Error(w, "want exactly logout_token", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.tokens = append(rc.tokens, r.PostForm.Get("logout_token"))
		i := min(len(rc.tokens), len(rc.answers)) - 1
		rc.mu.Unlock()
		rc.answers[i](w, r)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) got() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.tokens...)
}

func status(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func TestNotifierDelivery(t *testing.T) {
	km := newKeyManager(t)
	var targetHits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		targetHits.Add(1)
	}))
	t.Cleanup(target.Close)
	redirect := func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/logout", http.StatusFound)
	}
	// hang answers only when the client gave up (the request's context
	// ends when the Notifier's timeout closes the connection).
	hang := func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}
	type audit map[string]string
	tests := []struct {
		name       string
		answers    []http.HandlerFunc
		backoff    []time.Duration
		timeout    time.Duration
		want       []string // queue operations, in order
		wantAudits []audit  // details of the logout.backchannel_failed events
	}{
		{name: "ok/200", answers: []http.HandlerFunc{status(200)}, want: []string{"complete"}},
		{name: "ok/204", answers: []http.HandlerFunc{status(204)}, want: []string{"complete"}},
		{name: "retry/500 then 200", answers: []http.HandlerFunc{status(500), status(200)},
			want:       []string{"retry", "complete"},
			wantAudits: []audit{{"attempt": "1", "status": "500", "will_retry": "true", "sid": "sid-1"}}},
		{name: "retry/201 is not success", answers: []http.HandlerFunc{status(201), status(200)},
			want:       []string{"retry", "complete"},
			wantAudits: []audit{{"attempt": "1", "status": "201", "will_retry": "true", "sid": "sid-1"}}},
		{name: "retry/a redirect is a failure, never followed", answers: []http.HandlerFunc{redirect, status(204)},
			want:       []string{"retry", "complete"},
			wantAudits: []audit{{"attempt": "1", "status": "302", "will_retry": "true", "sid": "sid-1"}}},
		{name: "retry/slower than the timeout", answers: []http.HandlerFunc{hang, status(200)}, timeout: 200 * time.Millisecond,
			want:       []string{"retry", "complete"},
			wantAudits: []audit{{"attempt": "1", "error": "timeout", "will_retry": "true", "sid": "sid-1"}}},
		{name: "give up/after the last attempt", answers: []http.HandlerFunc{status(503)},
			backoff: []time.Duration{time.Second, 2 * time.Second},
			want:    []string{"retry", "retry", "complete"},
			wantAudits: []audit{
				{"attempt": "1", "status": "503", "will_retry": "true", "sid": "sid-1"},
				{"attempt": "2", "status": "503", "will_retry": "true", "sid": "sid-1"},
				{"attempt": "3", "status": "503", "will_retry": "false", "sid": "sid-1"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, tt.answers...)
			h := newHarness(t, newMemQueue(), km, func(c *backchannel.Config) {
				c.Backoff, c.Timeout = tt.backoff, tt.timeout
			})
			h.run(t)
			ds := []store.BackchannelLogout{{ClientID: "rp-1", URI: rc.srv.URL + "/bcl", Subject: "usr_1", SID: "sid-1"}}
			if err := h.n.Enqueue(context.Background(), ds); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(ds[0].ID, "bcl_") || !ds[0].NextAttemptAt.Equal(h.clk.Now()) || !ds[0].CreatedAt.Equal(h.clk.Now()) {
				t.Fatalf("Enqueue did not set ID, CreatedAt, NextAttemptAt: %+v", ds[0])
			}
			backoff := tt.backoff
			if backoff == nil {
				backoff = backchannel.DefaultBackoff
			}
			for i, op := range tt.want {
				e := h.q.next(t)
				if e.op != op || e.d.ID != ds[0].ID {
					t.Fatalf("queue operation %d = %s %s, want %s %s", i, e.op, e.d.ID, op, ds[0].ID)
				}
				if op == "retry" {
					if wantNext := h.clk.Now().Add(backoff[i]); !e.d.NextAttemptAt.Equal(wantNext) || e.d.Attempts != i+1 || e.d.LastError == "" {
						t.Fatalf("retry %d: next %s attempts %d last error %q; want next %s", i, e.d.NextAttemptAt, e.d.Attempts, e.d.LastError, wantNext)
					}
					h.poke(e.d)
				}
			}
			if n := h.q.len(); n != 0 {
				t.Fatalf("queue holds %d deliveries, want none", n)
			}
			tokens := rc.got()
			if len(tokens) != len(tt.want) {
				t.Fatalf("receiver got %d requests, want %d", len(tokens), len(tt.want))
			}
			if n := targetHits.Load(); n != 0 {
				t.Fatalf("the redirect target was hit %d times", n)
			}
			seen := map[string]bool{}
			for _, tok := range tokens {
				c := checkLogoutToken(t, km, tok)
				if seen[c["jti"].(string)] {
					t.Fatal("a retry reused the jti: tokens must be minted at each attempt")
				}
				seen[c["jti"].(string)] = true
			}
			got := h.audit.all()
			if len(got) != len(tt.wantAudits) {
				t.Fatalf("audit events: %+v, want %d", got, len(tt.wantAudits))
			}
			for i, e := range got {
				if e.Action != "logout.backchannel_failed" || e.Outcome != store.OutcomeFailure || e.ClientID != "rp-1" || e.TargetID != "usr_1" ||
					!maps.Equal(e.Details, tt.wantAudits[i]) {
					t.Errorf("audit %d = %+v, want details %v", i, e, tt.wantAudits[i])
				}
			}
			logs := h.logs.String()
			for _, tok := range tokens {
				if strings.Contains(logs, tok) || strings.Contains(fmt.Sprint(got), tok) {
					t.Fatal("a logout token was logged or audited")
				}
			}
		})
	}
}

// checkLogoutToken verifies tok with go-jose against the signer's JWKS and
// checks its header and claims (BCL §2.4); it returns the claims.
func checkLogoutToken(t *testing.T, km *keys.Manager, tok string) map[string]any {
	t.Helper()
	body, _, _ := km.JWKS()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("parse logout token: %v", err)
	}
	if len(jws.Signatures) != 1 {
		t.Fatal("want one signature")
	}
	hdr := jws.Signatures[0].Protected
	if hdr.ExtraHeaders[jose.HeaderType] != "logout+jwt" || hdr.KeyID != km.ActiveKID() {
		t.Fatalf("header typ %v kid %q, want logout+jwt %q", hdr.ExtraHeaders[jose.HeaderType], hdr.KeyID, km.ActiveKID())
	}
	keys := set.Key(hdr.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %q not in the JWKS", hdr.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("signature: %v", err)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	events, _ := json.Marshal(c["events"])
	iat, _ := c["iat"].(float64)
	exp, _ := c["exp"].(float64)
	jti, _ := c["jti"].(string)
	switch {
	case c["iss"] != issuer, c["aud"] != "rp-1", c["sub"] != "usr_1", c["sid"] != "sid-1":
		t.Fatalf("iss, aud, sub, sid: %v", c)
	case iat == 0 || exp-iat != 120:
		t.Fatalf("iat %v exp %v: want exp = iat + 120", iat, exp)
	case len(jti) < 22:
		t.Fatalf("jti %q is shorter than 128 bits", jti)
	case string(events) != `{"http://schemas.openid.net/event/backchannel-logout":{}}`:
		t.Fatalf("events = %s", events)
	}
	if _, ok := c["nonce"]; ok {
		t.Fatal("a logout token must not carry a nonce")
	}
	if len(c) != 8 {
		t.Fatalf("claims %v: want exactly iss aud iat exp jti sub sid events", c)
	}
	return c
}

// Two Notifiers (two instances) share one queue: every delivery reaches its
// receiver exactly once, though both claim concurrently.
func TestNotifierSharedQueueDeliversOnce(t *testing.T) {
	km := newKeyManager(t)
	const n = 60
	var mu sync.Mutex
	hits := map[string]int{}
	// A barrier: the first deliveries wait until both instances have one in
	// flight, so the two really run at once.
	var inflight sync.WaitGroup
	inflight.Add(2)
	var once [2]sync.Once
	perInstance := map[string]int{}
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := r.Header.Get("X-Instance")
		mu.Lock()
		hits[r.URL.Query().Get("sid")]++
		perInstance[who]++
		mu.Unlock()
		switch who {
		case "1":
			once[0].Do(inflight.Done)
		case "2":
			once[1].Do(inflight.Done)
		}
		inflight.Wait()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rc.Close)
	q := newMemQueue()
	h1 := newHarness(t, q, km, func(c *backchannel.Config) { c.Concurrency, c.Transport = 4, tagged("1") })
	h2 := newHarness(t, q, km, func(c *backchannel.Config) { c.Concurrency, c.Transport = 4, tagged("2") })
	var ds []store.BackchannelLogout
	for i := range n {
		sid := fmt.Sprintf("sid-%d", i)
		ds = append(ds, store.BackchannelLogout{ClientID: "rp-1", URI: rc.URL + "/bcl?sid=" + sid, Subject: "usr_1", SID: sid})
	}
	if err := h1.n.Enqueue(context.Background(), ds); err != nil {
		t.Fatal(err)
	}
	h1.run(t)
	h2.run(t)
	for range n {
		if e := q.next(t); e.op != "complete" {
			t.Fatalf("queue operation %s, want complete", e.op)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if perInstance["1"] == 0 || perInstance["2"] == 0 || perInstance["1"]+perInstance["2"] != n {
		t.Errorf("deliveries per instance %v, want both instances to deliver, %d in all", perInstance, n)
	}
	for _, d := range ds {
		if hits[d.SID] != 1 {
			t.Errorf("%s delivered %d times, want once", d.SID, hits[d.SID])
		}
	}
}

// tagged is a transport that names the instance in a header.
type tagged string

func (tg tagged) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Instance", string(tg))
	return http.DefaultTransport.RoundTrip(r)
}

// Enqueue refuses deliveries that could never be made, storing none of the
// batch; New refuses an incomplete Config.
func TestNotifierRefuses(t *testing.T) {
	km := newKeyManager(t)
	good := store.BackchannelLogout{ClientID: "rp-1", URI: "https://rp.example/bcl", Subject: "usr_1", SID: "sid-1"}
	tests := []struct {
		name   string
		change func(*store.BackchannelLogout)
	}{
		{"fail/no client id", func(d *store.BackchannelLogout) { d.ClientID = "" }},
		{"fail/neither sub nor sid", func(d *store.BackchannelLogout) { d.Subject, d.SID = "", "" }},
		{"fail/no uri", func(d *store.BackchannelLogout) { d.URI = "" }},
		{"fail/relative uri", func(d *store.BackchannelLogout) { d.URI = "/bcl" }},
		{"fail/javascript uri", func(d *store.BackchannelLogout) { d.URI = "javascript:alert(1)" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, newMemQueue(), km, nil)
			bad := good
			tt.change(&bad)
			if err := h.n.Enqueue(context.Background(), []store.BackchannelLogout{good, bad}); err == nil {
				t.Fatal("Enqueue accepted it")
			}
			if n := h.q.len(); n != 0 {
				t.Fatalf("%d deliveries stored, want none", n)
			}
		})
	}
	for _, cfg := range []backchannel.Config{
		{Signer: km, Queue: newMemQueue(), Audit: &memAudit{}},
		{Issuer: issuer, Queue: newMemQueue(), Audit: &memAudit{}},
		{Issuer: issuer, Signer: km, Audit: &memAudit{}},
		{Issuer: issuer, Signer: km, Queue: newMemQueue()},
		{Issuer: issuer, Signer: km, Queue: newMemQueue(), Audit: &memAudit{}, Backoff: []time.Duration{0}},
		{Issuer: issuer, Signer: km, Queue: newMemQueue(), Audit: &memAudit{}, Timeout: -time.Second},
	} {
		if _, err := backchannel.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted an incomplete config", cfg)
		}
	}
}

// An unreachable receiver is a failed attempt ("network error"); with an
// empty Backoff the first failure abandons the delivery.
func TestNotifierUnreachable(t *testing.T) {
	km := newKeyManager(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	uri := closed.URL + "/bcl"
	closed.Close()
	h := newHarness(t, newMemQueue(), km, func(c *backchannel.Config) { c.Backoff = []time.Duration{} })
	h.run(t)
	if err := h.n.Enqueue(context.Background(), []store.BackchannelLogout{{ClientID: "rp-1", URI: uri, SID: "sid-1"}}); err != nil {
		t.Fatal(err)
	}
	if e := h.q.next(t); e.op != "complete" {
		t.Fatalf("queue operation %s, want complete (abandoned)", e.op)
	}
	got := h.audit.all()
	want := map[string]string{"attempt": "1", "error": "network error", "will_retry": "false", "sid": "sid-1"}
	if len(got) != 1 || !maps.Equal(got[0].Details, want) {
		t.Fatalf("audit %+v, want details %v", got, want)
	}
}

// tarpit is a back-channel endpoint that holds every request until release
// is closed (or the Notifier gives up), counting those it holds.
type tarpit struct {
	srv     *httptest.Server
	arrived chan struct{} // one per request, as it arrives
	release chan struct{}
	mu      sync.Mutex
	now     int // requests held now
	most    int // the most held at once
	once    sync.Once
}

func newTarpit(t *testing.T) *tarpit {
	tp := &tarpit{arrived: make(chan struct{}, 64), release: make(chan struct{})}
	tp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // so that the server notices the client hang up
		tp.mu.Lock()
		tp.now++
		tp.most = max(tp.most, tp.now)
		tp.mu.Unlock()
		tp.arrived <- struct{}{}
		select {
		case <-tp.release:
		case <-r.Context().Done():
		}
		tp.mu.Lock()
		tp.now--
		tp.mu.Unlock()
	}))
	t.Cleanup(func() { tp.open(); tp.srv.Close() })
	return tp
}

// open answers the requests held and every later one.
func (tp *tarpit) open() { tp.once.Do(func() { close(tp.release) }) }

func (tp *tarpit) held() (now, most int) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.now, tp.most
}

// A client whose endpoint holds every request takes at most PerClient of
// the Notifier's slots: another client's delivery, queued after ten of the
// first client's, is made while the first client's wait, and the first
// client's are all made once its endpoint answers.
func TestNotifierPerClientBound(t *testing.T) {
	km := newKeyManager(t)
	tests := []struct {
		name        string
		concurrency int
		perClient   int
		want        int // the most deliveries to the slow client at once
	}{
		{name: "ok/default two of eight", want: backchannel.DefaultPerClient},
		{name: "ok/one", perClient: 1, want: 1},
		{name: "ok/three of four", concurrency: 4, perClient: 3, want: 3},
		{name: "ok/never more than the concurrency", concurrency: 2, perClient: 5, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			slow := newTarpit(t)
			fast := newReceiver(t, status(http.StatusNoContent))
			h := newHarness(t, newMemQueue(), km, func(c *backchannel.Config) {
				c.Concurrency, c.PerClient, c.Timeout = tt.concurrency, tt.perClient, time.Minute
			})
			h.run(t)
			const n = 10
			var ds []store.BackchannelLogout
			for i := range n {
				ds = append(ds, store.BackchannelLogout{ClientID: "slow-rp", URI: slow.srv.URL + "/bcl", Subject: "usr_1",
					SID: fmt.Sprintf("sid-%d", i)})
			}
			if err := h.n.Enqueue(context.Background(), ds); err != nil {
				t.Fatal(err)
			}
			for range tt.want {
				select {
				case <-slow.arrived:
				case <-time.After(10 * time.Second):
					t.Fatal("the slow client's deliveries did not start")
				}
			}
			if err := h.n.Enqueue(context.Background(), []store.BackchannelLogout{{ClientID: "fast-rp", URI: fast.srv.URL + "/bcl",
				Subject: "usr_2", SID: "sid-fast"}}); err != nil {
				t.Fatal(err)
			}
			if e := h.q.next(t); e.op != "complete" || e.d.ClientID != "fast-rp" {
				t.Fatalf("queue operation %s %s, want the other client's delivery complete while the slow client's wait", e.op, e.d.ClientID)
			}
			if now, most := slow.held(); now != tt.want || most != tt.want {
				t.Fatalf("the slow client had %d deliveries in flight (at most %d), want %d", now, most, tt.want)
			}
			slow.open()
			for range n {
				if e := h.q.next(t); e.op != "complete" || e.d.ClientID != "slow-rp" {
					t.Fatalf("queue operation %s %s, want the slow client's deliveries complete", e.op, e.d.ClientID)
				}
			}
			if _, most := slow.held(); most != tt.want {
				t.Fatalf("the slow client had at most %d deliveries in flight, want %d", most, tt.want)
			}
		})
	}
}

// An organisation's client's delivery connects only to public addresses,
// checked on the address dialled after name resolution: "localhost" (as a
// name rebound to 127.0.0.1 would) and the loopback literal are refused,
// audited once as "address not allowed" and abandoned, never retried; a
// platform client's reach the same endpoint.
func TestNotifierOrganisationReachesOnlyPublicAddresses(t *testing.T) {
	km := newKeyManager(t)
	tests := []struct {
		name      string
		tenantID  string
		host      string
		delivered bool
	}{
		{name: "ok/platform client, localhost", host: "localhost", delivered: true},
		{name: "ok/platform client, loopback literal", host: "127.0.0.1", delivered: true},
		{name: "fail/organisation's client, a name resolving to loopback", tenantID: "ten_acme", host: "localhost"},
		{name: "fail/organisation's client, loopback literal", tenantID: "ten_acme", host: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc := newReceiver(t, status(http.StatusOK))
			_, port, _ := net.SplitHostPort(rc.srv.Listener.Addr().String())
			h := newHarness(t, newMemQueue(), km, nil) // the Notifier's own transports
			h.run(t)
			d := store.BackchannelLogout{ClientID: "rp-1", URI: "http://" + net.JoinHostPort(tt.host, port) + "/bcl",
				Subject: "usr_1", SID: "sid-1", TenantID: tt.tenantID}
			if err := h.n.Enqueue(context.Background(), []store.BackchannelLogout{d}); err != nil {
				t.Fatal(err)
			}
			if e := h.q.next(t); e.op != "complete" {
				t.Fatalf("queue operation %s, want complete (delivered, or refused and abandoned)", e.op)
			}
			if got := len(rc.got()); got != map[bool]int{true: 1}[tt.delivered] {
				t.Fatalf("receiver got %d requests, delivered %v", got, tt.delivered)
			}
			audits := h.audit.all()
			if tt.delivered {
				if len(audits) != 0 {
					t.Fatalf("audit %+v, want none", audits)
				}
				return
			}
			want := map[string]string{"attempt": "1", "error": "address not allowed", "will_retry": "false", "sid": "sid-1"}
			if len(audits) != 1 || audits[0].Action != backchannel.AuditAction || !maps.Equal(audits[0].Details, want) {
				t.Fatalf("audit %+v, want one %s with %v", audits, backchannel.AuditAction, want)
			}
		})
	}
}

// PublicAddress: what an organisation's client's delivery may connect to.
func TestPublicAddress(t *testing.T) {
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"93.184.216.34", true},
		{"8.8.8.8", true},
		{"100.128.0.1", true}, // just above 100.64.0.0/10
		{"2606:4700:4700::1111", true},
		{"127.0.0.1", false},
		{"127.8.8.8", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		{"10.0.0.5", false},
		{"::ffff:10.0.0.5", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"fc00::1", false},
		{"fd00:ec2::254", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"::", false},
		{"100.100.100.200", false},
		{"224.0.0.1", false},
		{"ff02::1", false},
		{"255.255.255.255", false},
		// Ranges used inside networks, and IPv6 addresses that carry an
		// IPv4 one, judged by the IPv4 address they reach.
		{"198.18.0.1", false},
		{"192.0.0.192", false},
		{"240.0.0.1", false},
		{"64:ff9b::a00:5", false},
		{"64:ff9b::a9fe:a9fe", false},
		{"64:ff9b::5db8:d822", true}, // NAT64 to 93.184.216.34
		{"64:ff9b:1::a00:5", false},
		{"2002:a00:5::1", false},
		{"2002:5db8:d822::1", true}, // 6to4 of 93.184.216.34
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false},
		{"2001:db8::1", false},
	} {
		if got := backchannel.PublicAddress(netip.MustParseAddr(tt.addr)); got != tt.ok {
			t.Errorf("PublicAddress(%s) = %v, want %v", tt.addr, got, tt.ok)
		}
	}
	if backchannel.PublicAddress(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}
