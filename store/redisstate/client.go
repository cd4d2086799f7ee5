package redisstate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store/rawconn"
)

// Timeouts that make a dead or hung Redis fail fast instead of holding
// requests. Commands are not retried and a connection is dialled once, so a
// call gives up after about one timeout.
const (
	DialTimeout  = time.Second
	ReadTimeout  = time.Second
	WriteTimeout = time.Second
	PoolTimeout  = time.Second
)

const (
	noRetries    = -1 // go-redis: -1 disables command retries (0 means the default, 3)
	dialAttempts = 1  // go-redis DialerRetries: attempts per connection (0 means 5)
)

// schemes lists the URL schemes NewClient takes, the plain form of each
// before its TLS form; newClient's switch takes exactly these.
var schemes = []string{"redis", "rediss", "redis-sentinel", "rediss-sentinel", "redis-cluster", "rediss-cluster"}

// Schemes returns the URL schemes NewClient takes (lower case): the settings
// check PORTCULLIS_REDIS_URL against them.
func Schemes() []string { return append([]string(nil), schemes...) }

// TakesScheme reports whether NewClient takes URLs of scheme (any case).
func TakesScheme(scheme string) bool {
	for _, s := range schemes {
		if strings.EqualFold(s, scheme) {
			return true
		}
	}
	return false
}

// SchemesText names the schemes NewClient takes, for messages:
// "redis://, rediss://, …, redis-cluster:// or rediss-cluster://".
func SchemesText() string {
	names := make([]string, len(schemes))
	for i, s := range schemes {
		names[i] = s + "://"
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// NewClient opens a client for the Redis named by rawURL:
//
//	redis://[user:password@]host:port[/db][?options]   one server (go-redis URL options)
//	rediss://…                                          the same over TLS
//	redis-sentinel://[user:password@]host1:26379,host2:26379/mastername[?db=N&sentinel_username=U&sentinel_password=P]
//	rediss-sentinel://…                                 the same over TLS
//	redis-cluster://[user:password@]host1:6379,host2:6379
//	rediss-cluster://…                                  the same over TLS
//
// The user and password of the sentinel and cluster forms are those of the
// Redis servers. Timeouts default to the short ones above. Errors never
// contain the password. NewClient does not connect; use Ping.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	c, err := newClient(rawURL)
	if err != nil {
		return nil, errors.New(redact(err.Error(), rawURL))
	}
	return c, nil
}

func newClient(rawURL string) (redis.UniversalClient, error) {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, errors.New("redis URL: want " + SchemesText())
	}
	switch strings.ToLower(scheme) {
	case "redis", "rediss":
		if _, err := url.Parse(rawURL); err != nil {
			return nil, fmt.Errorf("redis URL: %v", urlReason(err))
		}
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("redis URL: %v", urlReason(err))
		}
		applyTimeouts(&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout)
		if opt.MaxRetries == 0 {
			opt.MaxRetries = noRetries
		}
		if opt.DialerRetries <= 0 {
			opt.DialerRetries = dialAttempts
		}
		opt.ContextTimeoutEnabled = true
		if !strings.Contains(rawURL, "protocol=") {
			// RESP2 unless the URL asks: Portcullis uses no push messages
			// (no client-side caching), and under RESP3 every reply first
			// goes through the push-notification check (≈6% of the server's
			// CPU in an SSO round trip).
			opt.Protocol = 2
		}
		opt.Dialer = dialer(opt.DialTimeout, opt.TLSConfig)
		return redis.NewClient(opt), nil
	case "redis-sentinel", "rediss-sentinel", "redis-cluster", "rediss-cluster":
		opt, err := parseMultiHost(rawURL)
		if err != nil {
			return nil, err
		}
		opt.Dialer = dialer(opt.DialTimeout, opt.TLSConfig)
		return redis.NewUniversalClient(opt), nil
	default:
		return nil, fmt.Errorf("redis URL: unknown scheme %q: want %s", scheme, SchemesText())
	}
}

// dialer is how Portcullis dials Redis: go-redis's TCP dial (its timeout
// and keep-alives) wrapped by store/rawconn, with TLS on top when tlsConfig
// is set. go-redis dials TLS whole (tls.DialWithDialer), which would leave
// the TCP connection under a rediss:// one standard; here TLS reads and
// writes through the raw connection. As with tls.DialWithDialer, timeout
// bounds the dial and the handshake together, and the server name is the
// address's host unless tlsConfig names one.
func dialer(timeout time.Duration, tlsConfig *tls.Config) rawconn.DialFunc {
	dial := rawconn.WrapDial(redis.NewDialer(&redis.Options{DialTimeout: timeout}))
	if tlsConfig == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := tlsConfig
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("redis TLS handshake with %s: %w", addr, err)
		}
		return tc, nil
	}
}

// parseMultiHost maps the sentinel and cluster URL forms to UniversalOptions.
func parseMultiHost(rawURL string) (*redis.UniversalOptions, error) {
	scheme, rest, _ := strings.Cut(rawURL, "://")
	scheme = strings.ToLower(scheme)
	sentinel := strings.HasSuffix(scheme, "-sentinel")
	useTLS := strings.HasPrefix(scheme, "rediss")

	// The authority holds several host:port pairs, which net/url refuses:
	// parse the URL with a placeholder host and split the hosts ourselves.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	userinfo, hosts := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	u, err := url.Parse("redis://" + userinfo + "placeholder" + tail)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %v", urlReason(err))
	}

	defaultPort := "6379"
	if sentinel {
		defaultPort = "26379"
	}
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			// No port given: use the default one.
			host, port = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), defaultPort
		}
		if host == "" {
			return nil, fmt.Errorf("redis URL: empty host in %q", hosts)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("redis URL: invalid port %q", port)
		}
		addrs = append(addrs, net.JoinHostPort(host, port))
	}
	if len(addrs) == 0 {
		return nil, errors.New("redis URL: no host")
	}

	opt := &redis.UniversalOptions{
		Addrs:                 addrs,
		MaxRetries:            noRetries,
		DialerRetries:         dialAttempts,
		ContextTimeoutEnabled: true,
	}
	if u.User != nil {
		opt.Username = u.User.Username()
		opt.Password, _ = u.User.Password()
	}
	if useTLS {
		// ServerName is left empty: each connection verifies the host it dials.
		opt.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}

	path := strings.Trim(u.Path, "/")
	q := u.Query()
	if sentinel {
		if path == "" || strings.Contains(path, "/") {
			return nil, errors.New("redis URL: the sentinel form needs the master name as its path (redis-sentinel://host:26379/mymaster)")
		}
		opt.MasterName = path
		if v := q.Get("db"); v != "" {
			db, err := strconv.Atoi(v)
			if err != nil || db < 0 {
				return nil, fmt.Errorf("redis URL: invalid db %q", v)
			}
			opt.DB = db
		}
		opt.SentinelUsername = q.Get("sentinel_username")
		opt.SentinelPassword = q.Get("sentinel_password")
		for k := range q {
			switch k {
			case "db", "sentinel_username", "sentinel_password":
			default:
				return nil, fmt.Errorf("redis URL: unknown option %q (the sentinel form takes db, sentinel_username, sentinel_password)", k)
			}
		}
	} else {
		if path != "" {
			return nil, errors.New("redis URL: the cluster form takes no path (a cluster has only database 0)")
		}
		opt.IsClusterMode = true
		for k := range q {
			return nil, fmt.Errorf("redis URL: unknown option %q (the cluster form takes none)", k)
		}
	}
	applyTimeouts(&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout)
	return opt, nil
}

func applyTimeouts(dial, read, write, pool *time.Duration) {
	for _, d := range []struct {
		p   *time.Duration
		def time.Duration
	}{{dial, DialTimeout}, {read, ReadTimeout}, {write, WriteTimeout}, {pool, PoolTimeout}} {
		if *d.p <= 0 {
			*d.p = d.def
		}
	}
}

// urlReason drops the URL that *url.Error quotes (it would carry the password).
func urlReason(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redact removes every form of the URL's password from msg, a last line of
// defence should a library error quote it.
func redact(msg, rawURL string) string {
	var secrets []string
	add := func(s string) {
		if s == "" {
			return
		}
		secrets = append(secrets, s)
		if dec, err := url.PathUnescape(s); err == nil && dec != s {
			secrets = append(secrets, dec)
		}
		if dec, err := url.QueryUnescape(s); err == nil && dec != s {
			secrets = append(secrets, dec)
		}
	}
	_, rest, _ := strings.Cut(rawURL, "://")
	authority := rest
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		authority = rest[:end]
	}
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		if _, pass, ok := strings.Cut(authority[:i], ":"); ok {
			add(pass)
		}
	}
	if _, query, ok := strings.Cut(rest, "?"); ok {
		for _, kv := range strings.Split(query, "&") {
			if k, v, _ := strings.Cut(kv, "="); strings.Contains(strings.ToLower(k), "password") {
				add(v)
			}
		}
	}
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}
