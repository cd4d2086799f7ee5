package rtcookie_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	"github.com/portcullis-auth/portcullis/store"
)

// TestGuard: only an allowed Origin with X-Portcullis-CSRF: 1 and no
// cross-site fetch metadata passes; every refusal is 403 invalid_request.
func TestGuard(t *testing.T) {
	t.Parallel()
	client := store.Client{ID: "spa", RefreshTokenDelivery: store.RefreshDeliveryCookie, AllowedOrigins: []string{"https://app.example.com"}}
	tests := []struct {
		name    string
		headers [][2]string
		ok      bool
	}{
		{"allowed", [][2]string{{"Origin", "https://app.example.com"}, {rtcookie.CSRFHeader, "1"}}, true},
		{"allowed same-site", [][2]string{{"Origin", "https://app.example.com"}, {rtcookie.CSRFHeader, "1"}, {"Sec-Fetch-Site", "same-site"}}, true},
		{"allowed same-origin", [][2]string{{"Origin", "https://app.example.com"}, {rtcookie.CSRFHeader, "1"}, {"Sec-Fetch-Site", "same-origin"}}, true},
		{"no Origin", [][2]string{{rtcookie.CSRFHeader, "1"}}, false},
		{"empty Origin", [][2]string{{"Origin", ""}, {rtcookie.CSRFHeader, "1"}}, false},
		{"two Origins", [][2]string{{"Origin", "https://app.example.com"}, {"Origin", "https://evil.example"}, {rtcookie.CSRFHeader, "1"}}, false},
		{"foreign Origin", [][2]string{{"Origin", "https://evil.example"}, {rtcookie.CSRFHeader, "1"}}, false},
		{"null Origin", [][2]string{{"Origin", "null"}, {rtcookie.CSRFHeader, "1"}}, false},
		{"case", [][2]string{{"Origin", "https://APP.example.com"}, {rtcookie.CSRFHeader, "1"}}, false},
		{"no header", [][2]string{{"Origin", "https://app.example.com"}}, false},
		{"header 0", [][2]string{{"Origin", "https://app.example.com"}, {rtcookie.CSRFHeader, "0"}}, false},
		{"cross-site", [][2]string{{"Origin", "https://app.example.com"}, {rtcookie.CSRFHeader, "1"}, {"Sec-Fetch-Site", "cross-site"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/oauth2/token", nil)
			for _, h := range tc.headers {
				r.Header.Add(h[0], h[1])
			}
			err := rtcookie.Guard(r, client)
			var ae *apierr.Error
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && (!errors.As(err, &ae) || ae.Status != 403 || ae.Code != "invalid_request"):
				t.Fatalf("got %v, want 403 invalid_request", err)
			}
		})
	}
}

type countingLister struct {
	clients []store.Client
	reads   int
}

func (l *countingLister) ListClients(context.Context) ([]store.Client, error) {
	l.reads++
	return l.clients, nil
}

// TestOrigins: the set holds only cookie clients' origins; a known origin
// is answered from memory until the TTL, an unknown one reads the clients
// again at most once per MissReload, so a new client's origin is allowed
// within it.
func TestOrigins(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	l := &countingLister{clients: []store.Client{
		{ID: "spa", RefreshTokenDelivery: store.RefreshDeliveryCookie, AllowedOrigins: []string{"https://app.example.com"}},
		{ID: "web", AllowedOrigins: []string{"https://body.example.com"}},
	}}
	o := rtcookie.NewOrigins(l, 10*time.Second, func() time.Time { return now })
	ctx := context.Background()
	check := func(origin string, want bool, reads int) {
		t.Helper()
		got, err := o.Allowed(ctx, origin)
		if err != nil || got != want || l.reads != reads {
			t.Fatalf("Allowed(%s) = %v, %v after %d reads; want %v after %d", origin, got, err, l.reads, want, reads)
		}
	}
	check("https://app.example.com", true, 1)
	check("https://app.example.com", true, 1)
	check("https://body.example.com", false, 1) // not a cookie client; within MissReload: no read
	check("https://evil.example", false, 1)
	l.clients = append(l.clients, store.Client{ID: "new", RefreshTokenDelivery: store.RefreshDeliveryCookie, AllowedOrigins: []string{"https://new.example.com"}})
	check("https://new.example.com", false, 1)
	now = now.Add(rtcookie.MissReload)
	check("https://new.example.com", true, 2)
	check("https://evil.example", false, 2)
	now = now.Add(10 * time.Second)
	l.clients = l.clients[1:] // spa deleted
	check("https://app.example.com", false, 3)
}

// TestSameSite: the deployment rule's check (a start-up warning when an
// allowed origin is another site than the issuer).
func TestSameSite(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		origin, issuer string
		want           bool
	}{
		{"https://app.example.com", "https://auth.example.com", true},
		{"https://example.com", "https://auth.example.com", true},
		{"https://app.example.com:8443", "https://auth.example.com/base", true},
		{"https://app.example.com", "https://auth.example.org", false},
		{"https://app.github.io", "https://auth.github.io", false}, // a public suffix: different sites
		{"http://app.example.com", "https://auth.example.com", false},
		{"http://localhost:5173", "http://127.0.0.1:8080", true},
		{"https://app.test", "https://auth.app.test", true},
		{"https://evil.test", "https://auth.app.test", false},
	} {
		if got := rtcookie.SameSite(tc.origin, tc.issuer); got != tc.want {
			t.Errorf("SameSite(%s, %s) = %v, want %v", tc.origin, tc.issuer, got, tc.want)
		}
	}
}
