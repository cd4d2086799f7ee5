package app_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

var backends = []servertest.Backend{servertest.PostgresRedis, servertest.Postgres, servertest.SQLite}

func openCore(t *testing.T, env servertest.Env) *app.Core {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	core, err := app.OpenCore(ctx, env.Config(t, "127.0.0.1:1"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("OpenCore: %v", err)
	}
	t.Cleanup(func() { _ = core.Close() })
	return core
}

// TestRevocationHorizonWiring: with the server's access tokens living 15 min
// and a client allowed 24 h (PORTCULLIS_MAX_CLIENT_TOKEN_TTL), a cut-off and a
// session revocation made an hour ago still refuse a token the client got
// before them (it is still unexpired), after the periodic purge too. The
// revocations are made with a cut-off an hour in the past, which is what an
// hour passing looks like to every backend (Redis expires keys by their
// absolute time, the purge by the time it is given).
func TestRevocationHorizonWiring(t *testing.T) {
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			env := servertest.NewEnv(t, b)
			env["PORTCULLIS_ACCESS_TOKEN_TTL"] = "15m"
			env["PORTCULLIS_ID_TOKEN_TTL"] = "15m"
			core := openCore(t, env)
			states, err := app.OpenTokenState(core.Config, core.Store, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = states.Close() })
			ctx := context.Background()
			now := time.Now()
			cutoff := now.Add(-time.Hour)
			issued := cutoff.Add(-time.Second) // a 24 h token, valid for 23 more hours
			if err := states.State.RevokeUserSessions(ctx, "usr_horizon", cutoff); err != nil {
				t.Fatalf("RevokeUserSessions: %v", err)
			}
			if err := states.State.RevokeFamily(ctx, "sid-horizon", cutoff); err != nil {
				t.Fatalf("RevokeFamily: %v", err)
			}
			if err := app.Purge(ctx, core.Store, states, now); err != nil {
				t.Fatalf("Purge: %v", err)
			}
			for _, ref := range []store.AccessTokenRef{
				{JTI: "j1", UserID: "usr_horizon", IssuedAt: issued},
				{JTI: "j2", SID: "sid-horizon", UserID: "usr_other", IssuedAt: issued},
			} {
				revoked, err := states.State.IsAccessTokenRevoked(ctx, ref)
				if err != nil || !revoked {
					t.Errorf("token %+v an hour after its revocation: revoked=%v, %v; want refused for the client's 24 h", ref, revoked, err)
				}
			}
			// The durable log keeps them for the horizon too (what Redis is rebuilt from).
			active, err := states.SQL.ActiveRevocations(ctx, now.Add(22*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			kinds := map[store.RevocationKind]bool{}
			for _, r := range active {
				if r.Value == "usr_horizon" || r.Value == "sid-horizon" {
					kinds[r.Kind] = true
				}
			}
			if !kinds[store.RevokedUser] || !kinds[store.RevokedSession] {
				t.Errorf("durable log 22 h later lists %v, want the user cut-off and the session", kinds)
			}
		})
	}
}

// TestRetiredKeyPublishedForClientTokenLifetime: a retired key stays in the
// JWKS for PORTCULLIS_MAX_CLIENT_TOKEN_TTL plus a minute (plus two sync
// intervals), not just the server's access-token lifetime.
func TestRetiredKeyPublishedForClientTokenLifetime(t *testing.T) {
	for _, ttl := range []string{"24h", "48h"} {
		t.Run(ttl, func(t *testing.T) {
			t.Parallel()
			env := servertest.NewEnv(t, servertest.SQLite)
			env["PORTCULLIS_ACCESS_TOKEN_TTL"] = "15m"
			env["PORTCULLIS_MAX_CLIENT_TOKEN_TTL"] = ttl
			core := openCore(t, env)
			rot, err := core.Keys.Rotate(context.Background(), true)
			if err != nil {
				t.Fatalf("Rotate: %v", err)
			}
			r := rot.Retired
			if r.RetiredAt == nil || r.PublishedUntil == nil {
				t.Fatalf("retired key without times: %+v", r)
			}
			want, _ := time.ParseDuration(ttl)
			if got := r.PublishedUntil.Sub(*r.RetiredAt); got < want+time.Minute {
				t.Fatalf("retired key published for %v after retirement, want at least %v", got, want+time.Minute)
			}
		})
	}
}
