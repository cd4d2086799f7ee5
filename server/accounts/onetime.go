package accounts

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
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
	if !found || !validInviteID(id) || !validSecret(secret) {
		return "", "", false
	}
	return id, secret, true
}

// validInviteID reports whether id has the shape of an invite id.
func validInviteID(id string) bool {
	if len(id) != inviteIDLen || !strings.HasPrefix(id, sqlstore.InviteIDPrefix) {
		return false
	}
	for _, r := range id[len(sqlstore.InviteIDPrefix):] {
		if !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7') {
			return false
		}
	}
	return true
}

// InviteRef names an invite as it is stored: its id and the SHA-256 of
// its token's secret (hashSecret), never the token. It is what a
// server-side record keeps of an invite link, such as the one of a sign-in
// at an upstream provider begun from the invite page: whoever reads such a
// record learns no more than the invites table holds, and no token to
// accept the invite with. InviteRefOf makes one from an emailed token; the
// zero InviteRef names no invite (every use refuses it as an unusable
// invite). Its text form (MarshalText) is "<id>:<base64url of the hash>".
type InviteRef struct {
	id         string
	secretHash []byte
}

// InviteRefOf is the InviteRef of an emailed invite token: the zero
// InviteRef when tok is not shaped as one.
func InviteRefOf(tok string) InviteRef {
	id, secret, ok := parseInviteToken(tok)
	if !ok {
		return InviteRef{}
	}
	return InviteRef{id: id, secretHash: hashSecret(secret)}
}

// matches compares r's hash with an invite's stored hash in constant time.
func (r InviteRef) matches(tokenHash []byte) bool {
	return subtle.ConstantTimeCompare(r.secretHash, tokenHash) == 1
}

// MarshalText is r's text form, "<id>:<base64url of the secret's hash>"
// ("" for the zero InviteRef).
func (r InviteRef) MarshalText() ([]byte, error) {
	if r.id == "" {
		return []byte{}, nil
	}
	return []byte(r.id + ":" + base64.RawURLEncoding.EncodeToString(r.secretHash)), nil
}

// UnmarshalText reads MarshalText's form; "" is the zero InviteRef, and
// any other text not of that form is an error.
func (r *InviteRef) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*r = InviteRef{}
		return nil
	}
	id, enc, _ := strings.Cut(string(b), ":")
	h, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(h) != sha256.Size || !validInviteID(id) {
		return errors.New("accounts: not an invite reference")
	}
	*r = InviteRef{id: id, secretHash: h}
	return nil
}
