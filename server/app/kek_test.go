package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// unreadableTOTPLog is what the server logs at start when TOTP secrets are
// sealed under a key-encryption key it no longer has.
const unreadableTOTPLog = "TOTP SECRETS SEALED UNDER A KEY-ENCRYPTION KEY THAT IS NOT CONFIGURED"

// TestKEKRotationKeepsTOTP follows docs/runbook-keys.md "Rotating the
// key-encryption key": NEW,OLD; `keys reencrypt` (Core.Reencrypt); then
// NEW alone. A user enrolled in TOTP before, and one whose enrolment was
// pending, keep their factor. Re-sealing only the signing keys (as
// reencrypt did) leaves them locked out, and the server says so at start.
func TestKEKRotationKeepsTOTP(t *testing.T) {
	tests := []struct {
		name      string
		backend   servertest.Backend
		reencrypt func(t *testing.T, in *servertest.Instance)
		wantTOTP  bool
	}{
		{"ok/sqlite", servertest.SQLite, reencryptAll, true},
		{"ok/postgres", servertest.PostgresRedis, reencryptAll, true},
		{"fail/signing_keys_only", servertest.SQLite, func(t *testing.T, in *servertest.Instance) {
			if n, err := in.App.Keys.Reencrypt(context.Background()); err != nil || n == 0 {
				t.Fatalf("Keys.Reencrypt = %d, %v", n, err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := servertest.NewEnv(t, tt.backend)
			old := env["PORTCULLIS_KEY_ENCRYPTION_KEY"]
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			in1 := servertest.Start(t, env)
			u := store.User{Email: "kek@example.com", Name: "K", Active: true, Roles: []string{"user"}}
			p := store.User{Email: "pending@example.com", Name: "P", Active: true, Roles: []string{"user"}}
			for _, x := range []*store.User{&u, &p} {
				if err := in1.App.Store.CreateUser(ctx, x); err != nil {
					t.Fatal(err)
				}
			}
			secret, _ := servertest.EnrolTOTP(t, in1.App.MFA, u)
			pending, err := in1.App.MFA.StartTOTP(ctx, p, mfa.Meta{ActorID: p.ID})
			if err != nil {
				t.Fatal(err)
			}
			in1.Stop()

			newKEK, err := keys.GenerateKEK()
			if err != nil {
				t.Fatal(err)
			}
			both := env.Clone()
			both["PORTCULLIS_KEY_ENCRYPTION_KEY"] = newKEK + "," + old
			in2 := servertest.Start(t, both)
			tt.reencrypt(t, in2)
			in2.Stop()

			onlyNew := env.Clone()
			onlyNew["PORTCULLIS_KEY_ENCRYPTION_KEY"] = newKEK // step 4 of the runbook
			in3 := servertest.Start(t, onlyNew)
			if warned := strings.Contains(in3.Logs.String(), unreadableTOTPLog); warned == tt.wantTOTP {
				t.Fatalf("warned at start of unreadable TOTP secrets: %v, want %v; logs:\n%s", warned, !tt.wantTOTP, in3.Logs)
			}
			ch, err := in3.App.MFA.Begin(ctx, u, nil, ratelimit.Counted{}, "portcullis", "", "", time.Now(), []string{mfa.AMRPassword})
			if err != nil || ch == nil {
				t.Fatalf("Begin = %+v, %v", ch, err)
			}
			_, err = in3.App.MFA.Complete(ctx, ch.Token, "portcullis", in3.App.MFA.TOTPCode(servertest.NextTOTPCode(t, secret)), mfa.Meta{})
			if (err == nil) != tt.wantTOTP {
				t.Fatalf("MFA with the TOTP enrolled before the KEK rotation: %v, want success %v", err, tt.wantTOTP)
			}
			_, err = in3.App.MFA.ConfirmTOTP(ctx, p, servertest.TOTPCode(t, pending.Secret, time.Now()), mfa.Meta{ActorID: p.ID})
			if (err == nil) != tt.wantTOTP {
				t.Fatalf("confirming the enrolment pending across the KEK rotation: %v, want success %v", err, tt.wantTOTP)
			}
		})
	}
}

// reencryptAll is `portcullis keys reencrypt` with NEW,OLD: the two
// signing keys and the two TOTP secrets (one confirmed, one pending) are
// re-sealed, and a second run finds nothing left.
func reencryptAll(t *testing.T, in *servertest.Instance) {
	t.Helper()
	ctx := context.Background()
	r, err := in.App.Reencrypt(ctx)
	if err != nil || r.SigningKeys == 0 || r.TOTPSecrets != 2 {
		t.Fatalf("Reencrypt = %+v, %v; want signing keys and 2 TOTP secrets", r, err)
	}
	if r, err := in.App.Reencrypt(ctx); err != nil || r.SigningKeys != 0 || r.TOTPSecrets != 0 {
		t.Fatalf("a second Reencrypt = %+v, %v; want nothing left", r, err)
	}
}
