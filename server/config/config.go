// Package config defines every Portcullis setting (environment variable and
// flag), parses and validates them all at once, and reports every problem
// naming the setting and what it expects.
//
// It reads nothing by itself: the caller passes the flag arguments and an
// environment lookup, so tests and fuzzing need no process state. It must
// never log, and error messages never contain the value of a secret setting.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/store/redisstate"
)

// Config is the validated configuration of a Portcullis process.
type Config struct {
	Addr                string
	Issuer              string
	PublicURL           string
	DatabaseURL         string
	RedisURL            string
	RedisKeyPrefix      string
	KeyEncryptionKey    string // secret; base64, comma-separated list allowed
	AutoMigrate         bool
	SigningAlg          string
	RSABits             int
	AccessTokenTTL      time.Duration
	IDTokenTTL          time.Duration
	RefreshIdleTTL      time.Duration
	RefreshMaxAge       time.Duration
	RefreshReuseGrace   time.Duration
	MaxClientTokenTTL   time.Duration // cap on a client's access_token_ttl; the revocation horizon
	MaxSessionsPerUser  int
	KeyRotationInterval time.Duration
	JWKSMaxAge          time.Duration
	KeySyncInterval     time.Duration
	DefaultAudience     string
	PolicyFile          string
	SMTPURL             string // secret (may hold a password)
	MailFrom            string
	PublicRegistration  bool
	InviteTTL           time.Duration
	ResetTTL            time.Duration
	VerifyEmailTTL      time.Duration
	MFAIssuer           string        // the issuer (label) of otpauth:// URIs
	MFATokenTTL         time.Duration // lifetime of an mfa_token
	APIKeyMaxTTL        time.Duration // the longest lifetime an API key may be given
	TrustedProxies      []netip.Prefix
	RateLimits          bool
	// Tenants turns organisations on (PORTCULLIS_TENANTS=on): logins name a
	// tenant, tokens carry it, admins are confined to theirs.
	Tenants           bool
	CORSOrigins       []string
	LogFormat         string // "text", "json" or "" (auto)
	LogLevel          string
	DebugAddr         string
	MetricsAddr       string // "": /metrics on Addr
	AppURL            string
	TLSCert           string
	TLSKey            string
	BodyLimitBytes    int64
	RequestTimeout    time.Duration
	ShutdownTimeout   time.Duration
	Argon2MemoryKiB   uint32
	Argon2Time        uint32
	Argon2Threads     uint8
	PasswordMinLength int
	PasswordMaxLength int
	ProductName       string
	BrandColor        string
	LoginFailureLimit int
	// Browser sign-in (the authorization code flow).
	AuthCodeTTL         time.Duration // lifetime of an authorization code
	AuthorizeRequestTTL time.Duration // how long a pending authorization request waits for login and consent
	SessionIdleTTL      time.Duration // a browser session unused this long ends
	SessionMaxAge       time.Duration // absolute lifetime of a browser session
	// WebAuthn (passkeys and security keys). WebAuthnRPID is "" when it is
	// neither set nor derivable (an issuer whose host is an IP address):
	// passkeys are then off.
	WebAuthnRPID    string
	WebAuthnOrigins []string

	// IdentityProvidersFile is the upstream OpenID providers (YAML); empty:
	// none.
	IdentityProvidersFile string
	// LookupEnv is the environment lookup the settings were read with: the
	// providers file's client_secret_env names are resolved through it (so
	// nothing past cmd reads the process environment). Nil: none is set.
	LookupEnv func(string) (string, bool)

	// Warnings are what the settings allow but an operator must hear
	// about, each one line naming its setting (an http issuer off
	// loopback, ...); cmd logs each once at start. They never contain the
	// value of a secret setting.
	Warnings []string
}

// Embedded reports whether the configuration uses the embedded SQLite store.
func (c Config) Embedded() bool { return strings.HasPrefix(c.DatabaseURL, "sqlite://") }

// PublicationDelay is how long a new key waits before it may sign: every
// instance has loaded it (KeySyncInterval) and every cached JWKS has expired
// (JWKSMaxAge).
func (c Config) PublicationDelay() time.Duration { return c.KeySyncInterval + c.JWKSMaxAge }

// RevocationHorizon is the longest an access or id token of any client may
// live: revocations are remembered, and retired keys published (plus a
// minute), at least this long.
func (c Config) RevocationHorizon() time.Duration {
	return max(c.AccessTokenTTL, c.IDTokenTTL, c.MaxClientTokenTTL)
}

// Setting describes one setting: its environment variable, its flag, its
// default and what it means.
type Setting struct {
	Env     string
	Default string
	Help    string
	Secret  bool
	apply   func(c *Config, v string) error
}

// Flag is the setting's flag name: PORTCULLIS_KEY_SYNC_INTERVAL → key-sync-interval.
func (s Setting) Flag() string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.Env, "PORTCULLIS_")), "_", "-")
}

// Settings lists every setting in the order --help shows them.
func Settings() []Setting { return settings }

var settings = []Setting{
	{Env: "PORTCULLIS_ADDR", Default: "127.0.0.1:8080", Help: "listen address (host:port)", apply: func(c *Config, v string) error {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			return errors.New("expects host:port, for example 127.0.0.1:8080 or :8080")
		}
		c.Addr = v
		return nil
	}},
	{Env: "PORTCULLIS_ISSUER", Default: "", Help: "the iss of every token and the discovery issuer, exactly (default http:// + addr, localhost when the host is empty)", apply: stringSetting(func(c *Config) *string { return &c.Issuer })},
	{Env: "PORTCULLIS_PUBLIC_URL", Default: "", Help: "base of links sent in emails (default: the issuer)", apply: stringSetting(func(c *Config) *string { return &c.PublicURL })},
	{Env: "PORTCULLIS_DATABASE_URL", Default: "sqlite://./data/portcullis.db", Help: "postgres://… for PostgreSQL, sqlite://PATH for the embedded store", Secret: true, apply: func(c *Config, v string) error {
		switch {
		case strings.HasPrefix(v, "postgres://"), strings.HasPrefix(v, "postgresql://"):
			if _, err := url.Parse(v); err != nil {
				return errors.New("expects a valid postgres:// URL")
			}
		case strings.HasPrefix(v, "sqlite://"):
			if strings.TrimPrefix(v, "sqlite://") == "" {
				return errors.New("expects sqlite://PATH with a file path")
			}
		default:
			return errors.New("expects postgres://… or sqlite://PATH")
		}
		c.DatabaseURL = v
		return nil
	}},
	{Env: "PORTCULLIS_REDIS_URL", Default: "", Help: redisstate.SchemesText() + " URL (the rediss forms use TLS); empty keeps token state in the database", Secret: true, apply: func(c *Config, v string) error {
		if v != "" {
			if u, err := url.Parse(v); err != nil || !redisstate.TakesScheme(u.Scheme) {
				return errors.New("expects a " + redisstate.SchemesText() + " URL")
			}
		}
		c.RedisURL = v
		return nil
	}},
	{Env: "PORTCULLIS_REDIS_KEY_PREFIX", Default: "pc:", Help: "prefix of every Redis key (to share one Redis between deployments)", apply: func(c *Config, v string) error {
		if v == "" || len(v) > 64 || strings.ContainsAny(v, "{} \t\n") {
			return errors.New("expects 1 to 64 characters without braces or spaces, for example pc:")
		}
		c.RedisKeyPrefix = v
		return nil
	}},
	{Env: "PORTCULLIS_KEY_ENCRYPTION_KEY", Default: "", Help: "base64 of 32 bytes, or a comma-separated list (the first encrypts, each decrypts); required with PostgreSQL, generated beside the SQLite file in embedded mode", Secret: true, apply: stringSetting(func(c *Config) *string { return &c.KeyEncryptionKey })},
	{Env: "PORTCULLIS_AUTO_MIGRATE", Default: "true", Help: "apply pending migrations at start", apply: boolSetting(func(c *Config) *bool { return &c.AutoMigrate })},
	{Env: "PORTCULLIS_SIGNING_ALG", Default: "RS256", Help: "RS256, ES256 or EdDSA for new signing keys", apply: func(c *Config, v string) error {
		switch v {
		case "RS256", "ES256", "EdDSA":
			c.SigningAlg = v
			return nil
		}
		return errors.New("expects RS256, ES256 or EdDSA")
	}},
	{Env: "PORTCULLIS_RSA_BITS", Default: "2048", Help: "RSA key size for RS256 keys: 2048, 3072 or 4096", apply: func(c *Config, v string) error {
		switch v {
		case "2048", "3072", "4096":
			c.RSABits, _ = strconv.Atoi(v)
			return nil
		}
		return errors.New("expects 2048, 3072 or 4096")
	}},
	{Env: "PORTCULLIS_ACCESS_TOKEN_TTL", Default: "15m", Help: "access token lifetime", apply: durationSetting(time.Second, 24*time.Hour, func(c *Config) *time.Duration { return &c.AccessTokenTTL })},
	{Env: "PORTCULLIS_ID_TOKEN_TTL", Default: "15m", Help: "id token lifetime", apply: durationSetting(time.Second, 24*time.Hour, func(c *Config) *time.Duration { return &c.IDTokenTTL })},
	{Env: "PORTCULLIS_REFRESH_TOKEN_IDLE_TTL", Default: "168h", Help: "a refresh token unused this long expires", apply: durationAtLeast(time.Minute, func(c *Config) *time.Duration { return &c.RefreshIdleTTL })},
	{Env: "PORTCULLIS_REFRESH_TOKEN_MAX_AGE", Default: "720h", Help: "absolute lifetime of a refresh family (session)", apply: durationAtLeast(time.Minute, func(c *Config) *time.Duration { return &c.RefreshMaxAge })},
	{Env: "PORTCULLIS_REFRESH_REUSE_GRACE", Default: "0s", Help: "window in which presenting the just-rotated refresh token again is a concurrent retry, not theft", apply: durationSetting(0, 5*time.Minute, func(c *Config) *time.Duration { return &c.RefreshReuseGrace })},
	{Env: "PORTCULLIS_MAX_CLIENT_TOKEN_TTL", Default: "24h", Help: "longest access_token_ttl a client may be given; revocations and retired keys are kept at least this long", apply: durationSetting(time.Second, 720*time.Hour, func(c *Config) *time.Duration { return &c.MaxClientTokenTTL })},
	{Env: "PORTCULLIS_MAX_SESSIONS_PER_USER", Default: "100", Help: "live sessions per user, refresh families and browser sessions each; a new login past it ends the oldest", apply: uintSetting(1, 100000, func(c *Config, n uint64) { c.MaxSessionsPerUser = int(n) })},
	{Env: "PORTCULLIS_AUTH_CODE_TTL", Default: "60s", Help: "lifetime of an authorization code (at most 10m, RFC 6749 §4.1.2)", apply: durationSetting(time.Second, 10*time.Minute, func(c *Config) *time.Duration { return &c.AuthCodeTTL })},
	{Env: "PORTCULLIS_AUTHORIZE_REQUEST_TTL", Default: "30m", Help: "how long a pending authorization request waits for the person to sign in and consent; after it the client is answered access_denied", apply: durationAtLeast(time.Second, func(c *Config) *time.Duration { return &c.AuthorizeRequestTTL })},
	{Env: "PORTCULLIS_SESSION_IDLE_TTL", Default: "8h", Help: "a browser (single sign-on) session unused this long ends; a refresh of one of its grants without `offline_access` counts as use", apply: durationAtLeast(time.Second, func(c *Config) *time.Duration { return &c.SessionIdleTTL })},
	{Env: "PORTCULLIS_SESSION_MAX_AGE", Default: "168h", Help: "absolute lifetime of a browser (single sign-on) session, and of its \"Keep me signed in\" cookie", apply: durationAtLeast(time.Second, func(c *Config) *time.Duration { return &c.SessionMaxAge })},
	{Env: "PORTCULLIS_WEBAUTHN_RP_ID", Default: "", Help: "WebAuthn relying party id of passkeys and security keys: the domain of the sign-in pages or a registrable suffix of it (default: the issuer's host; passkeys are off when that is an IP address)", apply: func(c *Config, v string) error {
		if v != "" && !validRPID(v) {
			return errors.New("expects a domain name such as example.com or auth.example.com (no scheme, port or path; not an IP address)")
		}
		c.WebAuthnRPID = strings.ToLower(v)
		return nil
	}},
	{Env: "PORTCULLIS_WEBAUTHN_ORIGINS", Default: "", Help: "comma-separated origins where browsers register and use passkeys, each on the RP ID's domain (default: the issuer's origin)", apply: func(c *Config, v string) error {
		c.WebAuthnOrigins = nil
		for _, o := range splitList(v) {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
				return fmt.Errorf("expects origins such as https://auth.example.com; %q is not one", o)
			}
			c.WebAuthnOrigins = append(c.WebAuthnOrigins, strings.ToLower(u.Scheme+"://"+u.Host))
		}
		return nil
	}},
	{Env: "PORTCULLIS_KEY_ROTATION_INTERVAL", Default: "0", Help: "automatic signing-key rotation period (0: manual)", apply: durationAtLeast(0, func(c *Config) *time.Duration { return &c.KeyRotationInterval })},
	{Env: "PORTCULLIS_JWKS_MAX_AGE", Default: "5m", Help: "Cache-Control max-age of the JWKS; a next key is published at least this long before it signs", apply: durationSetting(0, 24*time.Hour, func(c *Config) *time.Duration { return &c.JWKSMaxAge })},
	{Env: "PORTCULLIS_KEY_SYNC_INTERVAL", Default: "10s", Help: "how often an instance reloads key state", apply: durationSetting(100*time.Millisecond, time.Hour, func(c *Config) *time.Duration { return &c.KeySyncInterval })},
	{Env: "PORTCULLIS_DEFAULT_AUDIENCE", Default: "api", Help: "aud of access tokens when the client names none", apply: func(c *Config, v string) error {
		if strings.TrimSpace(v) == "" {
			return errors.New("expects a non-empty audience")
		}
		c.DefaultAudience = v
		return nil
	}},
	{Env: "PORTCULLIS_POLICY_FILE", Default: "", Help: "roles and permissions (YAML); empty: the built-in policy", apply: stringSetting(func(c *Config) *string { return &c.PolicyFile })},
	{Env: "PORTCULLIS_IDENTITY_PROVIDERS_FILE", Default: "", Help: "upstream OpenID providers for \"Sign in with …\" and token exchange (YAML: providers: [{id, name, issuer, client_id, client_secret or client_secret_env, scopes, allowed_domains, jit, link, trust_mfa}]); empty: none", apply: stringSetting(func(c *Config) *string { return &c.IdentityProvidersFile })},
	{Env: "PORTCULLIS_SMTP_URL", Default: "", Help: "smtp://user:pass@host:port (STARTTLS required unless the host is loopback), smtps://… (implicit TLS) or smtp+insecure://host:port (plain text allowed, no credentials off loopback); empty: emails are written to the log, marked not sent", Secret: true, apply: func(c *Config, v string) error {
		if v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "smtp" && u.Scheme != "smtps" && u.Scheme != "smtp+insecure") || u.Host == "" {
				return errors.New("expects smtp://[user:pass@]host:port, smtps://… or smtp+insecure://host:port")
			}
		}
		c.SMTPURL = v
		return nil
	}},
	{Env: "PORTCULLIS_MAIL_FROM", Default: "Portcullis <no-reply@localhost>", Help: "sender of emails", apply: func(c *Config, v string) error {
		if !strings.Contains(v, "@") {
			return errors.New("expects an address such as Name <no-reply@example.com>")
		}
		c.MailFrom = v
		return nil
	}},
	{Env: "PORTCULLIS_PUBLIC_REGISTRATION", Default: "false", Help: "allow POST /auth/register", apply: boolSetting(func(c *Config) *bool { return &c.PublicRegistration })},
	{Env: "PORTCULLIS_INVITE_TTL", Default: "48h", Help: "lifetime of an invite link", apply: durationAtLeast(time.Minute, func(c *Config) *time.Duration { return &c.InviteTTL })},
	{Env: "PORTCULLIS_RESET_TTL", Default: "1h", Help: "lifetime of a password-reset link", apply: durationAtLeast(time.Minute, func(c *Config) *time.Duration { return &c.ResetTTL })},
	{Env: "PORTCULLIS_VERIFY_EMAIL_TTL", Default: "48h", Help: "lifetime of an email-verification link", apply: durationAtLeast(time.Minute, func(c *Config) *time.Duration { return &c.VerifyEmailTTL })},
	{Env: "PORTCULLIS_MFA_ISSUER", Default: "Portcullis", Help: "the issuer shown by authenticator apps for a TOTP enrolment (the otpauth:// label)", apply: func(c *Config, v string) error {
		v = strings.TrimSpace(v)
		if v == "" || len(v) > 64 || strings.ContainsAny(v, ":\x00\r\n") {
			return errors.New("expects a name of 1 to 64 characters without ':' or control characters")
		}
		c.MFAIssuer = v
		return nil
	}},
	{Env: "PORTCULLIS_MFA_TOKEN_TTL", Default: "5m", Help: "lifetime of an mfa_token (a correct password waiting for its second factor)", apply: durationSetting(30*time.Second, time.Hour, func(c *Config) *time.Duration { return &c.MFATokenTTL })},
	{Env: "PORTCULLIS_API_KEY_MAX_TTL", Default: "8760h", Help: "the longest lifetime an API key may be given (its expires_at; a key without one gets 90 days, or this when shorter); from 1h to 87600h", apply: durationSetting(time.Hour, longestDuration, func(c *Config) *time.Duration { return &c.APIKeyMaxTTL })},
	{Env: "PORTCULLIS_TRUSTED_PROXIES", Default: "", Help: "comma-separated CIDRs whose X-Forwarded-For is believed for the client IP", apply: func(c *Config, v string) error {
		c.TrustedProxies = nil
		for _, part := range splitList(v) {
			p, err := netip.ParsePrefix(part)
			if err != nil {
				addr, aerr := netip.ParseAddr(part)
				if aerr != nil {
					return fmt.Errorf("expects CIDRs such as 10.0.0.0/8; %q is not one", part)
				}
				p = netip.PrefixFrom(addr, addr.BitLen())
			}
			// A proxy's X-Forwarded-For names the client, so trusting
			// everyone (0.0.0.0/0, "we are behind some load balancer")
			// lets any client choose its address: the per-address limits
			// and the audit's addresses would be whatever it sends. A
			// network wider than /8 (IPv4) or /32 (IPv6) is refused.
			bits, minBits := p.Bits(), 32
			switch {
			case p.Addr().Is4():
				minBits = 8
			case p.Addr().Is4In6(): // ::ffff:a.b.c.d/n covers IPv4 /n-96
				bits, minBits = bits-96, 8
			}
			if bits < minBits {
				return fmt.Errorf("%q trusts more than a network of proxies (the widest accepted is /%d): name the proxies' own addresses or networks", part, minBits)
			}
			c.TrustedProxies = append(c.TrustedProxies, p.Masked())
		}
		return nil
	}},
	{Env: "PORTCULLIS_RATE_LIMITS", Default: "on", Help: "off turns every rate limit and login throttle off", apply: onOffSetting(func(c *Config) *bool { return &c.RateLimits })},
	{Env: "PORTCULLIS_TENANTS", Default: "off", Help: "on turns organisations (tenants) on: logins name a tenant and tokens carry it; turning it on moves existing role assignments into the tenant default", apply: onOffSetting(func(c *Config) *bool { return &c.Tenants })},
	{Env: "PORTCULLIS_CORS_ORIGINS", Default: "", Help: "comma-separated origins allowed to call the API from a browser", apply: func(c *Config, v string) error {
		c.CORSOrigins = nil
		for _, o := range splitList(v) {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return fmt.Errorf("expects origins such as https://app.example.com; %q is not one", o)
			}
			c.CORSOrigins = append(c.CORSOrigins, strings.TrimSuffix(o, "/"))
		}
		return nil
	}},
	{Env: "PORTCULLIS_LOG_FORMAT", Default: "", Help: "text or json (default: text on a terminal, else json)", apply: func(c *Config, v string) error {
		switch v {
		case "", "text", "json":
			c.LogFormat = v
			return nil
		}
		return errors.New("expects text or json")
	}},
	{Env: "PORTCULLIS_DEBUG_ADDR", Default: "", Help: "loopback host:port for Go's profiler (/debug/pprof/); empty: off", apply: func(c *Config, v string) error {
		if v != "" {
			host, port, err := net.SplitHostPort(v)
			ip := net.ParseIP(host)
			if err != nil || port == "" || !(host == "localhost" || (ip != nil && ip.IsLoopback())) {
				return errors.New("expects a loopback host:port such as 127.0.0.1:6060 (the profiler must never be public)")
			}
		}
		c.DebugAddr = v
		return nil
	}},
	{Env: "PORTCULLIS_METRICS_ADDR", Default: "", Help: "host:port of a separate listener for /metrics (e.g. 127.0.0.1:9090), which is then not served on PORTCULLIS_ADDR; empty: /metrics on PORTCULLIS_ADDR", apply: func(c *Config, v string) error {
		if v != "" {
			if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
				return errors.New("expects host:port, for example 127.0.0.1:9090")
			}
		}
		c.MetricsAddr = v
		return nil
	}},
	{Env: "PORTCULLIS_LOG_LEVEL", Default: "info", Help: "debug, info, warn or error", apply: func(c *Config, v string) error {
		switch v {
		case "debug", "info", "warn", "error":
			c.LogLevel = v
			return nil
		}
		return errors.New("expects debug, info, warn or error")
	}},
	{Env: "PORTCULLIS_APP_URL", Default: "", Help: "where the hosted pages send people after success", apply: urlSetting(true, func(c *Config) *string { return &c.AppURL })},
	{Env: "PORTCULLIS_TLS_CERT", Default: "", Help: "serve HTTPS (and HSTS) with this certificate file (with PORTCULLIS_TLS_KEY)", apply: stringSetting(func(c *Config) *string { return &c.TLSCert })},
	{Env: "PORTCULLIS_TLS_KEY", Default: "", Help: "private key file for PORTCULLIS_TLS_CERT", apply: stringSetting(func(c *Config) *string { return &c.TLSKey })},
	{Env: "PORTCULLIS_BODY_LIMIT", Default: "64KB", Help: "largest request body accepted (bytes, or with KB/MB)", apply: func(c *Config, v string) error {
		n, err := parseSize(v)
		if err != nil || n < 1024 || n > 16<<20 {
			return errors.New("expects a size between 1KB and 16MB, for example 64KB")
		}
		c.BodyLimitBytes = n
		return nil
	}},
	{Env: "PORTCULLIS_REQUEST_TIMEOUT", Default: "15s", Help: "longest time a request may take", apply: durationSetting(time.Second, 5*time.Minute, func(c *Config) *time.Duration { return &c.RequestTimeout })},
	{Env: "PORTCULLIS_SHUTDOWN_TIMEOUT", Default: "20s", Help: "how long in-flight requests may finish after SIGTERM", apply: durationSetting(0, 5*time.Minute, func(c *Config) *time.Duration { return &c.ShutdownTimeout })},
	{Env: "PORTCULLIS_ARGON2_MEMORY", Default: "19456", Help: "argon2id memory in KiB (OWASP: 19456 with time 2)", apply: uintSetting(8*1024, 4*1024*1024, func(c *Config, n uint64) { c.Argon2MemoryKiB = uint32(n) })},
	{Env: "PORTCULLIS_ARGON2_TIME", Default: "2", Help: "argon2id iterations", apply: uintSetting(1, 100, func(c *Config, n uint64) { c.Argon2Time = uint32(n) })},
	{Env: "PORTCULLIS_ARGON2_THREADS", Default: "1", Help: "argon2id parallelism", apply: uintSetting(1, 64, func(c *Config, n uint64) { c.Argon2Threads = uint8(n) })},
	{Env: "PORTCULLIS_PASSWORD_MIN_LENGTH", Default: "8", Help: "shortest password accepted (characters)", apply: uintSetting(8, 256, func(c *Config, n uint64) { c.PasswordMinLength = int(n) })},
	{Env: "PORTCULLIS_PASSWORD_MAX_LENGTH", Default: "256", Help: "longest password accepted (characters)", apply: uintSetting(64, 4096, func(c *Config, n uint64) { c.PasswordMaxLength = int(n) })},
	{Env: "PORTCULLIS_LOGIN_FAILURE_LIMIT", Default: "5", Help: "failed logins for one account before it is throttled with growing delays", apply: uintSetting(1, 1000, func(c *Config, n uint64) { c.LoginFailureLimit = int(n) })},
	{Env: "PORTCULLIS_PRODUCT_NAME", Default: "Portcullis", Help: "product name shown on hosted pages and in emails", apply: func(c *Config, v string) error {
		if strings.TrimSpace(v) == "" || len(v) > 80 {
			return errors.New("expects a name of 1 to 80 characters")
		}
		c.ProductName = v
		return nil
	}},
	{Env: "PORTCULLIS_BRAND_COLOR", Default: "#1f4e79", Help: "accent colour of hosted pages (#rrggbb)", apply: func(c *Config, v string) error {
		if len(v) != 7 || v[0] != '#' {
			return errors.New("expects a colour such as #1f4e79")
		}
		if _, err := strconv.ParseUint(v[1:], 16, 32); err != nil {
			return errors.New("expects a colour such as #1f4e79")
		}
		c.BrandColor = v
		return nil
	}},
}

// Load builds a Config from flag arguments (which win) and the environment
// (looked up through env), applying defaults, and validates it. Every
// problem is reported in one error, each line naming its setting.
func Load(args []string, env func(string) (string, bool)) (Config, error) {
	fs := NewFlagSet("serve", io.Discard)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return FromFlagSet(fs, env)
}

// NewFlagSet returns a flag set with one string flag per setting; --help
// lists every setting with its environment variable and default.
func NewFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	for _, s := range settings {
		fs.String(s.Flag(), "", "")
	}
	fs.Usage = func() { WriteUsage(out, name) }
	return fs
}

// WriteUsage prints every setting with its flag, environment variable and default.
func WriteUsage(w io.Writer, command string) {
	fmt.Fprintf(w, "Usage: portcullis %s [flags]\n\nEvery setting is a flag or an environment variable (the flag wins):\n\n", command)
	for _, s := range settings {
		def := s.Default
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  --%s  (%s, default %s)\n      %s\n", s.Flag(), s.Env, def, s.Help)
	}
}

// FromFlagSet builds a Config from a parsed flag set made by NewFlagSet and
// the environment.
func FromFlagSet(fs *flag.FlagSet, env func(string) (string, bool)) (Config, error) {
	flagged := map[string]string{}
	fs.Visit(func(f *flag.Flag) { flagged[f.Name] = f.Value.String() })
	var c Config
	var errs []string
	for _, s := range settings {
		v, ok := flagged[s.Flag()]
		if ok && s.Secret {
			c.Warnings = append(c.Warnings, secretFlagWarning(s))
		}
		if !ok {
			v, ok = env(s.Env)
		}
		if !ok {
			v = s.Default
		}
		v = strings.TrimSpace(v)
		switch err := s.apply(&c, v); {
		case errors.Is(err, errLongest):
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s (--%s) = %q %v", s.Env, s.Flag(), v, err))
		case err != nil:
			errs = append(errs, describe(s, v, err))
		}
	}
	errs = append(errs, c.derive()...)
	c.Warnings = append(c.Warnings, c.warnings()...)
	if len(errs) > 0 {
		sort.Strings(errs)
		return Config{}, &Error{Problems: errs}
	}
	c.LookupEnv = env
	return c, nil
}

// Error lists every invalid setting.
type Error struct{ Problems []string }

func (e *Error) Error() string {
	return "invalid settings:\n  " + strings.Join(e.Problems, "\n  ")
}

func describe(s Setting, v string, err error) string {
	if s.Secret || v == "" {
		return fmt.Sprintf("%s (--%s): %v", s.Env, s.Flag(), err)
	}
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return fmt.Sprintf("%s (--%s) = %q: %v", s.Env, s.Flag(), v, err)
}

// derive fills defaults that depend on other settings and checks settings
// against each other.
func (c *Config) derive() []string {
	var errs []string
	if c.Issuer == "" && c.Addr != "" {
		host, port, _ := net.SplitHostPort(c.Addr)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "localhost"
		}
		scheme := "http"
		if c.TLSCert != "" {
			scheme = "https"
		}
		c.Issuer = scheme + "://" + net.JoinHostPort(host, port)
	}
	if c.Issuer != "" {
		if err := validIssuer(c.Issuer); err != nil {
			errs = append(errs, "PORTCULLIS_ISSUER (--issuer): "+err.Error())
		}
	}
	if c.Issuer != "" && c.DefaultAudience == c.Issuer {
		// Every client naming no audience would give its tokens the admin
		// API's audience; only clients that list the issuer may.
		errs = append(errs, "PORTCULLIS_DEFAULT_AUDIENCE (--default-audience): must not be the issuer, which is the audience of Portcullis's own admin API (list it on a client with --audience instead)")
	}
	if c.PublicURL == "" {
		c.PublicURL = c.Issuer
	} else if err := validBaseURL(c.PublicURL); err != nil {
		errs = append(errs, "PORTCULLIS_PUBLIC_URL (--public-url): "+err.Error())
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, "PORTCULLIS_TLS_CERT / PORTCULLIS_TLS_KEY: expects both files or neither")
	}
	if c.MetricsAddr != "" && c.MetricsAddr == c.Addr {
		errs = append(errs, "PORTCULLIS_METRICS_ADDR (--metrics-addr): must differ from PORTCULLIS_ADDR (leave it empty to serve /metrics there)")
	}
	if c.DatabaseURL != "" && !c.Embedded() && c.KeyEncryptionKey == "" {
		errs = append(errs, "PORTCULLIS_KEY_ENCRYPTION_KEY (--key-encryption-key): required with PostgreSQL (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)")
	}
	if c.RefreshIdleTTL > c.RefreshMaxAge && c.RefreshMaxAge > 0 {
		errs = append(errs, "PORTCULLIS_REFRESH_TOKEN_IDLE_TTL (--refresh-token-idle-ttl): must not exceed PORTCULLIS_REFRESH_TOKEN_MAX_AGE")
	}
	if c.MaxClientTokenTTL > 0 && c.MaxClientTokenTTL < c.AccessTokenTTL {
		errs = append(errs, "PORTCULLIS_MAX_CLIENT_TOKEN_TTL (--max-client-token-ttl): must be at least PORTCULLIS_ACCESS_TOKEN_TTL")
	}
	if c.KeyRotationInterval > 0 && c.KeyRotationInterval < 2*c.PublicationDelay() {
		errs = append(errs, fmt.Sprintf("PORTCULLIS_KEY_ROTATION_INTERVAL (--key-rotation-interval): must be 0 or at least twice the publication delay (key sync interval + JWKS max age = %s), so at least %s", c.PublicationDelay(), 2*c.PublicationDelay()))
	}
	errs = append(errs, c.deriveWebAuthn()...)
	if c.PasswordMinLength > c.PasswordMaxLength && c.PasswordMaxLength > 0 {
		errs = append(errs, "PORTCULLIS_PASSWORD_MIN_LENGTH (--password-min-length): must not exceed PORTCULLIS_PASSWORD_MAX_LENGTH")
	}
	return errs
}

// warnings reports what a valid configuration allows but an operator must
// hear about.
func (c *Config) warnings() []string {
	var ws []string
	if plainHTTPOffLoopback(c.Issuer) {
		ws = append(ws, fmt.Sprintf("PORTCULLIS_ISSUER (--issuer) is %s, http on a host that is not loopback: "+
			"RFC 8414 §2 and OpenID Connect Discovery §3 require an https issuer, and browser cookies are not marked Secure "+
			"unless a request arrives over TLS or a proxy sends X-Forwarded-Proto: https. "+
			"Set the https URL that clients use (with TLS in front, or PORTCULLIS_TLS_CERT)", c.Issuer))
	}
	return ws
}

// secretFlagWarning is the warning about a secret setting given as a flag:
// every setting is a flag (the contract), but a command line is visible to
// every user of the machine.
func secretFlagWarning(s Setting) string {
	return fmt.Sprintf("%s was given as the flag --%s: the command line of a process is visible to every user of the machine "+
		"(ps, /proc/PID/cmdline); set the environment variable %s instead (from a file only its owner can read)", s.Env, s.Flag(), s.Env)
}

// plainHTTPOffLoopback reports whether u is an http URL whose host is not
// loopback (localhost, 127.0.0.0/8, ::1).
func plainHTTPOffLoopback(u string) bool {
	p, err := url.Parse(u)
	if err != nil || !strings.EqualFold(p.Scheme, "http") {
		return false
	}
	host := p.Hostname()
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.IsLoopback()
}

// deriveWebAuthn fills the WebAuthn relying party from the issuer (its host
// and origin) when unset, and checks that every origin is on the RP ID's
// domain (WebAuthn §5.1.3: the RP ID is the origin's host or a registrable
// suffix of it).
func (c *Config) deriveWebAuthn() []string {
	iss, err := url.Parse(c.Issuer)
	if err != nil || validIssuer(c.Issuer) != nil {
		return nil // reported with the issuer
	}
	if c.WebAuthnRPID == "" {
		if host := strings.ToLower(iss.Hostname()); validRPID(host) {
			c.WebAuthnRPID = host
		}
	}
	if c.WebAuthnRPID == "" {
		c.WebAuthnOrigins = nil
		return nil
	}
	if len(c.WebAuthnOrigins) == 0 {
		c.WebAuthnOrigins = []string{strings.ToLower(iss.Scheme + "://" + iss.Host)}
	}
	var errs []string
	for _, o := range c.WebAuthnOrigins {
		u, err := url.Parse(o)
		if err != nil {
			errs = append(errs, fmt.Sprintf("PORTCULLIS_WEBAUTHN_ORIGINS (--webauthn-origins): %q is not an origin", o))
			continue
		}
		if h := u.Hostname(); h != c.WebAuthnRPID && !strings.HasSuffix(h, "."+c.WebAuthnRPID) {
			errs = append(errs, fmt.Sprintf("PORTCULLIS_WEBAUTHN_ORIGINS (--webauthn-origins): the origin %q is not on the domain of the RP ID %q (PORTCULLIS_WEBAUTHN_RP_ID); list the origins of the sign-in pages", o, c.WebAuthnRPID))
		}
	}
	return errs
}

// validRPID reports whether v can be a WebAuthn RP ID: a domain name of
// letters, digits, hyphens and dots, not an IP address.
func validRPID(v string) bool {
	if v == "" || len(v) > 253 || net.ParseIP(v) != nil || strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") || strings.Contains(v, "..") {
		return false
	}
	for _, r := range strings.ToLower(v) {
		if !(r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validIssuer(v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("expects an http(s) URL such as https://auth.example.com")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("expects a URL without query, fragment or user info (RFC 8414)")
	}
	return nil
}

func validBaseURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("expects an http(s) URL")
	}
	return nil
}

func stringSetting(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = v
		return nil
	}
}

func boolSetting(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("expects true or false")
		}
		*field(c) = b
		return nil
	}
}

// onOffSetting reads an on/off switch (also true/false and 1/0, any case).
func onOffSetting(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		switch strings.ToLower(v) {
		case "on", "true", "1":
			*field(c) = true
		case "off", "false", "0":
			*field(c) = false
		default:
			return errors.New("expects on or off")
		}
		return nil
	}
}

// longestDuration is the ceiling of every duration setting that has no
// narrower one: ten years (87600h). The server adds to these durations
// (a pending request's tombstone, an expiry from now), so one near
// time.Duration's limit wrapped negative and broke the feature it set.
const longestDuration = 87600 * time.Hour

// durationSetting parses a duration setting and refuses one below min or
// above max, its own ceiling (at most longestDuration).
func durationSetting(min, max time.Duration, field func(*Config) *time.Duration) func(*Config, string) error {
	if max <= 0 || max > longestDuration {
		panic(fmt.Sprintf("config: a duration setting's ceiling %s is not in (0, %s]", max, longestDuration))
	}
	return func(c *Config, v string) error {
		if v == "0" {
			v = "0s"
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return errors.New("expects a duration such as 15m, 1h30m or 10s")
		}
		if d < min || d > max {
			return fmt.Errorf("expects a duration between %s and %s", formatDuration(min), formatDuration(max))
		}
		*field(c) = d
		return nil
	}
}

// durationAtLeast parses a duration setting that has no ceiling of its own:
// any duration from min is accepted (CONTRACT.md: "any duration from 1s"
// for some of them), and one above longestDuration counts as
// longestDuration, which the loader reports as a warning (errLongest). The
// server adds to these durations (an expiry from now, a pending request's
// tombstone), so one near time.Duration's limit would wrap around.
func durationAtLeast(min time.Duration, field func(*Config) *time.Duration) func(*Config, string) error {
	parse := durationSetting(min, longestDuration, field)
	return func(c *Config, v string) error {
		if d, err := time.ParseDuration(v); err == nil && d > longestDuration {
			*field(c) = longestDuration
			return errLongest
		}
		return parse(c, v)
	}
}

// errLongest is durationAtLeast's report of a value above longestDuration,
// applied as longestDuration: a warning, not a refusal.
var errLongest = fmt.Errorf("is longer than %s, the longest any duration setting takes: %s is used", formatDuration(longestDuration), formatDuration(longestDuration))

// formatDuration writes a whole number of hours as the settings are
// written (87600h), anything else as time.Duration does.
func formatDuration(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}

func uintSetting(min, max uint64, set func(*Config, uint64)) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n < min || n > max {
			return fmt.Errorf("expects a whole number between %d and %d", min, max)
		}
		set(c, n)
		return nil
	}
}

func urlSetting(optional bool, field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "" && optional {
			*field(c) = ""
			return nil
		}
		if err := validBaseURL(v); err != nil {
			return err
		}
		*field(c) = v
		return nil
	}
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	up := strings.ToUpper(v)
	switch {
	case strings.HasSuffix(up, "MB"):
		mult, up = 1<<20, strings.TrimSuffix(up, "MB")
	case strings.HasSuffix(up, "KB"):
		mult, up = 1<<10, strings.TrimSuffix(up, "KB")
	case strings.HasSuffix(up, "B"):
		up = strings.TrimSuffix(up, "B")
	}
	n, err := strconv.ParseInt(strings.TrimSpace(up), 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, errors.New("bad size")
	}
	return n * mult, nil
}
