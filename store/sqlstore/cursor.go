package sqlstore

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"
)

// ErrInvalidCursor means a pagination cursor was not one this store issued.
var ErrInvalidCursor = errors.New("sqlstore: invalid cursor")

// Page sizes for cursor pagination.
const (
	DefaultPageLimit = 50
	MaxPageLimit     = 200
)

// pageCursor is the position after the last item of a page: a row's sort
// time and id. It is opaque to callers (base64url of JSON).
type pageCursor struct {
	T time.Time `json:"t"`
	I string    `json:"i"`
}

func encodeCursor(t time.Time, id string) string {
	b, _ := json.Marshal(pageCursor{T: t.UTC(), I: id}) // cannot fail for these types
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor parses a cursor; ok is false for the empty (first page) cursor.
func decodeCursor(s string) (c pageCursor, ok bool, err error) {
	if s == "" {
		return c, false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return c, false, fmt.Errorf("%w: not base64url", ErrInvalidCursor)
	}
	if err := json.Unmarshal(b, &c); err != nil || c.I == "" || c.T.IsZero() {
		return c, false, fmt.Errorf("%w: malformed", ErrInvalidCursor)
	}
	c.T = dbTime(c.T)
	return c, true, nil
}

// oldestFirst reads one page of q's rows, oldest first by created_at then
// id, after the cursor (when hasCur), at most limit of them; next is the
// cursor of the following page ("" on the last). key gives a row's
// created_at and id.
func oldestFirst[R any](q *gorm.DB, cur pageCursor, hasCur bool, limit int, key func(R) (time.Time, string)) (rows []R, next string, err error) {
	if hasCur {
		q = q.Where("(created_at > ? OR (created_at = ? AND id > ?))", cur.T, cur.T, cur.I)
	}
	if err := q.Order("created_at ASC, id ASC").Limit(limit + 1).Find(&rows).Error; err != nil {
		return nil, "", err
	}
	if len(rows) > limit {
		rows = rows[:limit]
		next = encodeCursor(key(rows[len(rows)-1]))
	}
	return rows, next, nil
}

func pageLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultPageLimit
	case limit > MaxPageLimit:
		return MaxPageLimit
	}
	return limit
}

// likePattern returns a LIKE pattern matching s as a substring, with the
// wildcard characters of s escaped (use with ESCAPE '\').
func likePattern(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(s) + "%"
}
