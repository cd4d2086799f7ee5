package redirecturi

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		raw    string
		kind   Kind
		native bool
		ok     bool
	}{
		{"https://app.example.com/callback", Redirect, false, true},
		{"https://app.example.com/cb?tenant=a", Redirect, false, true},
		{"http://127.0.0.1/callback", Redirect, false, true},
		{"http://127.0.0.1:8765/callback", Redirect, true, true},
		{"http://[::1]:8765/callback", Redirect, true, true},
		{"com.example.app:/oauth2redirect", Redirect, true, true},
		{"com.example.app:/oauth2redirect", Redirect, false, false}, // private-use scheme on a web client
		{"myapp:/callback", Redirect, true, false},                  // no period (RFC 8252 §7.1)
		{"http://localhost:8080/cb", Redirect, true, false},         // host name, not an IP literal
		{"http://app.example.com/cb", Redirect, false, false},
		{"https://app.example.com/cb#frag", Redirect, false, false},
		{"https://app.example.com/cb#", Redirect, false, false},
		{"https://*.example.com/cb", Redirect, false, false},
		{"/callback", Redirect, false, false},
		{"app.example.com/callback", Redirect, false, false},
		{"javascript:alert(1)", Redirect, true, false},
		{"data:text/html,hi", Redirect, true, false},
		{"file:///etc/passwd", Redirect, true, false},
		{"HTTPS://app.example.com/cb", Redirect, false, false},
		{"https://user:pw@app.example.com/cb", Redirect, false, false},
		{"https:///cb", Redirect, false, false},
		{"", Redirect, false, false},
		{"https://app.example.com/a b", Redirect, false, false},
		{"https://app.example.com/logged-out", PostLogout, false, true},
		{"com.example.app:/bye", PostLogout, true, true},
		{"https://app.example.com/backchannel", BackchannelLogout, false, true},
		{"com.example.app:/bc", BackchannelLogout, true, false},
		{"http://127.0.0.1:9000/bc", BackchannelLogout, false, true},
	}
	for _, tc := range cases {
		t.Run(string(tc.kind)+" "+tc.raw, func(t *testing.T) {
			err := Validate(tc.raw, tc.kind, tc.native)
			if (err == nil) != tc.ok {
				t.Fatalf("Validate(%q, native=%v) = %v, want ok=%v", tc.raw, tc.native, err, tc.ok)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	registered := []string{"https://app.example.com/cb", "http://127.0.0.1/native", "http://[::1]:1234/v6", "com.example.app:/r"}
	cases := []struct {
		presented string
		want      string
	}{
		{"https://app.example.com/cb", "https://app.example.com/cb"},
		{"com.example.app:/r", "com.example.app:/r"},
		{"http://127.0.0.1:49152/native", "http://127.0.0.1/native"},
		{"http://127.0.0.1/native", "http://127.0.0.1/native"},
		{"http://[::1]:5555/v6", "http://[::1]:1234/v6"},
		{"https://app.example.com/cb/", ""},
		{"https://APP.example.com/cb", ""},
		{"https://app.example.com:443/cb", ""},
		{"https://app.example.com/cb?x=1", ""},
		{"https://app.example.com/%63b", ""},
		{"http://127.0.0.1:49152/native?x=1", ""},
		{"http://127.0.0.1:49152/other", ""},
		{"http://127.0.0.1:0/native", ""},
		{"http://127.0.0.1:99999/native", ""},
		{"http://localhost:49152/native", ""},
		{"https://127.0.0.1:49152/native", ""},
		{"http://127.0.0.2:49152/native", ""},
		{"", ""},
		// A fragment, even an empty one, never matches (RFC 6749 §3.1.2);
		// the scheme is compared as written (found by a review).
		{"http://127.0.0.1:1/native#", ""},
		{"http://127.0.0.1/native#", ""},
		{"http://127.0.0.1:5/native#x", ""},
		{"https://app.example.com/cb#", ""},
		{"com.example.app:/r#", ""},
		{"HTTP://127.0.0.1:5/native", ""},
		{"Http://127.0.0.1/native", ""},
		{"http://127.0.0.1:/native", ""},
		{"http://127.0.0.1:5:6/native", ""},
		{"http://x@127.0.0.1:5/native", ""},
		{"http://127.0.0.1:5/%6Eative", ""},
		{"http://[::1]/v6", "http://[::1]:1234/v6"},
		{"http://[0:0:0:0:0:0:0:1]:5555/v6", ""},
		{"http://[::1%25lo]:5555/v6", ""},
		{"http://[::1]:5555/v6#", ""},
	}
	for _, tc := range cases {
		t.Run(tc.presented, func(t *testing.T) {
			got, err := Match(registered, tc.presented)
			if tc.want == "" {
				if !errors.Is(err, ErrNoMatch) {
					t.Fatalf("Match(%q) = %q, %v; want no match", tc.presented, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Match(%q) = %q, %v; want %q", tc.presented, got, err, tc.want)
			}
		})
	}
}

func TestOrigin(t *testing.T) {
	for raw, want := range map[string]string{
		"https://app.example.com/cb?x=1": "https://app.example.com",
		"http://127.0.0.1:8765/cb":       "http://127.0.0.1:8765",
		"com.example.app:/r":             "",
		"::":                             "",
	} {
		if got := Origin(raw); got != want {
			t.Errorf("Origin(%q) = %q, want %q", raw, got, want)
		}
	}
}

// TestWithQuery: parameters are appended; a registered URI's own query is
// kept byte for byte (not re-encoded or reordered).
func TestWithQuery(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		q    url.Values
		want string
	}{
		{"https://a.example/cb", url.Values{"state": {"s 1"}}, "https://a.example/cb?state=s+1"},
		{"https://a.example/cb?z=1&a=%2F", url.Values{"state": {"x"}}, "https://a.example/cb?z=1&a=%2F&state=x"},
		{"https://a.example/cb?z=1", nil, "https://a.example/cb?z=1"},
	} {
		if got := WithQuery(tc.uri, tc.q); got != tc.want {
			t.Errorf("WithQuery(%q, %v) = %q, want %q", tc.uri, tc.q, got, tc.want)
		}
	}
}

// FuzzMatch: a redirect URI from the authorization request matches a
// registered one only when it is that string, or when both are http
// loopback IP literals that differ in the port alone (RFC 8252 §7.3): the
// same host, path and query as written, no user information, a valid
// port, and never a fragment, not even an empty one.
func FuzzMatch(f *testing.F) {
	f.Add("http://127.0.0.1/cb", "http://127.0.0.1:8080/cb")
	f.Add("http://[::1]/cb?x=1", "http://[::1]:51004/cb?x=1")
	f.Add("http://127.0.0.1/cb", "http://x@127.0.0.1:9/cb")
	f.Add("https://app.example/cb", "https://app.example/cb")
	f.Add("http://127.0.0.1/cb", "http://127.0.0.1:80@evil.example/cb")
	f.Add("http://127.0.0.1/cb", "http://127.0.0.1:5/cb#")
	f.Add("http://127.0.0.1/cb", "HTTP://127.0.0.1:5/cb")
	f.Add("http://127.0.0.1:A", "http://127.0.0.1")
	f.Fuzz(func(t *testing.T, registered, presented string) {
		got, err := Match([]string{registered}, presented)
		if err != nil {
			return
		}
		if got != registered {
			t.Fatalf("Match returned %q, not the registered %q", got, registered)
		}
		if strings.Contains(presented, "#") {
			t.Fatalf("%q, with a fragment, matched %q", presented, registered)
		}
		if presented == registered {
			return
		}
		if !strings.HasPrefix(presented, "http://") || !strings.HasPrefix(registered, "http://") {
			t.Fatalf("%q matched %q, not both http:// as written", presented, registered)
		}
		r, err1 := url.Parse(registered)
		p, err2 := url.Parse(presented)
		if err1 != nil || err2 != nil {
			t.Fatalf("%q matched %q, which do not both parse", presented, registered)
		}
		same := r.Scheme == "http" && p.Scheme == "http" && IsLoopbackIP(p.Hostname()) && r.Hostname() == p.Hostname() &&
			p.User == nil && r.User == nil && r.EscapedPath() == p.EscapedPath() && r.RawQuery == p.RawQuery &&
			r.Fragment == p.Fragment && r.Opaque == "" && p.Opaque == "" && validPort(p.Port())
		if !same {
			t.Fatalf("%q matched the registered %q", presented, registered)
		}
	})
}

func TestValidateOrganisationBackchannel(t *testing.T) {
	for _, tc := range []struct {
		raw string
		ok  bool
	}{
		{"https://rp.example.com/backchannel-logout", true},
		{"https://localhost.example.com/bcl", true}, // a name that merely starts with localhost
		{"https://rp.example.com:8443/bcl", true},
		{"http://127.0.0.1:6379/", false},
		{"http://[::1]:9090/x", false},
		{"https://169.254.169.254/latest/api/token", false},
		{"https://10.0.0.5/x", false},
		{"https://[fe80::1%25eth0]/x", false},
		{"https://93.184.216.34/bcl", false},
		{"https://localhost/bcl", false},
		{"https://localhost./bcl", false},
		{"https://LocalHost/bcl", false},
		{"https://app.localhost/bcl", false},
	} {
		if err := ValidateOrganisationBackchannel(tc.raw); (err == nil) != tc.ok {
			t.Errorf("ValidateOrganisationBackchannel(%q) = %v, want ok %v", tc.raw, err, tc.ok)
		}
	}
}
