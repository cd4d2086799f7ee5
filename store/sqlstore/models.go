package sqlstore

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Current row models used by the repository methods. The schema they read
// and write is made by the migrations; changing a model here needs a new
// migration there.

type userRow struct {
	ID                 string  `gorm:"column:id;primaryKey"`
	Kind               string  `gorm:"column:kind"`
	Email              string  `gorm:"column:email"`
	EmailLower         string  `gorm:"column:email_lower"`
	Username           *string `gorm:"column:username"`
	Name               string  `gorm:"column:name"`
	NameLower          string  `gorm:"column:name_lower"`
	PasswordHash       string  `gorm:"column:password_hash"`
	Active             bool    `gorm:"column:active"`
	EmailVerified      bool    `gorm:"column:email_verified"`
	MustChangePassword bool    `gorm:"column:must_change_password"`
	PasswordUnproven   bool    `gorm:"column:password_unproven"`
	// PasswordHashForeign has no default tag: GORM then inserts false as
	// given, where the column's default (true) is for rows inserted by SQL.
	PasswordHashForeign bool       `gorm:"column:password_hash_foreign"`
	CreatedAt           time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	UpdatedAt           time.Time  `gorm:"column:updated_at;autoUpdateTime:false"`
	LastLoginAt         *time.Time `gorm:"column:last_login_at"`
}

func (userRow) TableName() string { return "users" }

func userToRow(u *store.User) userRow {
	var username *string
	if u.Username != "" {
		v := u.Username
		username = &v
	}
	return userRow{
		ID:                  u.ID,
		Kind:                userKind(u.Kind),
		Email:               u.Email,
		EmailLower:          store.EmailKey(u.Email),
		Username:            username,
		Name:                u.Name,
		NameLower:           strings.ToLower(u.Name),
		PasswordHash:        u.PasswordHash,
		Active:              u.Active,
		EmailVerified:       u.EmailVerified,
		MustChangePassword:  u.MustChangePassword,
		PasswordUnproven:    u.PasswordUnproven,
		PasswordHashForeign: u.PasswordHashForeign,
		CreatedAt:           dbTime(u.CreatedAt),
		UpdatedAt:           dbTime(u.UpdatedAt),
		LastLoginAt:         dbTimePtr(u.LastLoginAt),
	}
}

func (r userRow) toUser(roles []string) store.User {
	u := store.User{
		ID:                  r.ID,
		Kind:                userKind(r.Kind),
		Email:               r.Email,
		Name:                r.Name,
		PasswordHash:        r.PasswordHash,
		Active:              r.Active,
		EmailVerified:       r.EmailVerified,
		MustChangePassword:  r.MustChangePassword,
		PasswordUnproven:    r.PasswordUnproven,
		PasswordHashForeign: r.PasswordHashForeign,
		Roles:               roles,
		CreatedAt:           readTime(r.CreatedAt),
		UpdatedAt:           readTime(r.UpdatedAt),
		LastLoginAt:         readTimePtr(r.LastLoginAt),
	}
	if r.Username != nil {
		u.Username = *r.Username
	}
	if u.Roles == nil {
		u.Roles = []string{}
	}
	return u
}

// userKind is the stored kind of an account: "" is a human.
func userKind(k string) string {
	if k == "" {
		return store.UserHuman
	}
	return k
}

type roleRow struct {
	Name        string `gorm:"column:name;primaryKey"`
	Level       int    `gorm:"column:level"`
	Description string `gorm:"column:description"`
}

func (roleRow) TableName() string { return "roles" }

type userRoleRow struct {
	UserID    string    `gorm:"column:user_id;primaryKey"`
	Role      string    `gorm:"column:role;primaryKey"`
	CreatedAt time.Time `gorm:"column:created_at;autoCreateTime:false"`
}

func (userRoleRow) TableName() string { return "user_roles" }

type inviteRow struct {
	ID         string     `gorm:"column:id;primaryKey"`
	Email      string     `gorm:"column:email"`
	EmailLower string     `gorm:"column:email_lower"`
	Role       string     `gorm:"column:role"`
	TokenHash  []byte     `gorm:"column:token_hash"`
	InvitedBy  string     `gorm:"column:invited_by"`
	Status     string     `gorm:"column:status"`
	ExpiresAt  time.Time  `gorm:"column:expires_at"`
	CreatedAt  time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	AcceptedAt *time.Time `gorm:"column:accepted_at"`
	UserID     string     `gorm:"column:user_id"`
	TenantID   string     `gorm:"column:tenant_id"`
}

func (inviteRow) TableName() string { return "invites" }

func (r inviteRow) toInvite() store.Invite {
	return store.Invite{
		ID:         r.ID,
		Email:      r.Email,
		Role:       r.Role,
		TokenHash:  r.TokenHash,
		InvitedBy:  r.InvitedBy,
		Status:     store.InviteStatus(r.Status),
		ExpiresAt:  readTime(r.ExpiresAt),
		CreatedAt:  readTime(r.CreatedAt),
		AcceptedAt: readTimePtr(r.AcceptedAt),
		UserID:     r.UserID,
		TenantID:   r.TenantID,
	}
}

type userTokenRow struct {
	ID        string     `gorm:"column:id;primaryKey"`
	UserID    string     `gorm:"column:user_id"`
	Purpose   string     `gorm:"column:purpose"`
	TokenHash []byte     `gorm:"column:token_hash"`
	ExpiresAt time.Time  `gorm:"column:expires_at"`
	UsedAt    *time.Time `gorm:"column:used_at"`
	CreatedAt time.Time  `gorm:"column:created_at;autoCreateTime:false"`
}

func (userTokenRow) TableName() string { return "user_tokens" }

type clientRow struct {
	ID               string    `gorm:"column:id;primaryKey"`
	Name             string    `gorm:"column:name"`
	Public           bool      `gorm:"column:public"`
	SecretHash       []byte    `gorm:"column:secret_hash"`
	Grants           *string   `gorm:"column:grants"`
	Scopes           *string   `gorm:"column:scopes"`
	Audiences        *string   `gorm:"column:audiences"`
	AccessTokenTTLMS int64     `gorm:"column:access_token_ttl_ms"`
	RefreshIdleTTLMS int64     `gorm:"column:refresh_idle_ttl_ms"`
	RefreshMaxAgeMS  int64     `gorm:"column:refresh_max_age_ms"`
	CreatedAt        time.Time `gorm:"column:created_at;autoCreateTime:false"`
	UpdatedAt        time.Time `gorm:"column:updated_at;autoUpdateTime:false"`

	RedirectURIs           *string `gorm:"column:redirect_uris"`
	PostLogoutRedirectURIs *string `gorm:"column:post_logout_redirect_uris"`
	FirstParty             bool    `gorm:"column:first_party"`
	ApplicationType        string  `gorm:"column:application_type"`
	RequirePKCE            bool    `gorm:"column:require_pkce"`
	RequirePAR             bool    `gorm:"column:require_pushed_authorization_requests"`
	BackchannelLogoutURI   string  `gorm:"column:backchannel_logout_uri"`
	LogoURI                string  `gorm:"column:logo_uri"`
	ClientURI              string  `gorm:"column:client_uri"`

	RefreshTokenDelivery string  `gorm:"column:refresh_token_delivery"`
	AllowedOrigins       *string `gorm:"column:allowed_origins"`

	TenantID string `gorm:"column:tenant_id"`
}

func (clientRow) TableName() string { return "oauth_clients" }

// encodeList stores a list as a JSON array, keeping nil (NULL) apart from
// empty ("[]").
func encodeList(l []string) *string {
	if l == nil {
		return nil
	}
	b, _ := json.Marshal(l) // cannot fail for []string
	s := string(b)
	return &s
}

func decodeList(s *string) ([]string, error) {
	if s == nil {
		return nil, nil
	}
	out := []string{}
	if err := json.Unmarshal([]byte(*s), &out); err != nil {
		return nil, fmt.Errorf("decode list column: %w", err)
	}
	return out, nil
}

func clientToRow(c *store.Client) clientRow {
	return clientRow{
		ID:               c.ID,
		Name:             c.Name,
		Public:           c.Public,
		SecretHash:       c.SecretHash,
		Grants:           encodeList(c.Grants),
		Scopes:           encodeList(c.Scopes),
		Audiences:        encodeList(c.Audiences),
		AccessTokenTTLMS: c.AccessTokenTTL.Milliseconds(),
		RefreshIdleTTLMS: c.RefreshIdleTTL.Milliseconds(),
		RefreshMaxAgeMS:  c.RefreshMaxAge.Milliseconds(),
		CreatedAt:        dbTime(c.CreatedAt),
		UpdatedAt:        dbTime(c.UpdatedAt),

		RedirectURIs:           encodeList(c.RedirectURIs),
		PostLogoutRedirectURIs: encodeList(c.PostLogoutRedirectURIs),
		FirstParty:             c.FirstParty,
		ApplicationType:        c.ApplicationType,
		RequirePKCE:            c.RequirePKCE,
		RequirePAR:             c.RequirePushedAuthorizationRequests,
		BackchannelLogoutURI:   c.BackchannelLogoutURI,
		LogoURI:                c.LogoURI,
		ClientURI:              c.ClientURI,

		RefreshTokenDelivery: c.RefreshTokenDelivery,
		AllowedOrigins:       encodeList(c.AllowedOrigins),

		TenantID: c.TenantID,
	}
}

func (r clientRow) toClient() (store.Client, error) {
	c := store.Client{
		ID:             r.ID,
		Name:           r.Name,
		Public:         r.Public,
		SecretHash:     r.SecretHash,
		AccessTokenTTL: time.Duration(r.AccessTokenTTLMS) * time.Millisecond,
		RefreshIdleTTL: time.Duration(r.RefreshIdleTTLMS) * time.Millisecond,
		RefreshMaxAge:  time.Duration(r.RefreshMaxAgeMS) * time.Millisecond,
		CreatedAt:      readTime(r.CreatedAt),
		UpdatedAt:      readTime(r.UpdatedAt),

		FirstParty:           r.FirstParty,
		ApplicationType:      r.ApplicationType,
		RequirePKCE:          r.RequirePKCE,
		BackchannelLogoutURI: r.BackchannelLogoutURI,
		LogoURI:              r.LogoURI,
		ClientURI:            r.ClientURI,

		RequirePushedAuthorizationRequests: r.RequirePAR,
		RefreshTokenDelivery:               r.RefreshTokenDelivery,
		TenantID:                           r.TenantID,
	}
	var err error
	if c.Grants, err = decodeList(r.Grants); err != nil {
		return c, fmt.Errorf("client %s grants: %w", r.ID, err)
	}
	if c.Scopes, err = decodeList(r.Scopes); err != nil {
		return c, fmt.Errorf("client %s scopes: %w", r.ID, err)
	}
	if c.Audiences, err = decodeList(r.Audiences); err != nil {
		return c, fmt.Errorf("client %s audiences: %w", r.ID, err)
	}
	if c.RedirectURIs, err = decodeList(r.RedirectURIs); err != nil {
		return c, fmt.Errorf("client %s redirect URIs: %w", r.ID, err)
	}
	if c.PostLogoutRedirectURIs, err = decodeList(r.PostLogoutRedirectURIs); err != nil {
		return c, fmt.Errorf("client %s post-logout redirect URIs: %w", r.ID, err)
	}
	if c.AllowedOrigins, err = decodeList(r.AllowedOrigins); err != nil {
		return c, fmt.Errorf("client %s allowed origins: %w", r.ID, err)
	}
	return c, nil
}

type signingKeyRow struct {
	KID              string     `gorm:"column:kid;primaryKey"`
	Alg              string     `gorm:"column:alg"`
	State            string     `gorm:"column:state"`
	PublicJWK        string     `gorm:"column:public_jwk"`
	PrivateEncrypted []byte     `gorm:"column:private_encrypted"`
	CreatedAt        time.Time  `gorm:"column:created_at;autoCreateTime:false"`
	ActivatedAt      *time.Time `gorm:"column:activated_at"`
	RetiredAt        *time.Time `gorm:"column:retired_at"`
	RevokedAt        *time.Time `gorm:"column:revoked_at"`
	PublishedUntil   *time.Time `gorm:"column:published_until"`
	Version          int64      `gorm:"column:version"`
}

func (signingKeyRow) TableName() string { return "signing_keys" }

func keyToRow(k store.SigningKey) signingKeyRow {
	return signingKeyRow{
		KID:              k.KID,
		Alg:              k.Alg,
		State:            string(k.State),
		PublicJWK:        string(k.PublicJWK),
		PrivateEncrypted: k.PrivateEncrypted,
		CreatedAt:        dbTime(k.CreatedAt),
		ActivatedAt:      dbTimePtr(k.ActivatedAt),
		RetiredAt:        dbTimePtr(k.RetiredAt),
		RevokedAt:        dbTimePtr(k.RevokedAt),
		PublishedUntil:   dbTimePtr(k.PublishedUntil),
		Version:          k.Version,
	}
}

func (r signingKeyRow) toKey() store.SigningKey {
	return store.SigningKey{
		KID:              r.KID,
		Alg:              r.Alg,
		State:            store.KeyState(r.State),
		PublicJWK:        []byte(r.PublicJWK),
		PrivateEncrypted: r.PrivateEncrypted,
		CreatedAt:        readTime(r.CreatedAt),
		ActivatedAt:      readTimePtr(r.ActivatedAt),
		RetiredAt:        readTimePtr(r.RetiredAt),
		RevokedAt:        readTimePtr(r.RevokedAt),
		PublishedUntil:   readTimePtr(r.PublishedUntil),
		Version:          r.Version,
	}
}

type auditRow struct {
	ID         string    `gorm:"column:id;primaryKey"`
	OccurredAt time.Time `gorm:"column:occurred_at"`
	Action     string    `gorm:"column:action"`
	Outcome    string    `gorm:"column:outcome"`
	ActorID    string    `gorm:"column:actor_id"`
	TargetID   string    `gorm:"column:target_id"`
	ClientID   string    `gorm:"column:client_id"`
	IP         string    `gorm:"column:ip"`
	UserAgent  string    `gorm:"column:user_agent"`
	Details    string    `gorm:"column:details"`
	TenantID   string    `gorm:"column:tenant_id"`
}

func (auditRow) TableName() string { return "audit_events" }

func (r auditRow) toEvent() (store.AuditEvent, error) {
	e := store.AuditEvent{
		ID:        r.ID,
		Time:      readTime(r.OccurredAt),
		Action:    r.Action,
		Outcome:   store.Outcome(r.Outcome),
		ActorID:   r.ActorID,
		TargetID:  r.TargetID,
		ClientID:  r.ClientID,
		IP:        r.IP,
		UserAgent: r.UserAgent,
		Details:   map[string]string{},
		TenantID:  r.TenantID,
	}
	if r.Details != "" {
		if err := json.Unmarshal([]byte(r.Details), &e.Details); err != nil {
			return e, fmt.Errorf("audit event %s details: %w", r.ID, err)
		}
		if e.Details == nil {
			e.Details = map[string]string{}
		}
	}
	return e, nil
}

// normaliseRoles returns the role names sorted and without duplicates or
// empty names.
func normaliseRoles(roles []string) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, r := range roles {
		if r == "" || seen[r] {
			continue
		}
		seen[r] = true
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// retiredClientNameRow is a name a deleted client left live in tokens
// (migration 26; store.RetiredClientName).
type retiredClientNameRow struct {
	ID           string    `gorm:"column:id;primaryKey"`
	Name         string    `gorm:"column:name"`
	Kind         string    `gorm:"column:kind"`
	ClientID     string    `gorm:"column:client_id"`
	RetiredUntil time.Time `gorm:"column:retired_until"`
	CreatedAt    time.Time `gorm:"column:created_at;autoCreateTime:false"`
}

func (retiredClientNameRow) TableName() string { return "retired_client_names" }
