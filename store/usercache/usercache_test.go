package usercache_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/usercache"
)

// source is the stored users; reads counts GetUser calls.
type source struct {
	mu    sync.Mutex
	users map[string]store.User
	err   error
	reads int
}

func (s *source) GetUser(_ context.Context, id string) (store.User, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	if s.err != nil {
		return store.User{}, s.err
	}
	u, ok := s.users[id]
	if !ok {
		return store.User{}, store.ErrNotFound
	}
	u.Roles = slices.Clone(u.Roles)
	return u, nil
}

func (s *source) set(u store.User) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[u.ID] = u
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
}

// versions is the users' versions; calls counts UserVersion calls.
type versions struct {
	v     map[string]string
	err   error
	calls int
}

func (v *versions) UserVersion(_ context.Context, id string) (string, error) {
	v.calls++
	return v.v[id], v.err
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func setup() (*source, *versions, *clock, *usercache.Cache) {
	src := &source{users: map[string]store.User{"u1": {ID: "u1", Name: "Ann", Active: true, Roles: []string{"user"}}}}
	ver := &versions{v: map[string]string{"u1": "v1"}}
	clk := &clock{t: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
	return src, ver, clk, usercache.New(src, ver, usercache.Options{MaxAge: time.Minute, Now: clk.now})
}

// TestCache: when a copy is used and when the user is read again, each
// case starting from one read of u1 (a copy at version v1).
func TestCache(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// between changes the world after the first read.
		between   func(src *source, ver *versions, clk *clock)
		wantReads int // source reads in all, the first included
		wantName  string
	}{
		{"copy used while the version holds", func(*source, *versions, *clock) {}, 1, "Ann"},
		{"copy used just before MaxAge", func(_ *source, _ *versions, clk *clock) { clk.t = clk.t.Add(time.Minute - time.Millisecond) }, 1, "Ann"},
		{"new version: read again", func(src *source, ver *versions, _ *clock) {
			src.set(store.User{ID: "u1", Name: "Bea", Roles: []string{"admin"}})
			ver.v["u1"] = "v2"
		}, 2, "Bea"},
		{"write in flight: read again", func(src *source, ver *versions, _ *clock) {
			src.set(store.User{ID: "u1", Name: "Bea"})
			ver.v["u1"] = ""
		}, 2, "Bea"},
		{"version unreadable: read again", func(src *source, ver *versions, _ *clock) {
			src.set(store.User{ID: "u1", Name: "Bea"})
			ver.err = errors.New("redis: connection refused")
		}, 2, "Bea"},
		{"MaxAge reached: read again", func(src *source, _ *versions, clk *clock) {
			src.set(store.User{ID: "u1", Name: "Bea"})
			clk.t = clk.t.Add(time.Minute)
		}, 2, "Bea"},
		{"clock went back: read again", func(src *source, _ *versions, clk *clock) {
			src.set(store.User{ID: "u1", Name: "Bea"})
			clk.t = clk.t.Add(-time.Second)
		}, 2, "Bea"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, ver, clk, c := setup()
			if u, err := c.GetUser(ctx, "u1"); err != nil || u.Name != "Ann" {
				t.Fatalf("first read: %+v, %v", u, err)
			}
			tc.between(src, ver, clk)
			u, err := c.GetUser(ctx, "u1")
			if err != nil || u.Name != tc.wantName {
				t.Fatalf("second read: %+v, %v; want %s", u, err, tc.wantName)
			}
			if src.count() != tc.wantReads {
				t.Fatalf("%d reads of the source, want %d", src.count(), tc.wantReads)
			}
		})
	}
}

// TestCacheKeepsNothingUnsure: no copy is kept from a read made while a
// write was in flight, without a version, or that failed.
func TestCacheKeepsNothingUnsure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		setup func(src *source, ver *versions)
		id    string
	}{
		{"write in flight", func(_ *source, ver *versions) { ver.v["u1"] = "" }, "u1"},
		{"version unreadable", func(_ *source, ver *versions) { ver.err = errors.New("down") }, "u1"},
		{"unknown user", func(*source, *versions) {}, "nobody"},
		{"source down", func(src *source, _ *versions) { src.err = store.ErrUnavailable }, "u1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, ver, _, c := setup()
			tc.setup(src, ver)
			_, err1 := c.GetUser(ctx, tc.id)
			_, err2 := c.GetUser(ctx, tc.id)
			if src.count() != 2 || c.Len() != 0 {
				t.Fatalf("%d source reads and %d copies kept (errors %v, %v); want 2 and 0", src.count(), c.Len(), err1, err2)
			}
		})
	}
}

// TestCacheVersionReadWithTheSession: GetUserAt uses a version read
// elsewhere (the browser session's lookup) and reads none itself.
func TestCacheVersionReadWithTheSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, ver, _, c := setup()
	for range 3 {
		if _, err := c.GetUserAt(ctx, "u1", store.UserVersion{Read: true, Value: "v1"}); err != nil {
			t.Fatal(err)
		}
	}
	if ver.calls != 0 || src.count() != 1 {
		t.Fatalf("%d version reads, %d source reads; want 0 and 1", ver.calls, src.count())
	}
	// Read, and empty: a write is in flight.
	if _, err := c.GetUserAt(ctx, "u1", store.UserVersion{Read: true}); err != nil || src.count() != 2 {
		t.Fatalf("during a write: %v, %d source reads, want 2", err, src.count())
	}
	// Not read: the cache reads it.
	if _, err := c.GetUserAt(ctx, "u1", store.UserVersion{}); err != nil || ver.calls != 1 || src.count() != 2 {
		t.Fatalf("version not read: %v, %d version reads, %d source reads; want 1 and 2", err, ver.calls, src.count())
	}
}

// TestCacheWithoutVersions reads every time and keeps nothing.
func TestCacheWithoutVersions(t *testing.T) {
	t.Parallel()
	src := &source{users: map[string]store.User{"u1": {ID: "u1"}}}
	c := usercache.New(src, nil, usercache.Options{})
	for range 3 {
		if _, err := c.GetUser(context.Background(), "u1"); err != nil {
			t.Fatal(err)
		}
	}
	if src.count() != 3 || c.Len() != 0 {
		t.Fatalf("%d source reads, %d copies; want 3 and 0", src.count(), c.Len())
	}
}

// TestCacheCopiesShareNothing: a caller changing what it got changes no
// copy.
func TestCacheCopiesShareNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, _, _, c := setup()
	u, _ := c.GetUser(ctx, "u1")
	u.Roles[0] = "super_admin"
	u2, _ := c.GetUser(ctx, "u1")
	u2.Roles[0] = "admin"
	if u3, _ := c.GetUser(ctx, "u1"); !slices.Equal(u3.Roles, []string{"user"}) {
		t.Fatalf("roles %v, want [user]", u3.Roles)
	}
}

// TestCacheServesNoLastLogin: a login records its time without changing
// the user's version, so no read through the cache (from the source, kept
// or not, or from a copy) serves a last-login time, which could be older
// than the row's.
func TestCacheServesNoLastLogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	login := time.Date(2026, 12, 5, 11, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		version string // "" : a write in flight, nothing kept
	}{{"read and kept, then the copy", "v1"}, {"read while a write is in flight", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src, ver, _, c := setup()
			src.set(store.User{ID: "u1", Name: "Ann", LastLoginAt: &login})
			ver.v["u1"] = tc.version
			for i := range 2 {
				u, err := c.GetUser(ctx, "u1")
				if err != nil || u.Name != "Ann" {
					t.Fatalf("read %d: %+v, %v", i, u, err)
				}
				if u.LastLoginAt != nil {
					t.Fatalf("read %d served a last-login time: %v", i, u.LastLoginAt)
				}
			}
		})
	}
}

// TestCacheBounded: past MaxEntries, copies are dropped.
func TestCacheBounded(t *testing.T) {
	t.Parallel()
	src := &source{users: map[string]store.User{}}
	ver := &versions{v: map[string]string{}}
	for i := range 100 {
		id := fmt.Sprintf("u%d", i)
		src.users[id], ver.v[id] = store.User{ID: id}, "v"
	}
	c := usercache.New(src, ver, usercache.Options{MaxEntries: 16})
	for i := range 100 {
		if _, err := c.GetUser(context.Background(), fmt.Sprintf("u%d", i)); err != nil {
			t.Fatal(err)
		}
		if c.Len() > 16 {
			t.Fatalf("%d copies after %d users, want at most 16", c.Len(), i+1)
		}
	}
}

// TestCacheObserved: every read reports its outcome once.
func TestCacheObserved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := &source{users: map[string]store.User{"u1": {ID: "u1"}}}
	ver := &versions{v: map[string]string{"u1": "v1"}}
	var got []string
	c := usercache.New(src, ver, usercache.Options{Observe: func(o string) { got = append(got, o) }})
	_, _ = c.GetUser(ctx, "u1")     // read, kept
	_, _ = c.GetUser(ctx, "u1")     // copy
	ver.v["u1"] = ""                // a write in flight
	_, _ = c.GetUser(ctx, "u1")     // unsure
	_, _ = c.GetUser(ctx, "nobody") // unsure: not found
	want := []string{usercache.OutcomeRead, usercache.OutcomeCopy, usercache.OutcomeUnsure, usercache.OutcomeUnsure}
	if !slices.Equal(got, want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
}
