package backchannel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Defaults of Config.
const (
	// DefaultTimeout bounds one delivery: connecting, sending and reading
	// the answer (the contract's 5 s).
	DefaultTimeout = 5 * time.Second
	// DefaultConcurrency is how many deliveries an instance makes at once.
	DefaultConcurrency = 8
	// DefaultPerClient is how many of them may be to one client: a client
	// whose endpoint never answers holds each of its slots for the whole
	// Timeout, and must not hold them all (or most) while the other
	// clients' logouts wait.
	DefaultPerClient = 2
	// DefaultConnectTimeout bounds the connection to a client (within
	// Timeout), so that an address that never answers frees its slot sooner.
	DefaultConnectTimeout = 2 * time.Second
	// DefaultPollInterval is how often Run looks for deliveries due (other
	// instances' entries, retries), besides being woken by Enqueue.
	DefaultPollInterval = time.Second
	// DefaultLease is how long a claimed delivery stays hidden from other
	// instances: longer than one attempt, so it is claimed again only when
	// the instance that claimed it stopped.
	DefaultLease = time.Minute
)

// DefaultBackoff is the wait after each failed attempt; after the last one
// the delivery is abandoned. Eleven attempts over about 19 minutes.
var DefaultBackoff = []time.Duration{
	time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute,
}

// AuditAction is the audit action of a failed delivery attempt.
const AuditAction = "logout.backchannel_failed"

// Queue is the durable queue of deliveries; store.BackchannelQueue documents
// the semantics (sqlstore implements it).
type Queue interface {
	EnqueueBackchannelLogouts(ctx context.Context, ds []store.BackchannelLogout) error
	ClaimBackchannelLogouts(ctx context.Context, c store.BackchannelClaim) ([]store.BackchannelLogout, error)
	CompleteBackchannelLogout(ctx context.Context, id string) error
	RetryBackchannelLogout(ctx context.Context, id string, next time.Time, lastErr string) error
}

// Auditor records audit events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// Config configures a Notifier. Issuer, Signer, Queue and Audit are required.
type Config struct {
	Issuer string  // the logout tokens' iss
	Signer Signer  // *keys.Manager
	Queue  Queue   // the durable queue shared by every instance
	Audit  Auditor // records logout.backchannel_failed
	Log    *slog.Logger

	// Timeout bounds one delivery (default DefaultTimeout).
	Timeout time.Duration
	// Backoff is the wait after the 1st, 2nd, … failed attempt; when it is
	// exhausted the delivery is abandoned (default DefaultBackoff).
	Backoff []time.Duration
	// Concurrency bounds the deliveries in flight (default DefaultConcurrency).
	Concurrency int
	// PerClient bounds the deliveries in flight to one client (default
	// DefaultPerClient; at most Concurrency-1, so that one client never
	// takes every slot, unless Concurrency is 1). The claim is fair besides:
	// a client with fewer deliveries in flight comes first
	// (store.BackchannelClaim).
	PerClient int
	// PollInterval is how often Run looks for due deliveries (default
	// DefaultPollInterval).
	PollInterval time.Duration
	// Lease is how long a claimed delivery is hidden from other claimers
	// (default DefaultLease; at least Timeout).
	Lease time.Duration
	// Transport sends platform clients' requests (default:
	// http.DefaultTransport's settings with connections bounded by
	// DefaultConnectTimeout). An organisation's client's requests always go
	// through the Notifier's own transport, which connects only to public
	// addresses (PublicAddress). Whatever it is, redirects are never
	// followed and Timeout applies.
	Transport http.RoundTripper
	// Now is the clock (default time.Now).
	Now func() time.Time
	// NewTicker returns the poll ticker's channel and its stop function
	// (default a time.Ticker); tests drive Run with it.
	NewTicker func(d time.Duration) (<-chan time.Time, func())
}

// Notifier delivers queued logout tokens. Enqueue may be called from any
// goroutine; Run runs the deliveries until its context ends.
type Notifier struct {
	cfg    Config
	client *http.Client // platform clients' deliveries
	public *http.Client // organisations' deliveries: public addresses only
	wake   chan struct{}

	mu       sync.Mutex
	inFlight map[string]int // deliveries being made, by client id
}

// New returns a Notifier for cfg, or the list of what is wrong with cfg.
func New(cfg Config) (*Notifier, error) {
	var errs []error
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("Issuer is required"))
	}
	if cfg.Signer == nil {
		errs = append(errs, errors.New("Signer is required"))
	}
	if cfg.Queue == nil {
		errs = append(errs, errors.New("Queue is required"))
	}
	if cfg.Audit == nil {
		errs = append(errs, errors.New("Audit is required"))
	}
	for _, d := range cfg.Backoff {
		if d <= 0 {
			errs = append(errs, errors.New("Backoff durations must be positive"))
			break
		}
	}
	if cfg.Timeout < 0 || cfg.Concurrency < 0 || cfg.PerClient < 0 || cfg.PollInterval < 0 || cfg.Lease < 0 {
		errs = append(errs, errors.New("Timeout, Concurrency, PerClient, PollInterval and Lease must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("backchannel: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Backoff == nil {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.PerClient == 0 {
		cfg.PerClient = DefaultPerClient
	}
	// One client never takes every slot (unless there is only one).
	cfg.PerClient = min(cfg.PerClient, max(cfg.Concurrency-1, 1))
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	cfg.Lease = max(cfg.Lease, cfg.Timeout+cfg.Timeout)
	if cfg.Transport == nil {
		cfg.Transport = newTransport(nil)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewTicker == nil {
		cfg.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	newClient := func(t http.RoundTripper) *http.Client {
		return &http.Client{
			Transport: t,
			// BCL §2.5 / the contract: a redirect is an answer, and not 200.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       cfg.Timeout,
		}
	}
	return &Notifier{cfg: cfg, client: newClient(cfg.Transport), public: newClient(newTransport(dialPublicOnly)),
		wake: make(chan struct{}, 1), inFlight: map[string]int{}}, nil
}

// newTransport is http.DefaultTransport's settings with a connection
// bounded by DefaultConnectTimeout: an address that never answers (a
// client's unroutable endpoint) holds a delivery slot for that long, not
// the whole Timeout. A control, when given, checks every address dialled;
// such a transport uses no proxy, since the proxy's address, not the
// client's, would be the one checked.
func newTransport(control func(network, address string, c syscall.RawConn) error) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: DefaultConnectTimeout, KeepAlive: 30 * time.Second, Control: control}).DialContext
	if control != nil {
		t.Proxy = nil
	}
	return t
}

// errNotPublic is a connection refused because it was to an address an
// organisation's client may not make Portcullis reach.
var errNotPublic = errors.New("address not allowed")

// dialPublicOnly is the dialer's check of an organisation's delivery: the
// address about to be connected to, after name resolution (so a name that
// resolves to an internal address, at any time, is caught), must be public.
func dialPublicOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !PublicAddress(ap.Addr()) {
		return errNotPublic
	}
	return nil
}

// Address ranges that are not public, besides those netip.Addr names.
var (
	thisNetwork   = netip.MustParsePrefix("0.0.0.0/8")     // RFC 791: "this host on this network"
	sharedAddress = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598: carrier-grade NAT, some clouds' metadata
	notPublic     = []netip.Prefix{
		netip.MustParsePrefix("192.0.0.0/24"),   // RFC 6890: IETF protocol assignments
		netip.MustParsePrefix("198.18.0.0/15"),  // RFC 2544: benchmarking, used inside networks
		netip.MustParsePrefix("240.0.0.0/4"),    // reserved (class E), used for pods and services
		netip.MustParsePrefix("64:ff9b:1::/48"), // RFC 8215: local-use NAT64
		netip.MustParsePrefix("2001::/32"),      // Teredo: an IPv4 address obfuscated inside
		netip.MustParsePrefix("2001:db8::/32"),  // documentation
		netip.MustParsePrefix("100::/64"),       // discard-only
		netip.MustParsePrefix("2001:10::/28"),   // ORCHID
	}
	nat64     = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052: an IPv4 address in the last 32 bits
	sixToFour = netip.MustParsePrefix("2002::/16")    // RFC 3056: an IPv4 address in bits 16–47
)

// PublicAddress reports whether an organisation's client's back-channel
// delivery may connect to a: not loopback, private (RFC 1918, fc00::/7),
// link-local (169.254.0.0/16 with the cloud metadata services, fe80::/10),
// unspecified, multicast, 0.0.0.0/8, 100.64.0.0/10 or another range used
// inside networks (notPublic), in IPv4-mapped IPv6 form too. An IPv6
// address that carries an IPv4 one (NAT64's 64:ff9b::/96, 6to4's 2002::/16)
// is judged by the IPv4 address it reaches: a NAT64 gateway would carry
// 64:ff9b::a00:5 to 10.0.0.5. An organisation's admin registers the URI,
// not the operator, and must not make Portcullis POST into the network it
// runs in.
func PublicAddress(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return false
	}
	switch {
	case nat64.Contains(a):
		b := a.As16()
		return PublicAddress(netip.AddrFrom4([4]byte(b[12:16])))
	case sixToFour.Contains(a):
		b := a.As16()
		return PublicAddress(netip.AddrFrom4([4]byte(b[2:6])))
	}
	for _, p := range notPublic {
		if p.Contains(a) {
			return false
		}
	}
	return a.IsGlobalUnicast() && !a.IsPrivate() && !a.IsLoopback() && !a.IsLinkLocalUnicast() &&
		!thisNetwork.Contains(a) && !sharedAddress.Contains(a)
}

// Enqueue stores the deliveries durably (all or none), due now, and wakes
// Run. It sets each one's ID, CreatedAt and NextAttemptAt. A delivery
// without a client id, an absolute http(s) URI, or a sub or sid is refused
// (nothing is stored): it could never be delivered.
func (n *Notifier) Enqueue(ctx context.Context, ds []store.BackchannelLogout) error {
	if len(ds) == 0 {
		return nil
	}
	now := n.cfg.Now()
	out := make([]store.BackchannelLogout, len(ds))
	for i, d := range ds {
		if err := deliverable(d); err != nil {
			return fmt.Errorf("backchannel: enqueue: delivery %d to %q: %w", i, d.ClientID, err)
		}
		id, err := randomID()
		if err != nil {
			return fmt.Errorf("backchannel: enqueue: %w", err)
		}
		d.ID, d.CreatedAt, d.NextAttemptAt, d.Attempts, d.LastError = "bcl_"+id, now, now, 0, ""
		out[i] = d
	}
	if err := n.cfg.Queue.EnqueueBackchannelLogouts(ctx, out); err != nil {
		return fmt.Errorf("backchannel: enqueue: %w", err)
	}
	copy(ds, out)
	n.signal()
	return nil
}

// deliverable says why d could never be delivered, or nil.
func deliverable(d store.BackchannelLogout) error {
	if d.ClientID == "" {
		return errors.New("no client id")
	}
	if d.Subject == "" && d.SID == "" {
		return errors.New("neither sub nor sid")
	}
	u, err := url.Parse(d.URI)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("the back-channel logout URI is not an absolute http(s) URL")
	}
	return nil
}

func (n *Notifier) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Run delivers due deliveries until ctx ends, then waits for the attempts in
// flight (which ctx cancels; their lease runs out and another attempt
// follows). It looks for work when Enqueue wakes it, when a delivery
// finishes, and every PollInterval.
func (n *Notifier) Run(ctx context.Context) {
	tick, stop := n.cfg.NewTicker(n.cfg.PollInterval)
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, n.cfg.Concurrency)
	freed := make(chan struct{}, 1)
	for {
		n.fill(ctx, slots, freed, &wg)
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		case <-freed:
		case <-tick:
		}
	}
}

// fill claims as many due deliveries as there are free slots, fairly
// across clients and at most PerClient in flight to each, and starts them,
// until the queue has no more due that may start.
func (n *Notifier) fill(ctx context.Context, slots, freed chan struct{}, wg *sync.WaitGroup) {
	for ctx.Err() == nil {
		free := cap(slots) - len(slots) // only this goroutine adds to slots
		if free == 0 {
			return
		}
		ds, err := n.cfg.Queue.ClaimBackchannelLogouts(ctx, store.BackchannelClaim{Now: n.cfg.Now(), Limit: free,
			Lease: n.cfg.Lease, PerClient: n.cfg.PerClient, InFlight: n.busy()})
		if err != nil {
			if ctx.Err() == nil {
				n.cfg.Log.Error("back-channel logout: claim due deliveries", "err", err)
			}
			return
		}
		for _, d := range ds {
			slots <- struct{}{}
			n.track(d.ClientID, 1)
			wg.Add(1)
			go func() {
				defer func() {
					n.track(d.ClientID, -1)
					<-slots
					select {
					case freed <- struct{}{}:
					default:
					}
					wg.Done()
				}()
				n.attempt(ctx, d)
			}()
		}
		if len(ds) < free {
			return
		}
	}
}

// busy returns how many deliveries of each client are in flight.
func (n *Notifier) busy() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.inFlight)
}

// track counts a delivery of clientID starting (+1) or ending (-1).
func (n *Notifier) track(clientID string, delta int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inFlight[clientID] += delta; n.inFlight[clientID] <= 0 {
		delete(n.inFlight, clientID)
	}
}

// attempt makes one delivery attempt of d and records its outcome.
func (n *Notifier) attempt(ctx context.Context, d store.BackchannelLogout) {
	err := n.deliver(ctx, d)
	if err == nil {
		n.finish(ctx, d, "delivered")
		n.cfg.Log.Info("back-channel logout delivered", "client_id", d.ClientID, "sid", d.SID, "attempt", d.Attempts+1)
		return
	}
	if ctx.Err() != nil {
		// Shutting down: not the client's failure. The lease runs out and
		// the delivery is attempted again.
		return
	}
	class := errorClass(err)
	attempt := d.Attempts + 1
	// A refused address is refused again at every attempt: no retries.
	willRetry := d.Attempts < len(n.cfg.Backoff) && !errors.Is(err, errNotPublic)
	// The outcome must be recorded even when ctx ends meanwhile: first in
	// the audit, then in the queue, so that whoever sees the queue move on
	// (another instance, a test) finds the attempt audited.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	details := map[string]string{"attempt": strconv.Itoa(attempt), "will_retry": strconv.FormatBool(willRetry), "sid": d.SID}
	var se *statusError
	if errors.As(err, &se) {
		details["status"] = strconv.Itoa(se.status)
	} else {
		details["error"] = class
	}
	n.cfg.Audit.Record(wctx, store.AuditEvent{Action: AuditAction, Outcome: store.OutcomeFailure,
		TargetID: d.Subject, ClientID: d.ClientID, Details: details})
	n.cfg.Log.Warn("back-channel logout attempt failed", "client_id", d.ClientID, "sid", d.SID,
		"attempt", attempt, "will_retry", willRetry, "reason", class)
	if willRetry {
		next := n.cfg.Now().Add(n.cfg.Backoff[d.Attempts])
		if rerr := n.cfg.Queue.RetryBackchannelLogout(wctx, d.ID, next, class); rerr != nil && !errors.Is(rerr, store.ErrNotFound) {
			n.cfg.Log.Error("back-channel logout: record failed attempt", "client_id", d.ClientID, "err", rerr)
		}
	} else {
		n.finish(wctx, d, "abandoned")
	}
}

// finish removes d from the queue.
func (n *Notifier) finish(ctx context.Context, d store.BackchannelLogout, why string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := n.cfg.Queue.CompleteBackchannelLogout(ctx, d.ID); err != nil {
		n.cfg.Log.Error("back-channel logout: remove "+why+" delivery", "client_id", d.ClientID, "err", err)
	}
}

// statusError is an answer other than 200 or 204.
type statusError struct{ status int }

func (e *statusError) Error() string { return "HTTP " + strconv.Itoa(e.status) }

// Failures before any request is sent.
var (
	// errMint is a logout token that could not be made (no signing key yet).
	errMint = errors.New("logout token not minted")
	// errBadURI is a URI no request can be made to.
	errBadURI = errors.New("invalid uri")
)

// deliver mints a fresh logout token for d and POSTs it (BCL §2.5); only
// 200 and 204 are success (BCL §2.8).
func (n *Notifier) deliver(ctx context.Context, d store.BackchannelLogout) error {
	tok, err := Mint(n.cfg.Signer, n.cfg.Issuer, d, n.cfg.Now())
	if err != nil {
		n.cfg.Log.Error("back-channel logout: mint token", "client_id", d.ClientID, "err", err)
		return errMint
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	body := url.Values{"logout_token": {tok}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URI, strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %w", errBadURI, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hc := n.client
	if d.TenantID != "" {
		hc = n.public
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return &statusError{status: resp.StatusCode}
	}
	return nil
}

// errorClass names why an attempt failed, without the token, the URI or
// anything a client's answer said.
func errorClass(err error) string {
	var se *statusError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, errMint):
		return "token not minted"
	case errors.Is(err, errBadURI):
		return "invalid uri"
	case errors.Is(err, errNotPublic):
		return errNotPublic.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "network error"
	}
}
