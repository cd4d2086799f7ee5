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

// decodeCursor is DecodeCursor for the store's own queries: the time as
// the store keeps times (UTC, microseconds).
func decodeCursor(s string) (c pageCursor, ok bool, err error) {
	t, id, ok, err := DecodeCursor(s)
	if !ok || err != nil {
		return c, false, err
	}
	return pageCursor{T: dbTime(t), I: id}, true, nil
}

// EncodeCursor returns the opaque cursor of the position after an item
// sorted by time t and then id: base64url of JSON. The stores' pages and the
// pages of lists held in memory (server/accounts) use the one format.
func EncodeCursor(t time.Time, id string) string {
	b, _ := json.Marshal(pageCursor{T: t.UTC(), I: id}) // cannot fail for these types
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor parses a cursor EncodeCursor made; ok is false for the
// empty cursor (the first page). Anything else that is not one is
// ErrInvalidCursor: not base64url, not a JSON object with a time and an
// id, or an id no store holds (not UTF-8, or with a NUL, which PostgreSQL
// would refuse as an error of its own).
func DecodeCursor(s string) (t time.Time, id string, ok bool, err error) {
	if s == "" {
		return t, "", false, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return t, "", false, fmt.Errorf("%w: not base64url", ErrInvalidCursor)
	}
	var c pageCursor
	if err := json.Unmarshal(b, &c); err != nil || c.I == "" || c.T.IsZero() {
		return t, "", false, fmt.Errorf("%w: malformed", ErrInvalidCursor)
	}
	if !storableText(c.I) {
		return t, "", false, fmt.Errorf("%w: an id no store holds", ErrInvalidCursor)
	}
	return c.T, c.I, true, nil
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
		next = EncodeCursor(key(rows[len(rows)-1]))
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
