package config

import (
	"strings"
	"testing"
	"time"
)

// TestDurationCeilings: no duration setting can hold a value near
// time.Duration's limit. The ones with no ceiling of their own took any
// duration up to that limit, and the server adds to some of them:
// PORTCULLIS_AUTHORIZE_REQUEST_TTL of 2562047h plus the pending request's
// one-hour tombstone wrapped negative and every authorization request
// answered 503 (found by a review; this test failed before the change).
// They still accept any duration from their minimum (CONTRACT.md: "any
// duration from 1s"), and one above 87600h counts as 87600h with a warning
// naming the setting; a setting with a ceiling of its own refuses a value
// above it, naming the setting and the ceiling.
func TestDurationCeilings(t *testing.T) {
	tests := []struct {
		env     string
		capped  bool // no ceiling of its own: above 87600h counts as 87600h
		with    map[string]string
		applied func(Config) time.Duration
	}{
		{env: "PORTCULLIS_AUTHORIZE_REQUEST_TTL", capped: true, applied: func(c Config) time.Duration { return c.AuthorizeRequestTTL }},
		{env: "PORTCULLIS_SESSION_IDLE_TTL", capped: true, applied: func(c Config) time.Duration { return c.SessionIdleTTL }},
		{env: "PORTCULLIS_SESSION_MAX_AGE", capped: true, applied: func(c Config) time.Duration { return c.SessionMaxAge }},
		{env: "PORTCULLIS_REFRESH_TOKEN_IDLE_TTL", capped: true, with: map[string]string{"PORTCULLIS_REFRESH_TOKEN_MAX_AGE": "87600h"},
			applied: func(c Config) time.Duration { return c.RefreshIdleTTL }},
		{env: "PORTCULLIS_REFRESH_TOKEN_MAX_AGE", capped: true, applied: func(c Config) time.Duration { return c.RefreshMaxAge }},
		{env: "PORTCULLIS_INVITE_TTL", capped: true, applied: func(c Config) time.Duration { return c.InviteTTL }},
		{env: "PORTCULLIS_RESET_TTL", capped: true, applied: func(c Config) time.Duration { return c.ResetTTL }},
		{env: "PORTCULLIS_VERIFY_EMAIL_TTL", capped: true, applied: func(c Config) time.Duration { return c.VerifyEmailTTL }},
		{env: "PORTCULLIS_KEY_ROTATION_INTERVAL", capped: true, applied: func(c Config) time.Duration { return c.KeyRotationInterval }},
		{env: "PORTCULLIS_API_KEY_MAX_TTL", applied: func(c Config) time.Duration { return c.APIKeyMaxTTL }},
	}
	for _, tt := range tests {
		for _, tc := range []struct {
			name  string
			value time.Duration
			above bool
		}{
			{"at the ceiling", longestDuration, false},
			{"just above the ceiling", longestDuration + time.Second, true},
			{"near time.Duration's limit", 2562047 * time.Hour, true},
		} {
			t.Run(tt.env+"/"+tc.name, func(t *testing.T) {
				env := map[string]string{tt.env: tc.value.String()}
				for k, v := range tt.with {
					env[k] = v
				}
				c, err := Load(nil, envOf(env))
				switch {
				case !tc.above || tt.capped:
					if err != nil {
						t.Fatalf("%s=%s: %v", tt.env, tc.value, err)
					}
					if got := tt.applied(c); got != longestDuration {
						t.Fatalf("%s=%s applied as %s, want %s", tt.env, tc.value, got, longestDuration)
					}
					warned := false
					for _, w := range c.Warnings {
						warned = warned || strings.Contains(w, tt.env) && strings.Contains(w, "87600h")
					}
					if warned != tc.above {
						t.Fatalf("%s=%s: warned %t, want %t (%q)", tt.env, tc.value, warned, tc.above, c.Warnings)
					}
				default:
					if err == nil || !strings.Contains(err.Error(), tt.env) || !strings.Contains(err.Error(), "87600h") {
						t.Fatalf("%s=%s: Load = %v, want an error naming the setting and its ceiling 87600h", tt.env, tc.value, err)
					}
				}
			})
		}
	}
}
