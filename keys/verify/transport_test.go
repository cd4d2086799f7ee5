package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

// TestPlainHTTPOnlyOnLoopback: every constructor that takes a URL to fetch
// (the key set's Issuer and JWKSURL, the introspector's Endpoint and Issuer)
// accepts https:// anywhere and http:// only on 127.0.0.0/8, ::1 and
// localhost; any other http:// URL is refused at construction with
// ErrInsecureURL, before any network call.
func TestPlainHTTPOnlyOnLoopback(t *testing.T) {
	urls := []struct {
		name   string
		url    string
		wantOK bool
	}{
		{"ok/https remote", "https://auth.example.com", true},
		{"ok/https remote IP", "https://192.0.2.10:8443", true},
		{"ok/http 127.0.0.1", "http://127.0.0.1:8080", true},
		{"ok/http 127.5.6.7", "http://127.5.6.7", true},
		{"ok/http ::1", "http://[::1]:8080", true},
		{"ok/http localhost", "http://localhost:8080", true},
		{"ok/http LOCALHOST", "http://LOCALHOST:8080", true},
		{"fail/http remote name", "http://auth.example.com", false},
		{"fail/http private IP", "http://10.0.0.7:8080", false},
		{"fail/http documentation IP", "http://192.0.2.10", false},
		{"fail/http unspecified 0.0.0.0", "http://0.0.0.0:8080", false},
		{"fail/http unspecified ::", "http://[::]:8080", false},
		{"fail/http link-local IPv6 with zone", "http://[fe80::1%25lo]:8080", false},
		{"fail/http name under localhost's domain", "http://localhost.example.com", false},
		{"fail/http name that resolves to loopback", "http://127.0.0.1.nip.io", false},
		{"fail/http shortened IPv4", "http://127.1:8080", false},
	}
	constructors := []struct {
		name string
		make func(u string) error
	}{
		{"RemoteKeySet.Issuer", func(u string) error {
			ks, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{Issuer: u, HTTPClient: noNetwork(t)})
			if err == nil {
				ks.Close()
			}
			return err
		}},
		{"RemoteKeySet.JWKSURL", func(u string) error {
			ks, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{JWKSURL: u + "/jwks", HTTPClient: noNetwork(t)})
			if err == nil {
				ks.Close()
			}
			return err
		}},
		{"Introspector.Endpoint", func(u string) error {
			_, err := verify.NewIntrospector(verify.IntrospectorOptions{Endpoint: u + "/oauth2/introspect", ClientID: "rs", ClientSecret: "s"})
			return err
		}},
		{"Introspector.Issuer", func(u string) error {
			_, err := verify.NewIntrospector(verify.IntrospectorOptions{Issuer: u, ClientID: "rs", ClientSecret: "s"})
			return err
		}},
	}
	for _, c := range constructors {
		for _, tc := range urls {
			t.Run(c.name+"/"+tc.name, func(t *testing.T) {
				err := c.make(tc.url)
				if tc.wantOK {
					if err != nil {
						t.Fatalf("refused %s: %v", tc.url, err)
					}
					return
				}
				if !errors.Is(err, verify.ErrInsecureURL) {
					t.Fatalf("err = %v, want ErrInsecureURL", err)
				}
			})
		}
	}
}

// noNetwork is an HTTP client for key sets built only to test their
// options: their background fetch fails at once without touching the network.
func noNetwork(t *testing.T) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return nil, errors.New("no network in this test")
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestDiscoveredPlainHTTPRefused: an issuer reached over loopback whose
// discovery document points the JWKS or the introspection endpoint at a
// plain http:// remote host is refused (the keys would travel in clear).
func TestDiscoveredPlainHTTPRefused(t *testing.T) {
	for _, field := range []string{"jwks_uri", "introspection_endpoint"} {
		t.Run("fail/"+field, func(t *testing.T) {
			var issuer string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				md := map[string]string{"issuer": issuer, "jwks_uri": issuer + "/jwks", field: "http://auth.example.com/x"}
				_ = json.NewEncoder(w).Encode(md)
			}))
			t.Cleanup(srv.Close)
			issuer = srv.URL
			if _, err := verify.Discover(context.Background(), nil, issuer); !errors.Is(err, verify.ErrInsecureURL) {
				t.Fatalf("err = %v, want ErrInsecureURL", err)
			}
		})
	}
}

// TestRedirectToPlainHTTPRefused: a JWKS URL on loopback that redirects to a
// plain http:// remote host is not followed; the remote host is never asked.
func TestRedirectToPlainHTTPRefused(t *testing.T) {
	srv := httptest.NewServer(http.RedirectHandler("http://auth.example.com/jwks", http.StatusFound))
	t.Cleanup(srv.Close)
	ks, err := verify.NewRemoteKeySet(verify.RemoteKeySetOptions{JWKSURL: srv.URL + "/jwks"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ks.Close)
	if err := ks.Refresh(context.Background()); !errors.Is(err, verify.ErrInsecureURL) {
		t.Fatalf("Refresh err = %v, want ErrInsecureURL", err)
	}
}
