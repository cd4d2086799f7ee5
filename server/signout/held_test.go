package signout_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/store"
)

// heldMem is an in-memory HeldStore.
type heldMem struct {
	recs  map[string][]byte
	exp   map[string]time.Time
	taken map[string]bool
	kinds map[string]string
	fail  error // returned by TakeOnce when set
}

func newHeldMem() *heldMem {
	return &heldMem{recs: map[string][]byte{}, exp: map[string]time.Time{}, taken: map[string]bool{}, kinds: map[string]string{}}
}

func (m *heldMem) PutOnce(_ context.Context, kind string, key, val []byte, exp time.Time) error {
	k := string(key)
	if _, ok := m.recs[k]; ok {
		return store.ErrAlreadyExists
	}
	m.recs[k], m.exp[k], m.kinds[k] = val, exp, kind
	return nil
}

func (m *heldMem) TakeOnce(_ context.Context, kind string, key []byte, now time.Time) ([]byte, error) {
	if m.fail != nil {
		return nil, m.fail
	}
	k := string(key)
	v, ok := m.recs[k]
	switch {
	case !ok || m.kinds[k] != kind || !now.Before(m.exp[k]):
		return nil, store.ErrNotFound
	case m.taken[k]:
		return v, store.ErrTokenUsed
	}
	m.taken[k] = true
	return v, nil
}

// TestHeldLogoutRequest: a held logout request comes back whole at its
// first take, under the logout kind; a second take, a take after HeldTTL, an
// unknown or oversized id are ErrHeldGone; a store that cannot answer is an
// error of its own, never taken for a gone request.
func TestHeldLogoutRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	req := signout.LogoutRequest{IDTokenHint: "h.i.nt", ClientID: "web", PostLogoutRedirectURI: "https://app.example/bye", State: "s t&a"}
	outage := errors.New("store down")
	tests := []struct {
		name string
		take func(m *heldMem, id string) (signout.LogoutRequest, error)
		want error
	}{
		{"ok/first_take", func(m *heldMem, id string) (signout.LogoutRequest, error) {
			return signout.TakeHeld(ctx, m, id, now.Add(signout.HeldTTL-time.Second))
		}, nil},
		{"fail/second_take", func(m *heldMem, id string) (signout.LogoutRequest, error) {
			if _, err := signout.TakeHeld(ctx, m, id, now); err != nil {
				return signout.LogoutRequest{}, err
			}
			return signout.TakeHeld(ctx, m, id, now)
		}, signout.ErrHeldGone},
		{"fail/expired", func(m *heldMem, id string) (signout.LogoutRequest, error) {
			return signout.TakeHeld(ctx, m, id, now.Add(signout.HeldTTL))
		}, signout.ErrHeldGone},
		{"fail/unknown", func(m *heldMem, id string) (signout.LogoutRequest, error) {
			return signout.TakeHeld(ctx, m, id+"x", now)
		}, signout.ErrHeldGone},
		{"fail/empty", func(m *heldMem, _ string) (signout.LogoutRequest, error) {
			return signout.TakeHeld(ctx, m, "", now)
		}, signout.ErrHeldGone},
		{"fail/oversized", func(m *heldMem, id string) (signout.LogoutRequest, error) {
			return signout.TakeHeld(ctx, m, id+string(make([]byte, 64)), now)
		}, signout.ErrHeldGone},
		{"fail/store_down", func(m *heldMem, id string) (signout.LogoutRequest, error) {
			m.fail = outage
			return signout.TakeHeld(ctx, m, id, now)
		}, outage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newHeldMem()
			id, err := signout.Hold(ctx, m, req, now)
			if err != nil {
				t.Fatal(err)
			}
			for k, kind := range m.kinds {
				if kind != store.OnceLogoutRequest || k == id {
					t.Fatalf("held under kind %q, key %q: want kind %q under the id's hash", kind, k, store.OnceLogoutRequest)
				}
			}
			got, err := tc.take(m, id)
			if !errors.Is(err, tc.want) {
				t.Fatalf("take: %v, want %v", err, tc.want)
			}
			if tc.want == nil && got != req {
				t.Fatalf("took %+v, want %+v", got, req)
			}
			if tc.want != nil && got != (signout.LogoutRequest{}) {
				t.Fatalf("a refused take returned %+v", got)
			}
		})
	}
	a, _ := signout.Hold(ctx, newHeldMem(), req, now)
	b, _ := signout.Hold(ctx, newHeldMem(), req, now)
	if a == b || len(a) < 22 {
		t.Fatalf("ids %q and %q: want a new 128-bit id per request", a, b)
	}
}

// TestHoldRefusesWhatNoClientSends: Hold keeps nothing of a logout request
// whose parameter no client could send (an id_token_hint longer than any
// token we sign, a client_id or post-logout URI longer than any that can
// match, a state that is not 1*VSCHAR of at most 4 KiB), refusing it with
// a *NotHeldError naming the parameter; what it keeps of a valid request
// is about its own size (no HTML escaping: a 4 KiB state of '<' was kept
// as 24 KiB). Failed before the change: each was held.
func TestHoldRefusesWhatNoClientSends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		req   signout.LogoutRequest
		param string
	}{
		{"fail/id_token_hint over 8 KiB", signout.LogoutRequest{IDTokenHint: strings.Repeat("a", 8<<10+1)}, "id_token_hint"},
		{"fail/client_id over 64 bytes", signout.LogoutRequest{ClientID: strings.Repeat("c", 65)}, "client_id"},
		{"fail/post-logout URI over 2000 bytes", signout.LogoutRequest{PostLogoutRedirectURI: "https://a.example/" + strings.Repeat("x", 2000)},
			"post_logout_redirect_uri"},
		{"fail/state over 4 KiB", signout.LogoutRequest{State: strings.Repeat("s", 4<<10+1)}, "state"},
		{"fail/state with a newline", signout.LogoutRequest{State: "bye\n"}, "state"},
		{"fail/state not ASCII", signout.LogoutRequest{State: "tschüss"}, "state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newHeldMem()
			_, err := signout.Hold(ctx, st, tc.req, now)
			var nh *signout.NotHeldError
			if !errors.As(err, &nh) || !strings.Contains(nh.Reason, tc.param) {
				t.Fatalf("Hold: %v, want a refusal naming %s", err, tc.param)
			}
			if len(st.recs) != 0 {
				t.Fatalf("%d records kept", len(st.recs))
			}
		})
	}
	t.Run("ok/largest of each, kept at its size", func(t *testing.T) {
		st := newHeldMem()
		req := signout.LogoutRequest{IDTokenHint: strings.Repeat("h", 8<<10), ClientID: strings.Repeat("c", 64),
			PostLogoutRedirectURI: "https://a.example/" + strings.Repeat("<", 2000-18), State: strings.Repeat("<", 4<<10)}
		id, err := signout.Hold(ctx, st, req, now)
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, v := range st.recs {
			size += len(v)
		}
		if raw := len(req.IDTokenHint) + len(req.ClientID) + len(req.PostLogoutRedirectURI) + len(req.State); size > raw+128 {
			t.Fatalf("kept %d bytes for %d of parameters", size, raw)
		}
		if got, err := signout.TakeHeld(ctx, st, id, now); err != nil || got != req {
			t.Fatalf("taken back: %v", err)
		}
	})
}
