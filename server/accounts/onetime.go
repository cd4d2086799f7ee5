package accounts

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// secretLen is the length of a one-time secret: 32 random bytes (256 bits),
// base64url without padding.
const secretLen = 43

// maxOneTimeTokenLen bounds a presented one-time token; longer input is
// refused before any work.
const maxOneTimeTokenLen = 256

// inviteIDLen is the length of an invite id: "inv_" + 26 base32 characters.
const inviteIDLen = len(sqlstore.InviteIDPrefix) + 26

// newSecret returns 256 random bits, base64url without padding (URL-safe).
func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// hashSecret is how one-time secrets are stored: SHA-256. A slow hash adds
// nothing for a random 256-bit value.
func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// validSecret reports whether s has the shape newSecret produces.
func validSecret(s string) bool {
	if len(s) != secretLen {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// inviteToken is what an invite link carries: the invite's id and its
// secret, "inv_….secret". The id lets acceptance read the invite (its email,
// for the password rules; its state, for a clear answer) before redeeming
// it; only the SHA-256 of the secret is stored.
func inviteToken(id, secret string) string { return id + "." + secret }

// parseInviteToken splits an invite token; ok is false for any other shape.
func parseInviteToken(tok string) (id, secret string, ok bool) {
	if len(tok) > maxOneTimeTokenLen {
		return "", "", false
	}
	id, secret, found := strings.Cut(tok, ".")
	if !found || len(id) != inviteIDLen || !strings.HasPrefix(id, sqlstore.InviteIDPrefix) || !validSecret(secret) {
		return "", "", false
	}
	for _, r := range id[len(sqlstore.InviteIDPrefix):] {
		if !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7') {
			return "", "", false
		}
	}
	return id, secret, true
}

// secretMatches compares a presented secret with a stored hash in constant time.
func secretMatches(secret string, hash []byte) bool {
	return subtle.ConstantTimeCompare(hashSecret(secret), hash) == 1
}
