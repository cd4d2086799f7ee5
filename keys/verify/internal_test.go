package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/json"
	"math/big"
	"net/http"
	"slices"
	"testing"
	"time"
)

// TestRawToDER: the hand-written DER encoding equals encoding/asn1's for
// every curve size, including values with leading zeros and the high bit set.
func TestRawToDER(t *testing.T) {
	for _, size := range []int{32, 48, 66} {
		cases := [][]byte{}
		for i := 0; i < 200; i++ {
			b := make([]byte, 2*size)
			_, _ = rand.Read(b)
			switch i % 5 {
			case 1:
				b[0], b[size] = 0x80, 0xff // high bit set: a padding zero is needed
			case 2:
				b[0], b[1], b[size] = 0, 0, 0 // leading zeros are dropped
			case 3:
				for j := 0; j < size-1; j++ {
					b[j] = 0 // a one-byte integer
				}
			case 4:
				for j := range b {
					b[j] = 0xff
				}
			}
			cases = append(cases, b)
		}
		for _, sig := range cases {
			want, err := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])})
			if err != nil {
				t.Fatal(err)
			}
			got, ok := rawToDER(sig, size)
			if !ok || string(got) != string(want) {
				t.Fatalf("size %d, sig %x:\n got %x\nwant %x", size, sig, got, want)
			}
		}
	}
	// And a real signature verifies through it.
	k, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	h := sha512.Sum512([]byte("x"))
	r, s, _ := ecdsa.Sign(rand.Reader, k, h[:])
	sig := make([]byte, 132)
	r.FillBytes(sig[:66])
	s.FillBytes(sig[66:])
	key := &Key{kid: "k", spec: algSpecs["ES512"], ec: &k.PublicKey}
	if !key.verifySignature([]byte("x"), sig) {
		t.Fatal("P-521 signature refused")
	}
}

func TestPlainString(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"ok/plain", `"api"`, true},
		{"ok/empty", `""`, true},
		{"fail/escape", `"a\"b"`, false},
		{"fail/unicode", `"é"`, false},
		{"fail/not a string", `7`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := plainString([]byte(tc.in))
			if ok != tc.ok {
				t.Fatalf("ok %v", ok)
			}
			if ok {
				var want string
				_ = json.Unmarshal([]byte(tc.in), &want)
				if got != want {
					t.Fatalf("%q != %q", got, want)
				}
			}
		})
	}
	for _, in := range []string{`"a\"b"`, `"é"`, `["x","y"]`} {
		var a audience
		if err := a.UnmarshalJSON([]byte(in)); err != nil || len(a.list) == 0 {
			t.Fatalf("%s: %v", in, err)
		}
	}
}

func TestCacheMaxAge(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
		found  bool
	}{
		{"ok/max-age", http.Header{"Cache-Control": {"public, max-age=300"}}, 300 * time.Second, true},
		{"ok/upper case and spaces", http.Header{"Cache-Control": {"Public,  MAX-AGE=60 "}}, 60 * time.Second, true},
		{"ok/quoted", http.Header{"Cache-Control": {`max-age="5"`}}, 5 * time.Second, true},
		{"ok/less Age", http.Header{"Cache-Control": {"max-age=300"}, "Age": {"100"}}, 200 * time.Second, true},
		{"ok/Age beyond max-age", http.Header{"Cache-Control": {"max-age=300"}, "Age": {"400"}}, 0, true},
		{"ok/no-store", http.Header{"Cache-Control": {"no-store, max-age=300"}}, 0, true},
		{"ok/no-cache", http.Header{"Cache-Control": {"no-cache"}}, 0, true},
		{"ok/several headers", http.Header{"Cache-Control": {"public", "max-age=7"}}, 7 * time.Second, true},
		{"fail/absent", http.Header{}, 0, false},
		{"fail/garbage", http.Header{"Cache-Control": {"max-age=soon"}}, 0, false},
		{"fail/negative", http.Header{"Cache-Control": {"max-age=-5"}}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, found := cacheMaxAge(tc.header)
			if got != tc.want || found != tc.found {
				t.Fatalf("cacheMaxAge = %s %v, want %s %v", got, found, tc.want, tc.found)
			}
		})
	}
}

// TestHeaderCacheBounded: headers of verified tokens are cached, at most
// maxCachedHeaders, and never the header of a token that failed.
func TestHeaderCacheBounded(t *testing.T) {
	v := &Verifier{}
	v.jws.headers.Store(&map[string]jwsHeader{})
	for i := 0; i < 3*maxCachedHeaders; i++ {
		v.jws.rememberHeader(string(rune('a'+i%26))+string(rune('a'+i/26)), jwsHeader{Alg: "ES256"})
		if n := len(*v.jws.headers.Load()); n > maxCachedHeaders {
			t.Fatalf("%d cached headers", n)
		}
	}
	v.jws.rememberHeader(string(make([]byte, maxCachedHeaderLen+1)), jwsHeader{})
	if _, ok := (*v.jws.headers.Load())[string(make([]byte, maxCachedHeaderLen+1))]; ok {
		t.Fatal("an oversized header was cached")
	}
}

// scanSeeds are payloads for FuzzScanClaims: typical tokens and the corners
// where a hand-written parser could differ from encoding/json.
var scanSeeds = []string{
	`{"iss":"http://127.0.0.1:8080","sub":"usr_1","aud":"api","exp":1900000000,"iat":1899999100,"nbf":1899999100,"jti":"AaIBX91zMBVUc81M8_qtZA","client_id":"web","scope":"projects:read projects:write","roles":["admin"],"sid":"s1","auth_time":1899999100,"amr":["pwd","otp","mfa"],"acr":"mfa"}`,
	`{"aud":["a","b"],"roles":[],"exp":1.5,"iat":0}`,
	` { "iss" : "x" , "aud" : [ "a" ] } `,
	`{}`,
	`{"iss":"a\"b"}`,
	`{"iss":"é"}`,
	`{"ISS":"x","iss":"y"}`,
	`{"Iss":"x"}`,
	`{"iss":null}`,
	`{"exp":null}`,
	`{"exp":"1"}`,
	`{"exp":1e3,"iat":-0,"nbf":01}`,
	`{"exp":1.}`,
	`{"x":{"y":[1,true,false,null,"s",{"z":-1.5e-3}]},"iss":"i"}`,
	`{"x":"\u0041"}`,
	`{"x":"\ud800"}`,
	`{"x":"` + "\xff\xfe" + `"}`,
	`{"iss":"a","iss":"b"}`,
	`{"aud":"a","aud":["b","c"]}`,
	`{"roles":["a"],"roles":["b"]}`,
	`{"iss":"a",}`,
	`{"iss":"a"} x`,
	`{"iss" "a"}`,
	`[]`,
	`{"x":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}`,
	`{"x":tru}`,
	`{"aud":[1]}`,
	`{"roles":"admin"}`,
	`{"amr":"pwd"}`,
	`{"amr":["pwd"],"AMR":["mfa"]}`,
	`{"acr":["mfa"]}`,
	`{"ACR":"mfa"}`,
}

// FuzzScanClaims: whenever the fast path accepts a payload, encoding/json
// accepts it too and yields the same claims.
func FuzzScanClaims(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var fast wireClaims
		if !scanClaims(p, &fast) {
			return
		}
		var slow wireClaims
		if err := json.Unmarshal(p, &slow); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", p, err)
		}
		if fast.Iss != slow.Iss || fast.Sub != slow.Sub || fast.Jti != slow.Jti || fast.ClientID != slow.ClientID ||
			fast.Scope != slow.Scope || fast.Sid != slow.Sid || fast.Aud.set != slow.Aud.set || !slices.Equal(fast.Aud.list, slow.Aud.list) ||
			!slices.Equal(fast.Roles, slow.Roles) || (fast.Roles == nil) != (slow.Roles == nil) ||
			!slices.Equal(fast.AMR, slow.AMR) || (fast.AMR == nil) != (slow.AMR == nil) || fast.ACR != slow.ACR ||
			fast.Tenant != slow.Tenant {
			t.Fatalf("%q:\nfast %+v\nslow %+v", p, fast, slow)
		}
		for _, d := range [][2]numericDate{{fast.Exp, slow.Exp}, {fast.Iat, slow.Iat}, {fast.Nbf, slow.Nbf}} {
			if d[0].set != d[1].set || !d[0].t.Equal(d[1].t) {
				t.Fatalf("%q: dates differ: %+v %+v", p, d[0], d[1])
			}
		}
	})
}

// TestScanClaimsCoversTypicalTokens: the fast path takes a Portcullis
// token's claims (otherwise it would only cost time).
func TestScanClaimsCoversTypicalTokens(t *testing.T) {
	for _, s := range scanSeeds[:4] {
		var w wireClaims
		if !scanClaims([]byte(s), &w) {
			t.Fatalf("fast path refused %s", s)
		}
	}
	var w wireClaims
	if !scanClaims([]byte(scanSeeds[0]), &w) || w.Iss != "http://127.0.0.1:8080" || w.Aud.list[0] != "api" || w.Roles[0] != "admin" ||
		w.Exp.t.Unix() != 1900000000 || !w.Nbf.set || w.Scope != "projects:read projects:write" ||
		!slices.Equal(w.AMR, []string{"pwd", "otp", "mfa"}) || w.ACR != "mfa" {
		t.Fatalf("%+v", w)
	}
}
