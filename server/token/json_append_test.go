package token

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
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
		{"client_credentials", Response{AccessToken: "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln", TokenType: "Bearer", ExpiresIn: 900, Scope: new("orders:read orders:write")}},
		{"every field", Response{AccessToken: "a", TokenType: "Bearer", ExpiresIn: 3600, RefreshToken: "prt_x.y", Scope: new("openid profile"),
			IDToken: "h.p.s", MustChangePassword: true, RecoveryCodesLeft: &five, IssuedTokenType: "urn:ietf:params:oauth:token-type:access_token"}},
		{"a scope granted empty is still said", Response{AccessToken: "a", Scope: new("")}},
		{"no recovery codes left is still said", Response{AccessToken: "a", RecoveryCodesLeft: &zero}},
		{"negative numbers", Response{ExpiresIn: -1, RecoveryCodesLeft: &negative}},
		{"extreme numbers", Response{ExpiresIn: math.MinInt64}},
		{"quotes and backslashes", Response{AccessToken: `a"b\c`, Scope: new(`"\`)}},
		{"HTML characters", Response{AccessToken: "<script>&</script>", TokenType: "a>b"}},
		{"control characters", Response{AccessToken: "a\nb\tc\x00d\x1f\x7f"}},
		{"non-ASCII", Response{Scope: new("é 日本 \u2028\u2029 😀")}},
		{"invalid UTF-8", Response{RefreshToken: "a\xffb\xc3"}},
		{"RefreshLifetime is never sent", Response{AccessToken: "a", RefreshLifetime: 5}},
		{"ClientID is never sent", Response{AccessToken: "a", ClientID: "spa"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, want := tt.r.AppendJSON(nil), encoderJSON(t, tt.r); !bytes.Equal(got, want) {
				t.Fatalf("AppendJSON:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestAccessClaimsAppendJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		c    AccessClaims
	}{
		{"empty: aud and roles null", AccessClaims{}},
		{"client_credentials", AccessClaims{Issuer: "https://auth.example", Subject: "svc", Audience: Audience{"https://api.example"},
			Expiry: 1700000900, IssuedAt: 1700000000, NotBefore: 1700000000, JTI: "j1", ClientID: "svc", Scope: "orders:read", Roles: []string{}}},
		{"a user's token, every field", AccessClaims{Issuer: "i", Subject: "u1", Audience: Audience{"a", "b"}, Expiry: 3, IssuedAt: 2,
			NotBefore: 1, JTI: "j", ClientID: "web", Scope: "openid admin:read", Roles: []string{"admin", "viewer"}, SID: "s1",
			AuthTime: 1, AMR: []string{"pwd", "otp"}, ACR: "mfa", Tenant: "acme"}},
		{"empty audience list", AccessClaims{Audience: Audience{}, Roles: []string{""}}},
		{"escapes", AccessClaims{Issuer: "<i>&", Subject: "a\"b", Audience: Audience{"\\"}, Scope: "é\u2028", Roles: []string{"\x00", "\xff"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want, err := json.Marshal(tt.c)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.c.AppendJSON(nil); !bytes.Equal(got, want) {
				t.Fatalf("AppendJSON:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// TestAppendJSONMatchesEncodingJSON fills every exported field of the two
// hand-encoded types with random values (or leaves it zero) and compares
// AppendJSON with encoding/json. Fields are found by reflection, so a field
// added to either type and not to its AppendJSON fails here.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		var r Response
		fillRandom(t, rng, reflect.ValueOf(&r).Elem())
		if got, want := r.AppendJSON(nil), encoderJSON(t, r); !bytes.Equal(got, want) {
			t.Fatalf("Response %#v:\n got %q\nwant %q", r, got, want)
		}
		var c AccessClaims
		fillRandom(t, rng, reflect.ValueOf(&c).Elem())
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("AccessClaims %#v:\n got %q\nwant %q", c, got, want)
		}
	}
}

// fillRandom sets each exported field of the struct v to a random value of
// its kind, or leaves it zero one time in three. A kind it does not know
// fails the test, so a new field's type is never skipped.
func fillRandom(t *testing.T, rng *rand.Rand, v reflect.Value) {
	t.Helper()
	str := func() string {
		b := make([]byte, rng.IntN(10))
		for i := range b {
			if rng.IntN(4) == 0 {
				b[i] = byte(rng.IntN(256))
			} else {
				b[i] = byte(0x20 + rng.IntN(0x5f))
			}
		}
		return string(b)
	}
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() || rng.IntN(3) == 0 {
			continue
		}
		switch {
		case f.Kind() == reflect.String:
			f.SetString(str())
		case f.Kind() == reflect.Int64 || f.Kind() == reflect.Int:
			f.SetInt(rng.Int64() - math.MaxInt64/2)
		case f.Kind() == reflect.Bool:
			f.SetBool(rng.IntN(2) == 0)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			s := reflect.MakeSlice(f.Type(), rng.IntN(4), 4)
			for j := range s.Len() {
				s.Index(j).SetString(str())
			}
			f.Set(s)
		case f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Int:
			n := rng.IntN(100) - 50
			f.Set(reflect.ValueOf(&n))
		case f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.String:
			v := str()
			if rng.IntN(2) == 0 {
				v = "" // sent empty (Response.Scope) half the time
			}
			f.Set(reflect.ValueOf(&v))
		default:
			t.Fatalf("fillRandom: field %s has a type (%s) it does not fill: teach it, and AppendJSON the field", sf.Name, f.Type())
		}
	}
}

// encoderJSON is what echo's c.JSON wrote for r: encoding/json's Encoder.
func encoderJSON(t *testing.T, r Response) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func BenchmarkAppendJSON(b *testing.B) {
	r := Response{AccessToken: string(bytes.Repeat([]byte("x"), 600)), TokenType: "Bearer", ExpiresIn: 900,
		RefreshToken: string(bytes.Repeat([]byte("y"), 90)), Scope: new("openid profile email")}
	c := AccessClaims{Issuer: "https://auth.example", Subject: "0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b", Audience: Audience{"https://api.example"},
		Expiry: 1700000900, IssuedAt: 1700000000, NotBefore: 1700000000, JTI: "0193a1b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b", ClientID: "bench-web",
		Scope: "openid profile orders:read", Roles: []string{"viewer"}, SID: "s_0123456789abcdef", AuthTime: 1700000000, AMR: []string{"pwd"}, ACR: "pwd"}
	buf := make([]byte, 0, 1024)
	b.Run("Response", func(b *testing.B) {
		for b.Loop() {
			buf = r.AppendJSON(buf[:0])
		}
	})
	b.Run("Response/encoding-json", func(b *testing.B) {
		var out bytes.Buffer
		enc := json.NewEncoder(&out)
		for b.Loop() {
			out.Reset()
			_ = enc.Encode(r)
		}
	})
	b.Run("AccessClaims", func(b *testing.B) {
		for b.Loop() {
			buf = c.AppendJSON(buf[:0])
		}
	})
	b.Run("AccessClaims/encoding-json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(c)
		}
	})
}
