package keys

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/store"
)

// keyState is a set of stored keys of one algorithm, one per lifecycle
// situation, with their private halves for forging test tokens.
type keyState struct {
	now                                     time.Time
	active, next, retired, expired, revoked *PrivateKey
	recs                                    []store.SigningKey
	snap                                    *snapshot
}

func newKeyState(t testing.TB, alg string) *keyState {
	t.Helper()
	ring := testRing(t, 1)
	tm := timing{sync: 10 * time.Second, maxAge: 5 * time.Minute, maxTokenTTL: 15 * time.Minute}
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ks := &keyState{now: now}
	gen := func(state store.KeyState, created time.Time, mutate func(*store.SigningKey)) *PrivateKey {
		pk, err := Generate(alg, 0)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := pk.record(ring, state, created)
		if err != nil {
			t.Fatal(err)
		}
		if mutate != nil {
			mutate(&rec)
		}
		ks.recs = append(ks.recs, rec)
		return pk
	}
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	ks.expired = gen(store.KeyRetired, now.Add(-72*time.Hour), func(r *store.SigningKey) {
		r.ActivatedAt, r.RetiredAt, r.PublishedUntil = at(-71*time.Hour), at(-48*time.Hour), at(-time.Second)
	})
	ks.revoked = gen(store.KeyRevoked, now.Add(-48*time.Hour), func(r *store.SigningKey) {
		r.ActivatedAt, r.RevokedAt = at(-47*time.Hour), at(-time.Hour)
	})
	ks.retired = gen(store.KeyRetired, now.Add(-24*time.Hour), func(r *store.SigningKey) {
		r.ActivatedAt, r.RetiredAt, r.PublishedUntil = at(-23*time.Hour), at(-time.Minute), at(time.Minute)
	})
	ks.active = gen(store.KeyActive, now.Add(-time.Hour), func(r *store.SigningKey) { r.ActivatedAt = at(-time.Minute) })
	ks.next = gen(store.KeyNext, now.Add(-time.Minute), nil)
	snap, err := buildSnapshot(ks.recs, ring, tm, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks.snap = snap
	return ks
}

// joseSign signs payload with pk through go-jose, as any other issuer would.
func joseSign(t testing.TB, pk *PrivateKey, alg jose.SignatureAlgorithm, headers map[jose.HeaderKey]any, payload []byte) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("at+jwt")
	for k, v := range headers {
		opts = opts.WithHeader(k, v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: pk.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawToken builds a compact JWS from a header object, a payload and a signature.
func rawToken(header map[string]any, payload string, sig []byte) string {
	h, _ := json.Marshal(header)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestSignVerify(t *testing.T) {
	claims := map[string]any{"sub": "u1", "iss": "https://issuer.example"}
	const wantPayload = `{"iss":"https://issuer.example","sub":"u1"}`
	otherAlg := map[string]string{AlgRS256: AlgES256, AlgES256: AlgEdDSA, AlgEdDSA: AlgRS256}
	for _, alg := range testAlgs {
		t.Run(alg, func(t *testing.T) {
			ks := newKeyState(t, alg)
			good, err := ks.snap.active.sign(claims, "at+jwt")
			if err != nil {
				t.Fatal(err)
			}
			dot := strings.LastIndexByte(good, '.')
			goodSig, err := base64.RawURLEncoding.DecodeString(good[dot+1:])
			if err != nil {
				t.Fatal(err)
			}
			tamper := func(i int) string {
				b := []byte(good)
				if b[i] == 'A' {
					b[i] = 'B'
				} else {
					b[i] = 'A'
				}
				return string(b)
			}
			attacker, err := Generate(alg, 0)
			if err != nil {
				t.Fatal(err)
			}
			wrongAlgKey, err := Generate(otherAlg[alg], 0)
			if err != nil {
				t.Fatal(err)
			}
			// HS256 keyed with the public key bytes: the classic algorithm confusion.
			pubJWK, _ := ks.active.PublicJWK()
			hsHeader, _ := json.Marshal(map[string]any{"alg": "HS256", "kid": ks.active.KID(), "typ": "at+jwt"})
			hsInput := base64.RawURLEncoding.EncodeToString(hsHeader) + "." + base64.RawURLEncoding.EncodeToString([]byte(wantPayload))
			mac := hmac.New(sha256.New, pubJWK)
			mac.Write([]byte(hsInput))
			hsToken := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
			attackerJWK := jose.JSONWebKey{Key: attacker.Public(), KeyID: attacker.KID(), Algorithm: alg}

			tests := []struct {
				name    string
				token   string
				wantErr error
				wantKID string
			}{
				{name: "ok/signed-by-active", token: good, wantKID: ks.active.KID()},
				{name: "ok/go-jose-signed-by-next", token: joseSign(t, ks.next, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": ks.next.KID()}, []byte(wantPayload)), wantKID: ks.next.KID()},
				{name: "ok/retired-still-published", token: joseSign(t, ks.retired, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": ks.retired.KID()}, []byte(wantPayload)), wantKID: ks.retired.KID()},
				{name: "fail/retired-past-published-until", token: joseSign(t, ks.expired, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": ks.expired.KID()}, []byte(wantPayload)), wantErr: ErrUnknownKey},
				{name: "fail/revoked", token: joseSign(t, ks.revoked, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": ks.revoked.KID()}, []byte(wantPayload)), wantErr: ErrRevokedKey},
				{name: "fail/alg-none", token: rawToken(map[string]any{"alg": "none", "kid": ks.active.KID(), "typ": "at+jwt"}, wantPayload, []byte{0}), wantErr: ErrMalformed},
				{name: "fail/alg-none-empty-signature", token: rawToken(map[string]any{"alg": "none", "kid": ks.active.KID(), "typ": "at+jwt"}, wantPayload, nil), wantErr: ErrMalformed},
				{name: "fail/hs256-with-public-key", token: hsToken, wantErr: ErrMalformed},
				{name: "fail/wrong-alg-for-kid", token: joseSign(t, wrongAlgKey, jose.SignatureAlgorithm(otherAlg[alg]), map[jose.HeaderKey]any{"kid": ks.active.KID()}, []byte(wantPayload)), wantErr: ErrBadSignature},
				{name: "fail/unknown-kid", token: joseSign(t, attacker, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": attacker.KID()}, []byte(wantPayload)), wantErr: ErrUnknownKey},
				{name: "fail/path-like-kid", token: joseSign(t, attacker, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": "../../../../etc/passwd"}, []byte(wantPayload)), wantErr: ErrUnknownKey},
				{name: "fail/no-kid", token: joseSign(t, ks.active, jose.SignatureAlgorithm(alg), nil, []byte(wantPayload)), wantErr: ErrUnknownKey},
				{name: "fail/our-kid-attacker-key", token: joseSign(t, attacker, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": ks.active.KID()}, []byte(wantPayload)), wantErr: ErrBadSignature},
				{name: "fail/jku-ignored", token: joseSign(t, attacker, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": attacker.KID(), "jku": "https://attacker.example/jwks.json"}, []byte(wantPayload)), wantErr: ErrUnknownKey},
				{name: "fail/x5u-ignored", token: joseSign(t, attacker, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": ks.active.KID(), "x5u": "https://attacker.example/cert.pem"}, []byte(wantPayload)), wantErr: ErrBadSignature},
				{name: "fail/embedded-jwk-ignored", token: joseSign(t, attacker, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": ks.active.KID(), "jwk": attackerJWK}, []byte(wantPayload)), wantErr: ErrBadSignature},
				{name: "fail/crit", token: joseSign(t, ks.active, jose.SignatureAlgorithm(alg), map[jose.HeaderKey]any{"kid": ks.active.KID(), "crit": []string{"exp"}, "exp": 1}, []byte(wantPayload)), wantErr: ErrMalformed},
				{name: "fail/tampered-payload", token: tamper(strings.IndexByte(good, '.') + 2), wantErr: ErrBadSignature},
				{name: "fail/tampered-signature", token: tamper(dot + 3), wantErr: ErrBadSignature},
				{name: "fail/truncated-signature", token: good[:dot+1] + base64.RawURLEncoding.EncodeToString(goodSig[:len(goodSig)-1]), wantErr: ErrBadSignature},
				{name: "fail/extended-signature", token: good[:dot+1] + base64.RawURLEncoding.EncodeToString(append(goodSig, 0)), wantErr: ErrBadSignature},
				{name: "fail/padded-signature", token: good + "=", wantErr: ErrMalformed},
				{name: "fail/two-parts", token: good[:dot], wantErr: ErrMalformed},
				{name: "fail/four-parts", token: good + ".AAAA", wantErr: ErrMalformed},
				{name: "fail/empty-signature", token: good[:dot+1], wantErr: ErrMalformed},
				{name: "fail/empty", token: "", wantErr: ErrMalformed},
				{name: "fail/header-not-json", token: "bm90IGpzb24" + good[strings.IndexByte(good, '.'):], wantErr: ErrMalformed},
				{name: "fail/oversize", token: good[:dot] + strings.Repeat("A", MaxTokenSize) + good[dot:], wantErr: ErrMalformed},
				{name: "fail/json-serialization", token: `{"payload":"e30","protected":"e30","signature":"AA"}`, wantErr: ErrMalformed},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					payload, kid, typ, err := ks.snap.verify(tt.token, ks.now)
					if tt.wantErr != nil {
						if !errors.Is(err, tt.wantErr) {
							t.Fatalf("verify error = %v, want %v", err, tt.wantErr)
						}
						if payload != nil {
							t.Fatal("a refused token returned a payload")
						}
						return
					}
					if err != nil {
						t.Fatalf("verify: %v", err)
					}
					if string(payload) != wantPayload || kid != tt.wantKID || typ != "at+jwt" {
						t.Fatalf("payload %s kid %s typ %s", payload, kid, typ)
					}
				})
			}
		})
	}
}

// TestSignedTokensVerifyWithGoJose checks that a verifier using go-jose and
// only the JWKS bytes accepts what Sign produces, with the header Portcullis promises.
func TestSignedTokensVerifyWithGoJose(t *testing.T) {
	for _, alg := range testAlgs {
		for _, typ := range []string{"at+jwt", "JWT", "logout+jwt"} {
			t.Run("ok/"+alg+"/"+typ, func(t *testing.T) {
				ks := newKeyState(t, alg)
				token, err := ks.snap.active.sign(map[string]any{"sub": "u1"}, typ)
				if err != nil {
					t.Fatal(err)
				}
				var set jose.JSONWebKeySet
				if err := json.Unmarshal(ks.snap.jwks, &set); err != nil {
					t.Fatal(err)
				}
				jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
				if err != nil {
					t.Fatal(err)
				}
				h := jws.Signatures[0].Protected
				if h.KeyID != ks.active.KID() || h.Algorithm != alg || h.ExtraHeaders["typ"] != typ {
					t.Fatalf("header = %+v", h)
				}
				found := set.Key(h.KeyID)
				if len(found) != 1 {
					t.Fatalf("kid %s found %d times in the JWKS", h.KeyID, len(found))
				}
				payload, err := jws.Verify(found[0])
				if err != nil {
					t.Fatal(err)
				}
				if string(payload) != `{"sub":"u1"}` {
					t.Fatalf("payload %s", payload)
				}
			})
		}
	}
	t.Run("fail/bad-typ", func(t *testing.T) {
		ks := newKeyState(t, AlgEdDSA)
		for _, typ := range []string{"", `a"b`, "a b", strings.Repeat("x", 65)} {
			if _, err := ks.snap.active.sign(map[string]any{}, typ); err == nil {
				t.Errorf("typ %q accepted", typ)
			}
		}
	})
	t.Run("fail/claims-not-object", func(t *testing.T) {
		ks := newKeyState(t, AlgEdDSA)
		for _, claims := range []any{nil, "string", []int{1}} {
			if _, err := ks.snap.active.sign(claims, "JWT"); err == nil {
				t.Errorf("claims %#v accepted", claims)
			}
		}
	})
	t.Run("fail/oversize-claims", func(t *testing.T) {
		ks := newKeyState(t, AlgEdDSA)
		if _, err := ks.snap.active.sign(map[string]string{"x": strings.Repeat("a", MaxTokenSize)}, "JWT"); err == nil {
			t.Error("an oversize token was signed")
		}
	})
}

func TestSnapshotJWKS(t *testing.T) {
	for _, alg := range testAlgs {
		t.Run(alg, func(t *testing.T) {
			ks := newKeyState(t, alg)
			var doc struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(ks.snap.jwks, &doc); err != nil {
				t.Fatal(err)
			}
			var kids []string
			for _, k := range doc.Keys {
				for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
					if _, ok := k[private]; ok {
						t.Errorf("JWKS key has private member %q", private)
					}
				}
				if k["use"] != "sig" || k["alg"] != alg {
					t.Errorf("JWKS key %v lacks use/alg", k)
				}
				kids = append(kids, k["kid"].(string))
			}
			// Oldest first: the retired key, the active key, the next key; not
			// the revoked key nor the retired key past its publication.
			want := []string{ks.retired.KID(), ks.active.KID(), ks.next.KID()}
			if strings.Join(kids, ",") != strings.Join(want, ",") {
				t.Fatalf("JWKS kids %v, want %v", kids, want)
			}
			if len(ks.snap.algs) != 1 || ks.snap.algs[0] != alg {
				t.Fatalf("algs %v", ks.snap.algs)
			}
			etag := ks.snap.etag
			if len(etag) < 10 || etag[0] != '"' || etag[len(etag)-1] != '"' || strings.HasPrefix(etag, `W/`) {
				t.Fatalf("etag %s is not a strong ETag", etag)
			}
			// The same key set gives the same bytes and ETag (every instance agrees);
			// a different one gives another ETag.
			same, err := buildSnapshot(ks.recs, KEKRing{}, timing{}, ks.now, ks.snap)
			if err != nil {
				t.Fatal(err)
			}
			if string(same.jwks) != string(ks.snap.jwks) || same.etag != etag {
				t.Fatal("rebuilding the same key set changed the JWKS")
			}
			later, err := buildSnapshot(ks.recs, KEKRing{}, timing{}, ks.now.Add(2*time.Minute), ks.snap)
			if err != nil {
				t.Fatal(err)
			}
			if later.etag == etag || strings.Contains(string(later.jwks), ks.retired.KID()) {
				t.Fatal("the retired key stayed after its publication ended")
			}
		})
	}
}

func TestVerifyTypedMatching(t *testing.T) {
	tests := []struct {
		got, want string
		ok        bool
	}{
		{"at+jwt", "at+jwt", true},
		{"application/at+jwt", "at+jwt", true},
		{"AT+JWT", "at+jwt", true},
		{"JWT", "jwt", true},
		{"JWT", "at+jwt", false},
		{"", "at+jwt", false},
		{"application/", "at+jwt", false},
	}
	for _, tt := range tests {
		if got := typMatches(tt.got, tt.want); got != tt.ok {
			t.Errorf("typMatches(%q, %q) = %v, want %v", tt.got, tt.want, got, tt.ok)
		}
	}
}

func TestECDSASignatureConversion(t *testing.T) {
	raw := func(r0, s0 byte) []byte {
		b := make([]byte, es256SigLen)
		for i := range b {
			b[i] = byte(i + 1)
		}
		b[0], b[32] = r0, s0
		return b
	}
	small := make([]byte, es256SigLen)
	small[31], small[63] = 1, 0x80
	tests := []struct {
		name string
		sig  []byte
	}{
		{name: "ok/high-bit-set", sig: raw(0xff, 0x80)},
		{name: "ok/leading-zero", sig: raw(0x00, 0x00)},
		{name: "ok/low", sig: raw(0x01, 0x7f)},
		{name: "ok/tiny-values", sig: small},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			back, ok := derToRaw(rawToDER(tt.sig))
			if !ok || string(back) != string(tt.sig) {
				t.Fatalf("round trip %x -> %x (%v)", tt.sig, back, ok)
			}
		})
	}
	for _, bad := range [][]byte{nil, {0x30, 0x00}, {0x30, 0x03, 0x02, 0x01, 0x01}, append(rawToDER(raw(1, 1)), 0)} {
		if _, ok := derToRaw(bad); ok {
			t.Errorf("derToRaw(%x) accepted", bad)
		}
	}
}
