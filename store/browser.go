package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Single-use kinds: what a SingleUse record holds.
const (
	// OnceAuthCode is an authorization code (RFC 6749 §4.1.2).
	OnceAuthCode = "code"
	// OnceAuthRequest is a pending authorization request waiting for the
	// login or consent page.
	OnceAuthRequest = "authreq"
	// OncePushedRequest is an authorization request pushed to /oauth2/par
	// (RFC 9126), waiting for its request_uri at /oauth2/authorize.
	OncePushedRequest = "par"
	// OnceLogoutRequest is an RP-initiated logout request POSTed to the
	// end_session_endpoint, waiting for the browser's same-site GET that
	// carries its session cookie.
	OnceLogoutRequest = "logoutreq"
)

// SingleUse keeps small values that may be taken exactly once, across every
// instance: authorization codes, pending authorization requests, MFA
// challenges and the like. Keys are hashes of secrets the caller holds;
// values are opaque to the store. A taken record is kept until it expires,
// or until its tombstone (TakenKeptFor) ends when that is later, so that a
// second take can be told apart from an unknown key (a replayed code must
// revoke what the first redemption issued, even after the code's expiry).
type SingleUse interface {
	// PutOnce stores value under (kind, keyHash) until expiresAt.
	// ErrAlreadyExists when the key is already present (taken or not); an
	// expiresAt not after the backend's clock is refused.
	PutOnce(ctx context.Context, kind string, keyHash, value []byte, expiresAt time.Time) error
	// TakeOnce atomically marks the record taken and returns its value, and
	// keeps it, taken, until the later of its expiry and now plus
	// TakenKeptFor(kind). An unknown key,
	// or one that expired untaken, is ErrNotFound; a key taken before (its
	// tombstone included) returns the value with ErrTokenUsed. Of any number
	// of concurrent takes, on any number of instances, exactly one gets a
	// nil error.
	TakeOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error)
	// PeekOnce returns the value without taking it: ErrNotFound when unknown
	// or expired untaken, the value with ErrTokenUsed when taken and still
	// kept.
	PeekOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error)
}

// CodeReuseWindow is how long a taken authorization code stays as a
// tombstone after its take (see TakenKeptFor).
const CodeReuseWindow = 10 * time.Minute

// TakenKeptFor is how long after its take a record of kind stays in the
// single-use store as a tombstone, answering ErrTokenUsed with its value
// (until the later of that and the record's own expiry).
//
// An authorization code (OnceAuthCode) is kept for CodeReuseWindow: a
// replay then answers invalid_grant and revokes the grant of the first
// redemption (RFC 6749 §4.1.2, §10.5), whatever the code's own lifetime
// (PORTCULLIS_AUTH_CODE_TTL, 60 s by default). The attack reuse detection
// catches is a code stolen and redeemed first: the real client presents it
// seconds later, well inside the window. A replay hours later is a used
// code found in a history or a log; revoking then would mostly let whoever
// found it end the person's session. And every record, with the account
// snapshot it carries, is memory in Redis: at 2,000 sign-ins a second the
// window holds 1.2 M records, where a window of the revocation horizon (a
// day) would hold 170 M.
//
// Every other kind has no tombstone (0): kept until its own expiry, as
// nothing was issued from it that a replay should revoke (a spent PAR
// request_uri, mfa_token, WebAuthn ceremony, upstream sign-in or pending
// authorization request is refused either way, and an exchanged upstream id
// token is put until its own exp).
func TakenKeptFor(kind string) time.Duration {
	if kind != OnceAuthCode {
		return 0
	}
	return CodeReuseWindow
}

// OnceRecord is one SingleUse.PutOnce: value under (Kind, KeyHash) until
// ExpiresAt.
type OnceRecord struct {
	Kind      string
	KeyHash   []byte
	Value     []byte
	ExpiresAt time.Time
}

// BrowserSession is a person's single sign-on session at Portcullis,
// identified to the browser by an opaque cookie of which only the hash is
// stored.
type BrowserSession struct {
	ID string // opaque id (the `sid` of the tokens issued in it); never the cookie
	// Lineage is the ID of the first session of the chain of re-logins of
	// the same person in the same browser that this one continues (a
	// re-login ends the old session and starts a new one carrying its
	// grants); its own ID when it continues none. The refresh families of
	// its grants are bound to it (RefreshFamily.BrowserSessionID), so a
	// re-login does not end them. Backends answer ID for a session stored
	// before it was kept.
	Lineage  string
	UserID   string
	AuthTime time.Time // when the person last authenticated in this session
	AMR      []string  // authentication methods (RFC 8176), e.g. ["pwd"]
	// Remember: the person ticked "Keep me signed in" (a persistent cookie).
	Remember       bool
	CreatedAt      time.Time
	LastUsedAt     time.Time
	IdleTTL        time.Duration
	AbsoluteExpiry time.Time
	// IP and UserAgent are the sign-in's, stored as CleanRequestMeta makes them.
	IP        string
	UserAgent string
	// ClientIDs are the clients granted codes in this session, in order of first grant.
	ClientIDs []string
	// Grants are the grants (codes issued) in this session, oldest first: the
	// sids that ending the session revokes and names in back-channel logout
	// tokens.
	Grants []SessionGrant

	// UserVersion is the user's version, when the backend read it with the
	// session (FindBrowserSession on Redis), so that a copy of the user
	// kept in memory can be checked without another round trip. It is not
	// stored.
	UserVersion UserVersion
}

// SessionGrant is one grant made in a browser session: an authorization code
// issued to a client, whose sid is the grant's refresh family and the `sid`
// of its access and id tokens.
type SessionGrant struct {
	SID      string
	ClientID string
	// Offline: the grant included offline_access, so its refresh family
	// outlives the browser session.
	Offline   bool
	GrantedAt time.Time
}

// MaxSessionGrants bounds the grants a browser session keeps. Recording one
// more drops the oldest, which the caller ends (AddBrowserSessionGrant
// returns it), so that a long-lived session's record stays small and no
// grant outlives its session unnoticed.
const MaxSessionGrants = 500

// EndedBrowserSession is a session CreateBrowserSession ended past the cap
// on sessions per user: its id and the grants it held.
type EndedBrowserSession struct {
	ID     string
	Grants []SessionGrant
}

// EndedGrants is the grants of ended, in order.
func EndedGrants(ended []EndedBrowserSession) []SessionGrant {
	var out []SessionGrant
	for _, e := range ended {
		out = append(out, e.Grants...)
	}
	return out
}

// BrowserSessions keeps browser (SSO) sessions in the token state. Ending
// every session of a user (RevokeUserSessions) ends their browser sessions
// too: a session whose AuthTime is at or before the user's cut-off is never
// found again.
type BrowserSessions interface {
	// CreateBrowserSession stores a new session reachable by cookieHash,
	// with s.Grants and s.ClientIDs as given.
	// ErrAlreadyExists when the id or the cookie hash is taken;
	// ErrSessionsEnded (storing nothing findable) when s.AuthTime is at or
	// before the user's cut-off, atomically with RevokeUserSessions.
	//
	// A user holds at most the backend's sessions-per-user cap (the one
	// that caps refresh families, PORTCULLIS_MAX_SESSIONS_PER_USER; 0: no
	// cap) live browser sessions: when the user already holds that many,
	// the oldest by creation (then by id) are ended in the same atomic
	// step, as EndBrowserSessionGrants ends a session, so that with the
	// new one the user holds exactly the cap. Those sessions are returned,
	// oldest first, each with the grants it held, for the caller to audit
	// and to end the grants of (as grants dropped past MaxSessionGrants
	// are).
	CreateBrowserSession(ctx context.Context, s BrowserSession, cookieHash []byte) (ended []EndedBrowserSession, err error)
	// FindBrowserSession returns the live session of cookieHash at now,
	// without its Grants (BrowserSessionGrants reads them: most requests
	// need none), and extends its idle expiry (LastUsedAt = now). ErrNotFound
	// when unknown, ended, idle for longer than its IdleTTL, past
	// AbsoluteExpiry, or ended by the user's cut-off.
	FindBrowserSession(ctx context.Context, cookieHash []byte, now time.Time) (BrowserSession, error)
	// AddBrowserSessionGrant appends g to the session's Grants and its client
	// to ClientIDs (once; later grants keep the first position), atomically:
	// concurrent additions all land. When the session then holds more than
	// MaxSessionGrants grants the oldest are removed and returned, for the
	// caller to end. ErrNotFound when the session is unknown or ended.
	// userID is the session's user (a session of another user is not
	// found).
	AddBrowserSessionGrant(ctx context.Context, userID, id string, g SessionGrant) (dropped []SessionGrant, err error)
	// AddBrowserSessionGrantWithCode is AddBrowserSessionGrant for the grant
	// of an authorization code, storing the code's single-use record (as
	// SingleUse.PutOnce) in the same round trip where the store can. It
	// fails when either fails, and then either may have happened alone: the
	// caller never hands out the code, which expires unused, and a grant
	// recorded without its code has no tokens to end. The grants the session
	// dropped are returned with an error too, for the caller to end.
	AddBrowserSessionGrantWithCode(ctx context.Context, userID, id string, g SessionGrant, code OnceRecord) (dropped []SessionGrant, err error)
	// BrowserSessionGrants returns the grants of the live session id of
	// userID, oldest first; ErrNotFound when it is unknown, ended or
	// another user's.
	BrowserSessionGrants(ctx context.Context, userID, id string) ([]SessionGrant, error)
	// EndBrowserSessionGrants ends the session and returns the grants it
	// held when it ended, atomically with
	// AddBrowserSessionGrant: a grant recorded before the end is returned,
	// none can be recorded after it. An unknown or already ended session
	// returns no grants and no error.
	EndBrowserSessionGrants(ctx context.Context, id string, now time.Time) ([]SessionGrant, error)
	// ListBrowserSessions returns the user's live sessions (with their
	// Grants), newest first.
	ListBrowserSessions(ctx context.Context, userID string, now time.Time) ([]BrowserSession, error)
	// KeepBrowserSession is the refresh of a family bound to a browser
	// session (RefreshFamily.BrowserSessionID): ErrNotFound when no live
	// session of userID continues lineage at now (ended, idle for longer
	// than its IdleTTL, past its AbsoluteExpiry, or ended by the user's
	// cut-off), as FindBrowserSession judges it. Else the refresh counts
	// as activity of the session: when TouchDue(LastUsedAt, IdleTTL, now),
	// LastUsedAt becomes now (never back), which moves its idle expiry
	// forward, never beyond its AbsoluteExpiry.
	KeepBrowserSession(ctx context.Context, userID, lineage string, now time.Time) error
	// BrowserSessionLive judges as KeepBrowserSession does (ErrNotFound
	// when no live session of userID continues lineage at now) and changes
	// nothing: no activity is counted, nothing dead is dropped. It is the
	// check of an introspection, which must not keep a session alive.
	BrowserSessionLive(ctx context.Context, userID, lineage string, now time.Time) error
}

// TouchDivisor bounds the writes KeepBrowserSession makes: a session's
// last use is moved only once it is more than IdleTTL/TouchDivisor old, so
// an application refreshing every few minutes writes to its browser
// session a few times per idle period, and the idle expiry it keeps is at
// most that fraction short of a full IdleTTL.
const TouchDivisor = 16

// TouchDue reports whether KeepBrowserSession at now moves the last use of
// a session last used at lastUsed with idle TTL idle: the one rule every
// backend applies (the Redis script is passed TouchDivisor).
func TouchDue(lastUsed time.Time, idle time.Duration, now time.Time) bool {
	return now.Sub(lastUsed)*TouchDivisor > idle
}

// Consent is a person's remembered consent to a third-party client for a set of scopes.
type Consent struct {
	UserID    string
	ClientID  string
	Scopes    []string // sorted, without duplicates
	GrantedAt time.Time
}

// Consents keeps remembered consents in the relational store.
type Consents interface {
	// GetConsent returns the consent of user to client, or ErrNotFound.
	GetConsent(ctx context.Context, userID, clientID string) (Consent, error)
	// PutConsent creates or replaces the consent of (c.UserID, c.ClientID).
	PutConsent(ctx context.Context, c Consent) error
	// DeleteConsent forgets the consent; ErrNotFound when there was none.
	DeleteConsent(ctx context.Context, userID, clientID string) error
	// ListConsents returns the user's consents, newest first.
	ListConsents(ctx context.Context, userID string) ([]Consent, error)
}

// EncodeOnce is the JSON of a single-use record's value (a pending
// authorization or logout request, a pushed request, a console sign-in)
// without the HTML escaping json.Marshal adds: those records hold text a
// caller chose (a state, a nonce), and each <, > or & would otherwise be
// kept as six bytes. The values are read back by json.Unmarshal and never
// written into a page as they are.
func EncodeOnce(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode single-use record: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
