package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/portcullis-auth/portcullis/store"
)

// ErrInvalidUser means a user record breaks a rule the store relies on
// (missing email, a username containing "@", a machine user with an email,
// username or password).
var ErrInvalidUser = errors.New("sqlstore: invalid user")

// validateUser checks a user about to be written: a new one (before nil),
// or an existing one over its stored row before. Email, username and name
// must be text PostgreSQL can hold (UTF-8 without NUL), which SQLite would
// keep otherwise: every field of a new user, and of an existing one the
// fields this write changes, so that a row stored before the check (on
// SQLite) can still be deactivated, reset or changed.
func validateUser(u *store.User, before *userRow) error {
	var was store.User
	if before != nil {
		was = before.toUser(nil)
	}
	for _, f := range []struct{ now, was string }{{u.Email, was.Email}, {u.Username, was.Username}, {u.Name, was.Name}} {
		if !storableText(f.now) && (before == nil || f.now != f.was) {
			return fmt.Errorf("%w: email, username and name must be UTF-8 text without NUL", ErrInvalidUser)
		}
	}
	switch userKind(u.Kind) {
	case store.UserHuman:
	case store.UserMachine:
		if u.Email != "" || u.Username != "" || u.PasswordHash != "" {
			return fmt.Errorf("%w: a machine user has no email, username or password", ErrInvalidUser)
		}
		return nil
	default:
		return fmt.Errorf("%w: kind must be %s or %s", ErrInvalidUser, store.UserHuman, store.UserMachine)
	}
	if strings.TrimSpace(u.Email) == "" {
		return fmt.Errorf("%w: email is required", ErrInvalidUser)
	}
	// GetUserForLogin treats a login with "@" as an email address; a username
	// with "@" could then shadow, or be shadowed by, someone's email.
	if strings.Contains(u.Username, "@") {
		return fmt.Errorf("%w: username must not contain @", ErrInvalidUser)
	}
	return nil
}

// newUserRow is the user CreateUser and CreateUserInTenant insert for u: a
// new id, its kind, created and updated now, its roles normalised.
func newUserRow(u store.User, now time.Time) store.User {
	u.ID = newID(UserIDPrefix)
	u.Kind = userKind(u.Kind)
	u.CreatedAt, u.UpdatedAt = now, now
	u.Roles = normaliseRoles(u.Roles)
	return u
}

// CreateUser inserts u and its roles in one transaction and fills u.ID,
// u.CreatedAt and u.UpdatedAt (u.Roles comes back sorted). A duplicate email
// (store.EmailKey) or username is store.ErrAlreadyExists; a role that
// SyncRoles has not created is store.ErrNotFound.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	if u == nil {
		return fmt.Errorf("create user: %w: nil user", ErrInvalidUser)
	}
	if err := validateUser(u, nil); err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	now := s.clock()
	nu := newUserRow(*u, now)
	err := s.tx(ctx, func(tx *gorm.DB) error { return createUserTx(tx, &nu, now) })
	if err != nil {
		return mapErr("create user", err)
	}
	*u = nu
	return nil
}

// createUserTx inserts the user row and its role rows.
func createUserTx(tx *gorm.DB, u *store.User, now time.Time) error {
	row := userToRow(u)
	if err := tx.Create(&row).Error; err != nil {
		return mapErr("insert user", err)
	}
	for _, role := range u.Roles {
		if err := tx.Create(&userRoleRow{UserID: u.ID, Role: role, CreatedAt: now}).Error; err != nil {
			if IsForeignKeyViolation(err) {
				return fmt.Errorf("grant role %q: unknown role: %w", role, store.ErrNotFound)
			}
			return mapErr("insert user role", err)
		}
	}
	return nil
}

// rolesOf returns the sorted role names of each of the given users.
func rolesOf(db *gorm.DB, ids ...string) (map[string][]string, error) {
	out := make(map[string][]string, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	var rows []userRoleRow
	if err := db.Where("user_id IN ?", ids).Order("user_id, role").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("load roles: %w", err)
	}
	for _, r := range rows {
		out[r.UserID] = append(out[r.UserID], r.Role)
	}
	return out, nil
}

// getUserWhere reads the user matching query (a condition on users u).
func (s *Store) getUserWhere(ctx context.Context, what, query string, args ...any) (store.User, error) {
	return s.getUserWhereWith(ctx, what, "", nil, query, args...)
}

// getUserWhereWith is getUserWhere with the caller's own columns (lead, a
// select list that may name u) read first, into dest.
func (s *Store) getUserWhereWith(ctx context.Context, what, lead string, dest []any, query string, args ...any) (store.User, error) {
	// A value no stored row can hold (NUL bytes, invalid UTF-8, which
	// PostgreSQL refuses outright) finds nothing, the same on every backend.
	for _, a := range args {
		if v, ok := a.(string); ok && !storableText(v) {
			return store.User{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
		}
	}
	if lead != "" {
		lead += ", "
	}
	// One round trip: the user's row once per role (a LEFT JOIN, so a user
	// without roles is one row), roles sorted. The user row and its roles are
	// read in one statement, so they are consistent with each other. Every
	// token issuance, refresh and userinfo reads a user, so the statement is
	// written out and scanned by hand: GORM's statement building and
	// reflective scan were ≈8% of the server's CPU in an SSO round trip.
	rows, err := s.db.WithContext(ctx).Raw(`SELECT `+lead+userWithRolesColumns+`
		FROM users u LEFT JOIN user_roles r ON r.user_id = u.id
		WHERE u.`+query+` ORDER BY r.role`, args...).Rows()
	if err != nil {
		return store.User{}, mapErr(what, err)
	}
	return scanUserWithRoles(rows, what, dest...)
}

// userWithRolesColumns are the columns scanUserWithRoles reads, of users u
// LEFT JOIN user_roles r, after any columns of the caller's own.
const userWithRolesColumns = `u.id, u.kind, u.email, u.username, u.name, u.password_hash, u.active,
		u.email_verified, u.must_change_password, u.password_unproven, u.password_hash_foreign, u.created_at, u.updated_at, u.last_login_at, r.role`

// scanUserWithRoles reads the rows of one user joined with its roles (one
// row per role, or one row with a NULL role), ordered by role: the user
// with sorted roles, ErrNotFound without rows. Each row starts with lead
// (the caller's own columns, scanned from the first row) and ends with
// userWithRolesColumns. It closes rows.
func scanUserWithRoles(rows *sql.Rows, what string, lead ...any) (store.User, error) {
	defer rows.Close()
	var (
		first userRow
		found bool
		roles []string
		row   userRow
		role  *string
	)
	discard := make([]any, len(lead))
	for i := range discard {
		discard[i] = new(any)
	}
	for rows.Next() {
		dest := lead
		if found {
			dest = discard
		}
		dest = append(dest[:len(dest):len(dest)], &row.ID, &row.Kind, &row.Email, &row.Username, &row.Name, &row.PasswordHash, &row.Active,
			&row.EmailVerified, &row.MustChangePassword, &row.PasswordUnproven, &row.PasswordHashForeign, &row.CreatedAt, &row.UpdatedAt, &row.LastLoginAt, &role)
		if err := rows.Scan(dest...); err != nil {
			return store.User{}, mapErr(what, err)
		}
		if !found {
			first, found = row, true
		} else if row.ID != first.ID {
			return store.User{}, fmt.Errorf("%s: more than one user matches", what)
		}
		if role != nil {
			roles = append(roles, *role)
		}
	}
	if err := rows.Err(); err != nil {
		return store.User{}, mapErr(what, err)
	}
	if !found {
		return store.User{}, fmt.Errorf("%s: %w", what, store.ErrNotFound)
	}
	return first.toUser(roles), nil
}

// GetUser returns the user with the given id, with its password hash (for
// login and password checks) and sorted roles.
func (s *Store) GetUser(ctx context.Context, id string) (store.User, error) {
	return s.getUserWhere(ctx, "get user", "id = ?", id)
}

// byEmail finds a user by email. It names the condition of the partial
// unique index (a non-empty email_lower), so both planners use the index, and so
// an empty address (a machine user's) finds nobody.
const byEmail = "email_lower = ? AND u.email_lower <> ''"

// GetUserByEmail returns the user with the email, compared by store.EmailKey,
// with its password hash. Machine users have no email: they are never found.
func (s *Store) GetUserByEmail(ctx context.Context, email string) (store.User, error) {
	return s.getUserWhere(ctx, "get user by email", byEmail, store.EmailKey(email))
}

// GetUserForLogin returns the user whose email (store.EmailKey; any login
// containing "@") or username (exact) is login, with its password hash, and
// counts its second factors (what MFASummary reads) in the same statement,
// of the same snapshot: a password login needs both, and pays one round
// trip for them.
func (s *Store) GetUserForLogin(ctx context.Context, login string) (store.User, store.MFASummary, error) {
	if login == "" {
		return store.User{}, store.MFASummary{}, fmt.Errorf("get user for login: %w", store.ErrNotFound)
	}
	query, arg := "username = ?", login
	if strings.Contains(login, "@") {
		query, arg = byEmail, store.EmailKey(login)
	}
	var totp, webauthn, recovery int64
	u, err := s.getUserWhereWith(ctx, "get user for login", factorCounts("u.id"), []any{&totp, &webauthn, &recovery}, query, arg)
	if err != nil {
		return store.User{}, store.MFASummary{}, err
	}
	return u, factorSummary(totp, webauthn, recovery), nil
}

// ListUsers returns one page of users, oldest first (stable by created_at,
// then id), without password hashes. With a TenantID it lists only the
// tenant's members, and their Roles are the ones they hold in that tenant. Limit defaults to 50 and is capped at 200.
func (s *Store) ListUsers(ctx context.Context, f store.UserFilter) (store.Page[store.User], error) {
	var page store.Page[store.User]
	cur, hasCur, err := decodeCursor(f.Cursor)
	if err != nil {
		return page, fmt.Errorf("list users: %w", err)
	}
	limit := pageLimit(f.Limit)
	if !storableText(f.Email) || !storableText(f.Query) {
		// No stored row holds such text (PostgreSQL refuses it outright):
		// an empty page, the same on every backend, as the lookups by
		// email answer not found (getUserWhereWith).
		return page, nil
	}
	db := s.db.WithContext(ctx)
	q := db.Model(&userRow{})
	if f.Email != "" {
		q = q.Where("email_lower = ?", store.EmailKey(f.Email))
	}
	if f.Query != "" {
		// Each column is searched with its own fold: the query as an
		// email key (store.EmailKey) in email_lower, lower-cased in name_lower.
		q = q.Where(`(email_lower LIKE ? ESCAPE '\' OR name_lower LIKE ? ESCAPE '\')`,
			likePattern(store.EmailKey(f.Query)), likePattern(strings.ToLower(f.Query)))
	}
	if f.TenantID != "" {
		q = q.Where("EXISTS (SELECT 1 FROM tenant_roles WHERE tenant_roles.user_id = users.id AND tenant_roles.tenant_id = ?)", f.TenantID)
	}
	rows, next, err := oldestFirst(q, cur, hasCur, limit, func(r userRow) (time.Time, string) { return r.CreatedAt, r.ID })
	if err != nil {
		return page, mapErr("list users", err)
	}
	page.NextCursor = next
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	var roles map[string][]string
	if f.TenantID != "" {
		roles, err = tenantRolesOf(db, f.TenantID, ids...)
	} else {
		roles, err = rolesOf(db, ids...)
	}
	if err != nil {
		return page, mapErr("list users", err)
	}
	page.Items = make([]store.User, 0, len(rows))
	for _, r := range rows {
		u := r.toUser(roles[r.ID])
		u.PasswordHash = ""
		page.Items = append(page.Items, u)
	}
	return page, nil
}

// lockUser reads the user row for update (a row lock on PostgreSQL; SQLite
// transactions here hold the database write lock from their start).
func lockUser(tx *gorm.DB, id string) (userRow, error) {
	var row userRow
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("id = ?", id).Take(&row).Error
	return row, err
}

// saveUserTx writes every mutable column of u (not id, created_at, roles)
// over before, the row as the transaction read it (locked). It is the one
// write of an existing user's password hash and active flag, so it also
// keeps the rule of reset links: a write that changes the password hash (a
// change, a reset, a temporary password, an upgraded hash) or deactivates
// the account voids the user's unused password-reset links in the same
// transaction (see voidResetLinks); and a write that changes the hash
// clears PasswordHashForeign (Portcullis writes only its Hasher's hashes).
func saveUserTx(tx *gorm.DB, before userRow, u *store.User) error {
	if err := validateUser(u, &before); err != nil {
		return err
	}
	r := userToRow(u)
	if r.PasswordHash != before.PasswordHash {
		r.PasswordHashForeign = false
	}
	if r.PasswordHash != before.PasswordHash || before.Active && !r.Active {
		if err := voidResetLinks(tx, u.ID, r.UpdatedAt); err != nil {
			return err
		}
	}
	res := tx.Model(&userRow{}).Where("id = ?", u.ID).Updates(map[string]any{
		"email":                 r.Email,
		"email_lower":           r.EmailLower,
		"username":              r.Username,
		"name":                  r.Name,
		"name_lower":            r.NameLower,
		"password_hash":         r.PasswordHash,
		"active":                r.Active,
		"email_verified":        r.EmailVerified,
		"must_change_password":  r.MustChangePassword,
		"password_unproven":     r.PasswordUnproven,
		"password_hash_foreign": r.PasswordHashForeign,
		"updated_at":            r.UpdatedAt,
		"last_login_at":         r.LastLoginAt,
	})
	if res.Error != nil {
		return mapErr("save user", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("save user: %w", store.ErrNotFound)
	}
	return nil
}

// UpdateUser reads the user, lets fn change it and writes it back, all in one
// transaction with the row locked. fn sees the password hash and may change
// every field except ID, CreatedAt and Roles (use GrantRole/RevokeRole);
// UpdatedAt is set by the store. An error from fn aborts the update and is
// returned as is. fn may run more than once if the transaction is retried.
// A change of the password hash or a deactivation also voids the user's
// unused password-reset links, in the same transaction (saveUserTx).
// The returned user carries no password hash.
func (s *Store) UpdateUser(ctx context.Context, id string, fn func(u *store.User) error) (store.User, error) {
	return s.updateUser(ctx, id, fn, nil)
}

// UpdateUserRevokingKeys is UpdateUser that also, in the same transaction,
// revokes every API key of the user live at now (not revoked, not
// expired; revoked_by by), as a password reset does (RedeemPasswordReset):
// the write and the revocation are made together or not at all. It
// returns the user as saved (without its password hash) and the keys it
// revoked, by id.
func (s *Store) UpdateUserRevokingKeys(ctx context.Context, id string, fn func(u *store.User) error,
	by string, now time.Time) (store.User, []store.APIKey, error) {
	var revoked []store.APIKey
	u, err := s.updateUser(ctx, id, fn, func(tx *gorm.DB, u store.User) error {
		var err error
		revoked, err = revokeLiveAPIKeysTx(tx, u.ID, by, now)
		return err
	})
	if err != nil {
		return store.User{}, nil, err
	}
	return u, revoked, nil
}

// updateUser is UpdateUser, running then (when set) in its transaction
// once the user is saved: an error of then rolls everything back and is
// returned wrapped like a store error.
func (s *Store) updateUser(ctx context.Context, id string, fn func(u *store.User) error,
	then func(tx *gorm.DB, u store.User) error) (store.User, error) {
	var out store.User
	var fnErr error
	err := s.userTx(ctx, func(tx *gorm.DB, changing func(string)) error {
		fnErr = nil
		changing(id)
		row, err := lockUser(tx, id)
		if err != nil {
			return mapErr("load user", err)
		}
		roles, err := rolesOf(tx, id)
		if err != nil {
			return err
		}
		u := row.toUser(roles[id])
		if err := fn(&u); err != nil {
			fnErr = err
			return err
		}
		u.ID, u.Kind, u.CreatedAt, u.Roles = row.ID, userKind(row.Kind), readTime(row.CreatedAt), roles[id]
		u.UpdatedAt = s.clock()
		if err := saveUserTx(tx, row, &u); err != nil {
			return err
		}
		if then != nil {
			if err := then(tx, u); err != nil {
				return err
			}
		}
		if u.Roles == nil {
			u.Roles = []string{}
		}
		u.CreatedAt, u.UpdatedAt = dbTime(u.CreatedAt), dbTime(u.UpdatedAt)
		u.LastLoginAt = dbTimePtr(u.LastLoginAt)
		out = u
		return nil
	})
	if fnErr != nil {
		return store.User{}, fnErr
	}
	if err != nil {
		return store.User{}, mapErr("update user", err)
	}
	out.PasswordHash = ""
	return out, nil
}

// touchUser checks that the user exists (locking its row) and sets updated_at.
func (s *Store) touchUser(tx *gorm.DB, id string) error {
	res := tx.Model(&userRow{}).Where("id = ?", id).Update("updated_at", s.clock())
	if res.Error != nil {
		return mapErr("touch user", res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("user %q: %w", id, store.ErrNotFound)
	}
	return nil
}

// GrantRole gives the user the role; changed is false when the user already
// held it. An unknown user or role is store.ErrNotFound.
func (s *Store) GrantRole(ctx context.Context, userID, role string) (changed bool, err error) {
	return s.grantRoleRow(ctx, "grant role", userID, role, nil, &userRoleRow{UserID: userID, Role: role, CreatedAt: s.clock()})
}

// grantRoleRow is the one grant of a role assignment (global or in a
// tenant): in one transaction it locks the user, checks that the role is
// known and check (when given) passes, and inserts row unless it is there;
// changed says whether it was inserted. Unknown user or role is
// store.ErrNotFound.
func (s *Store) grantRoleRow(ctx context.Context, what, userID, role string, check func(tx *gorm.DB) error, row any) (changed bool, err error) {
	err = s.userTx(ctx, func(tx *gorm.DB, changing func(string)) error {
		changed = false
		changing(userID)
		if _, err := lockUser(tx, userID); err != nil {
			return mapErr("load user", err)
		}
		if check != nil {
			if err := check(tx); err != nil {
				return err
			}
		}
		if err := roleKnown(tx, role); err != nil {
			return err
		}
		res := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(row)
		if res.Error != nil {
			return mapErr("insert role assignment", res.Error)
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

// roleKnown is nil when the roles table holds role, else store.ErrNotFound.
func roleKnown(tx *gorm.DB, role string) error {
	var n int64
	if err := tx.Model(&roleRow{}).Where("name = ?", role).Count(&n).Error; err != nil {
		return mapErr("look up role", err)
	}
	if n == 0 {
		return fmt.Errorf("role %q: %w", role, store.ErrNotFound)
	}
	return nil
}

// RevokeRole takes the role from the user; changed is false when the user did
// not hold it. An unknown user is store.ErrNotFound.
func (s *Store) RevokeRole(ctx context.Context, userID, role string) (changed bool, err error) {
	err = s.userTx(ctx, func(tx *gorm.DB, changing func(string)) error {
		changed = false
		changing(userID)
		if _, err := lockUser(tx, userID); err != nil {
			return mapErr("load user", err)
		}
		res := tx.Where("user_id = ? AND role = ?", userID, role).Delete(&userRoleRow{})
		if res.Error != nil {
			return mapErr("delete user role", res.Error)
		}
		if res.RowsAffected == 0 {
			return nil
		}
		changed = true
		return s.touchUser(tx, userID)
	})
	if err != nil {
		return false, mapErr("revoke role", err)
	}
	return changed, nil
}

// CountUsersWithRole returns how many users hold the role (active or not).
func (s *Store) CountUsersWithRole(ctx context.Context, role string) (int64, error) {
	var n int64
	if err := s.db.WithContext(ctx).Model(&userRoleRow{}).Where("role = ?", role).Count(&n).Error; err != nil {
		return 0, mapErr("count users with role", err)
	}
	return n, nil
}

// anyForeignPasswordHashSQL is AnyForeignPasswordHash's statement: its
// condition is the one of the partial index users_password_hash_foreign_idx
// (migration 27), so it reads that index, which holds only marked rows.
const anyForeignPasswordHashSQL = `SELECT EXISTS (SELECT 1 FROM users WHERE password_hash_foreign)`

// AnyForeignPasswordHash reports whether any user is marked
// PasswordHashForeign (a hash Portcullis may not have made). It reads the
// partial index of the marked rows, so it costs the same however many
// users there are; server/passcheck asks it at most once a minute.
func (s *Store) AnyForeignPasswordHash(ctx context.Context) (bool, error) {
	var marked bool
	if _, err := scanOne(s.db.WithContext(ctx).Raw(anyForeignPasswordHashSQL), &marked); err != nil {
		return false, mapErr("look for foreign password hashes", err)
	}
	return marked, nil
}

// RecordLogin records a successful login: the user's last-login time
// (UpdatedAt is left alone) and the login's audit event e, stored as
// AppendAudit stores it, with e.Time (now when zero) the login's time. The
// user is e.TargetID. One statement on PostgreSQL, one transaction on
// SQLite (whose WITH takes no UPDATE). When the user no longer exists the
// event is stored all the same and the error is store.ErrNotFound.
//
// It is the one write of a user the UserWriteHooks do not hear of: a login
// changes nothing the copies of users serve (store/usercache serves no
// last-login time), so it leaves them valid, and costs no Redis call.
func (s *Store) RecordLogin(ctx context.Context, e *store.AuditEvent) error {
	row, details, err := s.auditRowOf(e)
	if err != nil {
		return fmt.Errorf("record login: %w", err)
	}
	var updated int64
	if s.dialect == DialectPostgres {
		_, err = scanOne(s.db.WithContext(ctx).Raw(`WITH login AS (UPDATE users SET last_login_at = ? WHERE id = ? RETURNING 1)
INSERT INTO audit_events (id, occurred_at, action, outcome, actor_id, target_id, client_id, ip, user_agent, details, tenant_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING (SELECT count(*) FROM login)`,
			row.OccurredAt, e.TargetID, row.ID, row.OccurredAt, row.Action, row.Outcome, row.ActorID, row.TargetID,
			row.ClientID, row.IP, row.UserAgent, row.Details, row.TenantID), &updated)
	} else {
		err = s.tx(ctx, func(tx *gorm.DB) error {
			res := tx.Model(&userRow{}).Where("id = ?", e.TargetID).Update("last_login_at", row.OccurredAt)
			if res.Error != nil {
				return res.Error
			}
			updated = res.RowsAffected
			return tx.Create(&row).Error
		})
	}
	if err != nil {
		return mapErr("record login", err)
	}
	e.ID, e.Time, e.Details = row.ID, row.OccurredAt, details
	if updated == 0 {
		return fmt.Errorf("record login: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteUser removes the user and their personal data for good, in one
// transaction: the user row, roles, one-time tokens, second factors, API keys, the invites sent to
// their address or accepted by them, and the personal data in audit events
// about them (see ScrubAuditPII; the events keep only ids). An unknown id is
// store.ErrNotFound.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	err := s.userTx(ctx, func(tx *gorm.DB, changing func(string)) error {
		changing(id)
		row, err := lockUser(tx, id)
		if err != nil {
			return mapErr("load user", err)
		}
		if err := tx.Where("user_id = ?", id).Delete(&userTokenRow{}).Error; err != nil {
			return mapErr("delete user tokens", err)
		}
		if err := deleteAllFactorsTx(tx, id); err != nil {
			return err
		}
		if err := tx.Where("owner_user_id = ?", id).Delete(&apiKeyRow{}).Error; err != nil {
			return mapErr("delete API keys", err)
		}
		if err := tx.Where("user_id = ?", id).Delete(&userRoleRow{}).Error; err != nil {
			return mapErr("delete user roles", err)
		}
		if err := tx.Where("user_id = ?", id).Delete(&consentRow{}).Error; err != nil {
			return mapErr("delete consents", err)
		}
		invites := tx.Where("user_id = ?", id)
		if row.EmailLower != "" {
			invites = tx.Where("user_id = ? OR email_lower = ?", id, row.EmailLower)
		}
		if err := invites.Delete(&inviteRow{}).Error; err != nil {
			return mapErr("delete invites", err)
		}
		if err := scrubAuditTx(tx, id); err != nil {
			return err
		}
		res := tx.Where("id = ?", id).Delete(&userRow{})
		if res.Error != nil {
			return mapErr("delete user row", res.Error)
		}
		if res.RowsAffected == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return mapErr("delete user", err)
	}
	return nil
}

// storableText reports whether v can be stored in a text column on every
// backend: valid UTF-8 without NUL bytes.
func storableText(v string) bool {
	return utf8.ValidString(v) && !strings.ContainsRune(v, 0)
}
