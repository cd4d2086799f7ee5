package config

import (
	"strings"
	"testing"
	"time"
)

// TestAPIKeySettings: PORTCULLIS_API_KEY_MAX_TTL defaults to the
// contract's 8760h and accepts 1h to 87600h.
func TestAPIKeySettings(t *testing.T) {
	tests := []struct {
		name      string
		env       map[string]string
		want      time.Duration
		wantError string
	}{
		{name: "ok/default", want: 8760 * time.Hour},
		{name: "ok/shorter", env: map[string]string{"PORTCULLIS_API_KEY_MAX_TTL": "720h"}, want: 720 * time.Hour},
		{name: "ok/one hour", env: map[string]string{"PORTCULLIS_API_KEY_MAX_TTL": "1h"}, want: time.Hour},
		{name: "fail/under an hour", env: map[string]string{"PORTCULLIS_API_KEY_MAX_TTL": "59m"}, wantError: "PORTCULLIS_API_KEY_MAX_TTL"},
		{name: "fail/over ten years", env: map[string]string{"PORTCULLIS_API_KEY_MAX_TTL": "87601h"}, wantError: "PORTCULLIS_API_KEY_MAX_TTL"},
		{name: "fail/zero", env: map[string]string{"PORTCULLIS_API_KEY_MAX_TTL": "0"}, wantError: "PORTCULLIS_API_KEY_MAX_TTL"},
		{name: "fail/not a duration", env: map[string]string{"PORTCULLIS_API_KEY_MAX_TTL": "a year"}, wantError: "PORTCULLIS_API_KEY_MAX_TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(nil, envOf(tt.env))
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("Load: %v, want an error naming %s", err, tt.wantError)
				}
				return
			}
			if err != nil || c.APIKeyMaxTTL != tt.want {
				t.Fatalf("Load = %v, %v; want %v", c.APIKeyMaxTTL, err, tt.want)
			}
		})
	}
}
