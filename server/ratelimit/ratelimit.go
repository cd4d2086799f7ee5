// Package ratelimit enforces request limits and the login throttle on the
// shared token state (Redis in production, SQL in embedded mode), so every
// limit is global across server instances, not per instance.
//
// Keys never hold personal data in the clear: accounts and emails are
// hashed. When the token state cannot be reached the limiter fails closed
// (503), never open.
package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// Counters is the part of the token state the limiter uses.
type Counters interface {
	Hit(ctx context.Context, key string, window time.Duration, now time.Time) (int64, time.Duration, error)
	CountSteps(ctx context.Context, now time.Time, steps ...store.CounterStep) ([]store.CounterCount, error)
	TakeBack(ctx context.Context, key string, n int64, windowEnd, now time.Time) (int64, bool, error)
	ResetCounters(ctx context.Context, keys ...string) error
}

// Rule is a fixed-window limit: at most Limit events per Window.
type Rule struct {
	Limit  int64
	Window time.Duration
}

// Rules are the limits Portcullis applies.
type Rules struct {
	LoginPerIP        Rule // password grant attempts per client IP
	InviteAcceptPerIP Rule
	ForgotPerIP       Rule
	// MailPerRecipient bounds the emails of one kind (a reset link, a
	// verification link, an invite) that requests may have sent to one
	// address (AllowMail): no one floods a stranger's inbox from the
	// server's own domain.
	MailPerRecipient Rule
	ResetPerIP       Rule
	RegisterPerIP    Rule
	PendingPerIP     Rule // records of interactive state kept per client IP (AllowPending)
	// RefusalAuditPerIP bounds the audit events of refusals anyone can
	// cause without credentials that one client address may have written
	// (AllowRefusalAudit).
	RefusalAuditPerIP Rule
	// CodesPerBrowserSession bounds the authorization codes one browser
	// session mints (AllowCode), single sign-on included.
	CodesPerBrowserSession Rule
	LoginFailureLimit      int64         // failures of one account before throttling starts
	LoginFailureWindow     time.Duration // how long failures are remembered
	MaxLockout             time.Duration // the longest a throttled account waits
}

// DefaultRules are the built-in limits (see docs/security.md for the reasoning).
func DefaultRules(failureLimit int) Rules {
	return Rules{
		LoginPerIP:         Rule{Limit: 60, Window: time.Minute},
		InviteAcceptPerIP:  Rule{Limit: 20, Window: time.Minute},
		ForgotPerIP:        Rule{Limit: 10, Window: time.Minute},
		MailPerRecipient:   Rule{Limit: 3, Window: time.Hour},
		ResetPerIP:         Rule{Limit: 20, Window: time.Minute},
		RegisterPerIP:      Rule{Limit: 10, Window: time.Hour},
		LoginFailureLimit:  int64(failureLimit),
		LoginFailureWindow: 15 * time.Minute,
		MaxLockout:         5 * time.Minute,
		// Three times LoginPerIP: a person's sign-in keeps one pending
		// authorization request, two with a pushed one (a public client's
		// PAR), and a reload or a second tab keeps another; a console
		// sign-in adds its own record. So an address whose people sign in
		// with passwords meets the login limit (60 a minute) first. An
		// address past it makes the store keep, at most, what 180
		// requests a minute keep for their lifetimes (30 minutes, and a
		// tombstone an hour longer).
		PendingPerIP: Rule{Limit: 180, Window: time.Minute},
		// Half of LoginPerIP: a person who mistypes a link or reloads a
		// spent callback leaves a few; an address past it leaves at most
		// 30 rows a minute of bounded size.
		RefusalAuditPerIP: Rule{Limit: 30, Window: time.Minute},
		// Two a second for one browser session, sustained for a minute: a
		// person signing in to a few applications, each reloaded or opened
		// in several tabs, mints a handful; an application that loops on
		// the authorization endpoint meets the limit within a minute. Past
		// it the session keeps, at most, 120 codes of up to about 5 KB for
		// PORTCULLIS_AUTH_CODE_TTL (60 s) and adds 120 grants a minute to
		// itself (which store.MaxSessionGrants caps).
		CodesPerBrowserSession: Rule{Limit: 120, Window: time.Minute},
	}
}

// Observer is told about every refusal (for the rate-limited metric).
type Observer func(endpoint string)

// Limiter checks limits. A nil *Limiter allows everything (rate limits off).
type Limiter struct {
	c       Counters
	rules   Rules
	now     func() time.Time
	observe Observer
}

// New returns a limiter over c.
func New(c Counters, rules Rules, observe Observer) *Limiter {
	if observe == nil {
		observe = func(string) {}
	}
	return &Limiter{c: c, rules: rules, now: time.Now, observe: observe}
}

// limited is the contract's 429 answer.
func limited(retryAfter time.Duration) error {
	return apierr.ErrRateLimited.WithRetryAfter(int(math.Ceil(retryAfter.Seconds())))
}

func unavailable(err error) error {
	return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("rate limit: %w", err))
}

// Allow counts one event for subject under rule and refuses it with 429 when
// the window's limit is exceeded.
func (l *Limiter) Allow(ctx context.Context, endpoint, subject string, rule Rule) error {
	if l == nil || rule.Limit <= 0 {
		return nil
	}
	n, reset, err := l.c.Hit(ctx, limitKey(endpoint, subject), rule.Window, l.now())
	if err != nil {
		return unavailable(err)
	}
	if n > rule.Limit {
		l.observe(endpoint)
		return limited(reset)
	}
	return nil
}

// limitKey is the counter of rule-based limits (Allow) at endpoint for
// subject.
func limitKey(endpoint, subject string) string {
	return "rl:" + endpoint + ":" + Hash(subject)
}

// AddressKey is the subject of every per-address limit: an IPv4 address as
// is, an IPv4-mapped IPv6 address as its IPv4 address, and any other IPv6
// address as its /64 network (one customer's allocation, which a client can
// walk through freely, rotating its address within it). Anything that does
// not parse is keyed as given (the caller decides what the client address
// is; it is never empty behind net/http).
func AddressKey(ip string) string {
	a, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}

// Hash makes a subject (IP, login, email) safe to use in a key: no personal
// data is stored in the clear. Logins and emails compare as accounts do
// (store.EmailKey: ASCII letters folded, nothing else), so one counter is
// one account's, never two mailboxes'.
func Hash(subject string) string {
	sum := sha256.Sum256([]byte(store.EmailKey(strings.TrimSpace(subject))))
	return hex.EncodeToString(sum[:16])
}

// AllowPending counts one record of interactive state the server is about
// to keep for a client at ip (a pending authorization request, a pushed
// one of a public client, a held logout request, a console sign-in, a
// sign-in started at an upstream provider, a begun WebAuthn ceremony) and
// refuses it with 429 beyond PendingPerIP, so no address can fill the
// token state with requests nobody completes. The one check of every
// place that keeps such a record. An answer given at once (single
// sign-on) keeps no such record; the code it mints is counted against its
// browser session instead (AllowCode).
func (l *Limiter) AllowPending(ctx context.Context, ip string) error {
	if l == nil {
		return nil
	}
	return l.Allow(ctx, "pending_ip", AddressKey(ip), l.rules.PendingPerIP)
}

// AllowRefusalAudit counts one audit event of a refusal a client at ip
// caused without credentials, matching nothing the server kept and naming
// no real account (the callback of an unknown identity provider, a made-up
// mfa_token; the contract has every refused upstream id token, state and
// replayed callback audited) and tells whether it may be written: only
// within RefusalAuditPerIP, so that no address writes unbounded audit rows
// (audit events have no retention). Beyond it, or when the token state
// cannot be reached (failing closed), the event is dropped; the request's
// answer does not change, and a drop past the limit is counted in the rate-limited
// metric (endpoint audit_refusal_ip). A nil Limiter allows every event.
func (l *Limiter) AllowRefusalAudit(ctx context.Context, ip string) bool {
	if l == nil {
		return true
	}
	return l.Allow(ctx, "audit_refusal_ip", AddressKey(ip), l.rules.RefusalAuditPerIP) == nil
}

// AllowCode counts one authorization code about to be minted in the
// browser session sessionID (store.BrowserSession.ID) and refuses it with
// 429 beyond CodesPerBrowserSession: a signed-in browser is answered with
// a code at once (single sign-on), and each code is kept until it expires,
// so without it a browser could fill the token state with codes as fast as
// it asks. The budget is the session's, not its address's, so that people
// behind one address do not share it. The key holds only a hash of the id
// (Allow); Hash folds ASCII case, which leaves a random base64url id well
// over a hundred bits.
func (l *Limiter) AllowCode(ctx context.Context, sessionID string) error {
	if l == nil {
		return nil
	}
	return l.Allow(ctx, "code_session", sessionID, l.rules.CodesPerBrowserSession)
}

// Login throttle: after LoginFailureLimit failures of one account within
// LoginFailureWindow, each further attempt must wait a delay that doubles
// with every failure (1 s, 2 s, 4 s …) up to MaxLockout. The throttle is the
// same whether or not the account exists: a success takes back only its own
// attempts and the delay they opened, and clears no one else's failures
// (only a real account can succeed, so a clear would tell an attacker who
// holds an address at the limit that its owner has just signed in); the
// failures age out with their window, as an unknown login's do. The cap
// bounds how long an attacker can keep a real user out; the per-address limit
// bounds how fast one client can guess.
//
// The throttle reserves, it does not peek: CheckLogin counts the attempt as a
// failure before the password is checked (LoginSucceeded takes it back), and
// from the limit on an attempt is admitted only if it is the first to open
// the account's delay window. Both steps are atomic counts of the shared
// token state, so however many attempts arrive at once, from however many
// addresses and instances, exactly one is admitted per window. A success
// racing with the attempt that opens a window cannot leave that window
// behind: the attempt reads the failures after its hit and closes a window
// they no longer warrant. (Since a success no longer clears, the clear that
// races is an administrator's, ClearLogin.)

// Counted is a login attempt CheckLogin counted as a failure: the login it
// counted under and the end of the failure window it was counted in (Unix
// milliseconds; 0 when nothing was counted, as with rate limits off). A
// success takes it back (LoginSucceeded) only from that window: once the
// window has ended the attempt has aged out with it, and the window live
// then holds other attempts.
type Counted struct {
	Login  string
	Window int64
}

// CheckLogin reserves one password check of login by a client at ip, or
// refuses it (429 with Retry-After; 503 when the token state cannot be
// reached). Call it before the password is verified, and LoginSucceeded
// with the attempt it returns after a success; a failure needs nothing
// more. A nil Limiter counts nothing (Counted.Window 0).
func (l *Limiter) CheckLogin(ctx context.Context, ip, login string) (Counted, error) {
	if l == nil {
		return Counted{Login: login}, nil
	}
	// In one round trip where the token state allows: the address's
	// limit (as Allow counts it), then the account's delay, then its
	// failures, each step taken only when the one before lets the attempt
	// through. A live delay refuses without counting the attempt (so a
	// person who retries while throttled does not lengthen their own
	// delay); that read only saves work: the decision is the failures'
	// count below.
	failKey, lockKey := LoginKeys(login)
	now := l.now()
	steps := make([]store.CounterStep, 0, 3)
	perIP := l.rules.LoginPerIP
	if perIP.Limit > 0 {
		steps = append(steps, store.CounterStep{Key: limitKey("login_ip", AddressKey(ip)), Window: perIP.Window, StopAbove: perIP.Limit})
	}
	steps = append(steps, store.CounterStep{Key: lockKey},
		store.CounterStep{Key: failKey, Window: l.rules.LoginFailureWindow, StopAbove: math.MaxInt64})
	counts, err := l.c.CountSteps(ctx, now, steps...)
	if err == nil && len(counts) > len(steps) {
		err = fmt.Errorf("%d counts for %d steps", len(counts), len(steps))
	}
	if err != nil {
		return Counted{}, unavailable(err)
	}
	for i, c := range counts {
		switch {
		case c.Count <= steps[i].StopAbove:
		case steps[i].Key == lockKey:
			return Counted{}, l.throttled(c.ResetIn)
		default:
			l.observe("login_ip")
			return Counted{}, limited(c.ResetIn)
		}
	}
	if len(counts) != len(steps) {
		return Counted{}, unavailable(fmt.Errorf("%d counts for %d steps, none refused", len(counts), len(steps)))
	}
	n := counts[len(counts)-1].Count
	// The window the attempt was counted in ends at now + ResetIn, to the
	// millisecond, as the token state keeps it.
	counted := Counted{Login: login, Window: now.UnixMilli() + counts[len(counts)-1].ResetIn.Milliseconds()}
	if n < l.rules.LoginFailureLimit {
		return counted, nil
	}
	// The n-th attempt (n ≥ limit) opens the next delay window; of the
	// attempts racing for it, only the one whose hit starts it goes on.
	// The failures are read again after that hit (in the same round trip
	// where the token state allows): an administrator's clear, or a
	// success taking back the attempts it reserved, may have lowered them
	// below the limit since they were counted above, and a window opened
	// after that belongs to no failures. Left in place, it would refuse
	// the account's next attempt for the whole delay; it is closed at once
	// instead, and this attempt goes on as one below the limit would. A
	// clear forgets the failures before the delay (ClearLogin;
	// ResetCounters keeps the order), so a clear that missed this hit's
	// window has already forgotten the failures this read finds.
	opened, err := l.c.CountSteps(ctx, now,
		store.CounterStep{Key: lockKey, Window: LockoutDelay(n-l.rules.LoginFailureLimit, l.rules.MaxLockout), StopAbove: 1},
		store.CounterStep{Key: failKey, StopAbove: math.MaxInt64})
	if err != nil {
		return Counted{}, unavailable(err)
	}
	if len(opened) > 0 && opened[0].Count > 1 {
		return Counted{}, l.throttled(opened[0].ResetIn)
	}
	if len(opened) != 2 {
		return Counted{}, unavailable(fmt.Errorf("%d counts for the delay window's 2 steps", len(opened)))
	}
	if opened[1].Count < l.rules.LoginFailureLimit {
		if err := l.c.ResetCounters(ctx, lockKey); err != nil {
			return Counted{}, unavailable(err)
		}
	}
	return counted, nil
}

// throttled is the answer to an attempt on an account in its delay.
func (l *Limiter) throttled(reset time.Duration) error {
	l.observe("login_account")
	return limited(reset).(*apierr.Error).WithDescription("Too many failed logins; try again later.")
}

// LoginSucceeded takes back the attempts a successful sign-in reserved
// with CheckLogin (one, or two when a password step and a second step each
// reserved one, oldest first), each only from the failure window it was
// counted in (Counted.Window): an attempt whose window has ended left with
// it, and is not taken from the window live now, which holds others'
// failures. It closes the delay window the last attempt opened when it
// reached the failure limit: the throttle is left as if the sign-in had
// not been made. Every other failure stays counted until its window ends,
// as for a login no account has, so the throttle's answers do not tell
// that the account's owner has just signed in. A failure of the token
// state is ignored: the attempt then stays counted as a failure.
func (l *Limiter) LoginSucceeded(ctx context.Context, ip string, attempts ...Counted) {
	if l == nil {
		return
	}
	now := l.now()
	// Attempts counted in one window are taken back together.
	for i := 0; i < len(attempts); {
		a, n := attempts[i], 1
		for i+n < len(attempts) && attempts[i+n] == a {
			n++
		}
		i += n
		if a.Window == 0 {
			continue // nothing was counted
		}
		failKey, lockKey := LoginKeys(a.Login)
		left, taken, err := l.c.TakeBack(ctx, failKey, int64(n), time.UnixMilli(a.Window), now)
		if err != nil || !taken || i < len(attempts) {
			continue
		}
		// The sign-in's last attempt counted left+n failures (the attempts
		// after it are refused by the window it opened): from the limit
		// on, it was admitted only as the one that opened the window.
		if left+int64(n) >= l.rules.LoginFailureLimit {
			_ = l.c.ResetCounters(ctx, lockKey)
		}
	}
}

// ClearLogin forgets the account's failed logins and any delay they
// started (an administrator clearing the throttle; a success does not).
// A nil Limiter (rate limits off) has nothing to clear.
func (l *Limiter) ClearLogin(ctx context.Context, login string) error {
	if l == nil {
		return nil
	}
	failKey, lockKey := LoginKeys(login)
	return l.c.ResetCounters(ctx, failKey, lockKey)
}

// LoginKeys are the counters of an account's login throttle: its failures
// in the window, and its current delay.
func LoginKeys(login string) (fail, lock string) {
	key := Hash(login)
	return "rl:login_fail:" + key, "rl:login_lock:" + key
}

// LockoutDelay is the wait after the (over+1)-th failure past the limit:
// 1 s, 2 s, 4 s … capped at max.
func LockoutDelay(over int64, max time.Duration) time.Duration {
	if over > 30 {
		return max
	}
	d := time.Second << over
	if d > max || d <= 0 {
		return max
	}
	return d
}

// Check applies the limits of an account action (the names of
// server/accounts: password_forgot, password_reset, password_change,
// invite_accept, register, email_verify) per client IP and, for a forgotten
// password, per email (AllowMail: the email it may send). The answer never
// depends on whether an account exists.
func (l *Limiter) Check(ctx context.Context, action, ip, email string) error {
	if l == nil {
		return nil
	}
	var rule Rule
	switch action {
	case "password_forgot":
		rule = l.rules.ForgotPerIP
	case "invite_accept":
		rule = l.rules.InviteAcceptPerIP
	case "register":
		rule = l.rules.RegisterPerIP
	default: // password_reset, password_change, email_verify
		rule = l.rules.ResetPerIP
	}
	if err := l.Allow(ctx, action+"_ip", AddressKey(ip), rule); err != nil {
		return err
	}
	if action == "password_forgot" {
		return l.AllowMail(ctx, action, email)
	}
	return nil
}

// AllowMail counts one email of kind to recipient (an address, compared
// as Hash compares it) and refuses it with 429 beyond MailPerRecipient:
// the one limit of every email a request makes the server send, whoever
// asks (a forgotten password, a resent verification link, an admin's
// reset link or invite). An empty recipient is not counted.
func (l *Limiter) AllowMail(ctx context.Context, kind, recipient string) error {
	if l == nil || recipient == "" {
		return nil
	}
	return l.Allow(ctx, kind+"_email", recipient, l.rules.MailPerRecipient)
}
