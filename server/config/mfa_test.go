package config

import (
	"strings"
	"testing"
	"time"
)

func TestMFASettings(t *testing.T) {
	tests := []struct {
		name      string
		env       map[string]string
		issuer    string
		ttl       time.Duration
		wantError string
	}{
		{name: "ok/defaults", issuer: "Portcullis", ttl: 5 * time.Minute},
		{name: "ok/set", env: map[string]string{"PORTCULLIS_MFA_ISSUER": " Example Co ", "PORTCULLIS_MFA_TOKEN_TTL": "10m"}, issuer: "Example Co", ttl: 10 * time.Minute},
		{name: "fail/issuer with a colon", env: map[string]string{"PORTCULLIS_MFA_ISSUER": "Example:Co"}, wantError: "PORTCULLIS_MFA_ISSUER"},
		{name: "fail/blank issuer", env: map[string]string{"PORTCULLIS_MFA_ISSUER": "  "}, wantError: "PORTCULLIS_MFA_ISSUER"},
		{name: "fail/issuer too long", env: map[string]string{"PORTCULLIS_MFA_ISSUER": strings.Repeat("x", 65)}, wantError: "PORTCULLIS_MFA_ISSUER"},
		{name: "fail/token ttl under 30s", env: map[string]string{"PORTCULLIS_MFA_TOKEN_TTL": "10s"}, wantError: "PORTCULLIS_MFA_TOKEN_TTL"},
		{name: "fail/token ttl over 1h", env: map[string]string{"PORTCULLIS_MFA_TOKEN_TTL": "2h"}, wantError: "PORTCULLIS_MFA_TOKEN_TTL"},
		{name: "fail/token ttl not a duration", env: map[string]string{"PORTCULLIS_MFA_TOKEN_TTL": "soon"}, wantError: "PORTCULLIS_MFA_TOKEN_TTL"},
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
			if err != nil || c.MFAIssuer != tt.issuer || c.MFATokenTTL != tt.ttl {
				t.Fatalf("Load = issuer %q, ttl %v, %v; want %q, %v", c.MFAIssuer, c.MFATokenTTL, err, tt.issuer, tt.ttl)
			}
		})
	}
}
