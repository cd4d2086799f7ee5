package passcheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/store"
)

type fakeUsers map[string]store.User // by id

func (f fakeUsers) GetUser(_ context.Context, id string) (store.User, error) {
	if u, ok := f[id]; ok {
		return u, nil
	}
	return store.User{}, store.ErrNotFound
}

// fakeFactors are the second factors fakeUsers reads with a user, by id
// (none for the others).
var fakeFactors = map[string]store.MFASummary{"usr_6": {TOTP: true, RecoveryCodesLeft: 3}}

func (f fakeUsers) GetUserForLogin(_ context.Context, login string) (store.User, store.MFASummary, error) {
	for _, u := range f {
		if u.Email == login {
			return u, fakeFactors[u.ID], nil
		}
	}
	return store.User{}, store.MFASummary{}, store.ErrNotFound
}

// fakeHasher: the hash of a password is "h:" + password. busy: every
// slot is taken until the request's deadline, so no hash runs (a hash it
// cannot read is refused before that, as the real one does).
type fakeHasher struct {
	verified, dummies int
	busy              bool
}

// errFakeBusy is what password.Hasher returns when the request's deadline
// passed while it waited for a hashing slot.
var errFakeBusy = fmt.Errorf("%w: waiting for a hashing slot: %w", password.ErrBusy, context.DeadlineExceeded)

func (h *fakeHasher) Verify(_ context.Context, hash, pw string, _ ...password.VerifyOption) (bool, bool, time.Duration, error) {
	if !strings.HasPrefix(hash, "h:") { // refused before hashing, as the real one does
		return false, false, 0, errors.New("malformed hash")
	}
	if h.busy {
		return false, false, 0, errFakeBusy
	}
	h.verified++
	return hash == "h:"+pw, false, time.Millisecond, nil
}

func (h *fakeHasher) DummyVerify(context.Context, string, ...password.VerifyOption) (time.Duration, error) {
	if h.busy {
		return 0, errFakeBusy
	}
	h.dummies++
	return time.Millisecond, nil
}

type fakeThrottle struct {
	refuse    error
	checked   []string
	succeeded []string
}

// fakeWindow is the failure window fakeThrottle counts every attempt in.
const fakeWindow = 1234

func (f *fakeThrottle) CheckLogin(_ context.Context, _, login string) (ratelimit.Counted, error) {
	f.checked = append(f.checked, login)
	if f.refuse != nil {
		return ratelimit.Counted{}, f.refuse
	}
	return ratelimit.Counted{Login: login, Window: fakeWindow}, nil
}

func (f *fakeThrottle) LoginSucceeded(_ context.Context, _ string, attempts ...ratelimit.Counted) {
	for _, a := range attempts {
		login := a.Login
		if a.Window != fakeWindow {
			login += fmt.Sprintf(" (window %d)", a.Window)
		}
		f.succeeded = append(f.succeeded, login)
	}
}

type recorder struct {
	mu     sync.Mutex
	events []store.AuditEvent
	failed int
}

func (r *recorder) Record(_ context.Context, e store.AuditEvent) { r.events = append(r.events, e) }
func (r *recorder) LoginFailed()                                 { r.failed++ }

// checkUsers are the accounts of TestCheck and TestCheckBusy.
func checkUsers() fakeUsers {
	return fakeUsers{
		"usr_1": {ID: "usr_1", Email: "ann@example.com", PasswordHash: "h:right", Active: true},
		"usr_2": {ID: "usr_2", Email: "bob@example.com", PasswordHash: "h:right", Active: false},
		// A machine user the store would never let have a login or a
		// password: the check refuses it even so.
		"usr_3": {ID: "usr_3", Kind: store.UserMachine, Email: "bot", PasswordHash: "h:right", Active: true},
		// A person who signs in only through an identity provider.
		"usr_4": {ID: "usr_4", Email: "fed@example.com", Active: true},
		// A hash the hasher cannot read (refused before any hashing).
		"usr_5": {ID: "usr_5", Email: "odd@example.com", PasswordHash: "$unknown$x", Active: true},
		// A person with a second factor (fakeFactors).
		"usr_6": {ID: "usr_6", Email: "tess@example.com", PasswordHash: "h:right", Active: true},
	}
}

// TestCheck: every path spends the throttle first; an unknown account, a
// deactivated one, a machine user, a person without a password, an
// unreadable hash and a wrong password answer alike (ErrBadCredentials),
// each spending one verification (a dummy one where no hash is read), a
// failure metric and an audit event; a success takes back its throttle
// attempt, and carries the second factors read with an account named by
// its login.
func TestCheck(t *testing.T) {
	users := checkUsers()
	refused := apierr.ErrRateLimited.WithRetryAfter(3)
	cases := []struct {
		name       string
		a          Attempt
		refuse     error
		want       error // nil: success
		throttleOn string
		dummy      bool
		reason     string
	}{
		{"ok/login", Attempt{Login: " ann@example.com ", Password: "right"}, nil, nil, "ann@example.com", false, ""},
		{"ok/user_id_counts_under_email", Attempt{UserID: "usr_1", Password: "right"}, nil, nil, "ann@example.com", false, ""},
		// The password alone does not prove an account with a second
		// factor named by its login: its failures stay (throttleOn "").
		{"ok/login_with_second_factor_clears_nothing", Attempt{Login: "tess@example.com", Password: "right"}, nil, nil, "", false, ""},
		// By user id the login behind the token took its second step.
		{"ok/user_id_with_second_factor_clears", Attempt{UserID: "usr_6", Password: "right"}, nil, nil, "tess@example.com", false, ""},
		{"fail/wrong_password", Attempt{Login: "ann@example.com", Password: "wrong"}, nil, ErrBadCredentials, "ann@example.com", false, "bad_credentials"},
		{"fail/unknown_login", Attempt{Login: "ghost@example.com", Password: "right"}, nil, ErrBadCredentials, "ghost@example.com", true, "bad_credentials"},
		{"fail/inactive_right_password", Attempt{Login: "bob@example.com", Password: "right"}, nil, ErrBadCredentials, "bob@example.com", false, "inactive"},
		{"fail/inactive_wrong_password", Attempt{Login: "bob@example.com", Password: "wrong"}, nil, ErrBadCredentials, "bob@example.com", false, "bad_credentials"},
		{"fail/throttled", Attempt{Login: "ann@example.com", Password: "right"}, refused, apierr.ErrRateLimited, "ann@example.com", false, ""},
		{"fail/page_login_says_method", Attempt{Login: "ghost@example.com", Password: "right", Method: "page"}, nil, ErrBadCredentials, "ghost@example.com", true, "bad_credentials"},
		{"fail/unknown_user_id", Attempt{UserID: "usr_9", Password: "right"}, nil, ErrUnknownUser, "", false, ""},
		{"fail/machine_user_by_login", Attempt{Login: "bot", Password: "right"}, nil, ErrBadCredentials, "bot", true, "machine_user"},
		{"fail/machine_user_by_id", Attempt{UserID: "usr_3", Password: "right"}, nil, ErrBadCredentials, "bot", true, "machine_user"},
		{"fail/no_password_by_login", Attempt{Login: "fed@example.com", Password: ""}, nil, ErrBadCredentials, "fed@example.com", true, "no_password"},
		{"fail/no_password_by_id", Attempt{UserID: "usr_4", Password: "anything"}, nil, ErrBadCredentials, "fed@example.com", true, "no_password"},
		{"fail/unreadable_hash", Attempt{Login: "odd@example.com", Password: "right"}, nil, ErrBadCredentials, "odd@example.com", true, "bad_credentials"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, th, rec := &fakeHasher{}, &fakeThrottle{refuse: tc.refuse}, &recorder{}
			c, err := New(Deps{Users: users, Hasher: h, Throttle: th, Audit: rec, Metrics: rec})
			if err != nil {
				t.Fatal(err)
			}
			tc.a.FailureAction = "login.failed"
			res, err := c.Check(context.Background(), tc.a)
			if tc.want == nil {
				if err != nil || res.User.ID == "" {
					t.Fatalf("Check = %+v, %v", res, err)
				}
				if want := tc.throttleOn; (want == "" && len(th.succeeded) != 0) || (want != "" && (len(th.succeeded) != 1 || th.succeeded[0] != want)) {
					t.Fatalf("success cleared %v, want %q", th.succeeded, want)
				}
				// The factors come with the account a login names; an
				// attempt by user id read none.
				if byLogin := tc.a.Login != ""; (res.Factors != nil) != byLogin || (byLogin && *res.Factors != fakeFactors[res.User.ID]) {
					t.Fatalf("Factors = %v, want them read (%v) as %+v", res.Factors, byLogin, fakeFactors[res.User.ID])
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.throttleOn != "" && (len(th.checked) != 1 || th.checked[0] != tc.throttleOn) {
				t.Fatalf("throttle checked %v, want %q", th.checked, tc.throttleOn)
			}
			if tc.reason == "" { // refused before any verification, nothing counted
				if h.verified+h.dummies != 0 || rec.failed != 0 || len(rec.events) != 0 {
					t.Fatalf("verified %d, dummies %d, failures %d, events %d", h.verified, h.dummies, rec.failed, len(rec.events))
				}
				return
			}
			if h.verified+h.dummies != 1 || (h.dummies == 1) != tc.dummy {
				t.Fatalf("verified %d, dummies %d; want one verification (dummy %v)", h.verified, h.dummies, tc.dummy)
			}
			if rec.failed != 1 || len(rec.events) != 1 || rec.events[0].Details["reason"] != tc.reason ||
				rec.events[0].Outcome != store.OutcomeFailure || len(th.succeeded) != 0 {
				t.Fatalf("failures %d, events %+v, cleared %v", rec.failed, rec.events, th.succeeded)
			}
			if rec.events[0].Details["method"] != tc.a.Method {
				t.Fatalf("details.method %q, want %q", rec.events[0].Details["method"], tc.a.Method)
			}
		})
	}
}

// TestCheckBusy: a check whose hash never ran, because its request's
// deadline passed while it waited for a hashing slot (password.ErrBusy),
// answers the same 503 temporarily_unavailable for every account: known
// (right or wrong password), unknown, deactivated, a machine user, a
// person without a password, an unreadable hash, by login or by user id.
// It counts no failure (the throttle attempt is taken back under the key
// it was counted in), records no audit event or metric, and the refusal
// floor learns nothing. Found by a review: an existing account answered
// 503, while the dummy verification of an unknown one threw the error
// away and answered ErrBadCredentials (400 invalid_grant), so anyone
// keeping the slots busy could tell which accounts exist.
func TestCheckBusy(t *testing.T) {
	users := checkUsers()
	cases := []struct {
		name       string
		a          Attempt
		throttleOn string
	}{
		{"known_right_password", Attempt{Login: "ann@example.com", Password: "right"}, "ann@example.com"},
		{"known_wrong_password", Attempt{Login: "ann@example.com", Password: "wrong"}, "ann@example.com"},
		{"unknown_login", Attempt{Login: "ghost@example.com", Password: "right"}, "ghost@example.com"},
		{"inactive", Attempt{Login: "bob@example.com", Password: "right"}, "bob@example.com"},
		{"machine_user", Attempt{Login: "bot", Password: "right"}, "bot"},
		{"no_password", Attempt{Login: "fed@example.com", Password: "x"}, "fed@example.com"},
		{"unreadable_hash", Attempt{Login: "odd@example.com", Password: "right"}, "odd@example.com"},
		{"second_factor_deferred", Attempt{Login: "tess@example.com", Password: "right", DeferSuccess: true}, "tess@example.com"},
		{"by_user_id", Attempt{UserID: "usr_1", Password: "wrong"}, "ann@example.com"},
		{"machine_user_by_id", Attempt{UserID: "usr_3", Password: "right"}, "bot"},
	}
	var first *apierr.Error
	for _, tc := range cases {
		t.Run("fail/"+tc.name, func(t *testing.T) {
			h, th, rec := &fakeHasher{busy: true}, &fakeThrottle{}, &recorder{}
			c, err := New(Deps{Users: users, Hasher: h, Throttle: th, Audit: rec, Metrics: rec})
			if err != nil {
				t.Fatal(err)
			}
			tc.a.FailureAction = "login.failed"
			ctx, cancel := context.WithDeadline(context.Background(), time.Now()) // passed while waiting
			defer cancel()
			_, err = c.Check(ctx, tc.a)
			var ae *apierr.Error
			if !errors.As(err, &ae) || !errors.Is(err, apierr.ErrTemporarilyUnavailable) || !errors.Is(err, password.ErrBusy) {
				t.Fatalf("err = %v, want 503 temporarily_unavailable caused by password.ErrBusy", err)
			}
			if first == nil {
				first = ae
			}
			if ae.Status != first.Status || ae.Body() != first.Body() || ae.RetryAfterSeconds != first.RetryAfterSeconds {
				t.Fatalf("answer %d %+v, the first case's %d %+v", ae.Status, ae.Body(), first.Status, first.Body())
			}
			if rec.failed != 0 || len(rec.events) != 0 {
				t.Fatalf("failures %d, events %+v: a check whose hash never ran counted", rec.failed, rec.events)
			}
			if len(th.checked) != 1 || th.checked[0] != tc.throttleOn || len(th.succeeded) != 1 || th.succeeded[0] != tc.throttleOn {
				t.Fatalf("throttle checked %v and took back %v, want %q both", th.checked, th.succeeded, tc.throttleOn)
			}
			if f := c.floor.floor(); f != 0 {
				t.Fatalf("the refusal floor learnt %v from a hash that never ran", f)
			}
		})
	}
}

// TestDeferSuccess: with DeferSuccess a correct password leaves the
// account's failures (a second factor follows and counts there too) until
// Succeeded clears them under the key the attempt was counted under.
func TestDeferSuccess(t *testing.T) {
	users := fakeUsers{"usr_1": {ID: "usr_1", Email: "ann@example.com", PasswordHash: "h:right", Active: true}}
	th := &fakeThrottle{}
	c, err := New(Deps{Users: users, Hasher: &fakeHasher{}, Throttle: th})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Check(context.Background(), Attempt{Login: " ann@example.com ", Password: "right", DeferSuccess: true})
	if err != nil || res.User.ID != "usr_1" {
		t.Fatalf("Check = %+v, %v", res, err)
	}
	if len(th.succeeded) != 0 {
		t.Fatalf("a deferred success cleared %v", th.succeeded)
	}
	// The attempt as the throttle counted it: its key and its window.
	if got, want := res.Counted(), (ratelimit.Counted{Login: "ann@example.com", Window: fakeWindow}); got != want {
		t.Fatalf("Counted() = %+v, want %+v", got, want)
	}
	c.Succeeded(context.Background(), res)
	if len(th.succeeded) != 1 || th.succeeded[0] != "ann@example.com" {
		t.Fatalf("Succeeded cleared %v, want ann@example.com", th.succeeded)
	}
	c.Succeeded(context.Background(), Result{}) // not a check's result: nothing to clear
	if len(th.succeeded) != 1 {
		t.Fatalf("an empty result cleared %v", th.succeeded)
	}
}

// AnyForeignPasswordHash reports whether any of the users is marked
// PasswordHashForeign.
func (f fakeUsers) AnyForeignPasswordHash(context.Context) (bool, error) {
	for _, u := range f {
		if u.PasswordHashForeign {
			return true, nil
		}
	}
	return false, nil
}
