package accounts

import (
	"cmp"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
)

// TestPaginate: pages of a list held in memory, newest first then by id,
// with cursors that neither repeat nor skip items when the list changes
// between pages; a cursor it did not issue is 400.
func TestPaginate(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 4, 0, 0, 0, time.UTC)
	type item struct {
		id string
		at time.Time
	}
	key := func(it item) pageKey { return pageKey{it.at, it.id} }
	order := func(a, b pageKey) int { return cmp.Or(b.T.Compare(a.T), strings.Compare(a.I, b.I)) }
	view := func(it item) string { return it.id }
	list := func(ids ...string) []item { // c is newest; a and b share a time
		at := map[string]time.Time{"a": t0, "b": t0, "c": t0.Add(time.Minute), "d": t0.Add(-time.Minute), "e": t0.Add(2 * time.Minute)}
		var out []item
		for _, id := range ids {
			out = append(out, item{id, at[id]})
		}
		return out
	}
	page := func(t *testing.T, l []item, cursor string, limit int) Page[string] {
		t.Helper()
		p, err := paginate(l, key, order, view, cursor, limit)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("ok/all_in_order", func(t *testing.T) {
		if p := page(t, list("d", "b", "a", "c"), "", 0); !slices.Equal(p.Items, []string{"c", "a", "b", "d"}) || p.NextCursor != "" {
			t.Fatalf("%+v", p)
		}
	})
	t.Run("ok/pages", func(t *testing.T) {
		l := list("a", "b", "c", "d")
		p1 := page(t, l, "", 2)
		p2 := page(t, l, p1.NextCursor, 2)
		if !slices.Equal(p1.Items, []string{"c", "a"}) || !slices.Equal(p2.Items, []string{"b", "d"}) || p2.NextCursor != "" {
			t.Fatalf("%+v then %+v", p1, p2)
		}
	})
	t.Run("ok/changes_between_pages", func(t *testing.T) {
		p1 := page(t, list("a", "b", "c", "d"), "", 2)
		// "a" (the cursor's item) is gone and a newer "e" appeared: the next
		// page goes on after the cursor's position.
		if p2 := page(t, list("b", "c", "d", "e"), p1.NextCursor, 2); !slices.Equal(p2.Items, []string{"b", "d"}) {
			t.Fatalf("%+v", p2)
		}
	})
	t.Run("ok/past_the_end", func(t *testing.T) {
		p1 := page(t, list("a", "c"), "", 1)
		if p2 := page(t, list("c"), p1.NextCursor, 1); len(p2.Items) != 0 || p2.Items == nil || p2.NextCursor != "" {
			t.Fatalf("%+v", p2)
		}
	})
	for _, bad := range []string{"!", "bm90IGpzb24", "e30"} { // not base64url, not JSON, {}
		t.Run("fail/cursor_"+bad, func(t *testing.T) {
			_, err := paginate(list("a"), key, order, view, bad, 0)
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Status != 400 {
				t.Fatalf("cursor %q: %v, want 400", bad, err)
			}
		})
	}
}
