package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/portcullis-auth/portcullis/store"
)

// ErrInvalidRole means a role given to SyncRoles has no name or appears twice.
var ErrInvalidRole = errors.New("sqlstore: invalid role")

// SyncRoles makes the roles table match the policy in one transaction:
// every given role is inserted or updated; a stored role that is not given
// is deleted unless some user still holds it (globally or in a tenant), in which case it is kept
// (and no error is returned) so that no user silently loses a role.
func (s *Store) SyncRoles(ctx context.Context, roles []store.Role) error {
	names := make([]string, 0, len(roles))
	seen := map[string]bool{}
	for _, r := range roles {
		if r.Name == "" || seen[r.Name] {
			return fmt.Errorf("sync roles: %w: empty or duplicate name %q", ErrInvalidRole, r.Name)
		}
		seen[r.Name] = true
		names = append(names, r.Name)
	}
	err := s.tx(ctx, func(tx *gorm.DB) error {
		for _, r := range roles {
			row := roleRow{Name: r.Name, Level: r.Level, Description: r.Description}
			err := tx.Clauses(clause.OnConflict{
				Columns:   []clause.Column{{Name: "name"}},
				DoUpdates: clause.AssignmentColumns([]string{"level", "description"}),
			}).Create(&row).Error
			if err != nil {
				return mapErr("upsert role "+r.Name, err)
			}
		}
		q := tx.Where("NOT EXISTS (SELECT 1 FROM user_roles WHERE user_roles.role = roles.name)").
			Where("NOT EXISTS (SELECT 1 FROM tenant_roles WHERE tenant_roles.role = roles.name)")
		if len(names) > 0 {
			q = q.Where("name NOT IN ?", names)
		}
		if err := q.Delete(&roleRow{}).Error; err != nil {
			return mapErr("delete unused roles", err)
		}
		return nil
	})
	if err != nil {
		return mapErr("sync roles", err)
	}
	return nil
}

// ListRoles returns every role, highest level first, then by name.
func (s *Store) ListRoles(ctx context.Context) ([]store.Role, error) {
	var rows []roleRow
	if err := s.db.WithContext(ctx).Order("level DESC, name ASC").Find(&rows).Error; err != nil {
		return nil, mapErr("list roles", err)
	}
	out := make([]store.Role, len(rows))
	for i, r := range rows {
		out[i] = store.Role{Name: r.Name, Level: r.Level, Description: r.Description}
	}
	return out, nil
}
