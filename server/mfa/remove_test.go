package mfa

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// lostAfterDelete is the real store where something goes wrong once the
// TOTP row is deleted: the client hangs up (the request's context is
// cancelled) or every later store call fails (a lost connection, the
// process stopping there).
type lostAfterDelete struct {
	*sqlstore.Store
	cancel  context.CancelFunc // when set, called once the deletion returned
	deleted atomic.Bool
	broken  bool // later calls fail
}

func (l *lostAfterDelete) DeleteTOTP(ctx context.Context, userID string) error {
	err := l.Store.DeleteTOTP(ctx, userID)
	l.deleted.Store(true)
	if l.cancel != nil {
		l.cancel()
	}
	return err
}

func (l *lostAfterDelete) lost() error {
	if l.broken && l.deleted.Load() {
		return errors.New("injected: connection lost")
	}
	return nil
}

func (l *lostAfterDelete) ListWebAuthnCredentials(ctx context.Context, userID string) ([]store.WebAuthnCredential, error) {
	if err := l.lost(); err != nil {
		return nil, err
	}
	return l.Store.ListWebAuthnCredentials(ctx, userID)
}

func (l *lostAfterDelete) GetTOTP(ctx context.Context, userID string) (store.TOTPFactor, error) {
	if err := l.lost(); err != nil {
		return store.TOTPFactor{}, err
	}
	return l.Store.GetTOTP(ctx, userID)
}

func (l *lostAfterDelete) ReplaceRecoveryCodes(ctx context.Context, userID string, h [][]byte, now time.Time) error {
	if err := l.lost(); err != nil {
		return err
	}
	return l.Store.ReplaceRecoveryCodes(ctx, userID, h, now)
}

// Removing the last factor takes its recovery codes in the same write:
// whatever fails after the factor is gone, no code of it stays live, and a
// passkey registered later gets fresh codes instead of adopting the old
// ones. Found by a review: the removal was three store calls, a failure
// after the first left the codes live, the retry answered "not enrolled",
// and the next passkey kept the old sheet as its backup.
func TestRemoveTOTPTakesTheCodesInOneWrite(t *testing.T) {
	cases := []struct {
		name   string
		hangUp bool
		broken bool
	}{
		{"client_hangs_up_after_the_deletion", true, false},
		{"later_store_calls_fail", false, true},
	}
	eachBackend(t, func(t *testing.T, e *env) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				lost := &lostAfterDelete{Store: e.st, broken: tc.broken}
				d := e.svc.d
				d.Factors = lost
				svc, err := New(d)
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				u := e.user(t)
				_, oldCodes := e.enrolled(t, u)

				ctx, cancel := context.WithCancel(tctx(t))
				defer cancel()
				if tc.hangUp {
					lost.cancel = cancel
				}
				err = svc.RemoveTOTP(ctx, u.ID, Meta{ActorID: u.ID})
				t.Logf("RemoveTOTP: %v", err)
				if err := svc.RemoveTOTP(tctx(t), u.ID, Meta{ActorID: u.ID}); !errors.Is(err, ErrNotEnrolled) {
					t.Fatalf("RemoveTOTP again: %v; want ErrNotEnrolled", err)
				}
				if sum, err := e.st.MFASummary(tctx(t), u.ID); err != nil || sum != (store.MFASummary{}) {
					t.Fatalf("after the removal MFASummary = %+v, %v; want no factor and no code", sum, err)
				}

				// A passkey registered later (what FinishPasskeyRegistration
				// does) gets fresh codes, and the old sheet is dead.
				if err := e.st.AddWebAuthnCredential(tctx(t), store.WebAuthnCredential{ID: fmt.Sprintf("cred-%s-%s", tc.name, u.ID),
					UserID: u.ID, Name: "key", Credential: []byte("{}"), CreatedAt: e.clock.Now()}); err != nil {
					t.Fatalf("AddWebAuthnCredential: %v", err)
				}
				fresh, err := e.svc.FirstRecoveryCodes(tctx(t), u.ID, Meta{ActorID: u.ID})
				if err != nil || len(fresh) != 10 {
					t.Fatalf("FirstRecoveryCodes after the passkey = %d codes, %v; want 10 fresh ones", len(fresh), err)
				}
				done, err := e.svc.Complete(tctx(t), e.begin(t, u).Token, "app", e.svc.RecoveryCode(oldCodes[0]), meta)
				if !errors.Is(err, ErrBadCode) {
					t.Fatalf("a recovery code of the removed app passed the second step: amr %v, %v", done.AMR, err)
				}
			})
		}
	})
}
