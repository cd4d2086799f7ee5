package token

import (
	"encoding/json"
	"strconv"
)

// AppendJSON appends r as JSON to b: byte for byte what encoding/json's
// Encoder writes for r (the fields in declaration order, omitempty, HTML-safe
// escaping, a final newline), without reflection. Every token endpoint
// answer goes through it; TestResponseAppendJSON holds it to encoding/json.
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
	if r.Scope != "" {
		b = append(b, `,"scope":`...)
		b = appendJSONString(b, r.Scope)
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
