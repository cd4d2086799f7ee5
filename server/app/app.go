// Package app wires a Portcullis process from its configuration: it opens
// the stores, applies migrations, loads the policy and signing keys, builds
// the services and mounts them on the HTTP server. cmd/portcullis and the
// test harness both build servers through it, so tests run the real wiring.
//
// It must never read the environment itself: settings arrive as config.Config.
package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apikeys"
	"github.com/portcullis-auth/portcullis/server/backchannel"
	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/config"
	"github.com/portcullis-auth/portcullis/server/console"
	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/server/metrics"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/pages"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/passkeys"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/server/tenancy"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/redisstate"
	"github.com/portcullis-auth/portcullis/store/sqlstate"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/usercache"
)

// Core is what every command needs: the relational store, the policy and
// the signing keys.
type Core struct {
	Config config.Config
	Logger *slog.Logger
	Store  *sqlstore.Store
	Policy *policy.Policy
	Keys   *keys.Manager
	KEKs   keys.KEKRing
	Audit  *Auditor
}

// OpenCore opens the store (migrating it unless PORTCULLIS_AUTO_MIGRATE is
// false), loads the policy and syncs its roles, and loads the signing keys
// (creating the first ones in an empty database).
func OpenCore(ctx context.Context, cfg config.Config, log *slog.Logger) (*Core, error) {
	pol, err := loadPolicy(cfg)
	if err != nil {
		return nil, err
	}
	kekSetting, err := keyEncryptionKey(cfg, log)
	if err != nil {
		return nil, err
	}
	ring, err := keys.ParseKEKs(kekSetting)
	if err != nil {
		return nil, fmt.Errorf("PORTCULLIS_KEY_ENCRYPTION_KEY: %w", err)
	}
	st, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = st.Close()
		}
	}()
	if err := st.SyncRoles(ctx, storeRoles(pol)); err != nil {
		return nil, fmt.Errorf("sync roles from the policy: %w", err)
	}
	audit := NewAuditor(st, log)
	km, err := keys.NewManager(keys.Config{
		Store: st, KEKs: ring, Alg: cfg.SigningAlg, RSABits: cfg.RSABits, JWKSMaxAge: cfg.JWKSMaxAge,
		SyncInterval: cfg.KeySyncInterval, RotationInterval: cfg.KeyRotationInterval,
		MaxTokenTTL: cfg.RevocationHorizon(), Logger: log,
		OnAutoRotate: func(r keys.Rotation) {
			audit.Record(context.Background(), store.AuditEvent{Action: "key.rotated", Outcome: store.OutcomeSuccess,
				TargetID: r.Activated.KID, Details: map[string]string{"via": "automatic", "retired": r.Retired.KID, "next": r.Next.KID}})
		},
	})
	if err != nil {
		return nil, fmt.Errorf("signing keys: %w", err)
	}
	if err := km.Init(ctx); err != nil {
		return nil, fmt.Errorf("load signing keys: %w", err)
	}
	ok = true
	return &Core{Config: cfg, Logger: log, Store: st, Policy: pol, Keys: km, KEKs: ring, Audit: audit}, nil
}

// Close releases the store.
func (c *Core) Close() error { return c.Store.Close() }

// ErrMigrationsPending is wrapped by OpenStore's refusal of a database on
// which a migration this binary knows is not applied while auto-migration is
// off.
var ErrMigrationsPending = errors.New("database migrations pending")

// OpenStore opens the relational store and applies pending migrations unless
// auto-migration is off; log gets the store's warnings (an SQLite file
// other users can read). With auto-migration off it refuses a database
// that lacks a migration this binary knows (ErrMigrationsPending, naming
// them and `portcullis migrate`): such a process would start and fail every
// request that reads what the migration adds. Versions newer than the
// binary knows are allowed (a rolling upgrade). Every command opens the
// store through it, except `portcullis migrate status` (OpenStoreForStatus).
func OpenStore(ctx context.Context, cfg config.Config, log *slog.Logger) (*sqlstore.Store, error) {
	return openStore(ctx, cfg, log, true)
}

// OpenStoreForStatus opens the relational store as `portcullis migrate
// status` needs it: no migration is applied and none is required, so the
// pending ones can be listed.
func OpenStoreForStatus(ctx context.Context, cfg config.Config, log *slog.Logger) (*sqlstore.Store, error) {
	cfg.AutoMigrate = false
	return openStore(ctx, cfg, log, false)
}

func openStore(ctx context.Context, cfg config.Config, log *slog.Logger, requireMigrated bool) (*sqlstore.Store, error) {
	// A deleted client's id and audiences stay retired as long as any of
	// its tokens may live: the horizon the token state keeps revocations.
	st, err := sqlstore.Open(ctx, cfg.DatabaseURL, sqlstore.WithLogger(log), sqlstore.WithClientRetirement(cfg.RevocationHorizon()))
	if err != nil {
		return nil, fmt.Errorf("open database (PORTCULLIS_DATABASE_URL): %w", err)
	}
	switch {
	case cfg.AutoMigrate:
		if _, err := st.Migrate(ctx); err != nil {
			_ = st.Close()
			return nil, fmt.Errorf("apply migrations: %w", err)
		}
	case requireMigrated:
		if err := checkMigrated(ctx, st); err != nil {
			_ = st.Close()
			return nil, err
		}
	}
	return st, nil
}

// checkMigrated returns an error wrapping ErrMigrationsPending, naming every
// migration this binary knows that the database lacks.
func checkMigrated(ctx context.Context, st *sqlstore.Store) error {
	list, err := st.MigrationStatus(ctx)
	if err != nil {
		return fmt.Errorf("check migrations (PORTCULLIS_AUTO_MIGRATE=false): %w", err)
	}
	var pending []string
	for _, m := range list {
		if m.AppliedAt == nil {
			pending = append(pending, fmt.Sprintf("%04d %s", m.Version, m.Name))
		}
	}
	if len(pending) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the database lacks %d migration(s) this binary needs (%s) and PORTCULLIS_AUTO_MIGRATE=false: "+
		"apply them with this version's `portcullis migrate` (see `portcullis migrate status`), then start again",
		ErrMigrationsPending, len(pending), strings.Join(pending, ", "))
}

func loadPolicy(cfg config.Config) (*policy.Policy, error) {
	if cfg.PolicyFile == "" {
		return policy.Default(), nil
	}
	p, err := policy.Load(cfg.PolicyFile)
	if err != nil {
		return nil, fmt.Errorf("PORTCULLIS_POLICY_FILE: %w", err)
	}
	return p, nil
}

func storeRoles(p *policy.Policy) []store.Role {
	var out []store.Role
	for _, r := range p.Roles() {
		out = append(out, store.Role{Name: r.Name, Level: r.Level, Description: r.Description})
	}
	return out
}

// keyEncryptionKey returns the configured key-encryption key, or in embedded
// mode one generated beside the SQLite file (with a loud warning).
func keyEncryptionKey(cfg config.Config, log *slog.Logger) (string, error) {
	if cfg.KeyEncryptionKey != "" {
		return cfg.KeyEncryptionKey, nil
	}
	if !cfg.Embedded() {
		return "", errors.New("PORTCULLIS_KEY_ENCRYPTION_KEY is required with PostgreSQL")
	}
	path := filepath.Join(filepath.Dir(strings.TrimPrefix(cfg.DatabaseURL, "sqlite://")), "portcullis.kek")
	k, created, err := loadOrCreateKEKFile(path, log)
	if err != nil {
		return "", err
	}
	if created {
		log.Warn("!!! GENERATED A KEY-ENCRYPTION KEY beside the SQLite file: anyone who can read it can decrypt the signing keys. "+
			"Set PORTCULLIS_KEY_ENCRYPTION_KEY (base64 of 32 random bytes) for anything but local development.", "file", path)
	} else {
		log.Warn("using the generated key-encryption key beside the SQLite file; set PORTCULLIS_KEY_ENCRYPTION_KEY in production", "file", path)
	}
	return k, nil
}

// loadOrCreateKEKFile returns the key-encryption key in path, generating it
// when there is none. The new key is written to a temporary file in the
// same directory, synced, and linked into place, which fails when path
// exists: of processes starting together exactly one key lands, the others
// read it, and a crash never leaves a partial file under the name. A file
// that is empty or holds no valid key is an error naming it, never
// replaced: what was sealed under the key it held would be lost for good.
// log gets the warning about a file other users can read (readKEKFile).
func loadOrCreateKEKFile(path string, log *slog.Logger) (kek string, created bool, err error) {
	k, err := readKEKFile(path, log)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("create %s: %w", dir, err)
	}
	k, err = keys.GenerateKEK()
	if err != nil {
		return "", false, fmt.Errorf("generate key-encryption key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".portcullis.kek-*") // mode 0600
	if err != nil {
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // the linked name keeps the file
	_, err = tmp.WriteString(k + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process generated it first: use its key
			k, err := readKEKFile(path, log)
			return k, false, err
		}
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return "", false, fmt.Errorf("write %s: %w", path, err)
	}
	return k, true, nil
}

// readKEKFile reads a generated key-encryption key; an error wrapping
// fs.ErrNotExist when there is none. The errors name the file and never
// show its content. A file other users can read is used, with a warning on
// log (sqlstore.WarnIfOthersCanRead, as for the SQLite file beside it).
func readKEKFile(path string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	sqlstore.WarnIfOthersCanRead(log, path, "the key-encryption key file (anyone who reads it can decrypt the signing keys and TOTP secrets)")
	k := strings.TrimSpace(string(b))
	if k == "" {
		return "", fmt.Errorf("%s is empty: restore it from a backup, or remove it only if nothing was ever sealed under it (a fresh database)", path)
	}
	if _, err := keys.ParseKEKs(k); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// syncDir makes a new name in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// State is the token state.
type State = store.TokenState

// TokenStates is the token state a process uses, and the SQL token state
// beside it (the durable revocation log with Redis, and what Purge cleans).
type TokenStates struct {
	State State
	SQL   *sqlstate.State
	Close func() error

	// Once and Browser are the same backend as State: single-use records
	// (authorization codes, pending authorization requests) and browser
	// sessions, bound to the user's cut-off like State's families.
	Once    store.SingleUse
	Browser store.BrowserSessions

	// UserVersions versions users for copies kept in memory (nil: no
	// copies are kept): the Redis token state, whose versions every user
	// write of this process's store changes (sqlstore.UserWriteHooks).
	UserVersions usercache.Versions

	// Redis is State when it is the Redis token state (nil for the SQL
	// one): Run reconciles it with the durable revocation log, and Close
	// drains what it holds in memory.
	Redis *redisstate.State
}

// OpenTokenState returns the Redis token state (with durable revocations in
// the database) when PORTCULLIS_REDIS_URL is set, else the SQL token state.
func OpenTokenState(cfg config.Config, st *sqlstore.Store, m *metrics.Metrics) (TokenStates, error) {
	horizon := cfg.RevocationHorizon()
	sql := sqlstate.New(st.DB(), sqlstate.WithMaxAccessTokenTTL(horizon), sqlstate.WithMaxSessionsPerUser(cfg.MaxSessionsPerUser))
	if cfg.RedisURL == "" {
		return TokenStates{State: sql, Once: sql, Browser: sql, SQL: sql, Close: func() error { return nil }}, nil
	}
	client, err := redisstate.NewClient(cfg.RedisURL)
	if err != nil {
		return TokenStates{}, fmt.Errorf("PORTCULLIS_REDIS_URL: %w", err)
	}
	if m != nil {
		client.AddHook(m.RedisHook())
	}
	rs := redisstate.New(client, redisstate.Options{Prefix: cfg.RedisKeyPrefix, Log: sql, MaxAccessTokenTTL: horizon,
		MaxSessionsPerUser: cfg.MaxSessionsPerUser})
	st.SetUserWriteHooks(rs)
	return TokenStates{State: rs, Once: rs, Browser: rs, SQL: sql, Close: client.Close, UserVersions: rs, Redis: rs}, nil
}

// cachedUsers is the store with GetUser answered by a user cache.
type cachedUsers struct {
	*sqlstore.Store
	cache *usercache.Cache
}

// GetUser implements token.UserStore.
func (c cachedUsers) GetUser(ctx context.Context, id string) (store.User, error) {
	return c.cache.GetUser(ctx, id)
}

// GetUserAt implements token.UserStore and the authorization flow's reader.
func (c cachedUsers) GetUserAt(ctx context.Context, id string, v store.UserVersion) (store.User, error) {
	return c.cache.GetUserAt(ctx, id, v)
}

// hotUsers is what the paths that read a user on every request (an
// authorization request with a live session, refresh, userinfo) read users
// through: copies checked against the token state's versions when it has
// them (Redis); else (usercache without versions) the store itself.
func hotUsers(st *sqlstore.Store, states TokenStates, m *metrics.Metrics) cachedUsers {
	return cachedUsers{Store: st, cache: usercache.New(st, states.UserVersions, usercache.Options{Observe: m.UserCopy})}
}

// quietRedisLogger drops go-redis's own log lines (printed to stderr outside
// the structured log); every Redis failure reaches callers as an error.
type quietRedisLogger struct{}

func (quietRedisLogger) Printf(context.Context, string, ...interface{}) {}

func init() { redis.SetLogger(quietRedisLogger{}) }

// App is a complete server process.
type App struct {
	*Core
	Server   *server.Server
	Tokens   *token.Service
	State    State
	Accounts *accounts.Service
	// MFA is multi-factor authentication (TOTP, recovery codes, the
	// mfa_token of the second step).
	MFA    *mfa.Service
	states TokenStates

	// Once and BrowserSessions live in the token state beside State;
	// remembered consents are Core.Store's (store.Consents).
	Once            store.SingleUse
	BrowserSessions store.BrowserSessions
	// Ender is the one routine that ends a browser session (logout, the
	// session views, a login as someone else).
	Ender *signout.Ender
	// Backchannel delivers queued back-channel logout tokens; Run runs it.
	Backchannel *backchannel.Notifier
	// KeyNotices emails the coming expiry of API keys; Run runs it.
	KeyNotices *apikeys.ExpiryNotices
	// Passkeys runs the WebAuthn ceremonies (registration on
	// /auth/mfa/webauthn/… and /account/security, assertions as the second
	// step of a login); nil when the server has no WebAuthn relying party
	// (config.Config.WebAuthnRPID is empty).
	Passkeys *passkeys.Service
	// Upstream is sign-in through the upstream identity providers of
	// PORTCULLIS_IDENTITY_PROVIDERS_FILE (nil without one): the token
	// exchange of their id tokens is registered, and the browser path
	// (/login/{provider}) uses it.
	Upstream *upstream.Service
	// APIKeys checks and manages API keys (introspection, token exchange
	// and revocation of keys; /auth/api-keys and the admin's machine keys).
	APIKeys *apikeys.Service

	// Console is the admin console (/console).
	Console *console.Console

	metricsAddr atomic.Pointer[net.Addr] // bound PORTCULLIS_METRICS_ADDR, once listening
}

// Build opens everything and mounts every endpoint.
func Build(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *App, err error) {
	core, err := OpenCore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	cleanups := []func() error{core.Close}
	defer func() {
		if err != nil {
			for i := len(cleanups) - 1; i >= 0; i-- {
				_ = cleanups[i]()
			}
		}
	}()
	stored, err := core.Store.ListClients(ctx)
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	if err := checkCookieClients(stored, cfg, log); err != nil {
		return nil, err
	}
	reportAudienceClashes(stored, cfg, log)
	if err := warnUnreadableTOTP(ctx, core.Store, core.KEKs, log); err != nil {
		return nil, err
	}
	providers, err := loadProviders(cfg, core.Policy)
	if err != nil {
		return nil, err
	}
	if err := resolveIdentityIssuers(ctx, core.Store, providers, log); err != nil {
		return nil, err
	}
	m := metrics.New(core.Keys.ActiveKeyAge)
	if err := m.InstrumentGORM(core.Store.DB()); err != nil {
		return nil, fmt.Errorf("instrument the database: %w", err)
	}
	states, err := OpenTokenState(cfg, core.Store, m)
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, states.Close)
	var limiter *ratelimit.Limiter
	if cfg.RateLimits {
		limiter = ratelimit.New(states.State, ratelimit.DefaultRules(cfg.LoginFailureLimit), m.RateLimited)
	}
	hasher, err := NewHasher(cfg)
	if err != nil {
		return nil, err
	}
	m.ObserveHashing(hasher.Load)
	checker, err := passcheck.New(passcheck.Deps{Users: core.Store, Hasher: hasher, Throttle: limiter, Audit: core.Audit,
		Metrics: m, Logger: log})
	if err != nil {
		return nil, err
	}
	mfaService, err := mfa.New(mfa.Deps{Factors: core.Store, Once: states.Once, Counter: states.State, KEKs: core.KEKs,
		Policy: core.Policy, Throttle: limiter, Audit: core.Audit, Budget: limiter, Issuer: cfg.MFAIssuer, TokenTTL: cfg.MFATokenTTL, Now: time.Now})
	if err != nil {
		return nil, fmt.Errorf("mfa: %w", err)
	}
	clientCache := clients.NewCache(core.Store, ClientCacheTTL)
	users := hotUsers(core.Store, states, m)
	tenants := buildTenancy(cfg, log, core)
	tokenDeps := token.Deps{
		Clients: clientCache, Users: users, State: states.State, Signer: core.Keys, Sealer: core.KEKs,
		Passwords: hasher, Permissions: core.Policy, Audit: core.Audit, Logger: log, Metrics: m, Checker: checker,
		Codes: states.Once, Browser: states.Browser, MFA: mfaService,
	}
	if tenants != nil { // a nil *Resolver in the interface would not be nil
		tokenDeps.Tenancy = tenants
	}
	tokens := token.NewService(tokenConfig(cfg), tokenDeps)
	var keyStore apikeys.Store = core.Store
	if tenants != nil {
		keyStore = platformOwners{Store: core.Store, tenancy: tenants}
	}
	apiKeys, err := apikeys.New(apikeys.Config{Issuer: cfg.Issuer, MaxTTL: cfg.APIKeyMaxTTL},
		apikeys.Deps{Store: keyStore, Permissions: core.Policy, Grants: tokens, Audit: core.Audit, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("API keys: %w", err)
	}
	tokens.SetAPIKeys(apiKeys)
	tokens.RegisterSubjectTokenType(token.TokenTypeAPIKey, apiKeys)
	srv := server.New(server.Options{Config: cfg, Logger: log, Metrics: m,
		Origins: rtcookie.NewOrigins(core.Store, ClientCacheTTL, nil), Checks: []server.Check{
			{Name: "database", Check: core.Store.Ping},
			{Name: "token_state", Check: states.State.Ping},
			// Keys not reloaded for two sync intervals sign and verify
			// nothing (keys.ErrStale): the instance is not ready until a
			// sync succeeds, even once the database answers again.
			{Name: "signing_keys", Check: func(context.Context) error { return core.Keys.Usable() }},
		}})
	// Token exchange is always served: API keys are exchanged for access
	// tokens (and upstream id tokens when providers are configured).
	srv.MountDiscovery(core.Keys, server.DiscoveryOptions{Issuer: cfg.Issuer, JWKSMaxAge: cfg.JWKSMaxAge, BrowserSignIn: true, MFA: true,
		TokenExchange: true, Tenants: cfg.Tenants})
	srv.MountOAuth(tokens)
	bcl, err := backchannel.New(backchannel.Config{Issuer: cfg.Issuer, Signer: core.Keys, Queue: core.Store,
		Audit: core.Audit, Log: log})
	if err != nil {
		return nil, fmt.Errorf("back-channel logout: %w", err)
	}
	ender := &signout.Ender{Sessions: states.Browser, Grants: tokens, Clients: clientCache, Backchannel: bcl, Audit: core.Audit,
		Users: states.Browser, Cutoff: tokens, Log: log}
	pk, err := buildPasskeys(cfg, log, core, states, limiter)
	if err != nil {
		return nil, err
	}
	views := accounts.Deps{Browser: states.Browser, Consents: core.Store, Ender: accountsEnder{ender}, MFA: mfaService,
		APIKeys: apiKeys, Tenancy: tenants}
	if pk != nil {
		views.Passkeys = pk
	}
	if providers.Len() > 0 { // never a typed nil in the interface
		views.Authorities = providers
	}
	sender, tmpl, err := newMail(cfg, log)
	if err != nil {
		return nil, err
	}
	keyNotices, err := apikeys.NewExpiryNotices(apikeys.NoticeDeps{Keys: core.Store, Mail: sender, Templates: tmpl,
		Audit: core.Audit, ProductName: cfg.ProductName, Logger: log})
	if err != nil {
		return nil, err
	}
	acc, err := buildAccounts(ctx, cfg, log, core, clientChanges{core.Store, clientCache}, accountSessions{tokens, ender}, hasher, checker, limiter, views,
		sender, tmpl)
	if err != nil {
		return nil, err
	}
	srv.MountAccounts(acc, tokens)
	var ups *upstream.Service
	if providers.Len() > 0 {
		ups, err = upstream.New(upstream.Deps{Providers: providers, Verifier: upstream.NewVerifier(nil, nil), Store: core.Store,
			Accounts: acc, Audit: core.Audit, Once: states.Once, MFA: mfaService, Budget: limiter, Logger: log})
		if err != nil {
			return nil, err
		}
		tokens.RegisterSubjectTokenType(token.TokenTypeIDToken, ups)
	}
	signIn, flow, err := signInDeps(cfg, log, core, states, users, clientCache, tokens, checker, ender, limiter)
	if err != nil {
		return nil, err
	}
	signIn.Views = acc
	signIn.MFA, signIn.Security = mfaService, acc
	if pk != nil { // never a typed nil in the interface
		signIn.Passkeys = pk
	}
	if ups != nil {
		signIn.Upstream = ups
	}
	srv.MountPAR(tokens, flow)
	var (
		hosted *pages.Pages
		cons   *console.Console
	)
	err = srv.MarkPages(func(e *echo.Echo) error { // the hosted pages and the console are the browser's
		var err error
		hosted, err = pages.Mount(e, cfg, pages.Deps{Accounts: acc, Sessions: tokens, Logger: log, SignIn: signIn})
		if err != nil {
			return err
		}
		cons, err = console.New(console.Config{Issuer: cfg.Issuer}, console.Deps{Pages: hosted, Accounts: acc, Tokens: tokens,
			Sessions: states.Browser, Ended: ender, Audit: core.Audit, Once: states.Once, Pending: limiter, Logger: log})
		if err != nil {
			return err
		}
		cons.Register(e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	srv.RefusePagesWith(hosted.Refuse)
	srv.MountAdmin(acc, tokens)
	if err := srv.MountOpenAPI(); err != nil {
		return nil, err
	}
	return &App{Core: core, Server: srv, Tokens: tokens, State: states.State, Accounts: acc, MFA: mfaService, states: states,
		Once: states.Once, BrowserSessions: states.Browser, Ender: ender, Backchannel: bcl, KeyNotices: keyNotices, Passkeys: pk, Upstream: ups,
		APIKeys: apiKeys, Console: cons}, nil
}

// buildPasskeys builds the WebAuthn relying party of
// PORTCULLIS_WEBAUTHN_RP_ID and PORTCULLIS_WEBAUTHN_ORIGINS over the
// second-factor store and the single-use records, each begun ceremony
// counted against its caller's address by limiter (nil: rate limits off);
// nil (with a warning) when there is no RP ID (an issuer whose host is an
// IP address).
func buildPasskeys(cfg config.Config, log *slog.Logger, core *Core, states TokenStates, limiter *ratelimit.Limiter) (*passkeys.Service, error) {
	if cfg.WebAuthnRPID == "" {
		log.Warn("passkeys and security keys are off: the issuer's host is an IP address, which cannot be a WebAuthn relying party; set PORTCULLIS_WEBAUTHN_RP_ID (and PORTCULLIS_WEBAUTHN_ORIGINS) to turn them on")
		return nil, nil
	}
	pk, err := passkeys.New(passkeys.Config{RPID: cfg.WebAuthnRPID, Origins: cfg.WebAuthnOrigins, RPName: cfg.ProductName},
		passkeys.Deps{Credentials: core.Store, Once: states.Once, Audit: core.Audit, Pending: limiter})
	if err != nil {
		return nil, fmt.Errorf("PORTCULLIS_WEBAUTHN_RP_ID / PORTCULLIS_WEBAUTHN_ORIGINS: %w", err)
	}
	return pk, nil
}

// loadProviders reads PORTCULLIS_IDENTITY_PROVIDERS_FILE (none when unset),
// validated against the policy; client_secret_env names are looked up in
// the environment the settings were read from.
func loadProviders(cfg config.Config, pol *policy.Policy) (*upstream.Providers, error) {
	if cfg.IdentityProvidersFile == "" {
		return nil, nil
	}
	ps, err := upstream.Load(cfg.IdentityProvidersFile, pol, cfg.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("PORTCULLIS_IDENTITY_PROVIDERS_FILE: %w", err)
	}
	return ps, nil
}

// resolveIdentityIssuers is the start step of the links to upstream
// accounts made before their issuer was kept (migration 19): each gets the
// issuer that ps, the providers file in force, gives its provider; those
// of a provider ps does not configure are marked unknown for good and sign
// nobody in (sqlstore.Store.ResolveIdentityIssuers, which explains why).
// After the first start there are none left, and it reads nothing.
func resolveIdentityIssuers(ctx context.Context, st *sqlstore.Store, ps *upstream.Providers, log *slog.Logger) error {
	issuers := map[string]string{}
	for _, p := range ps.List() {
		issuers[p.ID] = p.Issuer
	}
	r, err := st.ResolveIdentityIssuers(ctx, issuers)
	if err != nil {
		return fmt.Errorf("give the links to upstream accounts their issuer: %w", err)
	}
	if r.Resolved > 0 {
		log.Info("links to upstream accounts made before issuers were kept now name the issuer of their provider in the providers file",
			"links", r.Resolved)
	}
	if r.Unknown > 0 {
		log.Warn("links to upstream accounts of providers not in the providers file sign nobody in from now on, whatever the file later says; "+
			"their users link again after an administrator removes them (DELETE /admin/users/{id}/identities/{provider})", "links", r.Unknown)
	}
	return nil
}

// signInDeps wires browser sign-in: the browser session cookie over the
// token state, and server/authorize over the clients, the id token hints,
// the policy, the single-use records and the remembered consents. The flow
// also serves /oauth2/par. limiter (nil: rate limits off) counts each
// pending or pushed authorization request and each held logout request
// kept for a caller's address, and each code minted for its browser
// session.
func signInDeps(cfg config.Config, log *slog.Logger, core *Core, states TokenStates, users cachedUsers, cl *clients.Cache,
	tokens *token.Service, checker *passcheck.Checker, ender *signout.Ender, limiter *ratelimit.Limiter) (pages.SignInDeps, *pages.AuthorizeFlow, error) {
	browser, err := browsersession.New(states.Browser, browsersession.Config{IdleTTL: cfg.SessionIdleTTL, MaxAge: cfg.SessionMaxAge,
		Ended: ender, Audit: core.Audit})
	if err != nil {
		return pages.SignInDeps{}, nil, err
	}
	flow := &pages.AuthorizeFlow{Issuer: cfg.Issuer, Clients: cl, Hints: tokens, Permissions: core.Policy, Once: states.Once,
		Sessions: states.Browser, Dropped: ender, Users: users, Consents: core.Store, SecondFactors: tokens, Audit: core.Audit,
		Pending: limiter, CodeTTL: cfg.AuthCodeTTL, RequestTTL: cfg.AuthorizeRequestTTL, Logger: log}
	if limiter != nil {
		flow.Codes = limiter // rate limits off: no call per code
	}
	return pages.SignInDeps{Flow: flow, Browser: browser, Checker: checker, Users: core.Store, Audit: core.Audit,
		Rehasher: tokens, Logins: tokens, Hints: tokens, Clients: cl, Ender: ender, Once: states.Once, Pending: limiter}, flow, nil
}

// ClientCacheTTL is how long an instance keeps a client in memory: a client
// deleted or a secret rotated through another instance stops working within
// it (through this instance, at once).
const ClientCacheTTL = 2 * time.Second

// clientChanges is the store as the admin API sees it: client changes also
// drop the client from this instance's cache.
type clientChanges struct {
	*sqlstore.Store
	cache *clients.Cache
}

// DeleteClient deletes the client and forgets it here.
func (c clientChanges) DeleteClient(ctx context.Context, id string) error {
	defer c.cache.Forget(id)
	return c.Store.DeleteClient(ctx, id)
}

// SetClientAudiences replaces the audiences and forgets the client here.
func (c clientChanges) SetClientAudiences(ctx context.Context, id string, audiences []string) error {
	defer c.cache.Forget(id)
	return c.Store.SetClientAudiences(ctx, id, audiences)
}

// SetClientFirstParty changes the first-party flag and forgets the client here.
func (c clientChanges) SetClientFirstParty(ctx context.Context, id string, firstParty bool) error {
	defer c.cache.Forget(id)
	return c.Store.SetClientFirstParty(ctx, id, firstParty)
}

// SetClientGrants replaces the grants and forgets the client here.
func (c clientChanges) SetClientGrants(ctx context.Context, id string, grants []string) error {
	defer c.cache.Forget(id)
	return c.Store.SetClientGrants(ctx, id, grants)
}

// SetClientSecretHash replaces the secret and forgets the client here.
// SetClientRedirectURIs replaces the redirect URIs and forgets the client here.
func (c clientChanges) SetClientRedirectURIs(ctx context.Context, id string, uris []string) error {
	defer c.cache.Forget(id)
	return c.Store.SetClientRedirectURIs(ctx, id, uris)
}

// SetClientSecretHash replaces the secret and forgets the client here.
func (c clientChanges) SetClientSecretHash(ctx context.Context, id string, hash []byte) error {
	defer c.cache.Forget(id)
	return c.Store.SetClientSecretHash(ctx, id, hash)
}

// buildAccounts builds the account and admin service. Emails go out over
// SMTP when PORTCULLIS_SMTP_URL is set, else to the log marked not sent. The
// built-in first-party client is created when missing. views holds the
// collaborators of the session views (Browser, Consents, Ender), of the
// second factors (MFA, Passkeys), of API keys (APIKeys) and the identity
// providers that judge identities at a reset (Authorities); sessions issues
// and ends sessions (accountSessions).
func buildAccounts(ctx context.Context, cfg config.Config, log *slog.Logger, core *Core, st accounts.Store, sessions accounts.Sessions,
	hasher *password.Hasher, checker *passcheck.Checker, limiter *ratelimit.Limiter, views accounts.Deps,
	sender mail.Sender, tmpl *mail.Templates) (*accounts.Service, error) {
	rules := PasswordRules(cfg)
	if err := rules.Validate(); err != nil {
		return nil, err
	}
	acfg := accountsConfig(cfg)
	acfg.FirstPartyRedirectURIs = []string{console.CallbackURL(cfg.Issuer), pages.SecuritySignInURL(cfg.Issuer)}
	acc, err := accounts.New(acfg, accounts.Deps{
		Store: st, Policy: core.Policy, Sessions: sessions, Hasher: hasher, Checker: checker, Rules: rules, Mail: sender,
		Templates: tmpl, Keys: core.Keys, Audit: core.Audit, Logger: log, Limiter: limiter,
		Revoker: core.Keys, Throttle: limiter,
		Browser: views.Browser, Consents: views.Consents, Ender: views.Ender, MFA: views.MFA, Passkeys: views.Passkeys,
		APIKeys: views.APIKeys, Tenancy: views.Tenancy, Authorities: views.Authorities,
	})
	if err != nil {
		return nil, err
	}
	if err := acc.EnsureFirstPartyClient(ctx); err != nil {
		return nil, err
	}
	moved, err := acc.EnsureDefaultTenant(ctx)
	if err != nil {
		return nil, err
	}
	if moved {
		log.Info("organisations turned on: existing role assignments moved into the organisation " + store.DefaultTenantSlug)
	}
	return acc, nil
}

// newMail returns the sender of every email: SMTP when PORTCULLIS_SMTP_URL
// is set, else the log (marked not sent); and the templates.
func newMail(cfg config.Config, log *slog.Logger) (mail.Sender, *mail.Templates, error) {
	var sender mail.Sender = mail.NewLogSender(log)
	if cfg.SMTPURL != "" {
		smtp, err := mail.NewSMTPSender(cfg.SMTPURL, cfg.MailFrom, mail.Options{})
		if err != nil {
			return nil, nil, fmt.Errorf("PORTCULLIS_SMTP_URL: %w", err)
		}
		sender = smtp
	}
	tmpl, err := mail.NewTemplates()
	if err != nil {
		return nil, nil, fmt.Errorf("email templates: %w", err)
	}
	return sender, tmpl, nil
}

// platformOwners is the store as the API keys see it while organisations
// are on: a key's owner holds only their platform roles, so a key acts in no
// organisation and its effective scope never draws on roles held in one (or
// on the global assignments organisations replaced).
type platformOwners struct {
	*sqlstore.Store
	tenancy *tenancy.Resolver
}

// GetUser returns the user with their platform roles only.
func (p platformOwners) GetUser(ctx context.Context, id string) (store.User, error) {
	u, err := p.Store.GetUser(ctx, id)
	if err != nil {
		return u, err
	}
	return p.tenancy.Platform(u), nil
}

// FindLiveAPIKey returns the key with its owner holding their platform
// roles only, so that the key's effective scope (apikeys.Service's
// Authenticate) never draws on roles held in an organisation or on the
// global assignments organisations replaced (kept in place when they were
// turned on).
func (p platformOwners) FindLiveAPIKey(ctx context.Context, hash []byte) (store.APIKey, store.User, error) {
	k, u, err := p.Store.FindLiveAPIKey(ctx, hash)
	if err != nil {
		return k, u, err
	}
	return k, p.tenancy.Platform(u), nil
}

// buildTenancy returns the organisation rules when PORTCULLIS_TENANTS is
// on, else nil. It warns when the policy marks no platform role: nobody
// could then administer the whole instance (create organisations, rotate
// keys) while organisations are on.
func buildTenancy(cfg config.Config, log *slog.Logger, core *Core) *tenancy.Resolver {
	if !cfg.Tenants {
		return nil
	}
	if len(core.Policy.PlatformRoles()) == 0 {
		log.Warn("PORTCULLIS_TENANTS=on but the policy marks no role platform: true; no one can administer the whole instance")
	}
	return tenancy.New(core.Store, core.Policy)
}

// checkCookieClients refuses to start while a client takes its refresh
// token in the cookie and PORTCULLIS_REFRESH_REUSE_GRACE is shorter than
// clients.MinCookieReuseGrace: its browser tabs, refreshing at once with the
// one cookie, would revoke each other's session. It warns about an allowed
// origin on another site than the URL browsers reach Portcullis at: the
// browser would not send the SameSite=Strict cookie (the deployment rule).
func checkCookieClients(list []store.Client, cfg config.Config, log *slog.Logger) error {
	public := cfg.PublicURL
	if public == "" {
		public = cfg.Issuer
	}
	for _, c := range list {
		if !c.RefreshByCookie() {
			continue
		}
		if err := clients.CookieGraceError(cfg.RefreshReuseGrace); err != nil {
			return fmt.Errorf("client %q: %w", c.ID, err)
		}
		for _, o := range c.AllowedOrigins {
			if !rtcookie.SameSite(o, public) {
				log.Warn("a refresh-cookie client's origin is another site than Portcullis: browsers will not send its cookie "+
					"(serve both from one site, or Portcullis behind the app's origin)", "client_id", c.ID, "origin", o, "portcullis", public)
			}
		}
	}
	return nil
}

// reportAudienceClashes logs at Error, once each, the clashes among the
// stored clients (clients.Clashes: a client id that is an audience a client
// lists, or PORTCULLIS_DEFAULT_AUDIENCE or the issuer), saying what to
// change. Such a client's id tokens can be forged from access tokens at
// relying parties that do not check typ. Clients made before the rule keep
// working, so the server starts; no new clash can be made.
func reportAudienceClashes(list []store.Client, cfg config.Config, log *slog.Logger) {
	const msg = "an access-token audience is a client id: those access tokens verify as that client's id tokens " +
		"at relying parties that do not check typ (RFC 8725 section 3.12)"
	for _, cl := range clients.Clashes(list, clients.ServerAudiences(cfg.DefaultAudience, cfg.Issuer), nil) {
		switch {
		case cl.Reserved != "":
			log.Error(msg, "client_id", cl.ClientID, "server_audience", cl.Reserved,
				"change", fmt.Sprintf("recreate client %q under another id (its id is the server's access-token audience %q, "+
					"PORTCULLIS_DEFAULT_AUDIENCE or the issuer), or set PORTCULLIS_DEFAULT_AUDIENCE to another value", cl.ClientID, cl.Reserved))
		case cl.ListedBy == cl.ClientID:
			log.Error(msg, "client_id", cl.ClientID, "listed_by", cl.ListedBy,
				"change", fmt.Sprintf("recreate client %q without its own id among its audiences", cl.ClientID))
		default:
			log.Error(msg, "client_id", cl.ClientID, "listed_by", cl.ListedBy,
				"change", fmt.Sprintf("recreate client %q without the audience %q, or client %q under another id", cl.ListedBy, cl.ClientID, cl.ClientID))
		}
	}
}

// tokenConfig is the token service's part of the settings, the same for the
// server and the CLI.
func tokenConfig(cfg config.Config) token.Config {
	return token.Config{
		Issuer: cfg.Issuer, DefaultAudience: cfg.DefaultAudience, AccessTokenTTL: cfg.AccessTokenTTL,
		IDTokenTTL: cfg.IDTokenTTL, RefreshIdleTTL: cfg.RefreshIdleTTL, RefreshMaxAge: cfg.RefreshMaxAge,
		RefreshReuseGrace: cfg.RefreshReuseGrace, MaxClientTokenTTL: cfg.MaxClientTokenTTL,
	}
}

// accountsConfig is the accounts service's part of the settings, the same
// for the server and the CLI (so the CLI's clients obey the same lifetime cap).
func accountsConfig(cfg config.Config) accounts.Config {
	return accounts.Config{
		PublicURL: cfg.PublicURL, ProductName: cfg.ProductName, InviteTTL: cfg.InviteTTL, ResetTTL: cfg.ResetTTL,
		VerifyEmailTTL: cfg.VerifyEmailTTL, PublicRegistration: cfg.PublicRegistration, Issuer: cfg.Issuer, DefaultAudience: cfg.DefaultAudience,
		MaxClientTokenTTL: cfg.MaxClientTokenTTL, RefreshReuseGrace: cfg.RefreshReuseGrace,
	}
}

// OperatorAccounts builds the account and admin service for the CLI over
// core, so that the operator's commands (`portcullis clients …`, `keys
// rotate`, `keys revoke`) run through the same rules and audit as the admin
// API and the console, with accounts.Operator() as the actor. It reaches no Redis and sends no mail (the operations the CLI runs
// need neither): its sessions use the SQL token state, its mail is dropped,
// and its EndUserSessions queues no back-channel logout (no operator command
// ends a user's sessions; one that does must go through signout.Ender.EndUser
// over the server's token state, as Build wires it).
func OperatorAccounts(core *Core, log *slog.Logger) (*accounts.Service, error) {
	cfg := core.Config
	hasher, err := NewHasher(cfg)
	if err != nil {
		return nil, err
	}
	tokens := token.NewService(tokenConfig(cfg), token.Deps{
		Clients: core.Store, Users: hotUsers(core.Store, TokenStates{}, nil), State: sqlstate.New(core.Store.DB()), Signer: core.Keys, Sealer: core.KEKs,
		Passwords: hasher, Permissions: core.Policy, Audit: core.Audit, Logger: log,
	})
	tmpl, err := mail.NewTemplates()
	if err != nil {
		return nil, fmt.Errorf("email templates: %w", err)
	}
	// The operator checks no passwords; the checker is there because the
	// service needs one, unthrottled as the CLI is.
	checker, err := passcheck.New(passcheck.Deps{Users: core.Store, Hasher: hasher, Audit: core.Audit, Logger: log})
	if err != nil {
		return nil, err
	}
	return accounts.New(accountsConfig(cfg), accounts.Deps{
		Store: core.Store, Policy: core.Policy, Sessions: tokens, Hasher: hasher, Checker: checker, Rules: PasswordRules(cfg),
		// The CLI sends no mail; a discarding logger keeps the log sender's warning out of its output.
		Mail: mail.NewLogSender(slog.New(slog.DiscardHandler)), Templates: tmpl, Keys: core.Keys, Revoker: core.Keys,
		Audit: core.Audit, Logger: log,
	})
}

// Run serves until ctx is cancelled, keeping the signing keys in sync.
// ready receives the bound address. With PORTCULLIS_METRICS_ADDR, /metrics
// is served on its own listener (bound before ready is called), and both
// listeners shut down gracefully; if either fails, both stop.
func (a *App) Run(ctx context.Context, ln net.Listener, ready func(net.Addr)) error {
	// The signing keys stay in sync until the server has drained: keys
	// not reloaded for two sync intervals are refused (keys.ErrStale), so
	// stopping their sync with ctx would fail the requests in flight
	// during a graceful shutdown.
	// Deferred first, it runs last, and waits for a sync or a rotation in
	// flight before the stores are closed.
	keysCtx, stopKeys := context.WithCancel(context.WithoutCancel(ctx))
	keysDone := make(chan struct{})
	go func() { defer close(keysDone); a.Keys.Run(keysCtx) }()
	defer func() { stopKeys(); <-keysDone }()
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if a.Backchannel != nil {
		// Deliveries in flight finish (or are left to their lease) before
		// Run returns and the stores are closed.
		done := make(chan struct{})
		go func() { defer close(done); a.Backchannel.Run(kctx) }()
		defer func() { cancel(); <-done }()
	}
	if a.KeyNotices != nil {
		// A round in flight ends before the stores are closed.
		done := make(chan struct{})
		go func() { defer close(done); a.KeyNotices.Run(kctx) }()
		defer func() { cancel(); <-done }()
	}
	go a.purgeLoop(kctx, purgeEvery)
	if rs := a.states.Redis; rs != nil {
		// Revocations the durable log holds and Redis lacks (their
		// instance stopped, or could not reach Redis, before writing
		// them) are applied from the start on; a pass in flight ends
		// before the stores are closed.
		done := make(chan struct{})
		go func() {
			defer close(done)
			rs.RunReconciler(kctx, func(err error) {
				a.Logger.Warn("apply recorded revocations to the token state", "err", err)
			})
		}()
		defer func() { cancel(); <-done }()
	}
	if a.Config.DebugAddr != "" {
		if err := a.serveProfiler(kctx); err != nil {
			return err
		}
	}
	var metricsDone chan error
	if a.Config.MetricsAddr != "" {
		mln, err := net.Listen("tcp", a.Config.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen on %s (PORTCULLIS_METRICS_ADDR): %w", a.Config.MetricsAddr, err)
		}
		addr := mln.Addr()
		a.metricsAddr.Store(&addr)
		a.Logger.Info("metrics listening (PORTCULLIS_METRICS_ADDR); /metrics is not served on PORTCULLIS_ADDR", "addr", addr.String())
		metricsDone = make(chan error, 1)
		go func() {
			err := a.Server.ServeMetrics(kctx, mln)
			if err != nil {
				cancel() // the main listener stops too
			}
			metricsDone <- err
		}()
	}
	var err error
	if ln == nil {
		err = a.Server.Serve(kctx, ready)
	} else {
		err = a.Server.ServeListener(kctx, ln, ready)
	}
	if metricsDone != nil {
		cancel()
		err = errors.Join(err, <-metricsDone)
	}
	return err
}

// MetricsAddr is the bound address of the PORTCULLIS_METRICS_ADDR listener,
// nil when there is none (or Run has not bound it yet).
func (a *App) MetricsAddr() net.Addr {
	if p := a.metricsAddr.Load(); p != nil {
		return *p
	}
	return nil
}

// serveProfiler serves net/http/pprof on the loopback debug address (for
// `make bench` CPU profiles) until ctx ends.
func (a *App) serveProfiler(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.Config.DebugAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (PORTCULLIS_DEBUG_ADDR): %w", a.Config.DebugAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	go func() { _ = srv.Serve(ln) }()
	a.Logger.Warn("profiler listening (PORTCULLIS_DEBUG_ADDR); keep it off in production", "addr", ln.Addr().String())
	return nil
}

// purgeEvery is how often purgeLoop runs. Each run deletes in short batches
// (sqlstate.State.Purge, sqlstore.Store.Purge), so a backlog never holds
// SQLite's write lock for long; a shorter period keeps the backlog, and the
// run, small.
const purgeEvery = 5 * time.Minute

// purgeLoop runs Purge now and then. Every instance may run it: deleting
// rows past their time is idempotent.
func (a *App) purgeLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := Purge(ctx, a.Store, a.states, time.Now()); err != nil && ctx.Err() == nil {
				a.Logger.Warn("purge expired rows", "err", err)
			}
		}
	}
}

// Purge runs once, at now, the periodic purge of each store in the
// database: the SQL token state's (expired revocations, counters,
// sessions; states.SQL, the durable revocation log with Redis) and the
// relational store's (used or expired one-time links, invites and API
// keys past their retention; st). It runs both when the first fails and returns
// their errors joined.
func Purge(ctx context.Context, st *sqlstore.Store, states TokenStates, now time.Time) error {
	var errs []error
	if _, err := states.SQL.Purge(ctx, now); err != nil {
		errs = append(errs, fmt.Errorf("token state: %w", err))
	}
	if _, err := st.Purge(ctx, now); err != nil {
		errs = append(errs, fmt.Errorf("relational store: %w", err))
	}
	return errors.Join(errs...)
}

// drainTimeout bounds Close's last attempt to write the revocations the
// Redis token state holds in memory.
const drainTimeout = 2 * time.Second

// Close releases every resource. It first tries, for a short while, to
// write the revocations the Redis token state holds in memory only;
// what is left is logged at Error (those in the durable log are applied
// by the other instances' reconciliation, or this one's next start).
func (a *App) Close() error {
	if a.Accounts != nil {
		a.Accounts.Wait() // background emails finish before the store closes
	}
	if a.APIKeys != nil {
		a.APIKeys.Wait() // and the background audits of refused keys
	}
	if rs := a.states.Redis; rs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		left, derr := rs.Drain(ctx)
		cancel()
		if left > 0 || derr != nil {
			a.Logger.Error("revocations held in memory not written at shutdown; those recorded durably are applied by the other instances",
				"left", left, "err", derr)
		}
	}
	err := a.states.Close()
	return errors.Join(err, a.Core.Close())
}
