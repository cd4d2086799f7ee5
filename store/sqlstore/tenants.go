package sqlstore

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/portcullis-auth/portcullis/store"
)

// TenantIDPrefix starts every tenant id.
const TenantIDPrefix = "ten_"

type tenantRow struct {
	ID        string    `gorm:"column:id;primaryKey"`
	Slug      string    `gorm:"column:slug"`
	Name      string    `gorm:"column:name"`
	Active    bool      `gorm:"column:active"`
	CreatedAt time.Time `gorm:"column:created_at;autoCreateTime:false"`
}

func (tenantRow) TableName() string { return "tenants" }

func (r tenantRow) toTenant() store.Tenant {
	return store.Tenant{ID: r.ID, Slug: r.Slug, Name: r.Name, Active: r.Active, CreatedAt: readTime(r.CreatedAt)}
}

type tenantRoleRow struct {
	TenantID  string    `gorm:"column:tenant_id;primaryKey"`
	UserID    string    `gorm:"column:user_id;primaryKey"`
	Role      string    `gorm:"column:role;primaryKey"`
	CreatedAt time.Time `gorm:"column:created_at;autoCreateTime:false"`
}

func (tenantRoleRow) TableName() string { return "tenant_roles" }

// CreateTenant implements store.Tenants.
func (s *Store) CreateTenant(ctx context.Context, t *store.Tenant) error {
	row := tenantRow{ID: newID(TenantIDPrefix), Slug: t.Slug, Name: t.Name, Active: t.Active, CreatedAt: s.clock()}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return mapErr("create tenant", err)
	}
	t.ID, t.CreatedAt = row.ID, readTime(row.CreatedAt)
	return nil
}

// UpdateTenant implements store.Tenants: the row is read FOR UPDATE
// (SQLite's immediate transaction holds the write lock), so fn sees the
// tenant as the last committed update left it.
func (s *Store) UpdateTenant(ctx context.Context, id string, fn func(t *store.Tenant) error) (store.Tenant, error) {
	if id == "" || !storableText(id) {
		return store.Tenant{}, fmt.Errorf("update tenant: %w", store.ErrNotFound)
	}
	var out store.Tenant
	var fnErr error
	err := s.tx(ctx, func(tx *gorm.DB) error {
		fnErr = nil
		var row tenantRow
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", id).Take(&row).Error; err != nil {
			return mapErr("load tenant", err)
		}
		t := row.toTenant()
		if err := fn(&t); err != nil {
			fnErr = err
			return err
		}
		if err := tx.Model(&tenantRow{}).Where("id = ?", id).
			Updates(map[string]any{"name": t.Name, "active": t.Active}).Error; err != nil {
			return err
		}
		row.Name, row.Active = t.Name, t.Active
		out = row.toTenant()
		return nil
	})
	if fnErr != nil {
		return store.Tenant{}, fnErr
	}
	if err != nil {
		return store.Tenant{}, mapErr("update tenant", err)
	}
	return out, nil
}

// GetTenant implements store.Tenants.
func (s *Store) GetTenant(ctx context.Context, id string) (store.Tenant, error) {
	return s.getTenantWhere(ctx, "get tenant", "id = ?", id)
}

// GetTenantBySlug implements store.Tenants.
func (s *Store) GetTenantBySlug(ctx context.Context, slug string) (store.Tenant, error) {
	return s.getTenantWhere(ctx, "get tenant by slug", "slug = ?", slug)
}

func (s *Store) getTenantWhere(ctx context.Context, what, query, arg string) (store.Tenant, error) {
	if arg == "" || !storableText(arg) {
		return store.Tenant{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	var row tenantRow
	if err := s.db.WithContext(ctx).Where(query, arg).Take(&row).Error; err != nil {
		return store.Tenant{}, mapErr(what, err)
	}
	return row.toTenant(), nil
}

// ListTenants implements store.Tenants. Limit defaults to 50 and is capped
// at 200.
func (s *Store) ListTenants(ctx context.Context, cursor string, limit int) (store.Page[store.Tenant], error) {
	var page store.Page[store.Tenant]
	cur, hasCur, err := decodeCursor(cursor)
	if err != nil {
		return page, fmt.Errorf("list tenants: %w", err)
	}
	n := pageLimit(limit)
	q := s.db.WithContext(ctx).Model(&tenantRow{})
	rows, next, err := oldestFirst(q, cur, hasCur, n, func(r tenantRow) (time.Time, string) { return r.CreatedAt, r.ID })
	if err != nil {
		return page, mapErr("list tenants", err)
	}
	page.NextCursor = next
	page.Items = make([]store.Tenant, 0, len(rows))
	for _, r := range rows {
		page.Items = append(page.Items, r.toTenant())
	}
	return page, nil
}

// TenantRoles implements store.Tenants.
func (s *Store) TenantRoles(ctx context.Context, tenantID, userID string) ([]string, error) {
	if !storableText(tenantID) || !storableText(userID) {
		return []string{}, nil
	}
	roles, err := tenantRolesOf(s.db.WithContext(ctx), tenantID, userID)
	if err != nil {
		return nil, mapErr("tenant roles", err)
	}
	return roles[userID], nil
}

// tenantRolesOf returns the roles in the tenant of each given user, sorted;
// every given user has an entry (empty when not a member).
func tenantRolesOf(db *gorm.DB, tenantID string, ids ...string) (map[string][]string, error) {
	out := make(map[string][]string, len(ids))
	for _, id := range ids {
		out[id] = []string{}
	}
	if len(ids) == 0 {
		return out, nil
	}
	var rows []tenantRoleRow
	if err := db.Where("tenant_id = ? AND user_id IN ?", tenantID, ids).Order("user_id, role").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load tenant roles: %w", err)
	}
	for _, r := range rows {
		out[r.UserID] = append(out[r.UserID], r.Role)
	}
	return out, nil
}

// UserTenantIDs implements store.Tenants.
func (s *Store) UserTenantIDs(ctx context.Context, userID string) ([]string, error) {
	return s.distinctOfUser(ctx, userID, "tenant_id", "tenants of user")
}

// UserHomeTenant implements store.Tenants: users.home_tenant_id
// (migration 20), written with the user by acceptInvite and
// CreateUserInTenant (markHomeTenant).
func (s *Store) UserHomeTenant(ctx context.Context, userID string) (string, error) {
	if !storableText(userID) {
		return "", fmt.Errorf("home tenant of user: %w", store.ErrNotFound)
	}
	var home []string
	if err := s.db.WithContext(ctx).Model(&userRow{}).Where("id = ?", userID).Pluck("home_tenant_id", &home).Error; err != nil {
		return "", mapErr("home tenant of user", err)
	}
	if len(home) == 0 {
		return "", fmt.Errorf("home tenant of user: %w", store.ErrNotFound)
	}
	return home[0], nil
}

// markHomeTenant records, in the transaction that created the user, that
// tenantID created them (UserHomeTenant).
func markHomeTenant(tx *gorm.DB, userID, tenantID string) error {
	return mapErr("mark the user's organisation", tx.Model(&userRow{}).Where("id = ?", userID).
		Update("home_tenant_id", tenantID).Error)
}

// UserTenantRoles implements store.Tenants in one statement (the index on
// tenant_roles.user_id).
func (s *Store) UserTenantRoles(ctx context.Context, userID string) ([]string, error) {
	return s.distinctOfUser(ctx, userID, "role", "tenant roles of user")
}

// distinctOfUser returns the distinct values, sorted, of column (a
// constant of the callers) over the user's tenant_roles rows; none (not
// nil) for an id no row can hold. what names the read in errors.
func (s *Store) distinctOfUser(ctx context.Context, userID, column, what string) ([]string, error) {
	out := []string{}
	if !storableText(userID) {
		return out, nil
	}
	err := s.db.WithContext(ctx).Model(&tenantRoleRow{}).Distinct(column).
		Where("user_id = ?", userID).Order(column).Pluck(column, &out).Error
	if err != nil {
		return nil, mapErr(what, err)
	}
	return out, nil
}

// GrantTenantRole implements store.Tenants. The role must be one the roles
// table holds (ErrNotFound otherwise), as for a global grant.
func (s *Store) GrantTenantRole(ctx context.Context, tenantID, userID, role string) (bool, error) {
	return s.grantRoleRow(ctx, "grant tenant role", userID, role, func(tx *gorm.DB) error { return tenantExists(tx, tenantID) },
		&tenantRoleRow{TenantID: tenantID, UserID: userID, Role: role, CreatedAt: s.clock()})
}

// tenantExists is nil when the tenant is stored, else store.ErrNotFound.
func tenantExists(tx *gorm.DB, tenantID string) error {
	var n int64
	if err := tx.Model(&tenantRow{}).Where("id = ?", tenantID).Count(&n).Error; err != nil {
		return mapErr("look up tenant", err)
	}
	if n == 0 {
		return fmt.Errorf("tenant %q: %w", tenantID, store.ErrNotFound)
	}
	return nil
}

// CreateUserInTenant implements store.Tenants: the user row (marked the
// tenant's own: UserHomeTenant), its global roles and its roles in the
// tenant are inserted in one transaction (as an accepted invite to an
// organisation is), after the tenant and each role are checked as
// GrantTenantRole checks them.
func (s *Store) CreateUserInTenant(ctx context.Context, u *store.User, tenantID string, roles []string) error {
	if u == nil {
		return fmt.Errorf("create user in tenant: %w: nil user", ErrInvalidUser)
	}
	tenantRoles := normaliseRoles(roles)
	if len(tenantRoles) == 0 {
		return fmt.Errorf("create user in tenant: %w: a member holds at least one role", ErrInvalidUser)
	}
	if err := validateUser(u, nil); err != nil {
		return fmt.Errorf("create user in tenant: %w", err)
	}
	now := s.clock()
	nu := newUserRow(*u, now)
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tenantExists(tx, tenantID); err != nil {
			return err
		}
		if err := createUserTx(tx, &nu, now); err != nil {
			return err
		}
		if err := markHomeTenant(tx, nu.ID, tenantID); err != nil {
			return err
		}
		for _, role := range tenantRoles {
			if err := roleKnown(tx, role); err != nil {
				return err
			}
			if err := tx.Create(&tenantRoleRow{TenantID: tenantID, UserID: nu.ID, Role: role, CreatedAt: now}).Error; err != nil {
				return mapErr("give the role in the tenant", err)
			}
		}
		return nil
	})
	if err != nil {
		return mapErr("create user in tenant", err)
	}
	*u = nu
	return nil
}

// RevokeTenantRole implements store.Tenants.
func (s *Store) RevokeTenantRole(ctx context.Context, tenantID, userID, role string) (bool, error) {
	return s.deleteTenantRoles(ctx, "revoke tenant role", tenantID, userID, &role)
}

// RemoveTenantMember implements store.Tenants.
func (s *Store) RemoveTenantMember(ctx context.Context, tenantID, userID string) (bool, error) {
	return s.deleteTenantRoles(ctx, "remove tenant member", tenantID, userID, nil)
}

// deleteTenantRoles removes one role (or, with role nil, every role) of the
// user in the tenant.
func (s *Store) deleteTenantRoles(ctx context.Context, what, tenantID, userID string, role *string) (changed bool, err error) {
	if !storableText(tenantID) || !storableText(userID) || (role != nil && !storableText(*role)) {
		return false, nil
	}
	err = s.userTx(ctx, func(tx *gorm.DB, changing func(string)) error {
		changed = false
		changing(userID)
		q := tx.Where("tenant_id = ? AND user_id = ?", tenantID, userID)
		if role != nil {
			q = q.Where("role = ?", *role)
		}
		res := q.Delete(&tenantRoleRow{})
		if res.Error != nil {
			return mapErr(what, res.Error)
		}
		if res.RowsAffected == 0 {
			return nil
		}
		changed = true
		return s.touchUser(tx, userID)
	})
	if err != nil {
		return false, mapErr(what, err)
	}
	return changed, nil
}

// ListTenantMembers implements store.Tenants: the page is ListUsers's with
// the tenant's filter, so its cursor is the same kind.
func (s *Store) ListTenantMembers(ctx context.Context, tenantID, cursor string, limit int) (store.Page[store.TenantMember], error) {
	var out store.Page[store.TenantMember]
	if tenantID == "" {
		return out, fmt.Errorf("list tenant members: %w", store.ErrNotFound)
	}
	users, err := s.ListUsers(ctx, store.UserFilter{TenantID: tenantID, Cursor: cursor, Limit: limit})
	if err != nil {
		return out, fmt.Errorf("list tenant members: %w", err)
	}
	out.NextCursor = users.NextCursor
	out.Items = make([]store.TenantMember, 0, len(users.Items))
	for _, u := range users.Items {
		out.Items = append(out.Items, store.TenantMember{TenantID: tenantID, UserID: u.ID, Email: u.Email, Roles: u.Roles})
	}
	return out, nil
}

// EnsureDefaultTenant implements store.Tenants. The tenant's insert and the
// copy of the assignments are one transaction: on PostgreSQL a second
// instance's insert waits on the slug's unique index until the first
// commits and then inserts nothing; SQLite write transactions are
// serialised.
func (s *Store) EnsureDefaultTenant(ctx context.Context, name string, platformRoles []string) (created bool, err error) {
	err = s.tx(ctx, func(tx *gorm.DB) error {
		created = false
		now := s.clock()
		row := tenantRow{ID: newID(TenantIDPrefix), Slug: store.DefaultTenantSlug, Name: name, Active: true, CreatedAt: now}
		res := tx.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "slug"}}, DoNothing: true}).Create(&row)
		if res.Error != nil {
			return mapErr("create the default tenant", res.Error)
		}
		if res.RowsAffected == 0 {
			return nil
		}
		q := `INSERT INTO tenant_roles (tenant_id, user_id, role, created_at)
			SELECT ?, user_id, role, ? FROM user_roles`
		args := []any{row.ID, now}
		if len(platformRoles) > 0 {
			q += ` WHERE role NOT IN ?`
			args = append(args, platformRoles)
		}
		if err := tx.Exec(q, args...).Error; err != nil {
			return mapErr("move role assignments into the default tenant", err)
		}
		created = true
		return nil
	})
	if err != nil {
		return false, mapErr("ensure default tenant", err)
	}
	return created, nil
}
