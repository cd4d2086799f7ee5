package token

import (
	"encoding/json"
	"strconv"
)

// AppendJSON appends r as JSON to b: byte for byte what encoding/json's
// Encoder writes for r (the fields in declaration order, omitempty, HTML-safe
// escaping, a final newline), without reflection. Every token endpoint
// answer goes through it; TestAppendJSONMatchesEncodingJSON holds it to
// encoding/json.
func (r Response) AppendJSON(b []byte) []byte {
	b = append(b, `{"access_token":`...)
	b = appendJSONString(b, r.AccessToken)
	b = append(b, `,"token_type":`...)
	b = appendJSONString(b, r.TokenType)
	b = append(b, `,"expires_in":`...)
	b = strconv.AppendInt(b, r.ExpiresIn, 10)
	if r.RefreshToken != "" {
		b = append(b, `,"refresh_token":`...)
		b = appendJSONString(b, r.RefreshToken)
	}
	if r.Scope != nil {
		b = append(b, `,"scope":`...)
		b = appendJSONString(b, *r.Scope)
	}
	if r.IDToken != "" {
		b = append(b, `,"id_token":`...)
		b = appendJSONString(b, r.IDToken)
	}
	if r.MustChangePassword {
		b = append(b, `,"must_change_password":true`...)
	}
	if r.RecoveryCodesLeft != nil {
		b = append(b, `,"recovery_codes_left":`...)
		b = strconv.AppendInt(b, int64(*r.RecoveryCodesLeft), 10)
	}
	if r.IssuedTokenType != "" {
		b = append(b, `,"issued_token_type":`...)
		b = appendJSONString(b, r.IssuedTokenType)
	}
	return append(b, "}\n"...)
}

// AppendJSON appends c as JSON to b: byte for byte what encoding/json
// writes for c (json.Marshal: no final newline), without reflection. The
// signer uses it for every access token it signs (keys.Manager.Sign);
// TestAppendJSONMatchesEncodingJSON holds it to encoding/json.
func (c AccessClaims) AppendJSON(b []byte) []byte {
	b = append(b, `{"iss":`...)
	b = appendJSONString(b, c.Issuer)
	b = append(b, `,"sub":`...)
	b = appendJSONString(b, c.Subject)
	b = append(b, `,"aud":`...)
	if len(c.Audience) == 1 {
		b = appendJSONString(b, c.Audience[0])
	} else {
		b = appendJSONStrings(b, c.Audience)
	}
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.Expiry, 10)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.IssuedAt, 10)
	b = append(b, `,"nbf":`...)
	b = strconv.AppendInt(b, c.NotBefore, 10)
	b = append(b, `,"jti":`...)
	b = appendJSONString(b, c.JTI)
	b = append(b, `,"client_id":`...)
	b = appendJSONString(b, c.ClientID)
	b = append(b, `,"scope":`...)
	b = appendJSONString(b, c.Scope)
	b = append(b, `,"roles":`...)
	b = appendJSONStrings(b, c.Roles)
	if c.SID != "" {
		b = append(b, `,"sid":`...)
		b = appendJSONString(b, c.SID)
	}
	if c.AuthTime != 0 {
		b = append(b, `,"auth_time":`...)
		b = strconv.AppendInt(b, c.AuthTime, 10)
	}
	if len(c.AMR) > 0 {
		b = append(b, `,"amr":`...)
		b = appendJSONStrings(b, c.AMR)
	}
	if c.ACR != "" {
		b = append(b, `,"acr":`...)
		b = appendJSONString(b, c.ACR)
	}
	if c.Tenant != "" {
		b = append(b, `,"tenant":`...)
		b = appendJSONString(b, c.Tenant)
	}
	return append(b, '}')
}

// appendJSONStrings appends ss as a JSON array (null when nil, as
// encoding/json writes a nil slice).
func appendJSONStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s as a JSON string. Printable ASCII that
// encoding/json leaves as it is (every token, scope and type Portcullis
// issues) is copied between quotes; anything else is left to
// encoding/json, so the escaping is always its own.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plainJSON[s[i]] {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plainJSON are the bytes encoding/json writes as they are: printable
// ASCII but the quote, the backslash and its HTML-safe escapes (<, >, &).
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c <= 0x7e; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()
