// Package token is Portcullis's OAuth 2.0 protocol core, free of HTTP: client
// authentication, the password, refresh_token and client_credentials grants
// (RFC 6749), RFC 9068 access tokens and OIDC id tokens, rotating refresh
// tokens with reuse detection, revocation (RFC 7009), introspection (RFC
// 7662) and bearer-token authentication for Portcullis's own endpoints.
//
// It never logs or returns a secret: tokens, passwords and client secrets
// appear only in the responses meant to carry them.
package token

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"time"

	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// ClientStore reads OAuth clients.
type ClientStore interface {
	GetClient(ctx context.Context, id string) (store.Client, error)
}

// UserStore reads and updates users.
type UserStore interface {
	GetUser(ctx context.Context, id string) (store.User, error)
	// GetUserAt is GetUser given the user's version as a token-state call
	// already read it (v.Read), so that a copy of the user kept in memory
	// is checked without another round trip (*usercache.Cache).
	GetUserAt(ctx context.Context, id string, v store.UserVersion) (store.User, error)
	UpdateUser(ctx context.Context, id string, fn func(u *store.User) error) (store.User, error)
}

// Signer signs and verifies Portcullis's JWTs with the published keys.
type Signer interface {
	Sign(claims any, typ string) (string, error)
	// VerifyTyped checks the signature with a published, non-revoked key
	// whose algorithm the header names, and the header typ.
	VerifyTyped(token, wantTyp string) (payload []byte, kid string, err error)
	// Usable says whether the keys can be used now (nil), without a round
	// trip: keys.ErrStale or keys.ErrNotReady when they cannot.
	Usable() error
}

// Sealer encrypts the grace-window successor refresh token at rest.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// Passwords hashes passwords (the rehash after a login with an outdated hash).
type Passwords interface {
	Hash(ctx context.Context, password string) (string, error)
}

// PasswordChecker is the one password check (*passcheck.Checker): throttle,
// equal-time unknown accounts, failure metric and audit.
type PasswordChecker interface {
	Check(ctx context.Context, a passcheck.Attempt) (passcheck.Result, error)
	// Succeeded clears the account's failures after a check with
	// DeferSuccess (a login that needed no second factor).
	Succeeded(ctx context.Context, r passcheck.Result)
}

// Permissions expands a user's roles into concrete permissions.
type Permissions interface {
	Permissions(roles []string) []string
	// CoveredRoles returns the roles a token holding granted may name
	// (policy.Policy.CoveredRoles).
	CoveredRoles(userRoles, granted []string) []string
}

// SecondFactor is the second step of a password login (*mfa.Service): after
// a correct password Begin says whether a second factor is needed, and the
// MFA grants finish the login with Complete.
type SecondFactor interface {
	// Begin returns nil when the user needs no second factor, else the
	// mfa_token challenge (bound to user, client and scope).
	Begin(ctx context.Context, u store.User, factors *mfa.Summary, counted ratelimit.Counted, clientID, scope, tenant string, authTime time.Time,
		first []string) (*mfa.Challenge, error)
	// CompleteForTenant makes one attempt of the factor f on the mfa_token
	// for clientID, naming tenant ("": the one the password step named);
	// errors wrap mfa.ErrInvalidToken or mfa.ErrBadCode, or are 429/503
	// *apierr.Error.
	CompleteForTenant(ctx context.Context, token, clientID, tenant string, f mfa.Factor, m mfa.Meta) (mfa.Completed, error)
	// TOTPCode and RecoveryCode are the factors of the two MFA grants.
	TOTPCode(code string) mfa.Factor
	RecoveryCode(code string) mfa.Factor
	// Required reports whether the policy requires a second factor of a
	// user holding roles (mfa.required_for_level): every issuance checks
	// it against the login's amr (secondFactorOwed).
	Required(roles []string) bool
}

// APIKeys answers API keys (pcak_…) where a token is presented: at
// introspection and at revocation (*apikeys.Service).
type APIKeys interface {
	// IntrospectAPIKey answers RFC 7662 for a key presented by the
	// authenticated client: {"active": false} and nothing else unless the
	// key is valid now; an error only when a dependency is down (503).
	IntrospectAPIKey(ctx context.Context, client store.Client, raw string) (map[string]any, error)
	// RevokeAPIKeyByValue revokes the key raw is, whoever presents it (RFC
	// 7009: a malformed, unknown or revoked key is not an error).
	RevokeAPIKeyByValue(ctx context.Context, raw string, meta RequestMeta) error
}

// Tenancy decides a user's roles in a login or session that names a tenant
// or none (*tenancy.Resolver); installed only when organisations are on.
// Its errors are tenancy.ErrRefused (answered invalid_grant) or an
// unreachable store.
type Tenancy interface {
	// Platform returns u holding only its platform roles.
	Platform(u store.User) store.User
	// ForLogin returns u with the roles of a login naming slug ("": its
	// platform roles, no tenant) and the tenant.
	ForLogin(ctx context.Context, u store.User, slug string) (store.User, store.Tenant, error)
	// ForSession is ForLogin for a session bound to a tenant id.
	ForSession(ctx context.Context, u store.User, tenantID string) (store.User, store.Tenant, error)
	// GetTenant returns a tenant by id (the tenant of a client).
	GetTenant(ctx context.Context, id string) (store.Tenant, error)
	// TenantBySlug returns a tenant by slug (the tenant a token names).
	TenantBySlug(ctx context.Context, slug string) (store.Tenant, error)
}

// BrowserSessions answers whether the browser (SSO) session a family of
// the code flow ends with is still live: at a refresh, counting the
// refresh as its activity (store.BrowserSessions.KeepBrowserSession); at
// an introspection, only reading it (BrowserSessionLive).
type BrowserSessions interface {
	// KeepBrowserSession is store.ErrNotFound when no live session of
	// userID continues lineage at now.
	KeepBrowserSession(ctx context.Context, userID, lineage string, now time.Time) error
	// BrowserSessionLive is KeepBrowserSession changing nothing.
	BrowserSessionLive(ctx context.Context, userID, lineage string, now time.Time) error
}

// Auditor records security-relevant events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
	// RecordLogin records a successful login: e is its login.succeeded
	// event, e.Time the login's time and e.TargetID the user, whose
	// last-login time it sets in the same write.
	RecordLogin(ctx context.Context, e store.AuditEvent)
}

// Metrics counts what operators alert on. Every method must be safe to call concurrently.
type Metrics interface {
	TokenIssued(grant string)
	RefreshReuseDetected()
	// RefreshRotationLimitReached counts a session ended at its rotation
	// limit (store.MaxFamilyRotations).
	RefreshRotationLimitReached()
}

// Config holds the token settings.
type Config struct {
	Issuer            string
	DefaultAudience   string
	AccessTokenTTL    time.Duration
	IDTokenTTL        time.Duration
	RefreshIdleTTL    time.Duration
	RefreshMaxAge     time.Duration
	RefreshReuseGrace time.Duration
	// MaxClientTokenTTL caps a client's own access-token lifetime at issue
	// (PORTCULLIS_MAX_CLIENT_TOKEN_TTL; 0: no cap), so a client created
	// under a higher cap never outlives what revocations remember.
	MaxClientTokenTTL time.Duration
}

// Service implements the token endpoint and its siblings.
type Service struct {
	cfg       Config
	clients   ClientStore
	users     UserStore
	state     store.TokenState
	signer    Signer
	sealer    Sealer
	passwords Passwords
	perms     Permissions
	audit     Auditor
	metrics   Metrics
	checker   PasswordChecker
	codes     CodeStore
	mfa       SecondFactor
	// browser keeps the browser sessions families of the code flow end
	// with (nil: none is live).
	browser BrowserSessions
	// subjectTokens are the token-exchange handlers by subject_token_type.
	subjectTokens map[string]SubjectTokenHandler
	// apiKeys answers API keys at introspection and revocation (nil: every
	// key is inactive, and revoking one does nothing).
	apiKeys APIKeys
	// tenancy is nil while organisations are off.
	tenancy Tenancy
	log     *slog.Logger
	now     func() time.Time
}

// Deps are the collaborators of a Service. Metrics, Audit and Logger may be
// nil; Checker is needed by the password grant.
type Deps struct {
	Clients     ClientStore
	Users       UserStore
	State       store.TokenState
	Signer      Signer
	Sealer      Sealer
	Passwords   Passwords
	Permissions Permissions
	Audit       Auditor
	Metrics     Metrics
	Checker     PasswordChecker
	// Codes is where the authorization_code grant takes codes
	// (store.SingleUse); nil: every code is unknown (invalid_grant).
	Codes CodeStore
	// Browser is where a refresh checks the browser session its family
	// ends with (store.BrowserSessions; the token state's); nil: no such
	// session is live (a family of the code flow without offline_access
	// no longer refreshes).
	Browser BrowserSessions
	// MFA is the second step of a password login; nil: no user has a
	// second factor (every mfa_token is unknown: invalid_grant).
	MFA SecondFactor
	// Tenancy turns organisations on (PORTCULLIS_TENANTS=on); nil: off,
	// no token carries a tenant and a tenant token is refused.
	Tenancy Tenancy
	Logger  *slog.Logger
	Now     func() time.Time
}

// NewService returns a token service.
func NewService(cfg Config, d Deps) *Service {
	s := &Service{cfg: cfg, clients: d.Clients, users: d.Users, state: d.State, signer: d.Signer, sealer: d.Sealer,
		passwords: d.Passwords, perms: d.Permissions, audit: d.Audit, metrics: d.Metrics, checker: d.Checker,
		codes: d.Codes, browser: d.Browser, mfa: d.MFA, tenancy: d.Tenancy, log: d.Logger, now: d.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.audit == nil {
		s.audit = discardAudit{}
	}
	if s.metrics == nil {
		s.metrics = discardMetrics{}
	}
	return s
}

// Config returns the service's settings.
func (s *Service) Config() Config { return s.cfg }

// RequestMeta describes who made a request, for audit and throttling.
type RequestMeta struct {
	IP        string
	UserAgent string
}

type discardAudit struct{}

func (discardAudit) Record(context.Context, store.AuditEvent) {}

func (discardAudit) RecordLogin(context.Context, store.AuditEvent) {}

type discardMetrics struct{}

func (discardMetrics) TokenIssued(string)           {}
func (discardMetrics) RefreshReuseDetected()        {}
func (discardMetrics) RefreshRotationLimitReached() {}

// HashSecret is how client secrets and opaque tokens are stored: SHA-256.
// A slow hash adds nothing for a random 256-bit value.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// dummySecretHash keeps the work of an unknown-client check equal to a known one.
var dummySecretHash = HashSecret("portcullis-dummy-client-secret")

// secretMatches compares in constant time.
func secretMatches(secret string, hash []byte) bool {
	if len(hash) != sha256.Size {
		subtle.ConstantTimeCompare(HashSecret(secret), dummySecretHash)
		return false
	}
	return subtle.ConstantTimeCompare(HashSecret(secret), hash) == 1
}
