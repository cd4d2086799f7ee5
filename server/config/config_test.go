package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := Load(nil, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:8080" || c.Issuer != "http://127.0.0.1:8080" || c.PublicURL != c.Issuer {
		t.Fatalf("addr/issuer/public url: %q %q %q", c.Addr, c.Issuer, c.PublicURL)
	}
	if !c.Embedded() || c.DatabaseURL != "sqlite://./data/portcullis.db" || c.RedisURL != "" {
		t.Fatalf("storage defaults: %+v", c)
	}
	if c.AccessTokenTTL != 15*time.Minute || c.RefreshIdleTTL != 168*time.Hour || c.RefreshMaxAge != 720*time.Hour ||
		c.RefreshReuseGrace != 0 || c.JWKSMaxAge != 5*time.Minute || c.KeySyncInterval != 10*time.Second ||
		c.InviteTTL != 48*time.Hour || c.ResetTTL != time.Hour || c.SigningAlg != "RS256" || !c.RateLimits || !c.AutoMigrate {
		t.Fatalf("contract defaults wrong: %+v", c)
	}
	if c.MaxClientTokenTTL != 24*time.Hour || c.MaxSessionsPerUser != 100 || c.RevocationHorizon() != 24*time.Hour {
		t.Fatalf("contract defaults wrong: max client token ttl %v, sessions %d", c.MaxClientTokenTTL, c.MaxSessionsPerUser)
	}
	if c.DefaultAudience != "api" || c.MailFrom != "Portcullis <no-reply@localhost>" || c.PublicRegistration {
		t.Fatalf("contract defaults wrong: %+v", c)
	}
}

func TestLoad(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // substring naming the setting
		check   func(t *testing.T, c Config)
	}{
		{name: "ok/issuer from empty host", env: map[string]string{"PORTCULLIS_ADDR": ":9000"}, check: func(t *testing.T, c Config) {
			if c.Issuer != "http://localhost:9000" {
				t.Fatalf("issuer %q", c.Issuer)
			}
		}},
		{name: "ok/flag wins over env", args: []string{"--signing-alg", "EdDSA"}, env: map[string]string{"PORTCULLIS_SIGNING_ALG": "ES256"}, check: func(t *testing.T, c Config) {
			if c.SigningAlg != "EdDSA" {
				t.Fatalf("alg %q", c.SigningAlg)
			}
		}},
		{name: "ok/trusted proxies", env: map[string]string{"PORTCULLIS_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}, check: func(t *testing.T, c Config) {
			if len(c.TrustedProxies) != 2 || c.TrustedProxies[1].String() != "127.0.0.1/32" {
				t.Fatalf("proxies %v", c.TrustedProxies)
			}
		}},
		{name: "ok/postgres with kek", env: map[string]string{"PORTCULLIS_DATABASE_URL": "postgres://u:p@h/db", "PORTCULLIS_KEY_ENCRYPTION_KEY": "x"}},
		{name: "ok/smtp+insecure", env: map[string]string{"PORTCULLIS_SMTP_URL": "smtp+insecure://relay.internal:25"}, check: func(t *testing.T, c Config) {
			if c.SMTPURL != "smtp+insecure://relay.internal:25" {
				t.Fatalf("smtp url %q", c.SMTPURL)
			}
		}},
		{name: "fail/smtp scheme", env: map[string]string{"PORTCULLIS_SMTP_URL": "smtp+tls://relay.internal:25"}, wantErr: "PORTCULLIS_SMTP_URL"},
		{name: "ok/metrics addr", env: map[string]string{"PORTCULLIS_METRICS_ADDR": "127.0.0.1:9090"}, check: func(t *testing.T, c Config) {
			if c.MetricsAddr != "127.0.0.1:9090" {
				t.Fatalf("metrics addr %q", c.MetricsAddr)
			}
		}},
		{name: "fail/metrics addr without port", env: map[string]string{"PORTCULLIS_METRICS_ADDR": "127.0.0.1"}, wantErr: "PORTCULLIS_METRICS_ADDR"},
		{name: "fail/metrics addr is the main addr", env: map[string]string{"PORTCULLIS_ADDR": "127.0.0.1:8080", "PORTCULLIS_METRICS_ADDR": "127.0.0.1:8080"}, wantErr: "PORTCULLIS_METRICS_ADDR"},
		{name: "fail/bad alg", env: map[string]string{"PORTCULLIS_SIGNING_ALG": "HS256"}, wantErr: "PORTCULLIS_SIGNING_ALG"},
		{name: "fail/bad duration", env: map[string]string{"PORTCULLIS_ACCESS_TOKEN_TTL": "soon"}, wantErr: "PORTCULLIS_ACCESS_TOKEN_TTL"},
		{name: "fail/bad database", env: map[string]string{"PORTCULLIS_DATABASE_URL": "mysql://x"}, wantErr: "PORTCULLIS_DATABASE_URL"},
		{name: "fail/postgres without kek", env: map[string]string{"PORTCULLIS_DATABASE_URL": "postgres://h/db"}, wantErr: "PORTCULLIS_KEY_ENCRYPTION_KEY"},
		{name: "fail/bad addr", args: []string{"--addr", "nope"}, wantErr: "PORTCULLIS_ADDR"},
		{name: "fail/issuer with query", env: map[string]string{"PORTCULLIS_ISSUER": "https://a.example/?x=1"}, wantErr: "PORTCULLIS_ISSUER"},
		{name: "fail/rotation too short", env: map[string]string{"PORTCULLIS_KEY_ROTATION_INTERVAL": "5m"}, wantErr: "PORTCULLIS_KEY_ROTATION_INTERVAL"},
		{name: "ok/max client token ttl and sessions", env: map[string]string{"PORTCULLIS_MAX_CLIENT_TOKEN_TTL": "48h", "PORTCULLIS_MAX_SESSIONS_PER_USER": "3"}, check: func(t *testing.T, c Config) {
			if c.MaxClientTokenTTL != 48*time.Hour || c.MaxSessionsPerUser != 3 || c.RevocationHorizon() != 48*time.Hour {
				t.Fatalf("max client token ttl %v, sessions %d, horizon %v", c.MaxClientTokenTTL, c.MaxSessionsPerUser, c.RevocationHorizon())
			}
		}},
		{name: "ok/horizon covers the server's own ttl", env: map[string]string{"PORTCULLIS_MAX_CLIENT_TOKEN_TTL": "1h", "PORTCULLIS_ACCESS_TOKEN_TTL": "30m", "PORTCULLIS_ID_TOKEN_TTL": "2h"}, check: func(t *testing.T, c Config) {
			if c.RevocationHorizon() != 2*time.Hour {
				t.Fatalf("horizon %v, want the longest lifetime (id token 2h)", c.RevocationHorizon())
			}
		}},
		{name: "fail/max client token ttl below access ttl", env: map[string]string{"PORTCULLIS_MAX_CLIENT_TOKEN_TTL": "10m"}, wantErr: "PORTCULLIS_MAX_CLIENT_TOKEN_TTL"},
		{name: "fail/max client token ttl bad", env: map[string]string{"PORTCULLIS_MAX_CLIENT_TOKEN_TTL": "forever"}, wantErr: "PORTCULLIS_MAX_CLIENT_TOKEN_TTL"},
		{name: "fail/no sessions", env: map[string]string{"PORTCULLIS_MAX_SESSIONS_PER_USER": "0"}, wantErr: "PORTCULLIS_MAX_SESSIONS_PER_USER"},
		{name: "fail/bad proxies", env: map[string]string{"PORTCULLIS_TRUSTED_PROXIES": "everyone"}, wantErr: "PORTCULLIS_TRUSTED_PROXIES"},
		{name: "fail/proxies trust every IPv4 client", env: map[string]string{"PORTCULLIS_TRUSTED_PROXIES": "10.0.0.0/8, 0.0.0.0/0"}, wantErr: "widest accepted is /8"},
		{name: "fail/proxies trust a /7", env: map[string]string{"PORTCULLIS_TRUSTED_PROXIES": "10.0.0.0/7"}, wantErr: "widest accepted is /8"},
		{name: "fail/proxies trust every IPv6 client", env: map[string]string{"PORTCULLIS_TRUSTED_PROXIES": "::/0"}, wantErr: "widest accepted is /32"},
		{name: "fail/proxies trust every mapped IPv4 client", env: map[string]string{"PORTCULLIS_TRUSTED_PROXIES": "::ffff:0.0.0.0/96"}, wantErr: "PORTCULLIS_TRUSTED_PROXIES"},
		{name: "fail/bad rate limits", env: map[string]string{"PORTCULLIS_RATE_LIMITS": "maybe"}, wantErr: "PORTCULLIS_RATE_LIMITS"},
		{name: "fail/bad tenants", env: map[string]string{"PORTCULLIS_TENANTS": "maybe"}, wantErr: "PORTCULLIS_TENANTS"},
		{name: "ok/tenants off by default", check: func(t *testing.T, c Config) {
			if c.Tenants {
				t.Fatal("organisations are on by default")
			}
		}},
		{name: "ok/tenants on", env: map[string]string{"PORTCULLIS_TENANTS": "ON"}, check: func(t *testing.T, c Config) {
			if !c.Tenants {
				t.Fatal("PORTCULLIS_TENANTS=ON left organisations off")
			}
		}},
		{name: "fail/tls half", env: map[string]string{"PORTCULLIS_TLS_CERT": "/x"}, wantErr: "PORTCULLIS_TLS_CERT"},
		{name: "fail/default audience is the issuer", env: map[string]string{"PORTCULLIS_ISSUER": "https://id.example", "PORTCULLIS_DEFAULT_AUDIENCE": "https://id.example"}, wantErr: "PORTCULLIS_DEFAULT_AUDIENCE"},
		{name: "ok/browser sign-in defaults", check: func(t *testing.T, c Config) {
			if c.AuthCodeTTL != time.Minute || c.AuthorizeRequestTTL != 30*time.Minute || c.SessionIdleTTL != 8*time.Hour || c.SessionMaxAge != 168*time.Hour {
				t.Fatalf("code %v, request %v, idle %v, max age %v", c.AuthCodeTTL, c.AuthorizeRequestTTL, c.SessionIdleTTL, c.SessionMaxAge)
			}
		}},
		{name: "ok/browser sign-in from 1s", env: map[string]string{"PORTCULLIS_AUTH_CODE_TTL": "1s", "PORTCULLIS_AUTHORIZE_REQUEST_TTL": "1s", "PORTCULLIS_SESSION_IDLE_TTL": "1s", "PORTCULLIS_SESSION_MAX_AGE": "1s"}, check: func(t *testing.T, c Config) {
			if c.AuthCodeTTL != time.Second || c.AuthorizeRequestTTL != time.Second || c.SessionIdleTTL != time.Second || c.SessionMaxAge != time.Second {
				t.Fatalf("code %v, request %v, idle %v, max age %v", c.AuthCodeTTL, c.AuthorizeRequestTTL, c.SessionIdleTTL, c.SessionMaxAge)
			}
		}},
		{name: "ok/auth code ttl 10m", args: []string{"--auth-code-ttl", "10m"}, check: func(t *testing.T, c Config) {
			if c.AuthCodeTTL != 10*time.Minute {
				t.Fatalf("code ttl %v", c.AuthCodeTTL)
			}
		}},
		{name: "fail/auth code ttl over 10m", env: map[string]string{"PORTCULLIS_AUTH_CODE_TTL": "10m1s"}, wantErr: "PORTCULLIS_AUTH_CODE_TTL"},
		{name: "fail/auth code ttl under 1s", env: map[string]string{"PORTCULLIS_AUTH_CODE_TTL": "500ms"}, wantErr: "PORTCULLIS_AUTH_CODE_TTL"},
		{name: "fail/authorize request ttl 0", env: map[string]string{"PORTCULLIS_AUTHORIZE_REQUEST_TTL": "0"}, wantErr: "PORTCULLIS_AUTHORIZE_REQUEST_TTL"},
		{name: "fail/session idle ttl bad", args: []string{"--session-idle-ttl", "a while"}, wantErr: "PORTCULLIS_SESSION_IDLE_TTL"},
		{name: "fail/session max age under 1s", env: map[string]string{"PORTCULLIS_SESSION_MAX_AGE": "999ms"}, wantErr: "PORTCULLIS_SESSION_MAX_AGE"},
		{name: "fail/cors origin with path", env: map[string]string{"PORTCULLIS_CORS_ORIGINS": "https://a.example/app"}, wantErr: "PORTCULLIS_CORS_ORIGINS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(tc.args, envOf(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error naming %s, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestEveryProblemReportedAtOnce(t *testing.T) {
	_, err := Load(nil, envOf(map[string]string{"PORTCULLIS_SIGNING_ALG": "x", "PORTCULLIS_JWKS_MAX_AGE": "y"}))
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("want two problems, got %v", err)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	secret := "postgres://admin:hunter2-secret@db/x"
	_, err := Load(nil, envOf(map[string]string{"PORTCULLIS_DATABASE_URL": "mysql://admin:hunter2-secret@db/x", "PORTCULLIS_SMTP_URL": "ftp://u:hunter2-secret@h"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("secret leaked or no error: %v", err)
	}
	_ = secret
}

func FuzzLoad(f *testing.F) {
	for _, s := range settings {
		f.Add(s.Env, s.Default)
	}
	f.Add("PORTCULLIS_BODY_LIMIT", "99999999999999999999MB")
	f.Add("PORTCULLIS_TRUSTED_PROXIES", ",,::1/200")
	f.Fuzz(func(t *testing.T, key, value string) {
		c, err := Load(nil, envOf(map[string]string{key: value}))
		if err == nil && c.Addr == "" {
			t.Fatal("valid config without address")
		}
	})
}

func TestWebAuthnRelyingParty(t *testing.T) {
	cases := []struct {
		name        string
		env         map[string]string
		wantErr     string
		rpID        string
		wantOrigins []string
	}{
		{name: "ok/derived from the issuer", env: map[string]string{"PORTCULLIS_ISSUER": "https://Auth.Example.com"},
			rpID: "auth.example.com", wantOrigins: []string{"https://auth.example.com"}},
		{name: "ok/derived with a port", env: map[string]string{"PORTCULLIS_ISSUER": "http://localhost:8080"},
			rpID: "localhost", wantOrigins: []string{"http://localhost:8080"}},
		{name: "ok/an IP issuer turns passkeys off", env: map[string]string{"PORTCULLIS_ISSUER": "http://127.0.0.1:8080"}},
		{name: "ok/registrable suffix with the issuer's origin", env: map[string]string{"PORTCULLIS_ISSUER": "https://auth.example.com",
			"PORTCULLIS_WEBAUTHN_RP_ID": "example.com"}, rpID: "example.com", wantOrigins: []string{"https://auth.example.com"}},
		{name: "ok/listed origins", env: map[string]string{"PORTCULLIS_ISSUER": "https://auth.example.com", "PORTCULLIS_WEBAUTHN_RP_ID": "example.com",
			"PORTCULLIS_WEBAUTHN_ORIGINS": "https://auth.example.com, https://app.example.com/"}, rpID: "example.com",
			wantOrigins: []string{"https://auth.example.com", "https://app.example.com"}},
		{name: "fail/RP ID with a scheme", env: map[string]string{"PORTCULLIS_WEBAUTHN_RP_ID": "https://example.com"}, wantErr: "PORTCULLIS_WEBAUTHN_RP_ID"},
		{name: "fail/RP ID with a port", env: map[string]string{"PORTCULLIS_WEBAUTHN_RP_ID": "example.com:443"}, wantErr: "PORTCULLIS_WEBAUTHN_RP_ID"},
		{name: "fail/RP ID an IP address", env: map[string]string{"PORTCULLIS_WEBAUTHN_RP_ID": "10.0.0.1"}, wantErr: "PORTCULLIS_WEBAUTHN_RP_ID"},
		{name: "fail/origin with a path", env: map[string]string{"PORTCULLIS_WEBAUTHN_ORIGINS": "https://example.com/login"}, wantErr: "PORTCULLIS_WEBAUTHN_ORIGINS"},
		{name: "fail/origin off the RP ID's domain", env: map[string]string{"PORTCULLIS_ISSUER": "https://auth.example.com",
			"PORTCULLIS_WEBAUTHN_ORIGINS": "https://auth.example.com.evil.test"}, wantErr: "PORTCULLIS_WEBAUTHN_ORIGINS"},
		{name: "fail/an RP ID the IP issuer's origin is not on", env: map[string]string{"PORTCULLIS_ISSUER": "http://127.0.0.1:8080",
			"PORTCULLIS_WEBAUTHN_RP_ID": "localhost"}, wantErr: "PORTCULLIS_WEBAUTHN_ORIGINS"},
		{name: "fail/issuer without a scheme", env: map[string]string{"PORTCULLIS_ISSUER": "//0"}, wantErr: "PORTCULLIS_ISSUER"}, // FuzzLoad: panicked
		{name: "fail/suffix trick", env: map[string]string{"PORTCULLIS_ISSUER": "https://auth.example.com",
			"PORTCULLIS_WEBAUTHN_RP_ID": "ample.com"}, wantErr: "PORTCULLIS_WEBAUTHN_ORIGINS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(nil, envOf(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.WebAuthnRPID != tc.rpID || strings.Join(c.WebAuthnOrigins, " ") != strings.Join(tc.wantOrigins, " ") {
				t.Fatalf("rp id %q origins %v", c.WebAuthnRPID, c.WebAuthnOrigins)
			}
		})
	}
}

// FuzzLoadPair is FuzzLoad with two settings at once, for the checks that
// relate settings (the WebAuthn relying party and the issuer, the token
// lifetimes, the rotation interval and the publication delay): Load never
// panics, and a configuration it accepts has an address.
func FuzzLoadPair(f *testing.F) {
	f.Add("PORTCULLIS_ISSUER", "https://auth.example.com", "PORTCULLIS_WEBAUTHN_RP_ID", "example.com")
	f.Add("PORTCULLIS_ISSUER", "http://127.0.0.1:8080", "PORTCULLIS_WEBAUTHN_ORIGINS", "https://a.example")
	f.Add("PORTCULLIS_ACCESS_TOKEN_TTL", "1h", "PORTCULLIS_MAX_CLIENT_TOKEN_TTL", "1m")
	f.Add("PORTCULLIS_KEY_ROTATION_INTERVAL", "5s", "PORTCULLIS_KEY_SYNC_INTERVAL", "1h")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		c, err := Load(nil, envOf(map[string]string{k1: v1, k2: v2}))
		if err == nil && c.Addr == "" {
			t.Fatal("valid config without address")
		}
	})
}
