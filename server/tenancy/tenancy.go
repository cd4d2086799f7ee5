package tenancy

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/store"
)

// ErrRefused means a login or session cannot have the tenant it names: the
// tenant is unknown or inactive, or the user holds no role in it. Callers
// answer it alike in every case (400 invalid_grant at the token endpoint),
// so it tells nobody which tenants exist.
var ErrRefused = errors.New("tenancy: the tenant is unknown or inactive, or the user is not a member")

// MaxSlugLen is the longest tenant slug.
const MaxSlugLen = 63

var slugRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidSlug reports whether s can be a tenant's slug: 1 to 63 lower-case
// letters, digits and hyphens, starting and ending with a letter or digit
// (a DNS label, so it fits in a host name or a path segment unescaped).
func ValidSlug(s string) bool { return len(s) <= MaxSlugLen && slugRE.MatchString(s) }

// Store reads tenants and memberships (*sqlstore.Store implements it).
type Store interface {
	GetTenant(ctx context.Context, id string) (store.Tenant, error)
	GetTenantBySlug(ctx context.Context, slug string) (store.Tenant, error)
	TenantRoles(ctx context.Context, tenantID, userID string) ([]string, error)
}

// Resolver decides the roles of a user in a tenant, or outside any.
type Resolver struct {
	store  Store
	policy *policy.Policy
}

// New returns a Resolver reading st under the policy p.
func New(st Store, p *policy.Policy) *Resolver { return &Resolver{store: st, policy: p} }

// Platform returns u holding only its platform roles (policy `platform:
// true`): the roles of a login that names no tenant.
func (r *Resolver) Platform(u store.User) store.User {
	u.Roles, _ = r.policy.SplitPlatform(u.Roles)
	return u
}

// ForLogin returns u with the roles of a login naming the tenant slug: with
// slug "" its platform roles only and no tenant; otherwise the roles it
// holds in that tenant (never a platform role) and the tenant. ErrRefused
// when the tenant is unknown or inactive or u holds no role there.
func (r *Resolver) ForLogin(ctx context.Context, u store.User, slug string) (store.User, store.Tenant, error) {
	if slug == "" {
		return r.Platform(u), store.Tenant{}, nil
	}
	if !ValidSlug(slug) {
		return store.User{}, store.Tenant{}, ErrRefused
	}
	t, err := r.store.GetTenantBySlug(ctx, slug)
	return r.within(ctx, u, t, err)
}

// ForSession is ForLogin for a session bound to the tenant with this id
// ("" for a session of no tenant): a refresh re-reads the membership, so a
// removed member's next refresh is refused.
func (r *Resolver) ForSession(ctx context.Context, u store.User, tenantID string) (store.User, store.Tenant, error) {
	if tenantID == "" {
		return r.Platform(u), store.Tenant{}, nil
	}
	t, err := r.store.GetTenant(ctx, tenantID)
	return r.within(ctx, u, t, err)
}

// within gives u the roles it holds in t (found by a lookup that returned
// err).
func (r *Resolver) within(ctx context.Context, u store.User, t store.Tenant, err error) (store.User, store.Tenant, error) {
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, store.Tenant{}, ErrRefused
	}
	if err != nil {
		return store.User{}, store.Tenant{}, fmt.Errorf("load tenant: %w", err)
	}
	if !t.Active {
		return store.User{}, store.Tenant{}, ErrRefused
	}
	roles, err := r.store.TenantRoles(ctx, t.ID, u.ID)
	if err != nil {
		return store.User{}, store.Tenant{}, fmt.Errorf("load the user's roles in the tenant: %w", err)
	}
	_, roles = r.policy.SplitPlatform(roles)
	if len(roles) == 0 {
		return store.User{}, store.Tenant{}, ErrRefused
	}
	u.Roles = roles
	return u, t, nil
}

// GetTenant returns the tenant with this id (store.ErrNotFound when there
// is none): the tenant of a client.
func (r *Resolver) GetTenant(ctx context.Context, id string) (store.Tenant, error) {
	return r.store.GetTenant(ctx, id)
}

// TenantBySlug returns the tenant with this slug (store.ErrNotFound when
// there is none): the tenant a token's claim names.
func (r *Resolver) TenantBySlug(ctx context.Context, slug string) (store.Tenant, error) {
	return r.store.GetTenantBySlug(ctx, slug)
}
