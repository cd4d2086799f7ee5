package keys

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// testKEK returns a random 32-byte key-encryption key in base64.
func testKEK(t testing.TB) string {
	t.Helper()
	s, err := GenerateKEK()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testRing returns a ring of n fresh random keys.
func testRing(t testing.TB, n int) KEKRing {
	t.Helper()
	parts := make([]string, n)
	for i := range parts {
		parts[i] = testKEK(t)
	}
	ring, err := ParseKEKs(strings.Join(parts, ","))
	if err != nil {
		t.Fatal(err)
	}
	return ring
}

func TestParseKEKs(t *testing.T) {
	k1, k2 := testKEK(t), testKEK(t)
	raw1, _ := base64.StdEncoding.DecodeString(k1)
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	tests := []struct {
		name    string
		in      string
		wantLen int
		wantErr string
	}{
		{name: "ok/one", in: k1, wantLen: 1},
		{name: "ok/two-with-spaces", in: " " + k1 + " , " + k2 + " ", wantLen: 2},
		{name: "ok/url-safe-unpadded", in: base64.RawURLEncoding.EncodeToString(raw1), wantLen: 1},
		{name: "fail/empty", in: "  ", wantErr: "is empty: expected the base64 of 32 random bytes"},
		{name: "fail/not-base64", in: "not*base64*at*all!", wantErr: "is not valid base64"},
		{name: "fail/16-bytes", in: short, wantErr: "decodes to 16 bytes, not 32"},
		{name: "fail/empty-entry", in: k1 + ",,", wantErr: "entry 2 of 3 is empty"},
		{name: "fail/second-bad", in: k1 + "," + short, wantErr: "entry 2 of 2 decodes to 16 bytes"},
		{name: "fail/repeated", in: k1 + "," + k2 + "," + k1, wantErr: "key 3 repeats key 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring, err := ParseKEKs(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				for _, part := range strings.Split(tt.in, ",") {
					if p := strings.TrimSpace(part); len(p) > 3 && strings.Contains(err.Error(), p) {
						t.Fatalf("error %q echoes the key material", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ring.Len() != tt.wantLen {
				t.Fatalf("Len = %d, want %d", ring.Len(), tt.wantLen)
			}
			for _, f := range []string{"%v", "%+v", "%#v"} {
				if s := fmt.Sprintf(f, ring); strings.Contains(s, k1) || !strings.Contains(s, "KEKRing(") {
					t.Fatalf("formatting a ring with %s gave %q", f, s)
				}
			}
		})
	}
}

func TestKEKRingSealOpen(t *testing.T) {
	k1, k2, k3 := testKEK(t), testKEK(t), testKEK(t)
	mustRing := func(s string) KEKRing {
		r, err := ParseKEKs(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	oldRing := mustRing(k2)            // before the operator rotated the KEK
	newRing := mustRing(k1 + "," + k2) // the new key first, the old one still listed
	onlyNew := mustRing(k1)
	foreign := mustRing(k3)
	plain := []byte("private key bytes")
	aad := []byte("record-1")

	sealedOld, err := oldRing.Seal(plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	sealedNew, err := newRing.Seal(plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 1
		return c
	}
	tests := []struct {
		name    string
		ring    KEKRing
		sealed  []byte
		aad     []byte
		wantErr string
	}{
		{name: "ok/same-ring", ring: newRing, sealed: sealedNew, aad: aad},
		{name: "ok/second-key-decrypts", ring: newRing, sealed: sealedOld, aad: aad},
		{name: "ok/new-key-alone", ring: onlyNew, sealed: sealedNew, aad: aad},
		{name: "fail/old-key-removed", ring: onlyNew, sealed: sealedOld, aad: aad, wantErr: "not configured"},
		{name: "fail/foreign-kek", ring: foreign, sealed: sealedNew, aad: aad, wantErr: "not configured"},
		{name: "fail/other-aad", ring: newRing, sealed: sealedNew, aad: []byte("record-2"), wantErr: "altered"},
		{name: "fail/tampered-ciphertext", ring: newRing, sealed: flip(sealedNew, len(sealedNew)-1), aad: aad, wantErr: "altered"},
		{name: "fail/tampered-nonce", ring: newRing, sealed: flip(sealedNew, headerLen), aad: aad, wantErr: "altered"},
		{name: "fail/tampered-kek-id", ring: newRing, sealed: flip(sealedNew, 1), aad: aad, wantErr: "not configured"},
		{name: "fail/unknown-version", ring: newRing, sealed: flip(sealedNew, 0), aad: aad, wantErr: "unknown sealed format"},
		{name: "fail/truncated", ring: newRing, sealed: sealedNew[:minSealedLen-1], aad: aad, wantErr: "unknown sealed format"},
		{name: "fail/empty-ring", ring: KEKRing{}, sealed: sealedNew, aad: aad, wantErr: "no key-encryption key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.ring.Open(tt.sealed, tt.aad)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open error = %v, want %q", err, tt.wantErr)
				}
				if tt.ring.Len() > 0 && !errors.Is(err, ErrDecrypt) {
					t.Fatalf("Open error %v is not ErrDecrypt", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("Open = %q", got)
			}
		})
	}

	t.Run("ok/first-key-seals", func(t *testing.T) {
		if !newRing.sealedWithPrimary(sealedNew) || newRing.sealedWithPrimary(sealedOld) || !oldRing.sealedWithPrimary(sealedOld) {
			t.Fatal("sealedWithPrimary does not follow the first key")
		}
	})
	t.Run("ok/fresh-nonce-each-time", func(t *testing.T) {
		again, err := newRing.Seal(plain, aad)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(again, sealedNew) {
			t.Fatal("two seals of the same plaintext are identical")
		}
		if bytes.Contains(again, plain) {
			t.Fatal("sealed data contains the plaintext")
		}
	})
	t.Run("fail/seal-empty-ring", func(t *testing.T) {
		if _, err := (KEKRing{}).Seal(plain, aad); err == nil {
			t.Fatal("the zero ring sealed")
		}
	})
}

func TestNewKEKRing(t *testing.T) {
	good := make([]byte, KEKSize)
	if _, err := rand.Read(good); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		keys    [][]byte
		wantErr string
	}{
		{name: "ok/one", keys: [][]byte{good}},
		{name: "fail/none", wantErr: "no key-encryption key"},
		{name: "fail/short", keys: [][]byte{good[:31]}, wantErr: "has 31 bytes, not 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewKEKRing(tt.keys...)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestKEKRingReseal(t *testing.T) {
	k1, k2, k3 := testKEK(t), testKEK(t), testKEK(t)
	mustRing := func(s string) KEKRing {
		r, err := ParseKEKs(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	oldRing, newRing, foreign := mustRing(k2), mustRing(k1+","+k2), mustRing(k3)
	plain, aad := []byte("totp seed"), []byte("portcullis/mfa/totp:u1")
	seal := func(r KEKRing) []byte {
		b, err := r.Seal(plain, aad)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sealedOld, sealedNew, sealedForeign := seal(oldRing), seal(newRing), seal(foreign)
	tests := []struct {
		name    string
		sealed  []byte
		aad     []byte
		wantNil bool
		wantErr string
	}{
		{name: "ok/old_key_resealed_under_the_first", sealed: sealedOld, aad: aad},
		{name: "ok/first_key_left_alone", sealed: sealedNew, aad: aad, wantNil: true},
		{name: "fail/unconfigured_key", sealed: sealedForeign, aad: aad, wantErr: "not configured"},
		{name: "fail/other_aad", sealed: sealedOld, aad: []byte("portcullis/mfa/totp:u2"), wantErr: "altered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := newRing.Reseal(tt.sealed, tt.aad)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || got != nil {
					t.Fatalf("Reseal = %x, %v; want the error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantNil {
				if got != nil {
					t.Fatalf("Reseal of a value under the first key = %x, want nil", got)
				}
				return
			}
			if !newRing.sealedWithPrimary(got) || !bytes.HasPrefix(got, newRing.SealPrefixes()[0]) {
				t.Fatal("the resealed value is not under the first key")
			}
			if _, err := mustRing(k1).Open(got, tt.aad); err != nil {
				t.Fatalf("the new key alone does not open the resealed value: %v", err)
			}
		})
	}
	t.Run("ok/prefixes_name_each_key_in_order", func(t *testing.T) {
		p := newRing.SealPrefixes()
		if len(p) != 2 || !bytes.HasPrefix(sealedNew, p[0]) || !bytes.HasPrefix(sealedOld, p[1]) ||
			bytes.HasPrefix(sealedForeign, p[0]) || bytes.HasPrefix(sealedForeign, p[1]) {
			t.Fatalf("SealPrefixes = %x", p)
		}
	})
}
