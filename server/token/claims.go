package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Token types in the JWT typ header.
const (
	TypeAccessToken = "at+jwt" // RFC 9068 §2.1
	TypeIDToken     = "JWT"
)

// Audience is the aud claim: a string when there is one, an array otherwise (RFC 7519 §4.1.3).
type Audience []string

// MarshalJSON writes a single audience as a string.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON accepts a string or an array.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// Contains reports whether aud names v.
func (a Audience) Contains(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

// AccessClaims are the claims of an RFC 9068 access token.
type AccessClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  Audience `json:"aud"`
	Expiry    int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	JTI       string   `json:"jti"`
	ClientID  string   `json:"client_id"`
	Scope     string   `json:"scope"`
	Roles     []string `json:"roles"`
	SID       string   `json:"sid,omitempty"`
	AuthTime  int64    `json:"auth_time,omitempty"`
	// AMR and ACR say how the user signed in (RFC 8176 method references;
	// acr "pwd" or "mfa"), as RFC 9068 §2.2.1 allows; absent on
	// client_credentials tokens.
	AMR []string `json:"amr,omitempty"`
	ACR string   `json:"acr,omitempty"`
	// Tenant is the slug of the organisation the token acts in
	// (organisations on); absent for a platform token.
	Tenant string `json:"tenant,omitempty"`
}

// IsUser reports whether the token was issued to a user (not client_credentials).
func (c AccessClaims) IsUser() bool { return c.SID != "" || c.Subject != c.ClientID }

// Scopes splits the scope claim.
func (c AccessClaims) Scopes() []string { return strings.Fields(c.Scope) }

// IDClaims are the claims of an OIDC id token (OIDC Core §2).
type IDClaims struct {
	Issuer        string   `json:"iss"`
	Subject       string   `json:"sub"`
	Audience      Audience `json:"aud"`
	Expiry        int64    `json:"exp"`
	IssuedAt      int64    `json:"iat"`
	AuthTime      int64    `json:"auth_time,omitempty"`
	AuthorizedBy  string   `json:"azp,omitempty"`
	SID           string   `json:"sid,omitempty"`
	Nonce         string   `json:"nonce,omitempty"`
	AtHash        string   `json:"at_hash,omitempty"`
	AMR           []string `json:"amr,omitempty"`
	ACR           string   `json:"acr,omitempty"`
	Email         string   `json:"email,omitempty"`
	EmailVerified *bool    `json:"email_verified,omitempty"`
	Name          string   `json:"name,omitempty"`
	Roles         []string `json:"roles,omitempty"`
	Tenant        string   `json:"tenant,omitempty"`
}

// newJTI returns a unique token id whose first 6 bytes are the issue time in
// milliseconds (big-endian), followed by 10 random bytes: revocation cut-offs
// compare at millisecond precision, finer than iat's whole seconds.
func newJTI(now time.Time) string {
	var b [16]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(b[:6], ms[2:])
	_, _ = rand.Read(b[6:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// jtiTime recovers the issue time from a jti made by newJTI; ok is false for
// any other shape.
func jtiTime(jti string) (time.Time, bool) {
	if len(jti) != 22 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(jti)
	if err != nil || len(b) != 16 {
		return time.Time{}, false
	}
	var ms [8]byte
	copy(ms[2:], b[:6])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(ms[:]))), true
}

// randomID returns n random bytes, base64url without padding.
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// AtHash is the OIDC §3.1.3.6 at_hash of an access token for an id token
// signed with alg: the left half of the hash that alg uses, base64url.
// RS256 and ES256 hash with SHA-256; EdDSA (Ed25519) with SHA-512, as
// coreos/go-oidc verifies it.
func AtHash(alg, accessToken string) string {
	var sum []byte
	switch alg {
	case "EdDSA", "RS512", "ES512", "PS512":
		h := sha512.Sum512([]byte(accessToken))
		sum = h[:]
	case "RS384", "ES384", "PS384":
		h := sha512.Sum384([]byte(accessToken))
		sum = h[:]
	default:
		h := sha256.Sum256([]byte(accessToken))
		sum = h[:]
	}
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

// jwsAlg returns the alg of a compact JWS's protected header ("" when unreadable).
func jwsAlg(token string) string {
	hdr, _, ok := strings.Cut(token, ".")
	if !ok {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(hdr)
	if err != nil {
		return ""
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &h) != nil {
		return ""
	}
	return h.Alg
}
