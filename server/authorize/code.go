package authorize

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// Login is the authentication behind a code: who signed in, when, how, and
// in which browser session.
type Login struct {
	UserID           string
	AuthTime         time.Time
	AMR              []string
	BrowserSessionID string
	// BrowserLineage and BrowserSessionExpiry are the browser session's
	// lineage and absolute expiry (token.AuthCode.BrowserBinding).
	BrowserLineage       string
	BrowserSessionExpiry time.Time
	// User is the account as read for this request's decision (nil: the
	// redemption reads it again); the code carries it (token.CodeUser).
	User *store.User
}

// NewCode returns a new authorization code: 256 random bits, base64url.
func NewCode() string { return randomToken(32) }

// PreparedCode is a new code, not stored yet: the caller stores Once
// together with the grant's record in its browser session
// (store.BrowserSessions.AddBrowserSessionGrantWithCode) and answers
// req.Success(Code). The record pre-assigns the grant's sid.
type PreparedCode struct {
	Code   string
	Record token.AuthCode
	// Once is the single-use record to store: keyed by the code's SHA-256,
	// until the code expires.
	Once store.OnceRecord
}

// PrepareCode creates a code for req and login valid for ttl from now, and
// its record, without storing them. Only the code's SHA-256 is the key
// the record is stored under.
func PrepareCode(req *Request, login Login, ttl time.Duration, now time.Time) (PreparedCode, error) {
	if ttl <= 0 {
		return PreparedCode{}, errors.New("issue code: the code lifetime must be positive")
	}
	if login.UserID == "" || login.AuthTime.IsZero() {
		return PreparedCode{}, errors.New("issue code: user and auth time are required")
	}
	rec := token.AuthCode{
		ClientID: req.ClientID, UserID: login.UserID, RedirectURI: req.RedirectURISent,
		Scopes: slices.Clone(req.Scopes), CodeChallenge: req.CodeChallenge, Nonce: req.Nonce,
		AuthTime: login.AuthTime, AMR: slices.Clone(login.AMR), SID: token.NewSID(), Offline: req.WantsOffline(),
		BrowserSessionID: login.BrowserSessionID, BrowserLineage: login.BrowserLineage,
		BrowserSessionExpiry: login.BrowserSessionExpiry, IssuedAt: now, Tenant: req.Tenant,
	}
	if login.User != nil {
		if login.User.ID != login.UserID {
			return PreparedCode{}, errors.New("issue code: the account read is not the one that signed in")
		}
		rec.User = token.SnapshotUser(*login.User)
	}
	if rec.Scopes == nil {
		rec.Scopes = []string{}
	}
	val, err := rec.Marshal()
	if err != nil {
		return PreparedCode{}, err
	}
	code := NewCode()
	return PreparedCode{Code: code, Record: rec,
		Once: store.OnceRecord{Kind: store.OnceAuthCode, KeyHash: token.HashSecret(code), Value: val, ExpiresAt: now.Add(ttl)}}, nil
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
