package accounts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apikeys"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/server/tenancy"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// Store is the relational store the accounts logic works on
// (*sqlstore.Store implements it).
type Store interface {
	CreateUser(ctx context.Context, u *store.User) error
	GetUser(ctx context.Context, id string) (store.User, error)
	GetUserByEmail(ctx context.Context, email string) (store.User, error)
	ListUsers(ctx context.Context, f store.UserFilter) (store.Page[store.User], error)
	UpdateUser(ctx context.Context, id string, fn func(u *store.User) error) (store.User, error)
	// UpdateUserRevokingKeys is UpdateUser that also revokes the user's
	// live API keys (revoked_by by, at now) in the same transaction, and
	// returns them.
	UpdateUserRevokingKeys(ctx context.Context, id string, fn func(u *store.User) error, by string, now time.Time) (store.User, []store.APIKey, error)
	GrantRole(ctx context.Context, userID, role string) (bool, error)
	RevokeRole(ctx context.Context, userID, role string) (bool, error)
	DeleteUser(ctx context.Context, id string) error

	CreateInvite(ctx context.Context, inv *store.Invite, mayReplace func(pending []store.Invite) error) error
	// SupersedeInvites cancels the pending invites of ids that newer
	// replaces, once newer's email went out.
	SupersedeInvites(ctx context.Context, newer store.Invite, ids []string) ([]store.Invite, error)
	GetInvite(ctx context.Context, id string) (store.Invite, error)
	ListInvites(ctx context.Context, cursor string, limit int) (store.Page[store.Invite], error)
	RevokeInvite(ctx context.Context, id string) error
	AcceptInvite(ctx context.Context, tokenHash []byte, now time.Time, u *store.User) (store.Invite, error)

	CreateUserToken(ctx context.Context, t *store.UserToken) error
	// SupersedeUserTokens stops the user's other links of newer's
	// purpose, once newer's email went out.
	SupersedeUserTokens(ctx context.Context, newer store.UserToken) error
	ConsumeUserToken(ctx context.Context, purpose store.UserTokenPurpose, tokenHash []byte, now time.Time,
		apply func(u *store.User) error) (store.User, error)
	// RedeemPasswordReset is ConsumeUserToken for a reset link that also
	// unlinks the identities of providers vouches does not vouch for and
	// revokes the user's live API keys, in the same transaction.
	RedeemPasswordReset(ctx context.Context, tokenHash []byte, now time.Time, apply func(u *store.User) error,
		vouches func(provider, email string) bool) (store.PasswordReset, error)

	ListAudit(ctx context.Context, f store.AuditFilter) (store.Page[store.AuditEvent], error)

	// Organisations (used only while they are on).
	store.Tenants
	ListTenantInvites(ctx context.Context, tenantID, cursor string, limit int) (store.Page[store.Invite], error)
	AcceptTenantInvite(ctx context.Context, tokenHash []byte, now time.Time, userID string) (store.Invite, error)

	// SetClientAudiences replaces a client's audiences (start-up
	// reconciliation of the built-in client).
	SetClientAudiences(ctx context.Context, id string, audiences []string) error
	// SetClientFirstParty marks a client first-party (start-up
	// reconciliation of the built-in client).
	SetClientFirstParty(ctx context.Context, id string, firstParty bool) error
	// SetClientGrants replaces a client's grants (start-up reconciliation
	// of the built-in client).
	SetClientGrants(ctx context.Context, id string, grants []string) error
	// SetClientRedirectURIs replaces a client's redirect URIs (start-up
	// reconciliation of the built-in client: the console's callback).
	SetClientRedirectURIs(ctx context.Context, id string, uris []string) error

	clients.Store
	// The links of users to upstream identity providers.
	store.FederatedIdentities
}

// Sessions issues and ends sessions (*token.Service implements it).
type Sessions interface {
	// AuthenticateClient checks a client's credentials like the token endpoint.
	AuthenticateClient(ctx context.Context, cred token.ClientCredentials) (store.Client, error)
	// IssueForUser starts a session for a user who just proved who they
	// are, in the organisation tenant names ("": none), under the
	// organisation rule of every login.
	IssueForUser(ctx context.Context, client store.Client, user store.User, tenant string, scope []string) (token.Response, error)
	// SessionUser returns the user as that session would hold it (the
	// roles there), or the refusal IssueForUser would answer.
	SessionUser(ctx context.Context, client store.Client, user store.User, tenant string) (store.User, error)
	// ClientIssuesIn answers whether client could start the session that
	// follows an invite to the organisation tenantID ("": the platform).
	ClientIssuesIn(ctx context.Context, client store.Client, tenantID string) error
	// EndUserSessions ends every session of the user and revokes every access
	// token issued to them before now, having queued the back-channel logout
	// of their live browser sessions (signout.Ender.EndUser); every path
	// that ends them all calls it.
	EndUserSessions(ctx context.Context, userID string) error
	// EndClientGrants ends every session of the user at one client.
	EndClientGrants(ctx context.Context, userID, clientID string) error
	// RecheckBearer reads the revocation of a token the bearer check
	// accepted earlier in the request: nil while it stands, 401
	// invalid_token once revoked, 503 when that cannot be known.
	RecheckBearer(ctx context.Context, c token.AccessClaims) error
	// RecheckLogin is RecheckBearer for the password step of userID at
	// authTime (an mfa_token's login): 401 invalid_token once a cut-off of
	// the user's sessions was written after it.
	RecheckLogin(ctx context.Context, userID string, authTime time.Time) error
}

// APIKeys creates, lists and revokes API keys (*apikeys.Service). Who may
// manage whose keys is decided here before it is called.
type APIKeys interface {
	Create(ctx context.Context, owner store.User, maker apikeys.Token, req apikeys.CreateRequest, m apikeys.Meta) (apikeys.Created, error)
	List(ctx context.Context, ownerID, cursor string, limit int) (apikeys.Page, error)
	Revoke(ctx context.Context, ownerID, keyID string, m apikeys.Meta) error
	// Revoked audits keys the store revoked in another write's transaction
	// and ends the sessions of the tokens exchanged from them.
	Revoked(ctx context.Context, keys []store.APIKey, m apikeys.Meta) error
}

// Hasher hashes new passwords (*password.Hasher implements it).
type Hasher interface {
	Hash(ctx context.Context, password string) (string, error)
}

// PasswordChecker is the one password check (*passcheck.Checker): the login
// throttle, equal-time unknown accounts, the failure metric and audit.
type PasswordChecker interface {
	Check(ctx context.Context, a passcheck.Attempt) (passcheck.Result, error)
	// Succeeded clears the account's throttle failures after a check made
	// with DeferSuccess, once the login it began needs no second factor.
	Succeeded(ctx context.Context, r passcheck.Result)
}

// PasswordRules decides whether a new password is acceptable
// (password.Rules implements it). Check returns an error whose message, a
// sentence for a person, says why not.
type PasswordRules interface {
	Check(password, email string) error
}

// Authorities tell whether an upstream identity provider is authoritative
// for an email address, a local account's (*upstream.Providers implements
// it: the address's domain is in that provider's allowed_domains; a
// provider no longer configured is authoritative for none).
type Authorities interface {
	VouchesFor(providerID, email string) bool
}

// Keys lists and rotates the signing keys (*keys.Manager implements it).
type Keys interface {
	List(ctx context.Context) ([]keys.KeyInfo, error)
	Rotate(ctx context.Context, force bool) (keys.Rotation, error)
}

// Auditor records security-relevant events (*app.Auditor implements it).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// Limiter throttles the account endpoints that need no bearer token. Check
// returns nil to let the request through, or the error to answer (normally
// apierr.ErrRateLimited with a Retry-After). key is the normalised email
// address when the request names one, else "". It must not depend on whether
// an account exists.
//
// AllowMail counts one email of kind (a Limit* name, or limitInviteMail)
// to recipient, refused beyond the limit of emails one address may be
// sent on request (ratelimit.Limiter.AllowMail).
type Limiter interface {
	Check(ctx context.Context, action, ip, key string) error
	AllowMail(ctx context.Context, kind, recipient string) error
}

// Limiter actions.
const (
	LimitForgotPassword = "password_forgot"
	LimitResetPassword  = "password_reset"
	LimitChangePassword = "password_change"
	LimitAcceptInvite   = "invite_accept"
	LimitRegister       = "register"
	LimitVerifyEmail    = "email_verify"

	// limitInviteMail names the invite emails' limit per recipient
	// (limitMail); invites have no limit per client address.
	limitInviteMail = "invite"
)

// DefaultFirstPartyClientID is the built-in public client that issues the
// tokens of invite acceptance, password change and registration when the
// request names no client. Its grants are refresh_token and token exchange
// (RFC 8693: a front-end exchanges an upstream id token), so it can never be
// used for the password grant.
const DefaultFirstPartyClientID = "portcullis"

// Config holds the account settings.
type Config struct {
	// PublicURL is the base of emailed links (PORTCULLIS_PUBLIC_URL).
	PublicURL string
	// ProductName is shown in emails (PORTCULLIS_PRODUCT_NAME).
	ProductName string
	// Lifetimes of invite, reset and verification links.
	InviteTTL      time.Duration
	ResetTTL       time.Duration
	VerifyEmailTTL time.Duration
	// PublicRegistration allows Register (PORTCULLIS_PUBLIC_REGISTRATION).
	PublicRegistration bool
	// MaxClientTokenTTL caps a client's access_token_ttl
	// (PORTCULLIS_MAX_CLIENT_TOKEN_TTL; zero: clients.DefaultMaxAccessTokenTTL).
	MaxClientTokenTTL time.Duration
	// RefreshReuseGrace is PORTCULLIS_REFRESH_REUSE_GRACE: a cookie client
	// needs at least clients.MinCookieReuseGrace.
	RefreshReuseGrace time.Duration
	// FirstPartyClientID names the built-in client (default "portcullis").
	FirstPartyClientID string
	// FirstPartyRedirectURIs are the redirect URIs of the built-in client
	// (the console's callback): with any, it also has the
	// authorization_code grant. Kept in sync at start-up.
	FirstPartyRedirectURIs []string
	// Issuer is PORTCULLIS_ISSUER: the audience of the admin API, which the
	// built-in client lists and other clients list only when an actor
	// holding every admin permission (or the operator) gives it to them.
	Issuer string
	// DefaultAudience is PORTCULLIS_DEFAULT_AUDIENCE, the aud of the access
	// tokens of every client listing none: no client id may be it
	// (clients.Clashes).
	DefaultAudience string
	// BackgroundTimeout bounds the lookup and mailing a forgot-password
	// request does after it has been answered (default 60s).
	BackgroundTimeout time.Duration
	// MaxBackground bounds the forgot-password jobs running at once
	// (default 64); beyond it a request is answered the same way but its
	// email is dropped and a warning logged.
	MaxBackground int
}

// Deps are the collaborators of a Service. Limiter and Logger may be nil.
type Deps struct {
	Store    Store
	Policy   *policy.Policy
	Sessions Sessions
	Hasher   Hasher
	// Checker checks the current password of a password change.
	Checker PasswordChecker
	Rules   PasswordRules
	// Mail delivers the emails; Templates renders them.
	Mail      mail.Sender
	Templates *mail.Templates
	Keys      Keys
	Audit     Auditor
	Limiter   Limiter
	Logger    *slog.Logger
	Now       func() time.Time
	// Browser, Consents and Ender serve the session and consent views
	// (/auth/sessions, /auth/consents and their admin equivalents); when nil,
	// those operations answer 500 (the CLI needs none of them).
	Browser  BrowserSessionLister
	Consents Consents
	Ender    SessionEnder
	// MFA serves the second-factor operations (/auth/mfa…, the admin
	// reset) and asks an invited user to enrol when the policy requires it;
	// when nil, the MFA operations answer 503 and invites need no second
	// factor (the CLI needs none of them). Passkeys, when nil, makes the
	// passkey operations answer 400 (no WebAuthn relying party).
	MFA      MFA
	Passkeys Passkeys
	// APIKeys serves the API key operations (/auth/api-keys and
	// /admin/users/{id}/api-keys); when nil they answer 503 (the CLI needs
	// none of them).
	APIKeys APIKeys
	// Tenancy turns organisations on (PORTCULLIS_TENANTS=on): every admin
	// operation is confined to the acting token's tenant (see scopeOf).
	// Nil: off, and a token naming a tenant acts nowhere.
	Tenancy *tenancy.Resolver
	// Revoker revokes signing keys (the console's emergency revoke, the
	// CLI's keys revoke); when nil RevokeKey answers 503. Throttle clears
	// an account's failed logins; when nil (rate limits off) there is
	// nothing to clear.
	Revoker  KeyRevoker
	Throttle LoginThrottle
	// Authorities judge an account's upstream identities at a password
	// reset, which keeps only those of a provider that vouches for the
	// account's email; nil (no providers file): none does.
	Authorities Authorities
}

// Service implements the account and admin operations.
type Service struct {
	cfg      Config
	store    Store
	policy   *policy.Policy
	sessions Sessions
	hasher   Hasher
	checker  PasswordChecker
	rules    PasswordRules
	mail     mail.Sender
	tmpl     *mail.Templates
	keys     Keys
	audit    Auditor
	limiter  Limiter
	log      *slog.Logger
	clock    atomic.Pointer[func() time.Time]
	browser  BrowserSessionLister
	consents Consents
	ender    SessionEnder
	mfa      MFA
	passkeys Passkeys
	apiKeys  APIKeys
	tenancy  *tenancy.Resolver
	revoker  KeyRevoker
	throttle LoginThrottle
	vouch    Authorities

	bgSlots chan struct{}
	bgWG    sync.WaitGroup
}

// New checks cfg and d and returns a Service.
func New(cfg Config, d Deps) (*Service, error) {
	var missing []string
	for name, v := range map[string]any{"Store": d.Store, "Sessions": d.Sessions, "Hasher": d.Hasher, "Checker": d.Checker,
		"Rules": d.Rules, "Mail": d.Mail, "Keys": d.Keys, "Audit": d.Audit} {
		if v == nil {
			missing = append(missing, name)
		}
	}
	if d.Policy == nil {
		missing = append(missing, "Policy")
	}
	if d.Templates == nil {
		missing = append(missing, "Templates")
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("accounts: missing dependencies %v", missing)
	}
	if cfg.PublicURL == "" {
		return nil, errors.New("accounts: PublicURL is required to build emailed links")
	}
	if cfg.InviteTTL <= 0 || cfg.ResetTTL <= 0 || cfg.VerifyEmailTTL <= 0 {
		return nil, errors.New("accounts: invite, reset and verification lifetimes must be positive")
	}
	if cfg.FirstPartyClientID == "" {
		cfg.FirstPartyClientID = DefaultFirstPartyClientID
	}
	if cfg.BackgroundTimeout <= 0 {
		cfg.BackgroundTimeout = 60 * time.Second
	}
	if cfg.MaxBackground <= 0 {
		cfg.MaxBackground = 64
	}
	s := &Service{cfg: cfg, store: d.Store, policy: d.Policy, sessions: d.Sessions, hasher: d.Hasher, checker: d.Checker, rules: d.Rules,
		mail: d.Mail, tmpl: d.Templates, keys: d.Keys, audit: d.Audit, limiter: d.Limiter, log: d.Logger,
		browser: d.Browser, consents: d.Consents, ender: d.Ender, mfa: d.MFA, passkeys: d.Passkeys, apiKeys: d.APIKeys,
		tenancy: d.Tenancy,
		revoker: d.Revoker, throttle: d.Throttle, vouch: d.Authorities,
		bgSlots: make(chan struct{}, cfg.MaxBackground)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	s.clock.Store(&now)
	return s, nil
}

// SetClock replaces the service's clock (tests: a sign-in older than
// ReauthWindow without waiting).
func (s *Service) SetClock(now func() time.Time) { s.clock.Store(&now) }

func (s *Service) now() time.Time { return (*s.clock.Load())() }

// Config returns the service's settings.
func (s *Service) Config() Config { return s.cfg }

// Wait blocks until every background job (forgot-password lookups and
// emails) has finished. Call it before closing the store.
func (s *Service) Wait() { s.bgWG.Wait() }

// Meta describes who made a request, for audit events and throttling.
type Meta struct {
	IP        string
	UserAgent string
	// ClientID is the OAuth client of the caller's token, when there is one.
	ClientID string
	// Tenant is the `tenant` claim (an organisation's slug) of the
	// caller's token, when there is one: the organisation an admin
	// operation is confined to, and the tenant of its audit events.
	Tenant string
}

// Actor is the authenticated user performing an operation (the sub of their
// token). Their roles are always re-read from the store, never taken from the
// token. Operator() is the one actor that is not a user.
type Actor struct {
	ID string
	Meta
	// APIKey is the id of the API key the acting token was exchanged from
	// ("" for a token of a login): such a token never manages API keys.
	APIKey string
	// Scope is the scope the acting access token was granted (its scope
	// claim, split): what the person let this session do. A credential
	// made with the token (an API key of their own) never holds more. Nil
	// when the actor acts with no access token (the operator, a console
	// session), which bounds such a credential to nothing.
	Scope []string
	// Audience is the acting access token's aud claim (nil without one).
	Audience token.Audience
	// Bearer is the acting access token's claims, as the bearer check
	// accepted them when the request's headers arrived (nil when the actor
	// acts with no access token). What the token makes that outlives its
	// session (an API key, a second factor, recovery codes) is kept only if
	// the token is still not revoked once it is written (madeWithLiveToken).
	Bearer   *token.AccessClaims
	operator bool
	// mfaEnrolment: the actor presented an mfa_token whose enrolment is
	// required (MFATokenActor), not an access token.
	mfaEnrolment bool
	// loginAt is, for an mfa_token's actor, when its password step was
	// made: what it enrols is kept only if the user's sessions were not
	// ended since (madeWithLiveToken).
	loginAt time.Time
	// SignedInAt and AMR are, for an actor of a browser session (no access
	// token), when the person last authenticated in it and how (RFC 8176
	// methods): a write of their second factors needs the one recent and,
	// once they have a factor, the other to hold "mfa" (recentProof). An
	// access token's are its auth_time and amr claims (Bearer).
	SignedInAt time.Time
	AMR        []string
}

// login returns when and how the actor's login authenticated them: the
// access token's auth_time and amr, else SignedInAt and AMR (zero when
// unknown).
func (a Actor) login() (time.Time, []string) {
	if a.Bearer != nil {
		if a.Bearer.AuthTime == 0 {
			return time.Time{}, a.Bearer.AMR
		}
		return time.Unix(a.Bearer.AuthTime, 0), a.Bearer.AMR
	}
	return a.SignedInAt, a.AMR
}

// withToken reports whether the actor acts with an access token (the
// admin API, /auth), whose scope then bounds what they pass on
// (passablePermissions); a scope set without the token's claims counts as
// one too.
func (a Actor) withToken() bool { return a.Bearer != nil || a.Scope != nil }

// OperatorActorID is the actor_id of the audit events of operations the
// operator runs with the CLI (`portcullis clients …`, `keys rotate`, `keys
// revoke`; their details say "via": "cli") and of the account `portcullis
// bootstrap` creates ("via": "bootstrap"). It cannot be a user id (those
// start with usr_).
const OperatorActorID = "operator:cli"

// Operator returns the actor of the CLI: whoever holds the server's database
// settings. It is bound by no user's privilege ceiling, only by the rules
// every actor is (a client's scopes must be permissions the policy knows; the
// built-in client cannot be deleted). Only code in this module can make one;
// no request can.
func Operator() Actor {
	return Actor{ID: OperatorActorID, Meta: Meta{UserAgent: "portcullis-cli"}, operator: true}
}

// limit runs the limiter when one is installed. Under a context of
// CountOnce an action (with its key) the request already counted, and was
// allowed, is not counted again.
func (s *Service) limit(ctx context.Context, action string, m Meta, key string) error {
	if s.limiter == nil {
		return nil
	}
	once, _ := ctx.Value(countOnceKey{}).(*countedOnce)
	if once.has(action, key) {
		return nil
	}
	if err := s.limiter.Check(ctx, action, m.IP, key); err != nil {
		return err
	}
	once.add(action, key)
	return nil
}

// CountOnce returns ctx for one request of a person that calls the service
// more than once: each limit (a Limit* action, for one key) its calls count
// is counted once, by the first call, however many calls follow. The
// invite page is one: a form it shows again after a refused acceptance
// (AcceptInvite) looks at the invite again (LookAtInvite), and one
// submitted form is one attempt, so it must use up the limit once. (Two
// calls at once may each count it: never fewer counts than calls.)
func CountOnce(ctx context.Context) context.Context {
	return context.WithValue(ctx, countOnceKey{}, &countedOnce{})
}

type countOnceKey struct{}

// countedOnce holds the limits a request of CountOnce counted (a nil one,
// outside CountOnce, holds none and keeps none).
type countedOnce struct {
	mu   sync.Mutex
	seen map[[2]string]bool
}

func (c *countedOnce) has(action, key string) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[[2]string{action, key}]
}

func (c *countedOnce) add(action, key string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[[2]string]bool{}
	}
	c.seen[[2]string{action, key}] = true
}

// limitMail applies the limit of emails of kind (a Limit* name) to one
// recipient (ratelimit.Limiter.AllowMail), before anything is issued for
// the email.
func (s *Service) limitMail(ctx context.Context, kind, recipient string) error {
	if s.limiter == nil {
		return nil
	}
	return s.limiter.AllowMail(ctx, kind, recipient)
}

// record writes an audit event with the request's metadata.
// An event of a request made with an organisation's token carries that
// organisation (its id), so that its admins find it and no one else's do.
func (s *Service) record(ctx context.Context, action string, outcome store.Outcome, actorID, targetID string, m Meta, details map[string]string) {
	e := store.AuditEvent{Action: action, Outcome: outcome, ActorID: actorID, TargetID: targetID,
		ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent, Details: details}
	if m.Tenant != "" && s.tenancy != nil {
		if t, err := s.store.GetTenantBySlug(ctx, m.Tenant); err == nil {
			e.TenantID = t.ID
		} else {
			s.log.Warn("audit: the event's organisation could not be read", "action", action, "err", err)
		}
	}
	s.audit.Record(ctx, e)
}

// recordIn writes an audit event of an operation in scope sc by its actor:
// the event carries sc's organisation, also when a platform admin acts on
// one (so that its admins find it).
func (s *Service) recordIn(ctx context.Context, sc actorScope, action string, outcome store.Outcome, targetID string, m Meta, details map[string]string) {
	s.audit.Record(ctx, store.AuditEvent{Action: action, Outcome: outcome, ActorID: sc.actor.ID, TargetID: targetID,
		ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent, Details: details, TenantID: sc.tenant.ID})
}

// Background jobs start once the request that started them is over: when
// its context is done (net/http cancels it when the handler returns), plus
// bgSettle for the answer to leave, or after bgMaxWait for callers whose
// context never ends. So the job never competes with the answer for the CPU,
// and the answer time cannot tell what the job does.
const (
	bgSettle  = 10 * time.Millisecond
	bgMaxWait = time.Second
)

// background runs fn after the request of reqCtx is over, bounded by
// BackgroundTimeout and MaxBackground. It reports false when the job was
// dropped because too many were running.
func (s *Service) background(reqCtx context.Context, what string, fn func(ctx context.Context)) bool {
	select {
	case s.bgSlots <- struct{}{}:
	default:
		s.log.Warn("too many background account jobs; dropping one", "job", what)
		return false
	}
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		defer func() { <-s.bgSlots }()
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in background account job", "job", what, "panic", fmt.Sprint(r))
			}
		}()
		wait := time.NewTimer(bgMaxWait)
		select {
		case <-reqCtx.Done():
		case <-wait.C:
		}
		wait.Stop()
		time.Sleep(bgSettle)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackgroundTimeout)
		defer cancel()
		fn(ctx)
	}()
	return true
}
