package clients_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/store"
)

// TestValidateRefreshDelivery: the cookie delivery needs exact origins, the
// refresh_token grant and a reuse grace of 2 s; origins are for cookie
// clients only; each refusal names what is wrong.
func TestValidateRefreshDelivery(t *testing.T) {
	t.Parallel()
	cookie := func(origins ...string) clients.Spec {
		return clients.Spec{ID: "spa", Public: true, RefreshTokenDelivery: store.RefreshDeliveryCookie,
			AllowedOrigins: origins, RefreshReuseGrace: 2 * time.Second}
	}
	tests := []struct {
		name string
		spec clients.Spec
		want string // "" when valid
	}{
		{"body default", clients.Spec{ID: "web"}, ""},
		{"cookie", cookie("https://app.example.com", "https://app.example.com:8443", "http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080"), ""},
		{"unknown delivery", clients.Spec{ID: "web", RefreshTokenDelivery: "header"}, "must be body or cookie"},
		{"cookie without origins", cookie(), "at least one allowed origin"},
		{"origins on a body client", clients.Spec{ID: "web", AllowedOrigins: []string{"https://app.example.com"}}, "for refresh_token_delivery cookie"},
		{"path", cookie("https://app.example.com/"), "exact origin"},
		{"deep path", cookie("https://app.example.com/app"), "exact origin"},
		{"query", cookie("https://app.example.com?x"), "exact origin"},
		{"fragment", cookie("https://app.example.com#x"), "exact origin"},
		{"user info", cookie("https://u@app.example.com"), "exact origin"},
		{"plain http", cookie("http://app.example.com"), "exact origin"},
		{"upper case", cookie("https://App.example.com"), "exact origin"},
		{"wildcard", cookie("https://*.example.com"), "exact origin"},
		{"no scheme", cookie("app.example.com"), "exact origin"},
		{"null", cookie("null"), "exact origin"},
		{"empty port", cookie("https://app.example.com:"), "exact origin"},
		{"no refresh grant", func() clients.Spec {
			s := cookie("https://app.example.com")
			s.Grants = []string{"password"}
			return s
		}(), "needs the refresh_token grant"},
		{"grace too short", func() clients.Spec {
			s := cookie("https://app.example.com")
			s.RefreshReuseGrace = 1999 * time.Millisecond
			return s
		}(),
			"PORTCULLIS_REFRESH_REUSE_GRACE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	s := clients.Spec{ID: "web"}
	if err := s.Validate(); err != nil || s.RefreshTokenDelivery != store.RefreshDeliveryBody {
		t.Fatalf("default delivery %q (%v), want body", s.RefreshTokenDelivery, err)
	}
	v := clients.View(store.Client{ID: "old"})
	if v.RefreshTokenDelivery != "body" || v.AllowedOrigins == nil {
		t.Fatalf("view of a client from before migration 8: %+v", v)
	}
	s = cookie("https://a.example.com", "https://a.example.com")
	if err := s.Validate(); err != nil || !slices.Equal(s.AllowedOrigins, []string{"https://a.example.com"}) {
		t.Fatalf("repeated origins kept: %v (%v)", s.AllowedOrigins, err)
	}
}
