package servertest

import (
	"context"
	"net/url"
	"testing"

	"github.com/portcullis-auth/portcullis/policy/password"
	"github.com/portcullis-auth/portcullis/server/app"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/store"
)

// Fixtures create users and clients directly in a deployment's store, for
// tests that are not about creating them.
type Fixtures struct {
	Core   *app.Core
	hasher *password.Hasher
}

// NewFixtures returns fixtures over the deployment of an instance.
func NewFixtures(t testing.TB, core *app.Core) *Fixtures {
	t.Helper()
	h, err := app.NewHasher(core.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &Fixtures{Core: core, hasher: h}
}

// User creates an active user with a verified email and the given roles.
func (f *Fixtures) User(t testing.TB, email, pw string, roles ...string) store.User {
	t.Helper()
	hash, err := f.hasher.Hash(context.Background(), pw)
	if err != nil {
		t.Fatal(err)
	}
	u := store.User{Email: email, PasswordHash: hash, Active: true, EmailVerified: true, Roles: roles}
	if err := f.Core.Store.CreateUser(context.Background(), &u); err != nil {
		t.Fatalf("create user %s: %v", email, err)
	}
	return u
}

// TenantUser creates an active user with a verified email as the
// organisation tenantID's own account, as its accepted invite would: no
// global role, the given roles held in the organisation, and marked as
// created by it (store.Tenants.UserHomeTenant).
func (f *Fixtures) TenantUser(t testing.TB, tenantID, email, pw string, roles ...string) store.User {
	t.Helper()
	hash, err := f.hasher.Hash(context.Background(), pw)
	if err != nil {
		t.Fatal(err)
	}
	u := store.User{Email: email, PasswordHash: hash, Active: true, EmailVerified: true}
	if err := f.Core.Store.CreateUserInTenant(context.Background(), &u, tenantID, roles); err != nil {
		t.Fatalf("create user %s in tenant %s: %v", email, tenantID, err)
	}
	return u
}

// Client creates an OAuth client and returns its secret ("" for public
// clients), under the rule of every client (clients.Clashes, with the
// deployment's default audience and issuer reserved).
func (f *Fixtures) Client(t testing.TB, spec clients.Spec) string {
	t.Helper()
	if spec.ReservedAudiences == nil {
		spec.ReservedAudiences = clients.ServerAudiences(f.Core.Config.DefaultAudience, f.Core.Config.Issuer)
	}
	_, secret, err := clients.Create(context.Background(), f.Core.Store, spec)
	if err != nil {
		t.Fatalf("create client %s: %v", spec.ID, err)
	}
	return secret
}

// Issuer is the deployment's issuer: the audience the admin API requires.
func (f *Fixtures) Issuer() string { return f.Core.Config.Issuer }

// AdminClient creates a confidential client (password and refresh_token
// grants, every permission) whose access tokens carry the issuer audience,
// so they are accepted at /admin, and returns its secret.
func (f *Fixtures) AdminClient(t testing.TB, id string) string {
	t.Helper()
	return f.Client(t, clients.Spec{ID: id, Name: id, Audiences: []string{f.Issuer()}})
}

// PasswordForm is a password grant form.
func PasswordForm(username, pw, scope string) url.Values {
	v := url.Values{"grant_type": {"password"}, "username": {username}, "password": {pw}}
	if scope != "" {
		v.Set("scope", scope)
	}
	return v
}

// RefreshForm is a refresh_token grant form.
func RefreshForm(rt string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
}

// TokenResponse is the token endpoint's JSON answer.
type TokenResponse struct {
	AccessToken        string `json:"access_token"`
	TokenType          string `json:"token_type"`
	ExpiresIn          int64  `json:"expires_in"`
	RefreshToken       string `json:"refresh_token"`
	Scope              string `json:"scope"`
	IDToken            string `json:"id_token"`
	MustChangePassword bool   `json:"must_change_password"`
}

// Token decodes a successful token response.
func (r *Response) Token() TokenResponse {
	r.t.Helper()
	r.ExpectStatus(200)
	var tr TokenResponse
	r.JSON(&tr)
	if tr.AccessToken == "" || tr.TokenType != "Bearer" {
		r.t.Fatalf("not a token response: %s", r.Body)
	}
	return tr
}
