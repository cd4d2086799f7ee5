package accounts

import (
	"net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/store"
)

// User is a user as the API shows it, exactly the contract's fields: never
// the password hash.
type User struct {
	ID                 string     `json:"id"`
	Kind               string     `json:"kind"` // human or machine
	Email              string     `json:"email"`
	Name               string     `json:"name"`
	Roles              []string   `json:"roles"`
	Active             bool       `json:"active"`
	EmailVerified      bool       `json:"email_verified"`
	MustChangePassword bool       `json:"must_change_password"`
	CreatedAt          time.Time  `json:"created_at"`
	UpdatedAt          time.Time  `json:"updated_at"`
	LastLoginAt        *time.Time `json:"last_login_at"`
}

// ViewUser returns the API view of u.
func ViewUser(u store.User) User {
	roles := u.Roles
	if roles == nil {
		roles = []string{}
	}
	kind := u.Kind
	if kind == "" {
		kind = store.UserHuman
	}
	return User{ID: u.ID, Kind: kind, Email: u.Email, Name: u.Name, Roles: roles, Active: u.Active, EmailVerified: u.EmailVerified,
		MustChangePassword: u.MustChangePassword, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, LastLoginAt: u.LastLoginAt}
}

// Invite is an invite as the API shows it: never its token. Status is
// pending, accepted, revoked, superseded or expired (a pending invite past
// its expiry).
type Invite struct {
	ID         string     `json:"id"`
	Email      string     `json:"email"`
	Role       string     `json:"role"`
	Status     string     `json:"status"`
	InvitedBy  string     `json:"invited_by"`
	ExpiresAt  time.Time  `json:"expires_at"`
	CreatedAt  time.Time  `json:"created_at"`
	AcceptedAt *time.Time `json:"accepted_at"`
	UserID     string     `json:"user_id,omitempty"`
	// TenantID is the organisation the invite is to; absent otherwise.
	TenantID string `json:"tenant_id,omitempty"`
}

// Invite status shown for a pending invite past its expiry.
const inviteExpired = "expired"

func viewInvite(inv store.Invite, now time.Time) Invite {
	status := string(inv.Status)
	if inv.Status == store.InvitePending && !now.Before(inv.ExpiresAt) {
		status = inviteExpired
	}
	return Invite{ID: inv.ID, Email: inv.Email, Role: inv.Role, Status: status, InvitedBy: inv.InvitedBy,
		ExpiresAt: inv.ExpiresAt, CreatedAt: inv.CreatedAt, AcceptedAt: inv.AcceptedAt, UserID: inv.UserID,
		TenantID: inv.TenantID}
}

// Page is one page of a cursor-paginated list, as the API shows it.
type Page[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// maxEmailLen is the longest address accepted (RFC 5321 path limit).
const maxEmailLen = 254

// maxNameLen bounds a person's display name.
const maxNameLen = 200

// normaliseEmail trims an email address and checks that it is one bare
// address (no display name, no CR or LF).
func normaliseEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", apierr.ErrInvalidRequest.WithDescription("An email address is required.")
	}
	if len(s) > maxEmailLen {
		return "", apierr.ErrInvalidRequest.WithDescription("The email address is longer than %d characters.", maxEmailLen)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", apierr.ErrInvalidRequest.WithDescription("The email address is not valid; give one bare address such as alice@example.com.")
	}
	return s, nil
}

// normaliseName trims a display name and refuses text that is not UTF-8
// (an HTML form's field may be any bytes; PostgreSQL refuses them, SQLite
// would keep them), control characters and excessive length.
func normaliseName(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		return "", apierr.ErrInvalidRequest.WithDescription("The name is not valid UTF-8 text.")
	}
	if len(s) > maxNameLen {
		return "", apierr.ErrInvalidRequest.WithDescription("The name is longer than %d characters.", maxNameLen)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "", apierr.ErrInvalidRequest.WithDescription("The name contains control characters.")
		}
	}
	return s, nil
}
