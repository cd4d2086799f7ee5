package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/portcullis-auth/portcullis/store"
)

// ErrInvalidToken means a one-time token record (invite or user token) lacks
// a required field.
var ErrInvalidToken = errors.New("sqlstore: invalid one-time token record")

// CreateInvite stores a pending invite. It supersedes nothing: older
// pending invites for the same email (store.EmailKey) and tenant stay
// pending until SupersedeInvites is called, once the new invite's email
// went out, so a new invite whose email cannot be sent cancels nothing. It
// fills ID, Status and CreatedAt; ExpiresAt must be set.
//
// When mayReplace is not nil it is called once, inside the transaction and
// with the rows locked, with the pending invites the new one is to replace
// (oldest first; possibly none); if it returns an error nothing is written
// and CreateInvite returns that error (wrapped). The caller keeps the ids
// it approved and passes them to SupersedeInvites: one created
// concurrently was not approved and is left pending. A retried
// transaction calls it again; the last call describes what was committed.
func (s *Store) CreateInvite(ctx context.Context, inv *store.Invite, mayReplace func(pending []store.Invite) error) error {
	if inv == nil || strings.TrimSpace(inv.Email) == "" || inv.Role == "" || len(inv.TokenHash) == 0 || inv.ExpiresAt.IsZero() {
		return fmt.Errorf("create invite: %w: email, role, token hash and expiry are required", ErrInvalidToken)
	}
	now := s.clock()
	row := inviteRow{
		ID:         newID(InviteIDPrefix),
		Email:      inv.Email,
		EmailLower: store.EmailKey(inv.Email),
		Role:       inv.Role,
		TokenHash:  inv.TokenHash,
		InvitedBy:  inv.InvitedBy,
		Status:     string(store.InvitePending),
		ExpiresAt:  dbTime(inv.ExpiresAt),
		CreatedAt:  now,
		TenantID:   inv.TenantID,
	}
	var refused error // mayReplace's answer, returned as is
	err := s.tx(ctx, func(tx *gorm.DB) error {
		refused = nil
		if mayReplace != nil {
			pending, err := lockPendingInvites(tx, row, nil)
			if err != nil {
				return err
			}
			if refused = mayReplace(pending); refused != nil {
				return refused
			}
		}
		return mapErr("insert invite", tx.Create(&row).Error)
	})
	if refused != nil {
		return fmt.Errorf("create invite: %w", refused)
	}
	if err != nil {
		return mapErr("create invite", err)
	}
	*inv = row.toInvite()
	return nil
}

// lockPendingInvites locks and returns, oldest first, the pending invites
// for the address and tenant of row other than row itself; with ids not
// nil, only those of ids.
func lockPendingInvites(tx *gorm.DB, row inviteRow, ids []string) ([]store.Invite, error) {
	q := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
		Where("email_lower = ? AND status = ? AND tenant_id = ? AND id <> ?", row.EmailLower, string(store.InvitePending), row.TenantID, row.ID)
	if ids != nil {
		q = q.Where("id IN ?", ids)
	}
	var rows []inviteRow
	if err := q.Order("created_at, id").Find(&rows).Error; err != nil {
		return nil, mapErr("find pending invites", err)
	}
	out := make([]store.Invite, 0, len(rows))
	for _, r := range rows {
		out = append(out, r.toInvite())
	}
	return out, nil
}

// SupersedeInvites marks superseded, in one transaction, each invite of
// ids that is still pending and is for the same address (store.EmailKey)
// and tenant as newer, never newer itself: the pending invites CreateInvite
// showed mayReplace for newer, cancelled once newer's email went out. It
// returns the invites it superseded (oldest first); one accepted, revoked
// or superseded meanwhile is left as it is. An unknown newer is
// store.ErrNotFound.
func (s *Store) SupersedeInvites(ctx context.Context, newer store.Invite, ids []string) ([]store.Invite, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var superseded []store.Invite
	err := s.tx(ctx, func(tx *gorm.DB) error {
		superseded = nil
		var row inviteRow
		if err := tx.Where("id = ?", newer.ID).Take(&row).Error; err != nil {
			return mapErr("load the newer invite", err)
		}
		pending, err := lockPendingInvites(tx, row, ids)
		if err != nil || len(pending) == 0 {
			return err
		}
		marked := make([]string, 0, len(pending))
		for _, p := range pending {
			marked = append(marked, p.ID)
		}
		err = tx.Model(&inviteRow{}).Where("id IN ? AND status = ?", marked, string(store.InvitePending)).
			Update("status", string(store.InviteSuperseded)).Error
		if err != nil {
			return mapErr("supersede older invites", err)
		}
		for _, p := range pending {
			p.Status = store.InviteSuperseded
			superseded = append(superseded, p)
		}
		return nil
	})
	if err != nil {
		return nil, mapErr("supersede invites", err)
	}
	return superseded, nil
}

// GetInvite returns the invite with the given id.
func (s *Store) GetInvite(ctx context.Context, id string) (store.Invite, error) {
	var row inviteRow
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&row).Error; err != nil {
		return store.Invite{}, mapErr("get invite", err)
	}
	return row.toInvite(), nil
}

// ListInvites returns one page of invites, newest first. Limit defaults to 50
// and is capped at 200.
func (s *Store) ListInvites(ctx context.Context, cursor string, limit int) (store.Page[store.Invite], error) {
	return s.listInvites(ctx, nil, cursor, limit)
}

// ListTenantInvites is ListInvites of one tenant's invites only.
func (s *Store) ListTenantInvites(ctx context.Context, tenantID, cursor string, limit int) (store.Page[store.Invite], error) {
	return s.listInvites(ctx, &tenantID, cursor, limit)
}

func (s *Store) listInvites(ctx context.Context, tenantID *string, cursor string, limit int) (store.Page[store.Invite], error) {
	var page store.Page[store.Invite]
	cur, hasCur, err := decodeCursor(cursor)
	if err != nil {
		return page, fmt.Errorf("list invites: %w", err)
	}
	limit = pageLimit(limit)
	q := s.db.WithContext(ctx).Model(&inviteRow{})
	if tenantID != nil {
		q = q.Where("tenant_id = ?", *tenantID)
	}
	if hasCur {
		q = q.Where("(created_at < ? OR (created_at = ? AND id < ?))", cur.T, cur.T, cur.I)
	}
	var rows []inviteRow
	if err := q.Order("created_at DESC, id DESC").Limit(limit + 1).Find(&rows).Error; err != nil {
		return page, mapErr("list invites", err)
	}
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[len(rows)-1]
		page.NextCursor = EncodeCursor(last.CreatedAt, last.ID)
	}
	page.Items = make([]store.Invite, len(rows))
	for i, r := range rows {
		page.Items[i] = r.toInvite()
	}
	return page, nil
}

// RevokeInvite revokes a pending invite. Revoking a revoked invite again is
// not an error; an accepted or superseded invite is store.ErrConflict; an
// unknown id is store.ErrNotFound.
func (s *Store) RevokeInvite(ctx context.Context, id string) error {
	err := s.tx(ctx, func(tx *gorm.DB) error {
		var row inviteRow
		if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", id).Take(&row).Error; err != nil {
			return mapErr("load invite", err)
		}
		switch store.InviteStatus(row.Status) {
		case store.InviteRevoked:
			return nil
		case store.InvitePending:
		default:
			return fmt.Errorf("invite is %s: %w", row.Status, store.ErrConflict)
		}
		return mapErr("mark invite revoked", tx.Model(&inviteRow{}).Where("id = ?", id).
			Update("status", string(store.InviteRevoked)).Error)
	})
	if err != nil {
		return mapErr("revoke invite", err)
	}
	return nil
}

// AcceptInvite redeems the invite whose token hashes to tokenHash, all or
// nothing in one transaction: it creates u (with the invite's email and role,
// email verified; filling u like CreateUser; an organisation's invite gives
// the role in it and marks u its own, UserHomeTenant) and marks the invite
// accepted by u. An unknown token is store.ErrNotFound; an accepted or superseded invite
// store.ErrTokenUsed; a revoked one store.ErrTokenRevoked; an expired one
// (now at or past ExpiresAt) store.ErrTokenExpired; an email that already
// has an account store.ErrAlreadyExists. Of concurrent acceptances of one
// invite exactly one succeeds.
func (s *Store) AcceptInvite(ctx context.Context, tokenHash []byte, now time.Time, u *store.User) (store.Invite, error) {
	return s.acceptInvite(ctx, tokenHash, now, u, nil)
}

// AcceptInviteWithIdentity is AcceptInvite that also links fi (an upstream
// identity; UserID and LinkedAt are filled) to the created user, in the same
// transaction: nothing happens when (provider, subject) is linked already
// (store.ErrAlreadyExists).
func (s *Store) AcceptInviteWithIdentity(ctx context.Context, tokenHash []byte, now time.Time, u *store.User, fi *store.FederatedIdentity) (store.Invite, error) {
	if err := validIdentity(fi, false); err != nil {
		return store.Invite{}, fmt.Errorf("accept invite: %w", err)
	}
	return s.acceptInvite(ctx, tokenHash, now, u, fi)
}

func (s *Store) acceptInvite(ctx context.Context, tokenHash []byte, now time.Time, u *store.User, fi *store.FederatedIdentity) (store.Invite, error) {
	if u == nil {
		return store.Invite{}, fmt.Errorf("accept invite: %w: nil user", ErrInvalidUser)
	}
	if len(tokenHash) == 0 {
		return store.Invite{}, fmt.Errorf("accept invite: %w", store.ErrNotFound)
	}
	var accepted store.Invite
	var created store.User
	var linked store.FederatedIdentity
	err := s.tx(ctx, func(tx *gorm.DB) error {
		row, err := takePendingInvite(tx, tokenHash, now)
		if err != nil {
			return err
		}
		nu := *u
		nu.ID = newID(UserIDPrefix)
		nu.Email = row.Email
		nu.EmailVerified = true
		nu.Roles = []string{row.Role}
		if row.TenantID != "" { // the role is held inside the invite's tenant
			nu.Roles = []string{}
		}
		ts := s.clock()
		nu.CreatedAt, nu.UpdatedAt = ts, ts
		if err := validateUser(&nu, nil); err != nil {
			return err
		}
		if err := createUserTx(tx, &nu, ts); err != nil {
			return err
		}
		if row.TenantID != "" {
			tr := tenantRoleRow{TenantID: row.TenantID, UserID: nu.ID, Role: row.Role, CreatedAt: ts}
			if err := tx.Create(&tr).Error; err != nil {
				return mapErr("give the invited role in the tenant", err)
			}
			if err := markHomeTenant(tx, nu.ID, row.TenantID); err != nil {
				return err
			}
		}
		if fi != nil {
			nfi := *fi
			nfi.UserID, nfi.LinkedAt = nu.ID, ts
			if err := insertIdentity(tx, &nfi); err != nil {
				return err
			}
			linked = nfi
		}
		if accepted, err = markInviteAccepted(tx, row, nu.ID, now); err != nil {
			return err
		}
		created = nu
		return nil
	})
	if err != nil {
		return store.Invite{}, mapErr("accept invite", err)
	}
	*u = created
	if fi != nil {
		*fi = linked
	}
	return accepted, nil
}

// takePendingInvite locks the invite whose token hashes to tokenHash and
// returns it while it is pending and unexpired at now; otherwise the
// one-time-token error saying why.
func takePendingInvite(tx *gorm.DB, tokenHash []byte, now time.Time) (inviteRow, error) {
	var row inviteRow
	if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("token_hash = ?", tokenHash).Take(&row).Error; err != nil {
		return row, mapErr("find invite", err)
	}
	switch store.InviteStatus(row.Status) {
	case store.InviteAccepted, store.InviteSuperseded:
		return row, store.ErrTokenUsed
	case store.InviteRevoked:
		return row, store.ErrTokenRevoked
	case store.InvitePending:
	default:
		return row, fmt.Errorf("invite in unknown status %q", row.Status)
	}
	if !now.Before(row.ExpiresAt) {
		return row, store.ErrTokenExpired
	}
	return row, nil
}

// markInviteAccepted marks a pending invite accepted by userID at now.
func markInviteAccepted(tx *gorm.DB, row inviteRow, userID string, now time.Time) (store.Invite, error) {
	at := dbTime(now)
	res := tx.Model(&inviteRow{}).
		Where("id = ? AND status = ?", row.ID, string(store.InvitePending)).
		Updates(map[string]any{"status": string(store.InviteAccepted), "accepted_at": at, "user_id": userID})
	if res.Error != nil {
		return store.Invite{}, mapErr("mark invite accepted", res.Error)
	}
	if res.RowsAffected == 0 {
		return store.Invite{}, store.ErrTokenUsed
	}
	row.Status, row.AcceptedAt, row.UserID = string(store.InviteAccepted), &at, userID
	return row.toInvite(), nil
}

// AcceptTenantInvite accepts, for the existing user userID (whose email
// must be the invite's), the pending invite to an organisation whose token
// hashes to tokenHash: the user gets the invite's role in its tenant, and
// the invite is marked accepted, in one transaction. An invite of no
// organisation, or to another address, is store.ErrNotFound; the
// one-time-token errors otherwise.
func (s *Store) AcceptTenantInvite(ctx context.Context, tokenHash []byte, now time.Time, userID string) (store.Invite, error) {
	var accepted store.Invite
	err := s.userTx(ctx, func(tx *gorm.DB, changing func(string)) error {
		row, err := takePendingInvite(tx, tokenHash, now)
		if err != nil {
			return err
		}
		changing(userID)
		u, err := lockUser(tx, userID)
		if err != nil {
			return mapErr("load user", err)
		}
		if row.TenantID == "" || u.EmailLower != row.EmailLower {
			return fmt.Errorf("invite for another address or of no organisation: %w", store.ErrNotFound)
		}
		tr := tenantRoleRow{TenantID: row.TenantID, UserID: userID, Role: row.Role, CreatedAt: s.clock()}
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&tr).Error; err != nil {
			return mapErr("give the invited role in the tenant", err)
		}
		if accepted, err = markInviteAccepted(tx, row, userID, now); err != nil {
			return err
		}
		return s.touchUser(tx, userID)
	})
	if err != nil {
		return store.Invite{}, mapErr("accept tenant invite", err)
	}
	return accepted, nil
}
