package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// Migration 22 recomputes the email keys (users.email_lower,
// invites.email_lower) that binaries before it wrote with strings.ToLower,
// which folds some non-ASCII letters into ASCII ones (U+0130 into "i", the
// Kelvin sign into "k") and so gave two mailboxes one account (found by a
// review). The key is now store.EmailKey: ASCII A-Z folded, nothing else.
// Never change it: write a new migration.

// v22EmailKey is store.EmailKey as of migration 22, frozen with the
// migration (TestMigration0022EmailKeys checks that the two agree).
func v22EmailKey(addr string) string {
	b := []byte(addr)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// v22EmailRow is the part of a users or invites row migration 22 reads.
type v22EmailRow struct {
	ID         string `gorm:"column:id"`
	Email      string `gorm:"column:email"`
	EmailLower string `gorm:"column:email_lower"`
}

// migrate0022 rewrites, row by row, the email key of each user and invite
// whose address has a non-ASCII byte (for an ASCII address strings.ToLower
// and the new key agree). A narrower fold only splits keys, never merges
// them: a rewritten key keeps a letter strings.ToLower would have changed,
// so it is no other row's old key, and two rows with distinct old keys get
// distinct new ones; the unique index of users.email_lower is never hit.
func migrate0022(tx *gorm.DB) error {
	nonASCII := `octet_length(email) <> char_length(email)`
	if tx.Dialector.Name() != "postgres" {
		nonASCII = `length(CAST(email AS BLOB)) <> length(email)`
	}
	for _, table := range []string{"users", "invites"} {
		var rows []v22EmailRow
		if err := tx.Table(table).Select("id, email, email_lower").Where(nonASCII).Order("id").Find(&rows).Error; err != nil {
			return fmt.Errorf("read the non-ASCII addresses of %s: %w", table, err)
		}
		for _, r := range rows {
			key := v22EmailKey(r.Email)
			if r.Email == "" || key == r.EmailLower {
				continue
			}
			if err := tx.Table(table).Where("id = ?", r.ID).Update("email_lower", key).Error; err != nil {
				return fmt.Errorf("rekey %s %s: %w", table, r.ID, err)
			}
		}
	}
	return nil
}
