package sqlstore

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/store"
)

var _ store.FederatedIdentities = (*Store)(nil)

// identityRow is a row of federated_identities (migrations 11 and 19).
type identityRow struct {
	Provider string    `gorm:"column:provider;primaryKey"`
	Issuer   string    `gorm:"column:issuer;primaryKey"`
	Subject  string    `gorm:"column:subject;primaryKey"`
	UserID   string    `gorm:"column:user_id"`
	Email    string    `gorm:"column:email"`
	LinkedAt time.Time `gorm:"column:linked_at"`
}

func (identityRow) TableName() string { return "federated_identities" }

func (r identityRow) identity() store.FederatedIdentity {
	return store.FederatedIdentity{Provider: r.Provider, Issuer: r.Issuer, Subject: r.Subject, UserID: r.UserID, Email: r.Email,
		LinkedAt: readTime(r.LinkedAt)}
}

// knownIssuer reports whether iss may name the issuer of a link: not one of
// the markers of links made before issuers were kept.
func knownIssuer(iss string) bool {
	return iss != store.IssuerUnresolved && iss != store.IssuerUnknown
}

// validIdentity refuses an identity without its provider, issuer, subject
// or user.
func validIdentity(fi *store.FederatedIdentity, needUser bool) error {
	if fi == nil || fi.Provider == "" || !knownIssuer(fi.Issuer) || fi.Subject == "" || (needUser && fi.UserID == "") {
		return fmt.Errorf("%w: a federated identity needs its provider, issuer, subject and user", ErrInvalidUser)
	}
	return nil
}

// GetFederatedIdentity implements store.FederatedIdentities: the one
// lookup of every upstream sign-in, by the issuer too, so that a link made
// under another issuer, or before issuers were kept and not resolved since,
// is no one's.
func (s *Store) GetFederatedIdentity(ctx context.Context, provider, issuer, subject string) (store.FederatedIdentity, error) {
	if !knownIssuer(issuer) {
		return store.FederatedIdentity{}, fmt.Errorf("get federated identity: %w", store.ErrNotFound)
	}
	var row identityRow
	q := s.db.WithContext(ctx).Where("provider = ? AND issuer = ? AND subject = ?", provider, issuer, subject)
	if err := q.Take(&row).Error; err != nil {
		return store.FederatedIdentity{}, mapErr("get federated identity", err)
	}
	return row.identity(), nil
}

// LinkFederatedIdentity implements store.FederatedIdentities: one INSERT,
// so the primary key (provider, issuer, subject) and the unique (user,
// provider) decide races.
func (s *Store) LinkFederatedIdentity(ctx context.Context, fi *store.FederatedIdentity) error {
	if err := validIdentity(fi, true); err != nil {
		return fmt.Errorf("link federated identity: %w", err)
	}
	fi.LinkedAt = s.clock()
	if err := insertIdentity(s.db.WithContext(ctx), fi); err != nil {
		return fmt.Errorf("link federated identity: %w", err)
	}
	return nil
}

func insertIdentity(db *gorm.DB, fi *store.FederatedIdentity) error {
	row := identityRow{Provider: fi.Provider, Issuer: fi.Issuer, Subject: fi.Subject, UserID: fi.UserID, Email: fi.Email, LinkedAt: fi.LinkedAt}
	err := db.Create(&row).Error
	if IsForeignKeyViolation(err) {
		return fmt.Errorf("unknown user %q: %w", fi.UserID, store.ErrNotFound)
	}
	return mapErr("insert federated identity", err)
}

// CreateUserWithIdentity implements store.FederatedIdentities.
func (s *Store) CreateUserWithIdentity(ctx context.Context, u *store.User, fi *store.FederatedIdentity) error {
	if u == nil {
		return fmt.Errorf("create user with identity: %w: nil user", ErrInvalidUser)
	}
	if err := validateUser(u, nil); err != nil {
		return fmt.Errorf("create user with identity: %w", err)
	}
	if err := validIdentity(fi, false); err != nil {
		return fmt.Errorf("create user with identity: %w", err)
	}
	now := s.clock()
	nu := *u
	nu.ID = newID(UserIDPrefix)
	nu.CreatedAt, nu.UpdatedAt = now, now
	nu.Roles = normaliseRoles(u.Roles)
	nfi := *fi
	nfi.UserID, nfi.LinkedAt = nu.ID, now
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := createUserTx(tx, &nu, now); err != nil {
			return err
		}
		return insertIdentity(tx, &nfi)
	})
	if err != nil {
		return mapErr("create user with identity", err)
	}
	*u, *fi = nu, nfi
	return nil
}

// ListFederatedIdentities implements store.FederatedIdentities.
func (s *Store) ListFederatedIdentities(ctx context.Context, userID string) ([]store.FederatedIdentity, error) {
	var rows []identityRow
	if err := s.db.WithContext(ctx).Where("user_id = ?", userID).Order("provider").Find(&rows).Error; err != nil {
		return nil, mapErr("list federated identities", err)
	}
	out := make([]store.FederatedIdentity, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.identity())
	}
	return out, nil
}

// DeleteFederatedIdentity implements store.FederatedIdentities.
func (s *Store) DeleteFederatedIdentity(ctx context.Context, userID, provider string) (store.FederatedIdentity, error) {
	var out store.FederatedIdentity
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var row identityRow
		if err := tx.Where("user_id = ? AND provider = ?", userID, provider).Take(&row).Error; err != nil {
			return mapErr("load federated identity", err)
		}
		res := tx.Where("provider = ? AND subject = ? AND user_id = ?", row.Provider, row.Subject, userID).Delete(&identityRow{})
		if res.Error != nil {
			return mapErr("delete federated identity", res.Error)
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		out = row.identity()
		return nil
	})
	if err != nil {
		return store.FederatedIdentity{}, fmt.Errorf("delete federated identity: %w", err)
	}
	return out, nil
}

// IssuerResolution is what ResolveIdentityIssuers did: how many links made
// before issuers were kept it gave their provider's configured issuer, and
// how many it marked store.IssuerUnknown (their provider is not configured).
type IssuerResolution struct {
	Resolved int64
	Unknown  int64
}

// ResolveIdentityIssuers is a start step: it gives every link still
// awaiting its issuer (store.IssuerUnresolved: made before migration 19)
// the issuer that issuers (provider id to issuer, the providers file in
// force) names for its provider, and marks the rest store.IssuerUnknown,
// in one transaction. Those links were made under the issuer of the file
// in force when they were made, which the migration cannot know; the file
// of the first start after the upgrade is the best witness of it. A link
// whose provider that file does not configure is marked so that no later
// file resolves it: a provider id deleted and later given to another
// issuer must not inherit the old issuer's links. Only pending links are
// read (a partial index), so later starts cost nothing.
func (s *Store) ResolveIdentityIssuers(ctx context.Context, issuers map[string]string) (IssuerResolution, error) {
	var out IssuerResolution
	err := s.tx(ctx, func(tx *gorm.DB) error {
		out = IssuerResolution{}
		for provider, iss := range issuers {
			if !knownIssuer(iss) {
				continue
			}
			res := tx.Model(&identityRow{}).Where("issuer = ? AND provider = ?", store.IssuerUnresolved, provider).
				Update("issuer", iss)
			if res.Error != nil {
				return mapErr("resolve the issuer of "+provider+"'s links", res.Error)
			}
			out.Resolved += res.RowsAffected
		}
		res := tx.Model(&identityRow{}).Where("issuer = ?", store.IssuerUnresolved).Update("issuer", store.IssuerUnknown)
		if res.Error != nil {
			return mapErr("mark the links of providers not configured", res.Error)
		}
		out.Unknown = res.RowsAffected
		return nil
	})
	if err != nil {
		return IssuerResolution{}, fmt.Errorf("resolve identity issuers: %w", err)
	}
	return out, nil
}
