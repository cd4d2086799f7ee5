package app_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/server/ratelimit"
	"github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestMFAWiring: app.MFA is built from the settings (issuer, token TTL),
// the policy file (required_for_level), the store and the token state.
func TestMFAWiring(t *testing.T) {
	for _, b := range []servertest.Backend{servertest.PostgresRedis, servertest.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := servertest.NewEnv(t, b)
			env["PORTCULLIS_MFA_ISSUER"] = "Wired Co"
			env["PORTCULLIS_MFA_TOKEN_TTL"] = "2m"
			in := servertest.Start(t, env)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			u := store.User{Email: "wired@example.com", Name: "Wired", Active: true, Roles: []string{"super_admin"}}
			if err := in.App.Store.CreateUser(ctx, &u); err != nil {
				t.Fatalf("CreateUser: %v", err)
			}
			if in.App.MFA.Required(u.Roles) {
				t.Fatal("the built-in policy requires MFA")
			}
			en, err := in.App.MFA.StartTOTP(ctx, u, mfa.Meta{})
			if err != nil {
				t.Fatalf("StartTOTP: %v", err)
			}
			if uri, err := url.Parse(en.URI); err != nil || uri.Query().Get("issuer") != "Wired Co" {
				t.Fatalf("URI %q: want issuer Wired Co", en.URI)
			}
			if ch, err := in.App.MFA.Begin(ctx, u, nil, ratelimit.Counted{}, "portcullis", "", "", time.Now(), []string{mfa.AMRPassword}); ch != nil || err != nil {
				t.Fatalf("Begin for an unenrolled user = %+v, %v", ch, err)
			}
			code, err := totp.GenerateCode(en.Secret, time.Now())
			if err != nil {
				t.Fatalf("GenerateCode: %v", err)
			}
			if _, err := in.App.MFA.ConfirmTOTP(ctx, u, code, mfa.Meta{}); err != nil {
				t.Fatalf("ConfirmTOTP: %v", err)
			}
			before := time.Now()
			ch, err := in.App.MFA.Begin(ctx, u, nil, ratelimit.Counted{}, "portcullis", "", "", before, []string{mfa.AMRPassword})
			if err != nil || ch == nil {
				t.Fatalf("Begin for an enrolled user = %+v, %v", ch, err)
			}
			if d := ch.ExpiresAt.Sub(before); d < 2*time.Minute-time.Second || d > 2*time.Minute+5*time.Second {
				t.Fatalf("mfa_token lives %v, want PORTCULLIS_MFA_TOKEN_TTL (2m)", d)
			}
			if p, err := in.App.MFA.Peek(ctx, ch.Token, "portcullis"); err != nil || p.UserID != u.ID {
				t.Fatalf("Peek = %+v, %v", p, err)
			}
		})
	}
}
