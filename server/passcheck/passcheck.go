package passcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

// ErrBadCredentials is the answer to a wrong password, an unknown login or a
// deactivated account alike. Callers turn it into their own refusal
// (invalid_grant, "current password incorrect").
var ErrBadCredentials = errors.New("passcheck: the login or password is incorrect")

// ErrUnknownUser answers a check by user id (Attempt.UserID) whose user no
// longer exists: the caller named the account by a token of its own, so
// saying so reveals nothing.
var ErrUnknownUser = errors.New("passcheck: the user no longer exists")

// Users finds accounts (*sqlstore.Store). GetUserForLogin finds the
// account a login names and counts its second factors, in one read.
// AnyForeignPasswordHash says whether any account is still marked
// store.User.PasswordHashForeign (a read of an index, asked at most once
// per foreignMarksKept).
type Users interface {
	GetUser(ctx context.Context, id string) (store.User, error)
	GetUserForLogin(ctx context.Context, login string) (store.User, store.MFASummary, error)
	AnyForeignPasswordHash(ctx context.Context) (bool, error)
}

// Hasher verifies password hashes (*password.Hasher). took is how long the
// hashing itself ran, without any wait for a hashing slot: what the
// refusal floor learns a hash class's cost from (password.VerifyClass).
// opts carry password.ForeignHash for an account whose hash Portcullis may
// not have made, the only hashes whose check tries the password as typed,
// and password.ForeignCost while any account may be so marked, so every
// verification (the dummy included) costs what a marked one would.
// Both return password.ErrBusy (wrapped) when ctx ended before any hash
// ran, and only then.
type Hasher interface {
	Verify(ctx context.Context, hash, pw string, opts ...password.VerifyOption) (ok, needsRehash bool, took time.Duration, err error)
	DummyVerify(ctx context.Context, password string, opts ...password.VerifyOption) (took time.Duration, err error)
}

// Throttle is the login throttle (*ratelimit.Limiter): CheckLogin reserves
// an attempt of login from ip (counted as a failure) or refuses it;
// LoginSucceeded takes back the attempts a successful sign-in reserved,
// each from the window it was counted in (never anyone else's failures:
// only a real account can succeed).
type Throttle interface {
	CheckLogin(ctx context.Context, ip, login string) (ratelimit.Counted, error)
	LoginSucceeded(ctx context.Context, ip string, attempts ...ratelimit.Counted)
}

// Auditor records security-relevant events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// Metrics counts failed checks (*metrics.Metrics).
type Metrics interface {
	LoginFailed()
}

// Deps are the collaborators of a Checker. Throttle, Audit, Metrics and
// Logger may be nil (rate limits off; nothing recorded).
type Deps struct {
	Users    Users
	Hasher   Hasher
	Throttle Throttle
	Audit    Auditor
	Metrics  Metrics
	Logger   *slog.Logger
}

// foreignMarksKept is how long a Checker keeps the answer of
// Users.AnyForeignPasswordHash before it asks again.
const foreignMarksKept = time.Minute

// takeBackTimeout bounds the take-back of the throttle attempt of a check
// whose hash never ran: its request has ended, so the take-back runs
// without the request's deadline but not without one.
const takeBackTimeout = 5 * time.Second

// Checker checks passwords. It is safe for concurrent use.
type Checker struct {
	d Deps
	// floor times every verification by its hash's class; a refusal is
	// padded to its floor (see Check).
	floor refusalFloor
	// marks keeps whether any account may be marked PasswordHashForeign
	// (see anyForeign).
	marks foreignMarks
	// now and sleep are the clock of the padding and of marks, and the
	// wait of the padding (a test's fakes; time.Now and sleepCtx otherwise).
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration)
}

// foreignMarks is the last answer of Users.AnyForeignPasswordHash and when
// it was read (zero: never).
type foreignMarks struct {
	mu     sync.Mutex
	marked bool
	read   time.Time
}

// New returns a Checker; Users and Hasher are required.
func New(d Deps) (*Checker, error) {
	if d.Users == nil || d.Hasher == nil {
		return nil, errors.New("passcheck: Users and Hasher are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &Checker{d: d, now: time.Now, sleep: sleepCtx}, nil
}

// Attempt is one password check. Exactly one of Login and UserID names the
// account.
type Attempt struct {
	// Login is the login as the person typed it (email or username).
	Login string
	// UserID names the account by the subject of a bearer token instead; the
	// throttle then counts under the account's email, as a login would.
	UserID   string
	Password string
	// Who asked, for the throttle and the audit event.
	IP        string
	UserAgent string
	ClientID  string
	// FailureAction is the audit action of a failure ("login.failed",
	// "password.changed"); Via and Method, if set, are added to its details
	// (Method "page": the login page of browser sign-in).
	FailureAction string
	Via           string
	Method        string
	// DeferSuccess: a correct password does not take back its attempt
	// yet, because a second factor may follow whose failures count in the
	// same throttle. The caller calls Succeeded once the login needs
	// nothing more; a second step that succeeds takes it back itself
	// (mfa.Service.Complete). Without it a correct password takes it back,
	// unless the attempt named by its login an account with a second
	// factor, whose second step does. No success clears the account's
	// other failures.
	DeferSuccess bool
}

// Result is a successful check.
type Result struct {
	// User is the account, password hash included.
	User store.User
	// NeedsRehash says the stored hash should be replaced by a fresh one.
	NeedsRehash bool
	// Factors counts the account's second factors, read with the account
	// (before its password was verified) when the attempt named it by
	// Login; nil for an attempt by UserID. A login's second step decides
	// on it instead of reading the factors again (mfa.Service.Begin).
	Factors *store.MFASummary
	// ip and counted are where from and as what the throttle counted the
	// attempt.
	ip      string
	counted ratelimit.Counted
}

// Counted is the attempt the login throttle counted the check as: the key
// (the login as typed, or the account's email) and the failure window it
// was counted in (none with rate limits off). A second step counts its
// failures under the same key, and its success takes this attempt back
// with its own, from that window only (mfa.Service.Begin).
func (r Result) Counted() ratelimit.Counted { return r.counted }

// Succeeded takes back the attempt the check reserved under the throttle,
// after a check made with DeferSuccess, once the login it began needs
// nothing more. The account's failures stay counted.
func (c *Checker) Succeeded(ctx context.Context, r Result) {
	if c.d.Throttle != nil && r.counted.Login != "" {
		c.d.Throttle.LoginSucceeded(ctx, r.ip, r.counted)
	}
}

// Check reserves the attempt under the throttle (its refusal, a 429 or 503
// *apierr.Error, is returned as is), finds the account and verifies the
// password, spending a dummy verification for an unknown account and for a
// machine user (which has no password). A wrong password, an unknown login,
// a machine user or a deactivated account count one failure
// (metric, audit event) and return ErrBadCredentials; a success takes back
// its attempt (unless DeferSuccess, see Succeeded, or a second step is
// owed: an account named by its login that has a second factor). A store failure
// is a 503.
//
// Every refusal after the throttle (unknown account, wrong password,
// unreadable hash, no password, machine user, deactivated account) takes
// at least the refusal floor from the start of its verification: the
// slowest hash class this Checker has verified, as a smoothed estimate
// of its hash's run time (the time the hasher reports, never the wait for
// a hashing slot: a burst of concurrent refusals does not raise it;
// refusalFloor), capped at MaxRefusalFloor. The padding sleeps (and ends
// with ctx); a success is not padded. So a wrong password for an account
// with an imported or outdated hash (bcrypt, argon2id of other
// parameters), slower than the dummy verification of an unknown account,
// does not tell the account exists.
//
// A check whose hash never ran, because its request ended while it waited
// for a hashing slot (password.ErrBusy from Verify or DummyVerify), is a
// 503 temporarily_unavailable *apierr.Error for every account alike
// (known, unknown, machine user, no password, deactivated): it counts no
// failure (its throttle attempt is taken back, as Succeeded does; the
// address's limit keeps it), records no audit event or metric, and the
// refusal floor learns nothing from it.
func (c *Checker) Check(ctx context.Context, a Attempt) (Result, error) {
	var (
		u       store.User
		factors *store.MFASummary
		found   bool
		err     error
	)
	key := strings.TrimSpace(a.Login)
	if a.UserID != "" {
		// The account is the caller's own: load it first to count under its login.
		u, err = c.d.Users.GetUser(ctx, a.UserID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return Result{}, ErrUnknownUser
		case err != nil:
			return Result{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load user: %w", err))
		}
		found, key = true, u.Email
	}
	counted := ratelimit.Counted{Login: key}
	if c.d.Throttle != nil {
		if counted, err = c.d.Throttle.CheckLogin(ctx, a.IP, key); err != nil {
			return Result{}, err
		}
	}
	if !found {
		var sum store.MFASummary
		u, sum, err = c.d.Users.GetUserForLogin(ctx, key)
		switch {
		case err == nil:
			found, factors = true, &sum
		case !errors.Is(err, store.ErrNotFound):
			return Result{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load user: %w", err))
		}
	}
	// A machine user signs in only with API keys, and a person with no
	// password (made by a sign-in through an identity provider) only
	// there: both are refused here, so every path that checks a password
	// refuses them. Like an unknown account, each costs one hash, so the
	// time of the answer tells none of them from a wrong password.
	machine := found && u.IsMachine()
	noPassword := found && !machine && u.PasswordHash == ""
	start := c.now()
	ok, needsRehash, err := c.verify(ctx, u, found && !machine && !noPassword, a.Password)
	if err != nil {
		// No hash ran (the request ended waiting for a hashing slot): the
		// same 503 for every account, and nothing learnt or counted.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), takeBackTimeout)
		defer cancel()
		c.Succeeded(tctx, Result{ip: a.IP, counted: counted})
		return Result{}, err
	}
	if !ok || !u.Active {
		c.padRefusal(ctx, start)
		c.failed(ctx, a, u, ok, failureReason{machine: machine, noPassword: noPassword})
		return Result{}, ErrBadCredentials
	}
	res := Result{User: u, NeedsRehash: needsRehash, Factors: factors, ip: a.IP, counted: counted}
	if !a.DeferSuccess && !res.secondStepOwed() {
		c.Succeeded(ctx, res)
	}
	return res, nil
}

// verify verifies pw against u's stored hash when real, and spends the
// dummy verification otherwise (an unknown account, a machine user, a
// person with no password) or when the stored hash cannot be read (refused
// before any hashing: it pays for one). The refusal floor learns the time
// each hash ran (never the wait for a hashing slot). Its one error is
// errBusy's answer, the same whichever of the two hashes did not run.
//
// A refused check costs what the costliest verification of the same
// password could: while any account may still be marked PasswordHashForeign
// (anyForeign), every verification, the dummy included, runs with
// password.ForeignCost, so a password that NFKC changes runs the hash twice
// for an unknown account, a machine user, a person without a password and
// an account whose hash Portcullis made, as it does for a marked account;
// the hashing load of a batch of guesses then tells none of them apart.
// Once no account is marked, such a password runs the hash once again.
func (c *Checker) verify(ctx context.Context, u store.User, real bool, pw string) (ok, needsRehash bool, err error) {
	cost := password.ForeignCost(c.anyForeign(ctx))
	if real {
		var took time.Duration
		opts := []password.VerifyOption{password.ForeignHash(u.PasswordHashForeign), cost}
		ok, needsRehash, took, err = c.d.Hasher.Verify(ctx, u.PasswordHash, pw, opts...)
		switch {
		case err == nil:
			c.floor.observe(password.VerifyClass(u.PasswordHash, pw, opts...), took)
			return ok, needsRehash, nil
		case errors.Is(err, password.ErrBusy):
			return false, false, errBusy(err)
		}
		c.d.Logger.Warn("password hash unreadable", "user_id", u.ID, "err", err)
	}
	took, err := c.d.Hasher.DummyVerify(ctx, pw, cost)
	if err != nil { // the dummy hash is always readable: its hash never ran
		return false, false, errBusy(err)
	}
	class := dummyClass
	if password.RunsTwice(pw, cost) {
		class += " twice"
	}
	c.floor.observe(class, took)
	return false, false, nil
}

// anyForeign reports whether any account may still be marked
// PasswordHashForeign: the answer of Users.AnyForeignPasswordHash, kept for
// foreignMarksKept (on the Checker's clock) and read again after it. A
// failed read is true (it fails towards the costlier verification) and is
// not kept.
func (c *Checker) anyForeign(ctx context.Context) bool {
	now := c.now()
	c.marks.mu.Lock()
	read, marked := c.marks.read, c.marks.marked
	c.marks.mu.Unlock()
	if !read.IsZero() && !now.Before(read) && now.Sub(read) < foreignMarksKept {
		return marked
	}
	marked, err := c.d.Users.AnyForeignPasswordHash(ctx)
	if err != nil {
		c.d.Logger.Warn("look for foreign password hashes; verifying at their cost", "err", err)
		return true
	}
	c.marks.mu.Lock()
	c.marks.marked, c.marks.read = marked, now
	c.marks.mu.Unlock()
	return marked
}

// errBusy answers a check whose hash never ran because its request ended
// first, waiting for a hashing slot (password.ErrBusy): 503
// temporarily_unavailable, whatever the account. The answer must not
// depend on whether the account exists: anyone can keep the slots busy
// with guesses, and a different answer for an unknown account would tell
// which accounts exist.
func errBusy(err error) error {
	return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("verify password: %w", err))
}

// padRefusal sleeps until the refusal whose verification began at start
// has taken the refusal floor, or until ctx is done.
func (c *Checker) padRefusal(ctx context.Context, start time.Time) {
	if d := c.floor.floor() - c.now().Sub(start); d > 0 && ctx.Err() == nil {
		c.sleep(ctx, d)
	}
}

// secondStepOwed says the password alone did not prove the account: it was
// named by its login (not by a token of a finished login) and has a second
// factor. Its attempt then stays counted until that step succeeds and takes
// it back (with its own), whatever the caller does with the password: else
// any page that checks a password (the change-password page refuses an
// account with a second factor only after its check) would take back an
// attempt that no second step completed.
func (r Result) secondStepOwed() bool {
	return r.Factors != nil && r.Factors.Enrolled()
}

// failureReason is what, beside the password, refused an existing account.
type failureReason struct {
	machine    bool // a machine user: API keys only
	noPassword bool // a person without a password: identity providers only
}

// failed counts and records a failed check. The event names the account when
// it exists; its reason says "inactive" only when the password was right.
func (c *Checker) failed(ctx context.Context, a Attempt, u store.User, passwordOK bool, why failureReason) {
	if c.d.Metrics != nil {
		c.d.Metrics.LoginFailed()
	}
	if c.d.Audit == nil || a.FailureAction == "" {
		return
	}
	details := map[string]string{"reason": "bad_credentials"}
	switch {
	case why.machine:
		details["reason"] = "machine_user"
	case why.noPassword:
		details["reason"] = "no_password"
	case u.ID != "" && passwordOK:
		details["reason"] = "inactive"
	}
	if a.Via != "" {
		details["via"] = a.Via
	}
	if a.Method != "" {
		details["method"] = a.Method
	}
	e := store.AuditEvent{Action: a.FailureAction, Outcome: store.OutcomeFailure, TargetID: u.ID,
		ClientID: a.ClientID, IP: a.IP, UserAgent: a.UserAgent, Details: details}
	if a.UserID != "" {
		e.ActorID = u.ID
	}
	c.d.Audit.Record(ctx, e)
}
