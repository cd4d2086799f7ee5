// Package store holds Portcullis's domain records, the sentinel errors every
// backend returns, and the small per-concern repository interfaces.
//
// Backends live in sub-packages: sqlstore (GORM on PostgreSQL and SQLite) for
// the relational data, and tokenstate implementations (Redis and SQL) for the
// fast-changing token state. The conformance suites in storetest pin the
// behaviour every backend must share.
//
// This package must never import server, keys or policy, and never log.
package store

import (
	"errors"
	"time"
)

// Sentinel errors returned by every backend. Callers test them with errors.Is.
var (
	// ErrNotFound means the record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrAlreadyExists means a unique constraint (id, email, client id, kid) was violated.
	ErrAlreadyExists = errors.New("store: already exists")
	// ErrConflict means a compare-and-swap lost: the record changed since it was read.
	ErrConflict = errors.New("store: conflict")
	// ErrUnavailable means the backend could not be reached; callers fail closed.
	ErrUnavailable = errors.New("store: backend unavailable")
	// ErrTokenExpired means a one-time token (invite, reset, verification) has expired.
	ErrTokenExpired = errors.New("store: token expired")
	// ErrTokenUsed means a one-time token was already used (or superseded).
	ErrTokenUsed = errors.New("store: token already used")
	// ErrTokenRevoked means a one-time token was revoked.
	ErrTokenRevoked = errors.New("store: token revoked")
	// ErrRefreshReused means a refresh token is one its family already
	// rotated, presented where rotation would call it reuse: the family
	// is live, and whoever presents the token shows that it was copied
	// (TokenState.FindRefresh, which returns the family with it).
	ErrRefreshReused = errors.New("store: refresh token already rotated")
	// ErrSessionsEnded means a refresh family was not started because its
	// login began at or before the user's cut-off (every session of the user
	// was ended while the login was in flight).
	ErrSessionsEnded = errors.New("store: the user's sessions were ended after this login began")
	// ErrRevocationPending means a revocation was recorded durably but the
	// fast token state could not be written: it is applied there as soon as
	// that backend answers again, and until then the backend fails closed.
	ErrRevocationPending = errors.New("store: revocation recorded durably, not yet applied to the token state")
)

// User is a person who can log in, or a machine user (Kind UserMachine):
// an account of a script or service that holds roles and signs in only
// with API keys.
type User struct {
	ID string // stable opaque id, the `sub` of the user's tokens
	// Kind is UserHuman (also for "") or UserMachine. A machine user has no
	// email, username or password.
	Kind               string
	Email              string // as entered; unique by EmailKey (ASCII case ignored); empty for a machine user
	Username           string // optional; empty when unset
	Name               string
	PasswordHash       string // PHC / modular crypt format
	Active             bool
	EmailVerified      bool
	MustChangePassword bool
	Roles              []string // role names, filled by reads
	CreatedAt          time.Time
	UpdatedAt          time.Time
	LastLoginAt        *time.Time

	// PasswordUnproven says the current password was chosen through a
	// channel that did not prove the mailbox (public registration): its
	// holder may not own the address, so verified_email_auto never links
	// the account automatically (upstream.Decide). A password set with a
	// reset link mailed to the address clears it; a change made while
	// signed in keeps it.
	PasswordUnproven bool

	// PasswordHashForeign says the password hash may not have been made by
	// Portcullis (password.Hasher.Hash, which hashes the NFKC form of the
	// password): a hash imported from another system may be of the password
	// as typed, so its check also tries that form (password.ForeignHash), a
	// second run of the hash, and a successful sign-in replaces it. Every
	// account that existed before migration 27 has it (an imported hash
	// cannot be told from Portcullis's), as has a row inserted by SQL
	// without it (the column's default, for imports). CreateUser writes it
	// as given; a write through the store that changes the hash clears it,
	// since Portcullis writes only hashes its Hasher made.
	PasswordHashForeign bool
}

// UserVersion is a user's version as read beside another record (see
// store/usercache): every write of the user changes it.
type UserVersion struct {
	// Read says the backend read the version; when false, Value means nothing.
	Read bool
	// Value is the version; empty while a write of the user is in flight,
	// when no copy of the user may be used or kept.
	Value string
}

// User kinds.
const (
	UserHuman   = "human"
	UserMachine = "machine"
)

// IsMachine reports whether u is a machine user.
func (u User) IsMachine() bool { return u.Kind == UserMachine }

// Role is a policy role synced into the database.
type Role struct {
	Name        string
	Level       int
	Description string
}

// Client is an OAuth client.
type Client struct {
	ID         string
	Name       string
	Public     bool
	SecretHash []byte   // SHA-256 of the secret; empty for public clients
	Grants     []string // allowed grant types
	// Scopes the client may receive. Nil means every permission (created without --scopes);
	// an empty non-nil slice means none.
	Scopes    []string
	Audiences []string // empty: the default audience
	// Optional per-client lifetimes; zero means the server default.
	AccessTokenTTL time.Duration
	RefreshIdleTTL time.Duration
	RefreshMaxAge  time.Duration

	// Browser and native clients of the authorization code flow (contract,
	// "Browser sign-in").
	RedirectURIs           []string // exact strings; loopback IP literals match on any port
	PostLogoutRedirectURIs []string
	FirstParty             bool   // never shows consent; scopes follow the password grant
	ApplicationType        string // ApplicationWeb or ApplicationNative
	RequirePKCE            bool   // public clients always need PKCE whatever this says
	BackchannelLogoutURI   string
	LogoURI                string
	ClientURI              string

	// RequirePushedAuthorizationRequests: /oauth2/authorize serves this
	// client only requests pushed to /oauth2/par first (RFC 9126 §6).
	RequirePushedAuthorizationRequests bool

	// RefreshTokenDelivery is how refresh tokens reach the client:
	// RefreshDeliveryBody (the JSON body, also for "") or
	// RefreshDeliveryCookie (an HttpOnly cookie; contract, "Browser apps
	// without tokens in storage").
	RefreshTokenDelivery string
	// AllowedOrigins are the exact browser origins (scheme://host[:port])
	// a cookie client's requests must come from.
	AllowedOrigins []string

	// TenantID binds the client to a tenant (organisations on): its
	// client_credentials tokens always carry that tenant. "" for a platform
	// client.
	TenantID string

	CreatedAt time.Time
	UpdatedAt time.Time
}

// RetiredClientName is a name a deleted client leaves live in tokens: its
// access tokens carry its audiences and its id tokens its id until they
// expire (offline JWTs), so until Until no client may take the audience as
// its id, nor list the id among its audiences (clients.Clashes).
type RetiredClientName struct {
	Name     string
	Kind     string // RetiredAudience or RetiredClientID
	ClientID string // the deleted client
	Until    time.Time
}

// Kinds of RetiredClientName.
const (
	RetiredAudience = "audience"  // an audience the deleted client listed
	RetiredClientID = "client_id" // the deleted client's own id
)

// Refresh-token deliveries of a client.
const (
	RefreshDeliveryBody   = "body"
	RefreshDeliveryCookie = "cookie"
)

// RefreshByCookie reports whether the client gets its refresh tokens in the
// HttpOnly cookie rather than the JSON body.
func (c Client) RefreshByCookie() bool { return c.RefreshTokenDelivery == RefreshDeliveryCookie }

// Client application types (OIDC Dynamic Client Registration §2, RFC 8252).
const (
	ApplicationWeb    = "web"
	ApplicationNative = "native"
)

// KeyState is the lifecycle state of a signing key.
type KeyState string

// Key lifecycle states.
const (
	KeyNext    KeyState = "next"
	KeyActive  KeyState = "active"
	KeyRetired KeyState = "retired"
	KeyRevoked KeyState = "revoked"
)

// SigningKey is a JWT signing key. The private key is stored only encrypted.
type SigningKey struct {
	KID              string // RFC 7638 thumbprint
	Alg              string // RS256, ES256, EdDSA
	State            KeyState
	PublicJWK        []byte // JSON of the public JWK
	PrivateEncrypted []byte // AES-256-GCM sealed private key (see keys package)
	CreatedAt        time.Time
	ActivatedAt      *time.Time
	RetiredAt        *time.Time
	RevokedAt        *time.Time
	// PublishedUntil is when a retired key leaves the JWKS.
	PublishedUntil *time.Time
	// Version increments on every change; updates compare-and-swap on it.
	Version int64
}

// InviteStatus is the state of an invite.
type InviteStatus string

// Invite states. Expired is derived from ExpiresAt, not stored.
const (
	InvitePending    InviteStatus = "pending"
	InviteAccepted   InviteStatus = "accepted"
	InviteRevoked    InviteStatus = "revoked"
	InviteSuperseded InviteStatus = "superseded"
)

// Invite is an admin's invitation for an email address to join with a role.
type Invite struct {
	ID         string
	Email      string
	Role       string
	TokenHash  []byte // SHA-256 of the one-time token
	InvitedBy  string // user id
	Status     InviteStatus
	ExpiresAt  time.Time
	CreatedAt  time.Time
	AcceptedAt *time.Time
	UserID     string // the user created on acceptance
	// TenantID is the tenant the invite is to ("" for a global role): on
	// acceptance the role is held inside that tenant.
	TenantID string
}

// UserTokenPurpose says what a one-time user token is for.
type UserTokenPurpose string

// UserTokenKeptFor is how long a one-time user token (a reset or
// verification link) is kept once it can never be redeemed: the periodic
// purge deletes it when both its expiry and its use (or its being
// superseded or voided) are this far in the past. Until then redeeming it
// still answers why it cannot be used (used, or expired) as it did; after,
// it is unknown. A used link thus keeps its answer for its whole lifetime
// and a week more.
const UserTokenKeptFor = 7 * 24 * time.Hour

// InviteKeptFor is how long an invite is kept past its expiry, whatever
// its status (an accepted, revoked or superseded invite could not be used
// before its expiry either): until then the admin API and the console list
// it (an expired one can be sent again from there) and accepting it
// answers why it cannot be used; after, the periodic purge deletes it and
// the invitee's address with it.
const InviteKeptFor = 30 * 24 * time.Hour

// One-time token purposes.
const (
	PurposePasswordReset UserTokenPurpose = "password_reset"
	PurposeVerifyEmail   UserTokenPurpose = "verify_email"
)

// PasswordReset is what redeeming a password-reset link did, in one
// transaction (sqlstore's RedeemPasswordReset).
type PasswordReset struct {
	// User is the user as saved, without its password hash.
	User User
	// Unlinked are the upstream identities removed: those of providers
	// that do not vouch for the user's email.
	Unlinked []FederatedIdentity
	// RevokedKeys are the user's API keys revoked: every one live (not
	// revoked, not expired) at the redemption.
	RevokedKeys []APIKey
}

// UserToken is a one-time token bound to a user (password reset, email verification).
type UserToken struct {
	ID        string
	UserID    string
	Purpose   UserTokenPurpose
	TokenHash []byte // SHA-256 of the one-time token
	ExpiresAt time.Time
	UsedAt    *time.Time
	CreatedAt time.Time
}

// Outcome is the result recorded in an audit event.
type Outcome string

// Audit outcomes.
const (
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
)

// AuditEvent is one security-relevant action. Field names match the contract.
// IP and UserAgent are stored as CleanRequestMeta makes them.
type AuditEvent struct {
	ID        string            `json:"id"`
	Time      time.Time         `json:"time"`
	Action    string            `json:"action"`
	Outcome   Outcome           `json:"outcome"`
	ActorID   string            `json:"actor_id"`
	TargetID  string            `json:"target_id"`
	ClientID  string            `json:"client_id"`
	IP        string            `json:"ip"`
	UserAgent string            `json:"user_agent"`
	Details   map[string]string `json:"details"`
	// TenantID is the tenant the event happened in (the acting token's, or
	// the login's); "" for platform events. Omitted from JSON when empty.
	TenantID string `json:"tenant_id,omitempty"`
}

// AuditFilter selects audit events. Zero fields do not filter.
type AuditFilter struct {
	Action   string
	ActorID  string
	TargetID string
	Since    time.Time
	Until    time.Time
	// TenantID keeps only the events of this tenant (organisations on).
	TenantID string
	Cursor   string // opaque, from a previous page
	Limit    int
}

// UserFilter selects users for admin listing.
type UserFilter struct {
	Email string // exact, compared by EmailKey (ASCII case ignored)
	Query string // substring of email or name, case-insensitive
	// TenantID keeps only the members of this tenant (organisations on).
	TenantID string
	Cursor   string
	Limit    int
}

// Page is one page of a cursor-paginated list.
type Page[T any] struct {
	Items      []T
	NextCursor string // empty on the last page
}
