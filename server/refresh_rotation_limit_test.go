package server_test

import (
	"context"
	"crypto/rand"
	"net/url"
	"testing"

	"github.com/redis/go-redis/v9"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestRefreshRotationLimitEndsTheSession: a session whose family already
// keeps store.MaxFamilyRotations used hashes (filled in the backend, as a
// client refreshing that often would leave it) ends at its next refresh
// rather than keep one more (found by a review: every refresh kept its
// hash for the session's whole life, without a bound). The refresh answers
// invalid_grant, the session's access token is revoked, and the end is
// audited as token.revoked with the reason rotation_limit, never as a
// theft (token.refresh_reuse_detected); portcullis_refresh_rotation_limit_total
// counts it once and portcullis_refresh_reuse_detected_total not at all
// (found by a review: the limit had no metric).
func TestRefreshRotationLimitEndsTheSession(t *testing.T) {
	for _, b := range []st.Backend{st.SQLite, st.PostgresRedis} {
		t.Run(b.String(), func(t *testing.T) {
			env := st.NewEnv(t, b)
			d := deploy(t, st.Start(t, env))
			web, svc := st.Basic("web", d.webSecret), st.Basic("svc", d.svcSecret)
			ctx := context.Background()
			tok := d.c.PostForm("/oauth2/token", st.RefreshForm(d.login(t, "").RefreshToken), web).Token()
			fillToTheLimit(t, ctx, b, env, d)
			before := scrape(t, d.c)

			d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), web).ExpectError(400, "invalid_grant")
			d.c.PostForm("/oauth2/token", st.RefreshForm(tok.RefreshToken), web).ExpectError(400, "invalid_grant")
			if m := d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok.AccessToken}}, svc).ExpectStatus(200).Map(); m["active"] != false {
				t.Fatalf("the access token of a session ended at its rotation limit: %v, want inactive", m)
			}
			ended, err := d.in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: "token.revoked", Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			var n int
			for _, e := range ended.Items {
				if e.Details["reason"] == "rotation_limit" {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("token.revoked events with the reason rotation_limit: %d (%v), want 1", n, ended.Items)
			}
			reuse, err := d.in.App.Core.Store.ListAudit(ctx, store.AuditFilter{Action: "token.refresh_reuse_detected", Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(reuse.Items) != 0 {
				t.Fatalf("the rotation limit raised the theft alarm: %v", reuse.Items)
			}
			after := scrape(t, d.c)
			for name, want := range map[string]float64{"portcullis_refresh_rotation_limit_total": 1, "portcullis_refresh_reuse_detected_total": 0} {
				b, a := max(metricValue(before, name, nil), 0), metricValue(after, name, nil)
				switch {
				case a < 0:
					t.Errorf("%s is not exported", name)
				case a-b != want:
					t.Errorf("%s moved from %v to %v, want by %v", name, b, a, want)
				}
			}
		})
	}
}

// fillToTheLimit gives the one refresh family of the deployment
// store.MaxFamilyRotations used hashes (Redis: members of its used set)
// or rotations (SQL: its counter).
func fillToTheLimit(t *testing.T, ctx context.Context, b st.Backend, env map[string]string, d *deployment) {
	t.Helper()
	if b != st.PostgresRedis {
		if err := d.in.App.Core.Store.DB().Exec("UPDATE refresh_families SET rotations = ?", store.MaxFamilyRotations).Error; err != nil {
			t.Fatal(err)
		}
		return
	}
	opts, err := redis.ParseURL(env["PORTCULLIS_REDIS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opts)
	defer rc.Close()
	keys, err := rc.Keys(ctx, env["PORTCULLIS_REDIS_KEY_PREFIX"]+"*:used").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("the used set of the session: %v, %v", keys, err)
	}
	have, err := rc.SCard(ctx, keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	members := make([]any, 0, store.MaxFamilyRotations)
	for range int64(store.MaxFamilyRotations) - have {
		members = append(members, rand.Text())
	}
	if err := rc.SAdd(ctx, keys[0], members...).Err(); err != nil {
		t.Fatal(err)
	}
}
