package token

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// AuthCode is what an authorization code stands for. The authorization
// endpoint stores it as JSON in store.SingleUse (kind store.OnceAuthCode)
// under the SHA-256 of the code (HashSecret); the code itself is never
// stored. The authorization_code grant takes it once.
type AuthCode struct {
	ClientID string `json:"client_id"`
	UserID   string `json:"user_id"`
	// RedirectURI is the redirect_uri exactly as sent at /authorize; "" when
	// the request omitted it (the client's only registered URI was used).
	RedirectURI string `json:"redirect_uri,omitempty"`
	// Scopes are the scope tokens the request named (OIDC scopes and
	// permissions), resolved against the user's permissions at redemption.
	Scopes []string `json:"scopes"`
	// CodeChallenge is the PKCE S256 challenge ("" when none was sent).
	CodeChallenge string    `json:"code_challenge,omitempty"`
	Nonce         string    `json:"nonce,omitempty"`
	AuthTime      time.Time `json:"auth_time"`
	AMR           []string  `json:"amr,omitempty"`
	// SID is the grant's pre-assigned session id: the refresh family's id and
	// the sid of every token issued from this code, so a replayed code
	// revokes them all.
	SID string `json:"sid"`
	// Offline: the request asked for offline_access.
	Offline bool `json:"offline_access,omitempty"`
	// BrowserSessionID is the browser (SSO) session the code was issued in.
	BrowserSessionID string `json:"browser_session_id,omitempty"`
	// BrowserLineage is that session's lineage (store.BrowserSession.Lineage)
	// and BrowserSessionExpiry its absolute expiry: the refresh family of
	// a grant without offline_access ends with them (BrowserBinding). Both
	// are empty in a code issued before they were kept.
	BrowserLineage       string    `json:"browser_lineage,omitempty"`
	BrowserSessionExpiry time.Time `json:"browser_session_expiry,omitzero"`
	IssuedAt             time.Time `json:"issued_at"`
	// User is the account as read when the code was issued (nil in a code
	// issued without it): the redemption issues from it instead of reading
	// the account again. See CodeUser for why that is safe.
	User *CodeUser `json:"user,omitempty"`
	// Tenant is the organisation slug the authorization request named
	// (`tenant`, organisations on); "" for none.
	Tenant string `json:"tenant,omitempty"`
}

// BrowserBinding is the browser session the code's grant ends with, as
// its refresh family records it (store.RefreshFamily.BrowserSessionID): the
// session's lineage and absolute expiry. A grant with offline_access
// outlives its browser session ("" and zero), the one rule that
// signout.Ender follows too (store.SessionGrant.Offline is the code's
// Offline). A code issued before the lineage was kept names its session,
// which is the lineage of a session that continues no other.
func (c AuthCode) BrowserBinding() (lineage string, expiry time.Time) {
	if c.Offline {
		return "", time.Time{}
	}
	if c.BrowserLineage != "" {
		return c.BrowserLineage, c.BrowserSessionExpiry
	}
	return c.BrowserSessionID, c.BrowserSessionExpiry
}

// CodeUser is the part of an account that a code's tokens are issued from,
// read by the authorization request that issued the code moments before.
// Issuing from it is safe because every change that must stop a redemption
// (deactivation, deletion, role removal, a password change or reset, a
// temporary password, an MFA reset) ends the user's sessions, which moves
// the user's cut-off past the code's auth_time; the redemption checks that
// cut-off after issuing and refuses. A change that ends nothing (a role
// added, a name or email changed, the email verified) shows from the next
// refresh on, as it would for a token issued a moment earlier.
type CodeUser struct {
	Kind               string   `json:"kind,omitempty"`
	Email              string   `json:"email,omitempty"`
	Username           string   `json:"username,omitempty"`
	Name               string   `json:"name,omitempty"`
	Active             bool     `json:"active"`
	EmailVerified      bool     `json:"email_verified,omitempty"`
	MustChangePassword bool     `json:"must_change_password,omitempty"`
	Roles              []string `json:"roles"`
}

// SnapshotUser is the CodeUser of u.
func SnapshotUser(u store.User) *CodeUser {
	roles := slices.Clone(u.Roles)
	if roles == nil {
		roles = []string{}
	}
	return &CodeUser{Kind: u.Kind, Email: u.Email, Username: u.Username, Name: u.Name, Active: u.Active,
		EmailVerified: u.EmailVerified, MustChangePassword: u.MustChangePassword, Roles: roles}
}

// StoreUser is the account with id as the snapshot saw it (no password
// hash and no timestamps: issuing needs neither).
func (c *CodeUser) StoreUser(id string) store.User {
	return store.User{ID: id, Kind: c.Kind, Email: c.Email, Username: c.Username, Name: c.Name, Active: c.Active,
		EmailVerified: c.EmailVerified, MustChangePassword: c.MustChangePassword, Roles: slices.Clone(c.Roles)}
}

// Marshal encodes the record for store.SingleUse.
func (c AuthCode) Marshal() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode authorization code: %w", err)
	}
	return b, nil
}

// ParseAuthCode decodes a record written by AuthCode.Marshal.
func ParseAuthCode(b []byte) (AuthCode, error) {
	var c AuthCode
	if err := json.Unmarshal(b, &c); err != nil {
		return AuthCode{}, fmt.Errorf("decode authorization code: %w", err)
	}
	if c.ClientID == "" || c.UserID == "" || c.SID == "" {
		return AuthCode{}, errors.New("decode authorization code: client, user or sid missing")
	}
	return c, nil
}

// NewSID returns a new session id: the sid an authorization code
// pre-assigns to the grant it will start.
func NewSID() string { return newSID() }

// ValidCodeVerifier reports whether v is an RFC 7636 §4.1 code_verifier:
// 43-128 characters of [A-Za-z0-9-._~].
func ValidCodeVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// S256Challenge is the RFC 7636 §4.2 S256 code_challenge of a verifier.
func S256Challenge(verifier string) string {
	h := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// verifierMatches compares the verifier's S256 challenge with the stored
// one in constant time.
func verifierMatches(verifier, challenge string) bool {
	return subtle.ConstantTimeCompare([]byte(S256Challenge(verifier)), []byte(challenge)) == 1
}
