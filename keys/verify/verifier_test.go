package verify_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/keys/verify"
)

var allAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

// TestVerifyEveryAlgorithm: a token of every accepted algorithm verifies, and
// is refused when its alg is changed to another accepted algorithm (the
// algorithm is the key's, never the token's).
func TestVerifyEveryAlgorithm(t *testing.T) {
	now := time.Now()
	for _, alg := range allAlgs {
		t.Run("ok/"+string(alg), func(t *testing.T) {
			s := newSigner(t, alg, "k-"+string(alg))
			v := mustVerifier(t, staticKeys(t, s), func() time.Time { return now })
			tok := s.sign(t, accessClaims(now), nil)
			c, err := v.Verify(context.Background(), tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Subject != "usr_1" {
				t.Fatalf("claims %+v", c)
			}
		})
	}
	if got := verify.Algorithms(); len(got) != len(allAlgs) {
		t.Fatalf("Algorithms() = %v, tested %v", got, allAlgs)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	clk := func() time.Time { return now }
	rs := newSigner(t, jose.RS256, "rsa-1")
	es := newSigner(t, jose.ES256, "ec-1")
	ed := newSigner(t, jose.EdDSA, "ed-1")
	keys := staticKeys(t, rs, es, ed)
	v := mustVerifier(t, keys, clk)
	base := accessClaims(now)
	good := es.sign(t, base, nil)
	parts := strings.Split(good, ".")
	rsaPub := rs.priv.Public().(*rsa.PublicKey)
	pubDER, _ := x509.MarshalPKIXPublicKey(rsaPub)
	attacker := newSigner(t, jose.ES256, "attacker")
	attackerJWK, _ := json.Marshal(attacker.jwk())
	payload, _ := json.Marshal(base)

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"ok/RS256", rs.sign(t, base, nil), nil},
		{"ok/ES256", good, nil},
		{"ok/EdDSA", ed.sign(t, base, nil), nil},
		{"ok/typ application/at+jwt", es.sign(t, base, map[string]any{"typ": "application/at+jwt"}), nil},
		{"ok/typ upper case", es.sign(t, base, map[string]any{"typ": "AT+JWT"}), nil},
		{"ok/aud as a string", es.sign(t, with(base, map[string]any{"aud": testAudience}), nil), nil},
		{"ok/aud among several", es.sign(t, with(base, map[string]any{"aud": []string{"billing", testAudience}}), nil), nil},
		{"ok/expired within leeway", es.sign(t, with(base, map[string]any{"exp": now.Add(-29 * time.Second).Unix()}), nil), nil},
		{"ok/nbf within leeway", es.sign(t, with(base, map[string]any{"nbf": now.Add(29 * time.Second).Unix()}), nil), nil},
		{"ok/iat within leeway", es.sign(t, with(base, map[string]any{"iat": now.Add(29 * time.Second).Unix()}), nil), nil},
		{"ok/fractional dates", es.sign(t, with(base, map[string]any{"exp": float64(now.Unix()) + 60.5}), nil), nil},
		{"ok/no scope, roles or sid", es.sign(t, with(base, map[string]any{"scope": nil, "roles": nil, "sid": nil}), nil), nil},
		{"ok/jku, x5u and jwk headers are ignored", es.sign(t, base, map[string]any{"jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert"}), nil},

		{"fail/expired", es.sign(t, with(base, map[string]any{"exp": now.Add(-30 * time.Second).Unix()}), nil), verify.ErrExpired},
		{"fail/nbf in the future", es.sign(t, with(base, map[string]any{"nbf": now.Add(31 * time.Second).Unix()}), nil), verify.ErrNotYetValid},
		{"fail/iat in the future", es.sign(t, with(base, map[string]any{"iat": now.Add(31 * time.Second).Unix()}), nil), verify.ErrNotYetValid},
		{"fail/wrong issuer", es.sign(t, with(base, map[string]any{"iss": testIssuer + "/"}), nil), verify.ErrWrongIssuer},
		{"fail/wrong audience", es.sign(t, with(base, map[string]any{"aud": []string{"billing"}}), nil), verify.ErrWrongAudience},
		{"fail/audience prefix", es.sign(t, with(base, map[string]any{"aud": "api2"}), nil), verify.ErrWrongAudience},
		{"fail/typ JWT (id token)", es.sign(t, base, map[string]any{"typ": "JWT"}), verify.ErrWrongType},
		{"fail/no typ", es.sign(t, base, map[string]any{"typ": ""}), verify.ErrWrongType},
		{"fail/typ application/jwt", es.sign(t, base, map[string]any{"typ": "application/jwt"}), verify.ErrWrongType},
		{"fail/typ at+jwt with junk", es.sign(t, base, map[string]any{"typ": "application/at+jwt; x"}), verify.ErrWrongType},
		{"fail/unknown kid", newSigner(t, jose.ES256, "other").sign(t, base, nil), verify.ErrUnknownKey},
		{"fail/no kid", rawJWS(map[string]any{"alg": "ES256", "typ": "at+jwt"}, payload, make([]byte, 64)), verify.ErrUnknownKey},
		{"fail/tampered payload", parts[0] + "." + b64([]byte(strings.Replace(string(payload), "projects:read", "projects:admn", 1))) + "." + parts[2], verify.ErrBadSignature},
		{"fail/tampered signature", parts[0] + "." + parts[1] + "." + flipLast(parts[2]), verify.ErrBadSignature},
		{"fail/signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(es.sign(t, with(base, map[string]any{"jti": "x"}), nil), ".")[2], verify.ErrBadSignature},
		{"fail/truncated signature", parts[0] + "." + parts[1] + "." + parts[2][:40], verify.ErrBadSignature},
		{"fail/alg none", rawJWS(map[string]any{"alg": "none", "kid": "ec-1", "typ": "at+jwt"}, payload, nil) + "AA", verify.ErrBadSignature},
		{"fail/alg none empty signature", rawJWS(map[string]any{"alg": "none", "kid": "ec-1", "typ": "at+jwt"}, payload, nil), verify.ErrMalformed},
		{"fail/HS256 with the RSA public key as secret", hmacJWS(map[string]any{"alg": "HS256", "kid": "rsa-1", "typ": "at+jwt"}, payload, pubDER), verify.ErrBadSignature},
		{"fail/alg of another accepted algorithm", rawJWS(map[string]any{"alg": "RS256", "kid": "ec-1", "typ": "at+jwt"}, payload, make([]byte, 256)), verify.ErrBadSignature},
		{"fail/embedded jwk of the attacker with a known kid", attacker.sign(t, base, map[string]any{"kid": "ec-1", "jwk": json.RawMessage(attackerJWK)}), verify.ErrBadSignature},
		{"fail/crit header", es.sign(t, base, map[string]any{"crit": []string{"exp"}, "exp": 1}), verify.ErrMalformed},
		{"fail/b64 header", es.sign(t, base, map[string]any{"b64": false, "crit": []string{"b64"}}), verify.ErrMalformed},
		{"fail/two segments", parts[0] + "." + parts[1], verify.ErrMalformed},
		{"fail/four segments", good + ".x", verify.ErrMalformed},
		{"fail/empty header", "." + parts[1] + "." + parts[2], verify.ErrMalformed},
		{"fail/empty payload", parts[0] + ".." + parts[2], verify.ErrMalformed},
		{"fail/padded header", parts[0] + "=." + parts[1] + "." + parts[2], verify.ErrMalformed},
		{"fail/header not JSON", b64([]byte("nope")) + "." + parts[1] + "." + parts[2], verify.ErrMalformed},
		{"fail/header a JSON array", b64([]byte(`["ES256"]`)) + "." + parts[1] + "." + parts[2], verify.ErrMalformed},
		{"fail/signature not base64url", parts[0] + "." + parts[1] + ".!!!", verify.ErrMalformed},
		{"fail/empty", "", verify.ErrMalformed},
		{"fail/too long", good + strings.Repeat("A", verify.MaxTokenSize), verify.ErrMalformed},
		{"fail/payload not JSON", es.signPayload(t, []byte("hello"), nil), verify.ErrMalformed},
		{"fail/payload a JSON array", es.signPayload(t, []byte(`[1]`), nil), verify.ErrMalformed},
		{"fail/exp a string", es.sign(t, with(base, map[string]any{"exp": "tomorrow"}), nil), verify.ErrMalformed},
		{"fail/exp negative", es.sign(t, with(base, map[string]any{"exp": -1}), nil), verify.ErrMalformed},
		{"fail/aud a number", es.sign(t, with(base, map[string]any{"aud": 7}), nil), verify.ErrMalformed},
		{"fail/roles not strings", es.sign(t, with(base, map[string]any{"roles": []int{1}}), nil), verify.ErrMalformed},
	}
	for _, claim := range []string{"iss", "sub", "aud", "exp", "iat", "jti", "client_id"} {
		tests = append(tests, struct {
			name  string
			token string
			want  error
		}{"fail/missing " + claim, es.sign(t, with(base, map[string]any{claim: nil}), nil), verify.ErrMalformed})
	}
	tests = append(tests, struct {
		name  string
		token string
		want  error
	}{"fail/empty sub", es.sign(t, with(base, map[string]any{"sub": ""}), nil), verify.ErrMalformed})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tc.token)
			if tc.want == nil {
				if err != nil || c == nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || c != nil {
				t.Fatalf("Verify = %v, %v; want %v", c, err, tc.want)
			}
			if (tc.token != "" && strings.Contains(err.Error(), tc.token)) || (len(tc.token) > 20 && strings.Contains(err.Error(), tc.token[:20])) {
				t.Fatalf("the error carries the token: %v", err)
			}
		})
	}
}

func flipLast(s string) string {
	b := []byte(s)
	if b[len(b)-2] == 'A' {
		b[len(b)-2] = 'B'
	} else {
		b[len(b)-2] = 'A'
	}
	return string(b)
}

func TestVerifyLeeway(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	s := newSigner(t, jose.EdDSA, "ed-1")
	keys := staticKeys(t, s)
	tok := s.sign(t, with(accessClaims(now), map[string]any{"exp": now.Add(-10 * time.Second).Unix()}), nil)
	tests := []struct {
		name   string
		leeway time.Duration
		want   error
	}{
		{"ok/default 30s", 0, nil},
		{"ok/11s", 11 * time.Second, nil},
		{"fail/10s", 10 * time.Second, verify.ErrExpired},
		{"fail/none", verify.NoLeeway, verify.ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := verify.New(keys, verify.Config{Issuer: testIssuer, Audience: testAudience, Leeway: tc.leeway, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(context.Background(), tok); !errors.Is(err, tc.want) && (err != nil || tc.want != nil) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	keys := staticKeys(t, newSigner(t, jose.EdDSA, "ed-1"))
	tests := []struct {
		name string
		keys verify.KeySet
		cfg  verify.Config
		want string
	}{
		{"fail/no key set", nil, verify.Config{Issuer: testIssuer, Audience: "api"}, "key set"},
		{"fail/no issuer", keys, verify.Config{Audience: "api"}, "Issuer"},
		{"fail/no audience", keys, verify.Config{Issuer: testIssuer}, "Audience"},
		{"fail/leeway too large", keys, verify.Config{Issuer: testIssuer, Audience: "api", Leeway: time.Hour}, "Leeway"},
		{"fail/negative leeway", keys, verify.Config{Issuer: testIssuer, Audience: "api", Leeway: -time.Second}, "Leeway"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := verify.New(tc.keys, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestClaims(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	s := newSigner(t, jose.ES256, "ec-1")
	v := mustVerifier(t, staticKeys(t, s), func() time.Time { return now })
	tok := s.sign(t, with(accessClaims(now), map[string]any{"nbf": now.Unix() - 5, "tenant": "acme"}), nil)
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Issuer != testIssuer || c.Subject != "usr_1" || !slices.Equal(c.Audience, []string{"api"}) || c.ID != "jti-1" ||
		c.ClientID != "web" || c.SessionID != "ses_1" || c.Scope != "projects:read projects:write" ||
		!slices.Equal(c.Scopes, []string{"projects:read", "projects:write"}) || !slices.Equal(c.Roles, []string{"editor"}) ||
		!c.ExpiresAt.Equal(now.Add(5*time.Minute)) || !c.IssuedAt.Equal(now) || !c.NotBefore.Equal(now.Add(-5*time.Second)) {
		t.Fatalf("claims %+v", c)
	}
	if !c.HasScope("projects:write") || c.HasScope("projects") || !c.HasRole("editor") || c.HasRole("admin") {
		t.Fatal("HasScope/HasRole")
	}
	var extra struct {
		Tenant string `json:"tenant"`
	}
	if err := c.Decode(&extra); err != nil || extra.Tenant != "acme" {
		t.Fatalf("Decode: %v %+v", err, extra)
	}
	raw := c.Raw()
	raw[0] = 'X' // a copy: the claims are not changed through it
	if err := c.Decode(&extra); err != nil {
		t.Fatalf("Raw shares memory with the claims: %v", err)
	}
}

// TestParseKeySet: only keys that are safe to verify with are used.
func TestParseKeySet(t *testing.T) {
	rs := newSigner(t, jose.RS256, "rsa-1")
	es := newSigner(t, jose.ES256, "ec-1")
	ed := newSigner(t, jose.EdDSA, "ed-1")
	withChange := func(s *testSigner, change func(m map[string]any)) json.RawMessage {
		b, _ := json.Marshal(s.jwk())
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		change(m)
		out, _ := json.Marshal(m)
		return out
	}
	privJWK, _ := json.Marshal(jose.JSONWebKey{Key: es.priv, KeyID: "priv", Algorithm: "ES256", Use: "sig"})
	octJWK, _ := json.Marshal(jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "oct", Algorithm: "HS256"})
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallJWK, _ := json.Marshal(jose.JSONWebKey{Key: &small.PublicKey, KeyID: "small", Algorithm: "RS256"})
	p384 := newSigner(t, jose.ES384, "p384")
	smallSigner := &testSigner{alg: jose.RS256, kid: "small", priv: small}
	privSigner := &testSigner{alg: jose.ES256, kid: "priv", priv: es.priv}
	tests := []struct {
		name   string
		key    json.RawMessage
		signer *testSigner // nil: no token can name the key
		ok     bool
	}{
		{"ok/RSA", withChange(rs, func(map[string]any) {}), rs, true},
		{"ok/EC", withChange(es, func(map[string]any) {}), es, true},
		{"ok/Ed25519", withChange(ed, func(map[string]any) {}), ed, true},
		{"ok/no use", withChange(es, func(m map[string]any) { delete(m, "use") }), es, true},
		{"ok/key_ops verify", withChange(es, func(m map[string]any) { m["key_ops"] = []string{"verify"} }), es, true},
		{"fail/no alg", withChange(es, func(m map[string]any) { delete(m, "alg") }), es, false},
		{"fail/alg none", withChange(es, func(m map[string]any) { m["alg"] = "none" }), es, false},
		{"fail/alg HS256 on an RSA key", withChange(rs, func(m map[string]any) { m["alg"] = "HS256" }), rs, false},
		{"fail/alg ES256 on an RSA key", withChange(rs, func(m map[string]any) { m["alg"] = "ES256" }), rs, false},
		{"fail/alg RS256 on an EC key", withChange(es, func(m map[string]any) { m["alg"] = "RS256" }), es, false},
		{"fail/alg ES256 on a P-384 key", withChange(p384, func(m map[string]any) { m["alg"] = "ES256" }), p384, false},
		{"fail/alg EdDSA on an EC key", withChange(es, func(m map[string]any) { m["alg"] = "EdDSA" }), es, false},
		{"fail/alg RS256 on an Ed25519 key", withChange(ed, func(m map[string]any) { m["alg"] = "RS256" }), ed, false},
		{"fail/use enc", withChange(es, func(m map[string]any) { m["use"] = "enc" }), es, false},
		{"fail/key_ops without verify", withChange(es, func(m map[string]any) { m["key_ops"] = []string{"encrypt"} }), es, false},
		{"fail/no kid", withChange(es, func(m map[string]any) { delete(m, "kid") }), es, false},
		{"fail/private key", privJWK, privSigner, false},
		{"fail/RSA 1024", smallJWK, smallSigner, false},
		{"fail/symmetric key", octJWK, nil, false},
		{"fail/unknown kty", json.RawMessage(`{"kty":"XYZ","kid":"x","alg":"ES256"}`), nil, false},
		{"fail/not an object", json.RawMessage(`"key"`), nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A usable companion key keeps the set valid, so the case is about tc.key alone.
			doc, _ := json.Marshal(map[string]any{"keys": []json.RawMessage{tc.key, withChange(ed, func(m map[string]any) { m["kid"] = "companion" })}})
			ks, err := verify.NewStaticKeySet(doc)
			if err != nil {
				t.Fatalf("one unusable key broke the whole set: %v", err)
			}
			v := mustVerifier(t, ks, time.Now)
			companion := &testSigner{alg: jose.EdDSA, kid: "companion", priv: ed.priv}
			if _, err := v.Verify(context.Background(), companion.sign(t, accessClaims(time.Now()), nil)); err != nil {
				t.Fatalf("companion key: %v", err)
			}
			if tc.signer == nil {
				return
			}
			_, err = v.Verify(context.Background(), tc.signer.sign(t, accessClaims(time.Now()), nil))
			if tc.ok != (err == nil) {
				t.Fatalf("usable=%v, Verify: %v", tc.ok, err)
			}
		})
	}
	t.Run("fail/duplicate kid drops both", func(t *testing.T) {
		other := newSigner(t, jose.ES256, "other-ec")
		dup := other.jwk()
		dup.KeyID = "ec-1"
		doc, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{es.jwk(), dup, ed.jwk()}})
		ks, err := verify.NewStaticKeySet(doc)
		if err != nil {
			t.Fatal(err)
		}
		v := mustVerifier(t, ks, time.Now)
		if _, err := v.Verify(context.Background(), es.sign(t, accessClaims(time.Now()), nil)); !errors.Is(err, verify.ErrUnknownKey) {
			t.Fatalf("Verify: %v", err)
		}
	})
	t.Run("fail/no usable key", func(t *testing.T) {
		for _, doc := range []string{`{"keys":[]}`, `{}`, `[]`, `{"keys":[{"kty":"oct","k":"AAAA","kid":"a","alg":"HS256"}]}`} {
			if _, err := verify.NewStaticKeySet([]byte(doc)); err == nil {
				t.Fatalf("%s accepted", doc)
			}
		}
	})
}
