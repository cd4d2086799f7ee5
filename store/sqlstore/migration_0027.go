package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Snapshot model of migration 27: users learn whether their password hash
// may not have been made by Portcullis (store.User.PasswordHashForeign),
// the only hashes whose check also tries the password as typed, beside its
// NFKC form. Found by a review: every check tried both forms of a password
// that NFKC changes, the dummy check of an unknown account included, so
// such a guess cost two hashes. A partial index of the marked rows answers
// whether any remains (Store.AnyForeignPasswordHash); it was added here, to
// the unreleased migration, by a review of the change. Never change it
// again once released: write a new migration.

// v27User is the users table's new column.
type v27User struct {
	PasswordHashForeign bool `gorm:"column:password_hash_foreign;not null;default:true"`
}

func (v27User) TableName() string { return "users" }

// migrate0027 adds users.password_hash_foreign, not null, default true.
// Every existing account is marked: Portcullis has hashed the NFKC form
// since its first version, but a hash imported by SQL cannot be told from
// one of its own, and a mark costs only a second hash for a guess NFKC
// changes until the account's next sign-in replaces the hash. The default
// marks a row a later import inserts by SQL without naming the column;
// the store writes the column explicitly. users_password_hash_foreign_idx
// indexes the marked rows only (the same statement on PostgreSQL and
// SQLite), so asking whether any remains reads nothing once none does.
func migrate0027(tx *gorm.DB) error {
	if err := tx.Migrator().AddColumn(&v27User{}, "PasswordHashForeign"); err != nil {
		return fmt.Errorf("add users.password_hash_foreign: %w", err)
	}
	if err := tx.Exec(foreignHashIndex0027).Error; err != nil {
		return fmt.Errorf("index the users marked password_hash_foreign: %w", err)
	}
	return nil
}

// foreignHashIndex0027 is migration 27's partial index of the marked users.
const foreignHashIndex0027 = `CREATE INDEX users_password_hash_foreign_idx ON users (id) WHERE password_hash_foreign`
