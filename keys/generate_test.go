package keys

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/store"
)

var testAlgs = []string{AlgRS256, AlgES256, AlgEdDSA}

func TestGenerate(t *testing.T) {
	tests := []struct {
		name    string
		alg     string
		rsaBits int
		wantErr string
		wantKty string
		wantN   int // RSA modulus bits
	}{
		{name: "ok/RS256-default-2048", alg: AlgRS256, wantKty: "RSA", wantN: 2048},
		{name: "ok/RS256-3072", alg: AlgRS256, rsaBits: 3072, wantKty: "RSA", wantN: 3072},
		{name: "ok/ES256", alg: AlgES256, wantKty: "EC"},
		{name: "ok/EdDSA", alg: AlgEdDSA, wantKty: "OKP"},
		{name: "fail/unknown-alg", alg: "HS256", wantErr: "not supported"},
		{name: "fail/none", alg: "none", wantErr: "not supported"},
		{name: "fail/RSA-1024", alg: AlgRS256, rsaBits: 1024, wantErr: "1024 not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk, err := Generate(tt.alg, tt.rsaBits)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Generate(%q, %d) error = %v, want %q", tt.alg, tt.rsaBits, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			if pk.Alg() != tt.alg || !validKID(pk.KID()) {
				t.Fatalf("alg %q kid %q", pk.Alg(), pk.KID())
			}
			pub, err := pk.PublicJWK()
			if err != nil {
				t.Fatal(err)
			}
			var members map[string]any
			if err := json.Unmarshal(pub, &members); err != nil {
				t.Fatal(err)
			}
			for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
				if _, ok := members[private]; ok {
					t.Errorf("public JWK has private member %q", private)
				}
			}
			if members["kty"] != tt.wantKty || members["use"] != "sig" || members["alg"] != tt.alg || members["kid"] != pk.KID() {
				t.Errorf("public JWK members = %v", members)
			}
			// The kid is the RFC 7638 thumbprint, computed independently from the published JWK.
			var jwk jose.JSONWebKey
			if err := jwk.UnmarshalJSON(pub); err != nil {
				t.Fatal(err)
			}
			sum, err := jwk.Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if got := base64.RawURLEncoding.EncodeToString(sum); got != pk.KID() {
				t.Errorf("kid %s, thumbprint of JWK %s", pk.KID(), got)
			}
			if tt.wantN != 0 {
				if n := len(members["n"].(string)) * 6; n < tt.wantN || n > tt.wantN+6 {
					t.Errorf("modulus about %d bits, want %d", n, tt.wantN)
				}
			}
		})
	}
}

// TestThumbprintRFC7638 checks the kid computation against the example of RFC 7638 §3.1.
func TestThumbprintRFC7638(t *testing.T) {
	const example = `{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON([]byte(example)); err != nil {
		t.Fatal(err)
	}
	got, err := Thumbprint(jwk.Key)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Fatalf("thumbprint %s, want %s", got, want)
	}
}

func TestPrivateKeyNeverFormatsKeyMaterial(t *testing.T) {
	for _, alg := range testAlgs {
		t.Run("ok/"+alg, func(t *testing.T) {
			pk, err := Generate(alg, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := "signing key " + pk.KID() + " (" + alg + ")"
			for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
				if got := fmt.Sprintf(format, pk); got != want {
					t.Errorf("Sprintf(%q) = %q, want %q", format, got, want)
				}
			}
		})
	}
}

func TestSealedPrivateKeyBoundToKID(t *testing.T) {
	ring := testRing(t, 1)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, alg := range testAlgs {
		t.Run(alg, func(t *testing.T) {
			pk, err := Generate(alg, 0)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := pk.record(ring, store.KeyNext, now)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Version != 1 || rec.State != store.KeyNext || rec.ActivatedAt != nil || !rec.CreatedAt.Equal(now) {
				t.Fatalf("record = %+v", rec)
			}
			t.Run("ok/open", func(t *testing.T) {
				got, err := openPrivateKey(ring, rec)
				if err != nil {
					t.Fatal(err)
				}
				if got.KID() != pk.KID() || got.Alg() != alg {
					t.Fatalf("opened %v, want %v", got, pk)
				}
			})
			t.Run("fail/other-kid", func(t *testing.T) {
				other, err := Generate(alg, 0)
				if err != nil {
					t.Fatal(err)
				}
				moved := rec
				moved.KID = other.KID()
				if _, err := openPrivateKey(ring, moved); err == nil {
					t.Fatal("a sealed key opened under another kid")
				}
			})
			t.Run("fail/wrong-alg", func(t *testing.T) {
				wrong := rec
				wrong.Alg = map[string]string{AlgRS256: AlgES256, AlgES256: AlgEdDSA, AlgEdDSA: AlgRS256}[alg]
				if _, err := openPrivateKey(ring, wrong); err == nil {
					t.Fatal("opened a key under the wrong algorithm")
				}
			})
			t.Run("fail/other-kek", func(t *testing.T) {
				if _, err := openPrivateKey(testRing(t, 1), rec); err == nil {
					t.Fatal("opened with a foreign key-encryption key")
				}
			})
		})
	}
}
