package token

import (
	"encoding/base64"
	"strings"
)

// RefreshTokenPrefix marks Portcullis refresh tokens so secret scanners and
// people recognise them.
const RefreshTokenPrefix = "pcrt_"

// sidLen is the length of a session id: 16 random bytes, base64url.
const sidLen = 22

// newRefreshToken returns an opaque refresh token for the session: the prefix,
// the session id (so rotation touches a single family record) and 256 random
// bits. Only its SHA-256 hash is stored.
func newRefreshToken(sid string) string {
	return RefreshTokenPrefix + sid + "." + randomID(32)
}

// parseRefreshToken returns the session id of a well-formed refresh token.
func parseRefreshToken(tok string) (sid string, ok bool) {
	rest, found := strings.CutPrefix(tok, RefreshTokenPrefix)
	if !found || len(rest) != sidLen+1+43 || rest[sidLen] != '.' {
		return "", false
	}
	sid, secret := rest[:sidLen], rest[sidLen+1:]
	if _, err := base64.RawURLEncoding.DecodeString(sid); err != nil {
		return "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(secret); err != nil {
		return "", false
	}
	return sid, true
}

// newSID returns a new session id.
func newSID() string { return randomID(16) }
