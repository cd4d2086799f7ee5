package store

import (
	"context"
	"time"
)

// DefaultTenantSlug is the slug of the tenant that turning organisations on
// moves every existing role assignment into (contract, "Organisations").
const DefaultTenantSlug = "default"

// Tenant is an organisation: a customer of a multi-tenant product. Users
// stay global; a user's roles inside a tenant are its memberships.
type Tenant struct {
	ID        string
	Slug      string // the `tenant` claim of the tenant's tokens; unique
	Name      string
	Active    bool
	CreatedAt time.Time
}

// TenantMember is a user's membership of a tenant with the roles they hold
// there. A user is a member while they hold at least one role in it.
type TenantMember struct {
	TenantID string
	UserID   string
	Email    string // the user's, filled by reads
	Roles    []string
}

// Tenants stores organisations and the per-tenant role assignments.
// Memberships are removed with their user and with their tenant.
type Tenants interface {
	// CreateTenant stores t (ID and CreatedAt are set by the store and
	// written back); ErrAlreadyExists when the slug is taken.
	CreateTenant(ctx context.Context, t *Tenant) error
	// UpdateTenant applies fn to the tenant with this id as read, locked,
	// in one transaction, and writes the name and active flag fn leaves
	// (its id, slug and creation time stay); it returns the tenant written.
	// Concurrent updates serialise, so none writes back a field another
	// changed meanwhile. An error of fn is returned as is and writes
	// nothing; ErrNotFound when there is no such tenant. fn may run more
	// than once (a retried transaction).
	UpdateTenant(ctx context.Context, id string, fn func(t *Tenant) error) (Tenant, error)
	// GetTenant returns the tenant with this id, or ErrNotFound.
	GetTenant(ctx context.Context, id string) (Tenant, error)
	// GetTenantBySlug returns the tenant with this slug (exact), or ErrNotFound.
	GetTenantBySlug(ctx context.Context, slug string) (Tenant, error)
	// ListTenants returns one page of tenants, oldest first.
	ListTenants(ctx context.Context, cursor string, limit int) (Page[Tenant], error)
	// TenantRoles returns the roles the user holds in the tenant, sorted;
	// empty (not nil) when they are not a member.
	TenantRoles(ctx context.Context, tenantID, userID string) ([]string, error)
	// UserTenantIDs returns the ids of the tenants the user is a member of, sorted.
	UserTenantIDs(ctx context.Context, userID string) ([]string, error)
	// UserHomeTenant returns the id of the tenant that created the user:
	// an accepted invite of the tenant (AcceptInvite) or
	// CreateUserInTenant; "" for an account made otherwise (whatever
	// tenants it joined since). The mark never changes. ErrNotFound when
	// there is no such user.
	UserHomeTenant(ctx context.Context, userID string) (string, error)
	// UserTenantRoles returns every role the user holds in any tenant
	// (active or not), each once, sorted; empty (not nil) when none. The
	// privilege ceiling of an operation on the whole account compares them.
	UserTenantRoles(ctx context.Context, userID string) ([]string, error)
	// GrantTenantRole gives the user the role in the tenant and reports
	// whether it changed anything; ErrNotFound when the user or the tenant
	// does not exist.
	GrantTenantRole(ctx context.Context, tenantID, userID, role string) (bool, error)
	// CreateUserInTenant creates u (as CreateUser does, u.Roles being its
	// global roles) holding roles (at least one) in the tenant, in one
	// transaction: nothing is created when any part fails. ErrNotFound
	// when the tenant or a role does not exist; ErrAlreadyExists as
	// CreateUser.
	CreateUserInTenant(ctx context.Context, u *User, tenantID string, roles []string) error
	// RevokeTenantRole takes the role in the tenant from the user and
	// reports whether it changed anything.
	RevokeTenantRole(ctx context.Context, tenantID, userID, role string) (bool, error)
	// RemoveTenantMember removes every role of the user in the tenant and
	// reports whether they were a member.
	RemoveTenantMember(ctx context.Context, tenantID, userID string) (bool, error)
	// ListTenantMembers returns one page of the tenant's members, oldest
	// membership first, each with their email and roles there.
	ListTenantMembers(ctx context.Context, tenantID, cursor string, limit int) (Page[TenantMember], error)
	// EnsureDefaultTenant is the one-time move of today's role assignments
	// into the tenant with slug DefaultTenantSlug: when no such tenant
	// exists it creates it (named name) and gives every user, inside it,
	// each global role they hold that is not in platformRoles, all in one
	// transaction, and reports true. When the tenant exists it changes
	// nothing and reports false, so it is idempotent and safe with many
	// instances starting at once (exactly one of them moves anything).
	// Global assignments are kept: turning organisations off again restores
	// the behaviour from before.
	EnsureDefaultTenant(ctx context.Context, name string, platformRoles []string) (bool, error)
}
