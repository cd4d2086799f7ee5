package token

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
)

// FuzzTokenForm feeds arbitrary form bodies and Basic credentials through
// the token endpoint's parsing: it must never panic, and every refusal must
// be a 4xx OAuth error.
func FuzzTokenForm(f *testing.F) {
	seeds := []string{
		"grant_type=password&username=a%40b.c&password=pw",
		"grant_type=refresh_token&refresh_token=pcrt_x",
		"grant_type=client_credentials&scope=a+b%20c",
		"grant_type=password&grant_type=password",
		"grant_type=%ff%fe&scope=%22",
		"client_id=web&client_secret=s&grant_type=client_credentials",
		"scope=" + string(make([]byte, 5000)),
		"=&&==&a",
	}
	for _, s := range seeds {
		f.Add(s, "web", "secret", true)
		f.Add(s, "", "", false)
	}
	f.Fuzz(func(t *testing.T, body, user, pass string, hasBasic bool) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return // the HTTP layer answers invalid_request for unparseable bodies
		}
		check := func(err error) {
			if err == nil {
				return
			}
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status >= 500 {
				t.Fatalf("refusal %v is not a 4xx OAuth error", err)
			}
		}
		params, err := ParseForm(form)
		check(err)
		if err != nil {
			return
		}
		cred, err := ClientFromRequest(user, pass, hasBasic, params)
		check(err)
		if err != nil {
			return
		}
		req, err := ParseTokenRequest(params, cred)
		check(err)
		if err == nil && req.GrantType == "" {
			t.Fatal("accepted a request without grant_type")
		}
	})
}

func TestRefreshTokenShape(t *testing.T) {
	sid := newSID()
	tok := newRefreshToken(sid)
	got, ok := parseRefreshToken(tok)
	if !ok || got != sid {
		t.Fatalf("round trip: %q %v", got, ok)
	}
	for _, bad := range []string{"", "pcrt_", tok + "x", tok[:len(tok)-1], "xxxx_" + tok[5:], tok[:5] + "!" + tok[6:]} {
		if _, ok := parseRefreshToken(bad); ok {
			t.Fatalf("accepted malformed refresh token %q", bad)
		}
	}
}

func TestJTICarriesMilliseconds(t *testing.T) {
	now := jtiNowForTest()
	j := newJTI(now)
	got, ok := jtiTime(j)
	if !ok || !got.Equal(now.Truncate(1e6)) {
		t.Fatalf("jti time %v, want %v", got, now.Truncate(1e6))
	}
	if _, ok := jtiTime("short"); ok {
		t.Fatal("parsed a foreign jti")
	}
}

func jtiNowForTest() time.Time { return time.Unix(1763780000, 123456789) }
