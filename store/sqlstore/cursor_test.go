package sqlstore

import (
	"errors"
	"testing"
	"time"
)

// FuzzDecodeCursor: a cursor comes from the query string, so from anyone.
// Decoding never panics; it refuses what is not a cursor with
// ErrInvalidCursor; what it accepts has a time and an id a store can hold
// (no NUL, valid UTF-8: PostgreSQL would refuse it with an error of its
// own), and encodes to a cursor that decodes to the same position.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(EncodeCursor(time.Date(2026, 12, 6, 18, 0, 0, 123456789, time.UTC), "usr_abc"))
	f.Add("eyJ0IjoiMjAyNi0wMS0wMVQwMDowMDowMFoiLCJpIjoiXHUwMDAwIn0") // an id with a NUL
	f.Add("e30")
	f.Add("not base64!")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		at, id, ok, err := DecodeCursor(s)
		switch {
		case err != nil:
			if !errors.Is(err, ErrInvalidCursor) || ok {
				t.Fatalf("%q: ok %v, %v; want ErrInvalidCursor", s, ok, err)
			}
			return
		case !ok:
			if s != "" {
				t.Fatalf("%q: neither a cursor nor refused", s)
			}
			return
		case at.IsZero() || id == "" || !storableText(id):
			t.Fatalf("%q: accepted %v %q", s, at, id)
		}
		at2, id2, ok2, err2 := DecodeCursor(EncodeCursor(at, id))
		if err2 != nil || !ok2 || !at2.Equal(at) || id2 != id {
			t.Fatalf("%q: %v %q encodes to a cursor that decodes to %v %q (%v, %v)", s, at, id, at2, id2, ok2, err2)
		}
	})
}
