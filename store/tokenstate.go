package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// RefreshFamily is one login session: a chain of refresh tokens where each use
// rotates the token. Its ID is the `sid` claim of the tokens issued in it.
type RefreshFamily struct {
	ID       string
	UserID   string
	ClientID string
	// Scope the session was granted at login (space-separated); follow-up
	// refreshes never widen it.
	Scope string
	// RequestedScope is what the client named at login ("" when it named no
	// permission): a session that asked for nothing follows the user's
	// current permissions.
	RequestedScope string
	// CreatedAt is when the family was issued; its idle window starts here.
	CreatedAt time.Time
	// AuthTime is when the person proved who they are for this session: the
	// start of a password grant, or the browser login a code was issued
	// from. The user's cut-off compares it (a family whose AuthTime is at or
	// before the cut-off is never created), and refreshes keep it as the id
	// token's auth_time. Zero means CreatedAt.
	AuthTime time.Time
	// GrantedAt is when the client was granted the access the session
	// continues: the authorization code's issue for a code's redemption
	// (as the redemption's AccessTokenRef.GrantedAt), else the grant's
	// own time. The user's cut-off at the client compares it (a family
	// whose GrantedAt is at or before the cut-off is ended and never
	// created), as IsAccessTokenRevoked compares an access token's. Zero
	// means CreatedAt (and so does a family stored before it was kept).
	GrantedAt time.Time
	// AMR is how the person proved who they are for this session (RFC 8176
	// method references, e.g. ["pwd","otp","mfa"]), kept so that refreshed
	// tokens carry the login's amr and acr. Nil for a family written before
	// it was kept.
	AMR []string
	// TenantID binds the session to the tenant its login named
	// (organisations on); "" for a login that named none. Refreshes keep
	// it whatever they ask.
	TenantID string
	// BrowserSessionID ties the family to the browser (SSO) session its
	// code was issued in, for a grant without offline_access: the
	// Lineage of that session (store.BrowserSession), which a re-login
	// of the same person carries on. A refresh is refused, and the family
	// ended, once no live browser session continues it
	// (BrowserSessions.KeepBrowserSession). "" for a family that outlives
	// browser sessions: a password grant, an offline_access grant, or one
	// written before it was kept.
	BrowserSessionID string
	AbsoluteExpiry   time.Time     // the session ends here whatever happens
	IdleTTL          time.Duration // a token unused this long expires
	// IdleExpiry is when the current token expires unused: the family's
	// creation or latest rotation plus IdleTTL. Only
	// TokenState.FindRefresh reads it; zero elsewhere, and when IdleTTL
	// is zero.
	IdleExpiry time.Time
}

// Expiry is when the family's current token stops refreshing unless it is
// rotated first: the earlier of AbsoluteExpiry and IdleExpiry (when set).
func (f RefreshFamily) Expiry() time.Time {
	if !f.IdleExpiry.IsZero() && f.IdleExpiry.Before(f.AbsoluteExpiry) {
		return f.IdleExpiry
	}
	return f.AbsoluteExpiry
}

// RotateRequest asks to replace the family's current refresh token.
type RotateRequest struct {
	FamilyID      string
	PresentedHash []byte // SHA-256 of the presented refresh token
	NextHash      []byte // SHA-256 of the successor
	// NextSealed is the successor, encrypted by the caller, kept only for the
	// grace window so a concurrent retry gets the same successor back; with
	// a Grace of zero no backend stores it at all.
	NextSealed []byte
	Now        time.Time
	Grace      time.Duration
	// ClientID, when set, is the client the presented token must belong
	// to: a family issued to another client answers RotateInvalid and
	// nothing changes (no rotation, no reuse detected, no revocation).
	// The refresh-token cookie is one for every cookie client, so it may
	// hold another app's token: that is no evidence of theft, and this
	// check costs the rotation no round trip of its own. Empty: any client
	// (the caller compares and judges after the rotation).
	ClientID string
}

// RotateOutcome says what a rotation did.
type RotateOutcome int

// Rotation outcomes.
const (
	// RotateInvalid: unknown family or token, expired (idle or absolute) or revoked family (see
	// TokenState.RotateRefresh), or a family of another client than RotateRequest.ClientID.
	// Nothing changed, except that a family found revoked through its session or user is then
	// ended.
	RotateInvalid RotateOutcome = iota
	// RotateOK: the presented token was current; NextHash is now current.
	RotateOK
	// RotateGraceReplay: the presented token was the one the current token
	// replaced, rotated less than Grace ago, and that rotation kept its
	// successor (it had a Grace); SuccessorSealed holds the successor
	// handed out then. Nothing changed.
	RotateGraceReplay
	// RotateReuseDetected: a token of this family that was already rotated was
	// presented outside the grace window. The whole family is now revoked.
	RotateReuseDetected
	// RotateLimitReached: the presented token was current, but the family
	// already keeps MaxFamilyRotations used hashes, so rotating it would
	// keep one more. Nothing rotated: the whole family is now revoked, in
	// the same atomic step, as RotateReuseDetected revokes it.
	RotateLimitReached
)

// MaxFamilyRotations is the most rotated-away token hashes one refresh
// family keeps for reuse detection, and so the most rotations it has: the
// rotation that would keep one more ends the family instead
// (RotateLimitReached). Dropping old hashes instead would let a holder of
// the token flush the window with fast rotations and present a stolen old
// token as unknown rather than reused; without a bound, one refresh token
// grows the token state by a hash per request for the family's whole life.
//
// With the defaults (a 15 min access token, PORTCULLIS_REFRESH_TOKEN_MAX_AGE
// 720 h) a client refreshing at every access-token expiry rotates
// 720 h / 15 min = 2,880 times in the family's whole life, so 10,000 leaves
// room for three such tabs or apps sharing a family, and more with longer
// access tokens. The bound keeps a family's used hashes to about 1 MB in
// Redis (about 93 B a member of the used set: 10,000 x 93 B = 0.93 MB) and
// to 10,000 rows of refresh_used_tokens in SQL.
const MaxFamilyRotations = 10000

// String names the outcome for logs and tests.
func (o RotateOutcome) String() string {
	switch o {
	case RotateOK:
		return "ok"
	case RotateGraceReplay:
		return "grace_replay"
	case RotateReuseDetected:
		return "reuse_detected"
	case RotateLimitReached:
		return "rotation_limit"
	default:
		return "invalid"
	}
}

// RotateResult is the outcome of RotateRefresh.
type RotateResult struct {
	Outcome         RotateOutcome
	Family          RefreshFamily // set for every outcome but RotateInvalid
	SuccessorSealed []byte        // set for RotateGraceReplay
	// UserVersion is the family's user's version, when the backend read
	// it with the rotation (Redis without Cluster), for the user's copy
	// (store/usercache).
	UserVersion UserVersion
}

// AccessTokenRef identifies an access token for a revocation check.
type AccessTokenRef struct {
	JTI      string
	SID      string    // empty when the token has no session
	UserID   string    // empty for client_credentials tokens
	IssuedAt time.Time // millisecond precision (see the token service's jti layout)
	// ClientID is the client the token was issued to: with UserID, the
	// user's cut-off at that client (RevokeClientGrants) at or after
	// GrantedAt revokes it. Empty: no such check.
	ClientID string
	// GrantedAt is when the client was granted the access the token
	// carries (an authorization code's issue, for the check a code's
	// redemption makes); zero means IssuedAt.
	GrantedAt time.Time
}

// ClientGrantedAt is the time ref's client cut-off is compared with:
// GrantedAt, or IssuedAt when it is zero.
func (r AccessTokenRef) ClientGrantedAt() time.Time {
	if r.GrantedAt.IsZero() {
		return r.IssuedAt
	}
	return r.GrantedAt
}

// ClientGrantedAt is the time f's client cut-off is compared with:
// GrantedAt, or CreatedAt when it is zero.
func (f RefreshFamily) ClientGrantedAt() time.Time {
	if f.GrantedAt.IsZero() {
		return f.CreatedAt
	}
	return f.GrantedAt
}

// ClientRevocationValue is the Value of a RevokedClient record: the client
// id, a space, the user id. Client ids hold no space (RevokeClientGrants
// refuses one that does), so the value names one pair.
func ClientRevocationValue(userID, clientID string) string {
	return clientID + " " + userID
}

// ParseClientRevocationValue splits a RevokedClient record's Value
// (ClientRevocationValue); ok is false for any other shape.
func ParseClientRevocationValue(v string) (userID, clientID string, ok bool) {
	clientID, userID, ok = strings.Cut(v, " ")
	if !ok || clientID == "" || userID == "" {
		return "", "", false
	}
	return userID, clientID, true
}

// TokenState is the fast-changing state of issued tokens: refresh families,
// access-token revocation and rate-limit counters. Every check-and-set is
// atomic across any number of server instances sharing the backend.
//
// A revocation method whose durable record was written but whose fast state
// could not be returns an error wrapping ErrRevocationPending: the
// revocation is then applied as soon as the backend answers again.
type TokenState interface {
	// CreateFamily starts a session whose current refresh token hashes to
	// firstHash. It fails with ErrSessionsEnded, starting nothing live, when
	// fam.AuthTime (the login's start; CreatedAt when zero) is at or
	// before the user's cut-off, atomically with respect to
	// RevokeUserSessions, or fam.ClientGrantedAt (when the client was
	// granted the access: a code's issue, not its redemption) is at or
	// before the user's cut-off at fam.ClientID, atomically with respect
	// to RevokeClientGrants. When the user already
	// has the backend's maximum of live families, the oldest ones are ended
	// (refresh tokens and access tokens, as RevokeFamily does) so that the
	// new one fits.
	CreateFamily(ctx context.Context, fam RefreshFamily, firstHash []byte) error
	// CreateFamilyAndCheck is CreateFamily then IsAccessTokenRevoked(check),
	// in that order, in one round trip where the backend can. A grant that
	// must see a revocation racing its issuance (a replayed authorization
	// code revokes the sid being created) checks once the family exists:
	// a revocation before the check is seen by it, one after finds the
	// family to end. When CreateFamily fails its error is returned and
	// revoked is true; when only the check fails, the family exists and
	// revoked is true with the check's error (fail closed).
	CreateFamilyAndCheck(ctx context.Context, fam RefreshFamily, firstHash []byte, check AccessTokenRef) (revoked bool, err error)
	// RotateRefresh atomically replaces the current token; see RotateOutcome.
	// A family counts as revoked when its session is revoked or its user's
	// cut-off is at or after its AuthTime, as IsAccessTokenRevoked would
	// answer for a token of the session issued at its AuthTime, even when
	// the revocation did not end the family itself (the session was
	// revoked before the family was created; the Redis state lost the
	// family's mark): it answers RotateInvalid, and is ended then as
	// RevokeFamily ends it.
	RotateRefresh(ctx context.Context, req RotateRequest) (RotateResult, error)
	// FindRefresh returns the family of the refresh token that hashes to
	// hash when RotateRefresh at now with grace (the rotation's
	// RotateRequest.Grace) would honour the token: the family's current
	// token, or the one it replaced, presented as a grace replay
	// (RotateGraceReplay). For a token RotateRefresh would call reuse
	// (RotateReuseDetected: one of the family's already rotated tokens,
	// outside the grace window) it returns the family with
	// ErrRefreshReused, so that the caller can judge whose token it is
	// and end the family (RevokeFamily) as rotation would. It is
	// ErrNotFound for an unknown token and when the family is revoked (as
	// RotateRefresh judges it) or expired at now. The family it returns
	// carries its IdleExpiry. It changes nothing. Revocation and
	// introspection of refresh tokens use it, so that a token that still
	// refreshes is one they find (RFC 7009 §2.2).
	FindRefresh(ctx context.Context, familyID string, hash []byte, now time.Time, grace time.Duration) (RefreshFamily, error)
	// RevokeFamily ends one session: its refresh tokens stop working and every
	// access token carrying its sid is revoked. Unknown ids are not an error.
	RevokeFamily(ctx context.Context, familyID string, now time.Time) error
	// RevokeClientGrants sets the user's cut-off at the client (withdrawing
	// consent to a client): every access token of the user issued to the
	// client at or before cutoff is revoked (IsAccessTokenRevoked with the
	// ref's ClientID, compared with ref.ClientGrantedAt), every session of
	// the user at the client granted at or before cutoff (its
	// ClientGrantedAt: a code issued before the cut-off and redeemed after
	// it counts as before) ends as RevokeFamily ends it, and no such family
	// can be created afterwards (CreateFamily). A later cut-off replaces an
	// earlier one; tokens and sessions of the client after the cut-off (a
	// consent given again) go on, and so do the user's sessions at other
	// clients. It is recorded durably as a RevokedClient revocation.
	RevokeClientGrants(ctx context.Context, userID, clientID string, cutoff time.Time) error
	// RevokeUserSessions ends every session of the user and revokes every
	// access token of the user issued before cutoff; no family whose
	// CreatedAt is at or before cutoff can be created afterwards.
	RevokeUserSessions(ctx context.Context, userID string, cutoff time.Time) error
	// RevokeAccessToken denies one jti until the token's expiry.
	RevokeAccessToken(ctx context.Context, jti string, expiresAt time.Time) error
	// IsAccessTokenRevoked reports whether the token's jti, its session, its
	// user's cut-off or its user's cut-off at its client (ref.ClientID,
	// compared with ref.ClientGrantedAt) revokes it.
	IsAccessTokenRevoked(ctx context.Context, ref AccessTokenRef) (bool, error)
	// Hit counts one event in a fixed window for key and returns the count so
	// far in the current window and the time until the window resets.
	Hit(ctx context.Context, key string, window time.Duration, now time.Time) (count int64, resetIn time.Duration, err error)
	// Peek returns the count of key's live window and the time until it
	// resets without counting anything; (0, 0) when no window is live.
	Peek(ctx context.Context, key string, now time.Time) (count int64, resetIn time.Duration, err error)
	// CountSteps takes steps in order, each a Hit or a Peek of its key, and
	// stops after the first whose count is above its StopAbove: it returns
	// the counts of the steps taken, in order. Each step is atomic, as Hit
	// is; the steps together are one round trip where the backend can
	// (one Redis node), else one per step (Cluster, where the keys' slots
	// differ; SQL).
	CountSteps(ctx context.Context, now time.Time, steps ...CounterStep) ([]CounterCount, error)
	// TakeBack takes n events back from key's live window (never below
	// zero), keeping the window's end, and returns the count left and
	// true, but only when that window is the one the events were counted
	// in: the live window ends at windowEnd (the end a Hit or CountSteps
	// reported, now + ResetIn, to the millisecond). Otherwise (no live
	// window, or a later one) it does nothing and returns (0, false): the
	// events left with their window. The check and the take-back are one
	// atomic step, as Hit is: the login throttle takes back the attempts a
	// successful login reserved, never another window's failures.
	TakeBack(ctx context.Context, key string, n int64, windowEnd, now time.Time) (left int64, taken bool, err error)
	// ResetCounters forgets the counters of keys in the order given: a
	// count that starts after a key is forgotten finds every key before it
	// forgotten too, so a caller that counts a later key and then reads an
	// earlier one can tell a reset that raced it (the login throttle's
	// delay and failures). One round trip where the backend keeps that
	// order in one (one Redis node), else one per key (Cluster, SQL).
	ResetCounters(ctx context.Context, keys ...string) error
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
}

// CounterStep is one step of TokenState.CountSteps.
type CounterStep struct {
	// Key names the counter, as Hit's and Peek's key does.
	Key string
	// Window, if positive, counts one event in a fixed window of that
	// length, as Hit does; 0 only reads the live count, as Peek does.
	Window time.Duration
	// StopAbove: no later step is taken when this step's count is above
	// it.
	StopAbove int64
}

// CounterCount is a counter's count in its live window and the time until
// that window resets: (0, 0) when no window is live.
type CounterCount struct {
	Count   int64
	ResetIn time.Duration
}

// CheckCounterSteps refuses steps CountSteps cannot take: a window must be
// 0 (read only) or at least a millisecond. Backends check every step
// before taking any, so that refused steps count nothing.
func CheckCounterSteps(steps []CounterStep) error {
	for _, st := range steps {
		if st.Window < 0 || (st.Window > 0 && st.Window < time.Millisecond) {
			return fmt.Errorf("count steps: the window of %q is %s: it must be 0 or at least 1ms", st.Key, st.Window)
		}
	}
	return nil
}

// CountEach takes steps one at a time with count, stopping as CountSteps
// does: CountSteps for a backend that takes them in one round trip per step.
func CountEach(steps []CounterStep, count func(CounterStep) (CounterCount, error)) ([]CounterCount, error) {
	out := make([]CounterCount, 0, len(steps))
	for _, st := range steps {
		c, err := count(st)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		if c.Count > st.StopAbove {
			break
		}
	}
	return out, nil
}

// RevocationKind is what a durable revocation record revokes.
type RevocationKind string

// Revocation kinds.
const (
	RevokedJTI     RevocationKind = "jti"  // one access token
	RevokedSession RevocationKind = "sid"  // every access token of a session
	RevokedUser    RevocationKind = "user" // every access token of a user issued before At
	// RevokedClient: every access token of a user at one client issued at
	// or before At, and the sessions of the user at the client created by
	// then (RevokeClientGrants); Value is ClientRevocationValue.
	RevokedClient RevocationKind = "client"
)

// Revocation is a durable record of a revocation. ExpiresAt is when no
// token it could affect is still valid; the record is kept until
// RevocationKeptUntil(ExpiresAt), by whichever clock judges it.
type Revocation struct {
	Kind      RevocationKind
	Value     string
	At        time.Time // when it was revoked; the cut-off for RevokedUser and RevokedClient
	ExpiresAt time.Time
}

// RevocationLog is the durable record of unexpired revocations. The Redis
// token state writes through to it, marks each record applied once Redis
// has taken it, applies on every instance the records left unapplied (by
// an instance that stopped, or cannot reach Redis, before it applied
// them), and rebuilds itself from it when Redis comes back empty, so no
// revoked token ever becomes valid again.
type RevocationLog interface {
	// RecordRevocations records revs, each unapplied from now on.
	RecordRevocations(ctx context.Context, revs []Revocation) error
	// ActiveRevocations lists every record still kept at now: its
	// RevocationKeptUntil(ExpiresAt) is after now.
	ActiveRevocations(ctx context.Context, now time.Time) ([]Revocation, error)
	// UnappliedRevocations lists up to limit records, still kept at now
	// (as ActiveRevocations), unapplied since recordedBefore or earlier,
	// oldest first.
	UnappliedRevocations(ctx context.Context, now, recordedBefore time.Time, limit int) ([]Revocation, error)
	// MarkRevocationsApplied marks the records of revs applied, each only
	// while it holds no later At or ExpiresAt than the one applied (a
	// record a later revocation moved stays unapplied).
	MarkRevocationsApplied(ctx context.Context, revs []Revocation) error
}

// familyCreatorChecker is the part of TokenState CreateFamilyThenCheck uses.
type familyCreatorChecker interface {
	CreateFamily(ctx context.Context, fam RefreshFamily, firstHash []byte) error
	IsAccessTokenRevoked(ctx context.Context, ref AccessTokenRef) (bool, error)
}

// CreateFamilyThenCheck is TokenState.CreateFamilyAndCheck as two calls in
// order, for a backend (or a configuration of one) without a shorter path.
func CreateFamilyThenCheck(ctx context.Context, st familyCreatorChecker, fam RefreshFamily, firstHash []byte, check AccessTokenRef) (bool, error) {
	if err := st.CreateFamily(ctx, fam, firstHash); err != nil {
		return true, err
	}
	revoked, err := st.IsAccessTokenRevoked(ctx, check)
	if err != nil {
		return true, err
	}
	return revoked, nil
}

// MaxLoginAge is the age of the oldest login time a sign-in may present:
// an identity provider's auth_time older than this is refused
// (the upstream package's checkLoginAge), and it is the max_age the upstream browser
// path asks a provider for when the request named none. A user's cut-off
// ("end every session") is kept at least this long (UserCutoffLifetime),
// so no login time older than a cut-off can outlive it.
const MaxLoginAge = 365 * 24 * time.Hour

// loginStepsMargin is how long a sign-in may take after its login time was
// checked and before its session is created: an mfa_token (at most 1 h,
// PORTCULLIS_MFA_TOKEN_TTL), the upstream second step, the pages between.
const loginStepsMargin = 24 * time.Hour

// UserCutoffLifetime is how long a user's cut-off (a RevokedUser record,
// and whatever a backend derives from it) is kept after its At, given the
// longest access token (maxAccessTokenTTL): long enough to deny every
// access token issued before it, and to refuse every login whose time is
// before it and can still be presented (MaxLoginAge, plus the time a
// sign-in's later steps take). It is one record per user, so what it
// keeps is bounded by the number of users.
func UserCutoffLifetime(maxAccessTokenTTL time.Duration) time.Duration {
	return MaxLoginAge + max(maxAccessTokenTTL, loginStepsMargin)
}

// ClockSkew is how far the clocks of the instances and of the stores they
// share may disagree: an expiry that one judges by its clock and another
// by its own gets this margin (a retired signing key's publication, a
// Redis revocation key's PXAT).
const ClockSkew = time.Minute

// RevocationKeptUntil is how long a revocation whose tokens expire at exp
// (Revocation.ExpiresAt, a Redis key's expiry) is kept: exp plus
// ClockSkew. The instance or store that drops the record judges this by
// its clock while every instance judges the tokens' expiry by its own, so
// a record dropped at the bare exp by a clock ahead re-admitted the tokens
// at an instance whose clock is behind. Every backend's purge, expiry and
// listing of revocations goes by it (or by RevocationExpiryKeptAfter); the
// tokens' own expiry does not change.
func RevocationKeptUntil(exp time.Time) time.Time { return exp.Add(ClockSkew) }

// RevocationExpiryKeptAfter is RevocationKeptUntil turned around, for a
// backend that selects records by their ExpiresAt: at now, a record is
// kept while its ExpiresAt is after the time returned, and may be deleted
// once it is at or before it.
func RevocationExpiryKeptAfter(now time.Time) time.Time { return now.Add(-ClockSkew) }
