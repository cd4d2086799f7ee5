package token

import (
	"context"
	"testing"

	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/store"
)

// outdatedChecker is fakeChecker finding every verified hash outdated.
type outdatedChecker struct{ fakeChecker }

func (c outdatedChecker) Check(ctx context.Context, a passcheck.Attempt) (passcheck.Result, error) {
	res, err := c.fakeChecker.Check(ctx, a)
	res.NeedsRehash = err == nil
	return res, err
}

// racingHasher hashes to "$fresh"; meanwhile (between the login's read of
// the user and the rehash's write) it runs during, as a password change
// committed by another request would.
type racingHasher struct {
	during func()
	calls  int
}

func (h *racingHasher) Hash(context.Context, string) (string, error) {
	h.calls++
	if h.during != nil {
		h.during()
	}
	return "$fresh", nil
}

// TestRehashKeepsPasswordChangedMeanwhile: the upgrade of an outdated hash
// after a login writes only over the hash that login verified. A password
// change, reset or temporary password committed while the login was
// verifying stays (the old password must not log in again), and the login
// itself still succeeds.
func TestRehashKeepsPasswordChangedMeanwhile(t *testing.T) {
	tests := []struct {
		name     string
		outdated bool
		changed  string // the hash another request writes meanwhile ("": none)
		want     string // the stored hash after the login
		hashes   int
	}{
		{name: "ok/outdated_hash_upgraded", outdated: true, want: "$fresh", hashes: 1},
		{name: "ok/current_hash_left", want: "$verified"},
		{name: "fail/changed_meanwhile_not_overwritten", outdated: true, changed: "$new-temporary", want: "$new-temporary", hashes: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newCodeEnv(t, "EdDSA")
			u := e.dir.users["u1"]
			u.PasswordHash = "$verified"
			e.dir.users["u1"] = u
			h := &racingHasher{}
			if tt.changed != "" {
				h.during = func() {
					_, _ = e.dir.UpdateUser(context.Background(), "u1", func(u *store.User) error { u.PasswordHash = tt.changed; return nil })
				}
			}
			var checker PasswordChecker = fakeChecker{dir: e.dir}
			if tt.outdated {
				checker = outdatedChecker{fakeChecker{dir: e.dir}}
			}
			e.svc = NewService(e.svc.cfg, Deps{Clients: e.dir, Users: e.dir, State: e.state, Signer: fakeSigner{alg: "EdDSA"},
				Sealer: plainSealer{}, Permissions: fakePerms{}, Audit: e.audit, Metrics: e.metrics, Codes: e.once, Now: e.clock.Now,
				Checker: checker, Passwords: h})
			req, err := ParseTokenRequest(map[string]string{"grant_type": GrantPassword, "username": "u1", "password": "pw"},
				ClientCredentials{ID: "pwonly", Secret: "s3cret"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.exchange(req); err != nil {
				t.Fatalf("the login failed: %v", err)
			}
			if got := e.dir.users["u1"].PasswordHash; got != tt.want || h.calls != tt.hashes {
				t.Fatalf("stored hash %q after %d hashes, want %q after %d", got, h.calls, tt.want, tt.hashes)
			}
		})
	}
}
