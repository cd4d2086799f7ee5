package server_test

import (
	"context"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"

	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/store"
)

// TestEndpointsReviewRevokeAfterTheftEndsNothing (found by a review): a
// thief copies RT1 and refreshes first (RT2); the victim's app signs out
// with RFC 7009 revocation of RT1, which it still holds. Before the fix the
// revocation answered 200 and revoked nothing (RT1 was rotated, so not
// found), and RT2 kept refreshing. A rotated token presented by its client
// is reuse (RFC 9700 §4.14.2): the session ends.
func TestEndpointsReviewRevokeAfterTheftEndsNothing(t *testing.T) {
	for _, b := range []st.Backend{st.SQLite, st.PostgresRedis} {
		t.Run(b.String(), func(t *testing.T) {
			d := newDeployment(t, b)
			web := st.Basic("web", d.webSecret)
			victim := d.login(t, "")
			thief := d.c.PostForm("/oauth2/token", st.RefreshForm(victim.RefreshToken), web).Token()
			d.c.PostForm("/oauth2/revoke", url.Values{"token": {victim.RefreshToken}, "token_type_hint": {"refresh_token"}}, web).ExpectStatus(200)
			r := d.c.PostForm("/oauth2/token", st.RefreshForm(thief.RefreshToken), web)
			if r.StatusCode == http.StatusOK {
				t.Fatalf("after the victim's RFC 7009 sign-out (200), the thief's refresh token of the same session still refreshes: %s", r.Body)
			}
		})
	}
}

// TestRevokeUsedRefreshToken: a refresh token already rotated (outside the
// grace window, or older than the token the current one replaced) is
// reuse wherever its own client presents it. At the revocation endpoint
// it ends the session as rotation's reuse detection does (200, the same
// audit event); presented by another client it revokes nothing (400
// unauthorized_client); introspection, a read, answers only active false
// and ends nothing.
func TestRevokeUsedRefreshToken(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace string
		older bool // present the token before the one the current token replaced
		// who presents the used token, and where: "revoke" by web (its
		// client), "revoke_other" by svc, "introspect" by svc.
		how      string
		wantEnds bool
	}{
		{"fail/rotated_token_revoked_by_its_client_ends_the_session", "0s", false, "revoke", true},
		{"fail/older_token_revoked_by_its_client_ends_the_session", "30s", true, "revoke", true},
		{"fail/rotated_token_revoked_by_another_client_ends_nothing", "0s", false, "revoke_other", false},
		{"ok/rotated_token_introspected_ends_nothing", "0s", false, "introspect", false},
		{"ok/older_token_introspected_ends_nothing", "30s", true, "introspect", false},
	} {
		for _, b := range []st.Backend{st.SQLite, st.PostgresRedis} {
			t.Run(tc.name+"/"+b.String(), func(t *testing.T) {
				d := newDeployment(t, b, map[string]string{"PORTCULLIS_REFRESH_REUSE_GRACE": tc.grace})
				web, svc := st.Basic("web", d.webSecret), st.Basic("svc", d.svcSecret)
				refresh := func(rt string) *st.Response {
					return d.c.PostForm("/oauth2/token", st.RefreshForm(rt), web)
				}
				used := d.login(t, "")
				cur := refresh(used.RefreshToken).Token()
				if tc.older {
					cur = refresh(cur.RefreshToken).Token()
				}
				switch tc.how {
				case "revoke":
					d.c.PostForm("/oauth2/revoke", url.Values{"token": {used.RefreshToken}}, web).ExpectStatus(200)
				case "revoke_other":
					d.c.PostForm("/oauth2/revoke", url.Values{"token": {used.RefreshToken}}, svc).ExpectError(400, "unauthorized_client")
				case "introspect":
					m := d.c.PostForm("/oauth2/introspect", url.Values{"token": {used.RefreshToken}}, svc).ExpectStatus(200).Map()
					if !reflect.DeepEqual(m, map[string]any{"active": false}) {
						t.Fatalf("introspection of a used refresh token: %v, want only active false", m)
					}
				}
				at := d.c.PostForm("/oauth2/introspect", url.Values{"token": {cur.AccessToken}}, svc).ExpectStatus(200).Map()
				if ended := at["active"] != true; ended != tc.wantEnds {
					t.Errorf("the current access token of the session is ended: %v, want %v", ended, tc.wantEnds)
				}
				r := refresh(cur.RefreshToken)
				if ended := r.StatusCode != http.StatusOK; ended != tc.wantEnds {
					t.Errorf("the current refresh token no longer refreshes: %v (%d %s), want %v", ended, r.StatusCode, r.Body, tc.wantEnds)
				}
				events, err := d.in.App.Core.Store.ListAudit(context.Background(), store.AuditFilter{Action: "token.refresh_reuse_detected", Limit: 10})
				if err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int{true: 1}[tc.wantEnds]; len(events.Items) != want {
					t.Errorf("token.refresh_reuse_detected events: %d (%v), want %d", len(events.Items), events.Items, want)
				}
			})
		}
	}
}

// TestEndpointsReviewIntrospectRefreshExp (found by a review): RFC 7662
// §2.2 exp of a refresh token is when it expires: the earlier of its
// session's absolute expiry and its idle expiry. Before the fix it was the
// absolute expiry alone.
func TestEndpointsReviewIntrospectRefreshExp(t *testing.T) {
	for _, b := range []st.Backend{st.SQLite, st.PostgresRedis} {
		t.Run(b.String(), func(t *testing.T) {
			d := newDeployment(t, b, map[string]string{"PORTCULLIS_REFRESH_TOKEN_IDLE_TTL": "1h"})
			svc := st.Basic("svc", d.svcSecret)
			tok := d.login(t, "")
			before := time.Now()
			m := d.c.PostForm("/oauth2/introspect", url.Values{"token": {tok.RefreshToken}}, svc).ExpectStatus(200).Map()
			exp, _ := m["exp"].(float64)
			if limit := time.Now().Add(time.Hour + time.Minute).Unix(); int64(exp) > limit {
				t.Errorf("introspection exp of an unused refresh token with a 1 h idle lifetime is %s, later than its idle expiry",
					time.Unix(int64(exp), 0).UTC().Sub(time.Now().UTC()).Round(time.Hour))
			}
			if low := before.Add(time.Hour - time.Minute).Unix(); int64(exp) < low {
				t.Errorf("introspection exp %v is before the idle expiry (about %v)", time.Unix(int64(exp), 0), before.Add(time.Hour))
			}
		})
	}
}
