package keys_test

import (
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzVerify feeds arbitrary compact JWS strings (and mutations of a real
// token) to Verify: it must never panic and never accept anything but the
// exact tokens the Manager signed.
func FuzzVerify(f *testing.F) {
	clk := newClock()
	m := initManager(f, openStore(f, "sqlite"), ring(f, kek(f)), "EdDSA", clk)
	good, err := m.Sign(map[string]any{"sub": "usr_1", "scope": "a b"}, "at+jwt")
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(good, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	f.Add(good)
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(b64([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + parts[1] + ".")
	f.Add(b64([]byte(`{"alg":"HS256","kid":"x"}`)) + "." + parts[1] + "." + parts[2])
	f.Add(b64([]byte(`{"alg":"EdDSA","kid":"../../etc/passwd"}`)) + "." + parts[1] + "." + parts[2])
	f.Add(b64([]byte(`{"alg":"EdDSA","jku":"http://evil/","jwk":{}}`)) + "." + parts[1] + "." + parts[2])
	f.Add("a.b.c")
	f.Add("....")
	f.Fuzz(func(t *testing.T, token string) {
		payload, _, err := m.Verify(token)
		if err == nil && token != good {
			t.Fatalf("accepted a token the manager did not sign: %q (payload %q)", token, payload)
		}
	})
}
