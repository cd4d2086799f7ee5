package verify

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// Claims are the verified claims of an RFC 9068 access token, or of an API
// key (Introspector.VerifyAPIKey): the same type, so that requirements work
// on both. A key's claims have no Audience, ID, SessionID, AMR, ACR or
// Roles (a key meets no Role or MFA requirement), and APIKeyID set. The
// Guard shares one *Claims per request: treat it as read-only.
type Claims struct {
	Issuer    string    // iss
	Subject   string    // sub: the user's id, or the client id for client_credentials
	Audience  []string  // aud
	ExpiresAt time.Time // exp
	IssuedAt  time.Time // iat; for an API key, when the issuer last confirmed it
	NotBefore time.Time // nbf; zero when absent
	ID        string    // jti
	ClientID  string    // client_id
	Scope     string    // scope, as in the token (space-separated)
	Scopes    []string  // scope, split
	Roles     []string  // roles
	SessionID string    // sid; empty for client_credentials tokens
	AMR       []string  // amr: how the user signed in (RFC 8176), e.g. ["pwd","otp","mfa"]
	ACR       string    // acr: "pwd" or "mfa" for Portcullis's user tokens
	APIKeyID  string    // the API key's id (ClientID is "apikey:<id>"); empty for access tokens
	Tenant    string    // tenant: the organisation's slug the token acts in; empty for none
	payload   string    // the base64url payload segment of the token
}

// IsAPIKey reports whether the claims are an API key's rather than an
// access token's.
func (c *Claims) IsAPIKey() bool { return c.APIKeyID != "" }

// HasScope reports whether the token grants the permission.
func (c *Claims) HasScope(perm string) bool { return contains(c.Scopes, perm) }

// HasMFA reports whether the user signed in with a second factor: acr is
// "mfa" and amr names "mfa" (RFC 8176).
func (c *Claims) HasMFA() bool { return c.ACR == "mfa" && contains(c.AMR, "mfa") }

// HasRole reports whether the token carries the role exactly (see
// RoleLevels.AtLeast for "this role or higher").
func (c *Claims) HasRole(role string) bool { return contains(c.Roles, role) }

// Raw returns the token's payload: the JSON object of every claim (nil for
// Claims not made by Verify, such as an API key's).
func (c *Claims) Raw() json.RawMessage {
	raw, err := b64.DecodeString(c.payload)
	if err != nil || len(raw) == 0 {
		return nil
	}
	return raw
}

// Decode unmarshals the payload into v, for claims not exposed as fields.
func (c *Claims) Decode(v any) error {
	raw := c.Raw()
	if raw == nil {
		return errors.New("decode claims: no token payload")
	}
	return json.Unmarshal(raw, v)
}

// wireClaims is the payload as sent.
type wireClaims struct {
	Iss      string      `json:"iss"`
	Sub      string      `json:"sub"`
	Aud      audience    `json:"aud"`
	Exp      numericDate `json:"exp"`
	Iat      numericDate `json:"iat"`
	Nbf      numericDate `json:"nbf"`
	Jti      string      `json:"jti"`
	ClientID string      `json:"client_id"`
	Scope    string      `json:"scope"`
	Roles    []string    `json:"roles"`
	Sid      string      `json:"sid"`
	AMR      []string    `json:"amr"`
	ACR      string      `json:"acr"`
	Tenant   string      `json:"tenant"`
}

// audience is aud: one string or an array of strings.
type audience struct {
	list []string
	set  bool
}

// UnmarshalJSON accepts a string or an array of strings.
func (a *audience) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	a.set = true
	if len(b) > 0 && b[0] == '"' {
		if s, ok := plainString(b); ok {
			a.list = []string{s}
			return nil
		}
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		a.list = []string{s}
		return nil
	}
	return json.Unmarshal(b, &a.list)
}

// plainString returns the value of a JSON string literal without escapes
// or control characters, saving a nested decoder for the common case.
func plainString(b []byte) (string, bool) {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", false
	}
	inner := b[1 : len(b)-1]
	for _, c := range inner {
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return "", false
		}
	}
	return string(inner), true
}

// numericDate is a JSON number of seconds since the epoch (RFC 7519 §2).
type numericDate struct {
	t   time.Time
	set bool
}

var errNumericDate = errors.New("not a NumericDate")

// UnmarshalJSON accepts a non-negative integer or fraction of seconds; null
// leaves the date unset.
func (d *numericDate) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if n, err := strconv.ParseInt(string(b), 10, 64); err == nil {
		if n < 0 || n > 1<<40 {
			return errNumericDate
		}
		d.t, d.set = time.Unix(n, 0), true
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1<<40 {
		return errNumericDate
	}
	sec, frac := math.Modf(f)
	d.t, d.set = time.Unix(int64(sec), int64(frac*1e9)), true
	return nil
}

// missingClaim names the first required RFC 9068 claim w lacks (an empty
// string counts as missing).
func (w *wireClaims) missingClaim() string {
	switch {
	case w.Iss == "":
		return "iss"
	case w.Sub == "":
		return "sub"
	case !w.Aud.set:
		return "aud"
	case !w.Exp.set:
		return "exp"
	case !w.Iat.set:
		return "iat"
	case w.Jti == "":
		return "jti"
	case w.ClientID == "":
		return "client_id"
	}
	return ""
}

func (w *wireClaims) claims(payload string) *Claims {
	c := &Claims{
		Issuer: w.Iss, Subject: w.Sub, Audience: w.Aud.list, ExpiresAt: w.Exp.t, IssuedAt: w.Iat.t,
		ID: w.Jti, ClientID: w.ClientID, Scope: w.Scope, Roles: w.Roles, SessionID: w.Sid, AMR: w.AMR, ACR: w.ACR,
		Tenant: w.Tenant, payload: payload,
	}
	if w.Nbf.set {
		c.NotBefore = w.Nbf.t
	}
	if w.Scope != "" {
		c.Scopes = strings.Fields(w.Scope)
	}
	return c
}
