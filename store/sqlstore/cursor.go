package sqlstore

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
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
