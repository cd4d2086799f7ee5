package upstream

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// flipLast changes the last character of s to the base64url letter whose
// index differs in bit, which for a low bit is an unused trailing bit.
func flipLast(s string, bit int) string {
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alpha, s[len(s)-1])
	return s[:len(s)-1] + string(alpha[i^bit])
}

// TestCanonicalJWS pins the spelling check of exchanged id tokens: only
// the canonical unpadded base64url spelling of each part passes, and
// the malleable spellings that go-jose's lenient decoder reads as the
// same token are refused.
func TestCanonicalJWS(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	header := enc([]byte(`{"alg":"RS256","kid":"k1"}`))             // 26 bytes: 4 free bits
	payload := enc([]byte(`{"iss":"https://op","sub":"s1","x":1}`)) // 37 bytes: 4 free bits
	sigBytes := bytes.Repeat([]byte{0xfb, 0xff, 0x3e}, 85)
	sigBytes = append(sigBytes, 0x01) // 256 bytes, like RS256: 4 free bits
	sig := enc(sigBytes)
	join := func(h, p, s string) string { return h + "." + p + "." + s }
	good := join(header, payload, sig)
	if !strings.ContainsAny(sig, "-_") {
		t.Fatal("the signature must spell '-' and '_' for the standard-alphabet case")
	}

	tests := []struct {
		name string
		raw  string
		// lenient: go-jose's decoder reads it as the good token, so the
		// case is a real second spelling, not merely a broken token.
		lenient bool
		ok      bool
	}{
		{name: "ok/canonical", raw: good, ok: true},
		{name: "ok/empty signature (refused later by verification)", raw: join(header, payload, ""), ok: true},
		{name: "fail/signature last character flipped", raw: join(header, payload, flipLast(sig, 1)), lenient: true},
		{name: "fail/signature last character flipped in its highest free bit", raw: join(header, payload, flipLast(sig, 8)), lenient: true},
		{name: "fail/payload last character flipped", raw: join(header, flipLast(payload, 1), sig), lenient: true},
		{name: "fail/header last character flipped", raw: join(flipLast(header, 2), payload, sig), lenient: true},
		{name: "fail/line break in the signature", raw: join(header, payload, sig[:10]+"\n"+sig[10:]), lenient: true},
		{name: "fail/carriage return in the payload", raw: join(header, payload[:5]+"\r"+payload[5:], sig)},
		{name: "fail/padding on the signature", raw: join(header, payload, sig+"==")},
		{name: "fail/padding on the header", raw: join(header+"==", payload, sig)},
		{name: "fail/standard alphabet", raw: join(header, payload, strings.NewReplacer("-", "+", "_", "/").Replace(sig))},
		{name: "fail/two parts", raw: header + "." + payload},
		{name: "fail/four parts", raw: good + "." + sig},
		{name: "fail/empty", raw: ""},
		{name: "fail/too long", raw: join(header, payload, strings.Repeat("A", maxIDTokenLen))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.lenient {
				p := strings.Split(tt.raw, ".")
				g := strings.Split(good, ".")
				for i := range p {
					a, errA := base64.RawURLEncoding.DecodeString(p[i])
					b, _ := base64.RawURLEncoding.DecodeString(g[i])
					if errA != nil || !bytes.Equal(a, b) {
						t.Fatalf("part %d is not a lenient respelling of the good token (%v)", i, errA)
					}
				}
				if tt.raw == good {
					t.Fatal("the case spells the good token")
				}
			}
			signed, err := canonicalJWS(tt.raw)
			if tt.ok {
				if err != nil {
					t.Fatalf("canonicalJWS: %v", err)
				}
				if want := tt.raw[:strings.LastIndexByte(tt.raw, '.')]; signed != want {
					t.Fatalf("signing input = %q, want %q", signed, want)
				}
				return
			}
			if err == nil {
				t.Fatalf("canonicalJWS accepted %q", tt.raw)
			}
		})
	}
}
