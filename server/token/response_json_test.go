package token

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

func TestResponseAppendJSON(t *testing.T) {
	t.Parallel()
	zero, five, negative := 0, 5, -3
	tests := []struct {
		name string
		r    Response
	}{
		{"empty", Response{}},
		{"client_credentials", Response{AccessToken: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln", TokenType: "Bearer", ExpiresIn: 900, Scope: "orders:read orders:write"}},
		{"every field", Response{AccessToken: "a", TokenType: "Bearer", ExpiresIn: 3600, RefreshToken: "prt_x.y", Scope: "openid profile",
			IDToken: "h.p.s", MustChangePassword: true, RecoveryCodesLeft: &five, IssuedTokenType: "urn:ietf:params:oauth:token-type:access_token"}},
		{"no recovery codes left is still said", Response{AccessToken: "a", RecoveryCodesLeft: &zero}},
		{"negative numbers", Response{ExpiresIn: -1, RecoveryCodesLeft: &negative}},
		{"extreme numbers", Response{ExpiresIn: math.MinInt64}},
		{"quotes and backslashes", Response{AccessToken: `a"b\c`, Scope: `"\`}},
		{"HTML characters", Response{AccessToken: "<script>&</script>", TokenType: "a>b"}},
		{"control characters", Response{AccessToken: "a\nb\tc\x00d\x1f\x7f"}},
		{"non-ASCII", Response{Scope: "é 日本 \u2028\u2029 😀"}},
		{"invalid UTF-8", Response{RefreshToken: "a\xffb\xc3"}},
		{"RefreshLifetime is never sent", Response{AccessToken: "a", RefreshLifetime: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, want := tt.r.AppendJSON(nil), encodingJSON(t, tt.r); !bytes.Equal(got, want) {
				t.Fatalf("AppendJSON:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestResponseAppendJSONRandom compares AppendJSON with encoding/json on
// random strings of every byte value.
func TestResponseAppendJSONRandom(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	str := func() string {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			if rng.IntN(4) == 0 {
				b[i] = byte(rng.IntN(256))
			} else {
				b[i] = byte(0x20 + rng.IntN(0x5f))
			}
		}
		return string(b)
	}
	for range 5000 {
		n := rng.IntN(100) - 50
		r := Response{AccessToken: str(), TokenType: str(), ExpiresIn: rng.Int64() - math.MaxInt64/2, RefreshToken: str(),
			Scope: str(), IDToken: str(), MustChangePassword: rng.IntN(2) == 0, IssuedTokenType: str()}
		if rng.IntN(2) == 0 {
			r.RecoveryCodesLeft = &n
		}
		if got, want := r.AppendJSON(nil), encodingJSON(t, r); !bytes.Equal(got, want) {
			t.Fatalf("AppendJSON(%#v):\n got %q\nwant %q", r, got, want)
		}
	}
}

// encodingJSON is what echo's c.JSON wrote for r: encoding/json's Encoder.
func encodingJSON(t *testing.T, r Response) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func BenchmarkResponseJSON(b *testing.B) {
	r := Response{AccessToken: string(bytes.Repeat([]byte("x"), 600)), TokenType: "Bearer", ExpiresIn: 900,
		RefreshToken: string(bytes.Repeat([]byte("y"), 90)), Scope: "openid profile email"}
	b.Run("AppendJSON", func(b *testing.B) {
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = r.AppendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			_ = enc.Encode(r)
		}
	})
}
