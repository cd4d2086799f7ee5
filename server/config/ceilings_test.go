package config

import (
	"strings"
	"testing"
	"time"
)

// TestDurationCeilings: every duration setting has a ceiling. The ones
// that had none (only a minimum) took any duration up to time.Duration's
// limit, and the server adds to some of them: PORTCULLIS_AUTHORIZE_REQUEST_TTL
// of 2562047h plus the pending request's one-hour tombstone wrapped
// negative and every authorization request answered 503 (found by a
// review; this test failed before the change). Each is accepted at its
// ceiling and refused just above it, naming the setting and the ceiling.
func TestDurationCeilings(t *testing.T) {
	tests := []struct {
		env     string
		ceiling string
		with    map[string]string // other settings the ceiling needs (rules across settings)
	}{
		{env: "PORTCULLIS_AUTHORIZE_REQUEST_TTL", ceiling: "87600h"},
		{env: "PORTCULLIS_SESSION_IDLE_TTL", ceiling: "87600h"},
		{env: "PORTCULLIS_SESSION_MAX_AGE", ceiling: "87600h"},
		{env: "PORTCULLIS_REFRESH_TOKEN_IDLE_TTL", ceiling: "87600h", with: map[string]string{"PORTCULLIS_REFRESH_TOKEN_MAX_AGE": "87600h"}},
		{env: "PORTCULLIS_REFRESH_TOKEN_MAX_AGE", ceiling: "87600h"},
		{env: "PORTCULLIS_INVITE_TTL", ceiling: "87600h"},
		{env: "PORTCULLIS_RESET_TTL", ceiling: "87600h"},
		{env: "PORTCULLIS_VERIFY_EMAIL_TTL", ceiling: "87600h"},
		{env: "PORTCULLIS_KEY_ROTATION_INTERVAL", ceiling: "87600h"},
		{env: "PORTCULLIS_API_KEY_MAX_TTL", ceiling: "87600h"},
	}
	for _, tt := range tests {
		ceiling, err := time.ParseDuration(tt.ceiling)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name  string
			value time.Duration
			ok    bool
		}{
			{"ok/at the ceiling", ceiling, true},
			{"fail/just above the ceiling", ceiling + time.Second, false},
			{"fail/near time.Duration's limit", 2562047 * time.Hour, false},
		} {
			t.Run(tt.env+"/"+tc.name, func(t *testing.T) {
				env := map[string]string{tt.env: tc.value.String()}
				for k, v := range tt.with {
					env[k] = v
				}
				_, err := Load(nil, envOf(env))
				if tc.ok {
					if err != nil {
						t.Fatalf("%s=%s: %v", tt.env, tc.value, err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tt.env) || !strings.Contains(err.Error(), tt.ceiling) {
					t.Fatalf("%s=%s: Load = %v, want an error naming the setting and its ceiling %s", tt.env, tc.value, err, tt.ceiling)
				}
			})
		}
	}
}
