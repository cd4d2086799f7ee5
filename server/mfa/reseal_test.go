package mfa

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/store"
)

// racingSeals is the store with a change made by someone else just before
// ResealTOTP's first swap: what a concurrent enrolment, confirmation or
// removal does to a secret read by the re-sealing.
type racingSeals struct {
	store.TOTPSeals
	meanwhile func()
}

func (r *racingSeals) ResealTOTP(ctx context.Context, userID string, pending bool, old, sealed []byte) (bool, error) {
	if f := r.meanwhile; f != nil {
		r.meanwhile = nil
		f()
	}
	return r.TOTPSeals.ResealTOTP(ctx, userID, pending, old, sealed)
}

func TestResealTOTP(t *testing.T) {
	raw := func() []byte {
		b := make([]byte, keys.KEKSize)
		_, _ = rand.Read(b)
		return b
	}
	newKEK, oldKEK, lostKEK := raw(), raw(), raw()
	ring := func(ks ...[]byte) keys.KEKRing {
		r, err := keys.NewKEKRing(ks...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	oldRing, both, onlyNew, lost := ring(oldKEK), ring(newKEK, oldKEK), ring(newKEK), ring(lostKEK)
	seal := func(t *testing.T, r keys.KEKRing, u store.User, secret string) []byte {
		b, err := r.Seal([]byte(secret), totpAAD(u.ID))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// factor gives u a confirmed secret and a pending one (when not "").
	factor := func(t *testing.T, e *env, u store.User, r keys.KEKRing, confirmed, pending string) {
		c := tctx(t)
		if confirmed != "" {
			s := seal(t, r, u, confirmed)
			if err := e.st.PutPendingTOTP(c, u.ID, s, e.clock.Now()); err != nil {
				t.Fatal(err)
			}
			if err := e.st.ConfirmTOTP(c, u.ID, s, 1, nil, e.clock.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if pending != "" {
			if err := e.st.PutPendingTOTP(c, u.ID, seal(t, r, u, pending), e.clock.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	// opens checks what the new key alone opens of u's factor.
	opens := func(t *testing.T, e *env, u store.User, confirmed, pending string) {
		t.Helper()
		f, err := e.st.GetTOTP(tctx(t), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []struct {
			sealed []byte
			want   string
		}{{f.SecretSealed, confirmed}, {f.PendingSealed, pending}} {
			if s.want == "" {
				if s.sealed != nil {
					t.Fatalf("user %s holds a secret, want none", u.Email)
				}
				continue
			}
			got, err := onlyNew.Open(s.sealed, totpAAD(u.ID))
			if err != nil || !bytes.Equal(got, []byte(s.want)) {
				t.Fatalf("user %s: the new key alone opens %q, %v; want %q", u.Email, got, err, s.want)
			}
		}
	}

	tests := []struct {
		name string
		// setup enrols users under the old key and returns what happens
		// meanwhile (nil: nothing) and the check once ResealTOTP is done.
		setup   func(t *testing.T, e *env) (meanwhile func(), check func(t *testing.T))
		want    int
		wantErr string
	}{
		{"ok/confirmed_and_pending", func(t *testing.T, e *env) (func(), func(*testing.T)) {
			u, v, w := e.user(t), e.user(t), e.user(t)
			factor(t, e, u, oldRing, "u-secret", "u-pending")
			factor(t, e, v, oldRing, "", "v-pending")
			factor(t, e, w, onlyNew, "w-secret", "") // already under the new key
			return nil, func(t *testing.T) {
				opens(t, e, u, "u-secret", "u-pending")
				opens(t, e, v, "", "v-pending")
				opens(t, e, w, "w-secret", "")
			}
		}, 3, ""},
		{"ok/confirmed_between_read_and_swap", func(t *testing.T, e *env) (func(), func(*testing.T)) {
			u := e.user(t)
			factor(t, e, u, oldRing, "", "u-pending")
			f, _ := e.st.GetTOTP(tctx(t), u.ID)
			return func() {
					if err := e.st.ConfirmTOTP(tctx(t), u.ID, f.PendingSealed, 5, nil, e.clock.Now()); err != nil {
						t.Error(err)
					}
				}, func(t *testing.T) {
					opens(t, e, u, "u-pending", "") // read again and re-sealed where it moved
				}
		}, 1, ""},
		{"ok/reenrolled_between_read_and_swap", func(t *testing.T, e *env) (func(), func(*testing.T)) {
			u := e.user(t)
			factor(t, e, u, oldRing, "", "u-pending")
			return func() { factor(t, e, u, onlyNew, "", "u-new-pending") }, func(t *testing.T) {
				opens(t, e, u, "", "u-new-pending") // never overwritten by the old enrolment
			}
		}, 0, ""},
		{"ok/removed_between_read_and_swap", func(t *testing.T, e *env) (func(), func(*testing.T)) {
			u := e.user(t)
			factor(t, e, u, oldRing, "u-secret", "")
			return func() {
					if err := e.st.DeleteTOTP(tctx(t), u.ID); err != nil {
						t.Error(err)
					}
				}, func(t *testing.T) {
					if _, err := e.st.GetTOTP(tctx(t), u.ID); err == nil {
						t.Fatal("a factor removed meanwhile came back")
					}
				}
		}, 0, ""},
		{"fail/sealed_under_a_key_not_configured", func(t *testing.T, e *env) (func(), func(*testing.T)) {
			u, v := e.user(t), e.user(t)
			factor(t, e, u, lost, "u-secret", "")
			factor(t, e, v, oldRing, "v-secret", "")
			return nil, func(t *testing.T) {
				opens(t, e, v, "v-secret", "") // the others are re-sealed all the same
				if n, err := UnreadableTOTP(tctx(t), e.st, both); err != nil || n != 1 {
					t.Fatalf("UnreadableTOTP = %d, %v; want 1", n, err)
				}
			}
		}, 1, "1 could not be opened"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, e *env) {
				meanwhile, check := tt.setup(t, e)
				n, err := ResealTOTP(tctx(t), &racingSeals{TOTPSeals: e.st, meanwhile: meanwhile}, both)
				if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
					t.Fatalf("ResealTOTP error = %v, want %q", err, tt.wantErr)
				}
				if n != tt.want {
					t.Fatalf("ResealTOTP re-sealed %d, want %d", n, tt.want)
				}
				check(t)
				if tt.wantErr == "" {
					if n, err := UnreadableTOTP(tctx(t), e.st, onlyNew); err != nil || n != 0 {
						t.Fatalf("UnreadableTOTP with the new key alone = %d, %v; want 0", n, err)
					}
				}
			})
		})
	}
}
