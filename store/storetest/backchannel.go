package storetest

import (
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// The back-channel logout queue (store.BackchannelQueue) on the relational
// store: deliveries claimed oldest due first, each held by one caller for
// its lease; completed ones gone; a retry counted and rescheduled.

// bclTime is the queue tests' clock: microsecond precision, as stored.
func bclTime() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func newDelivery(due time.Time) store.BackchannelLogout {
	return store.BackchannelLogout{ID: rid("bcl-"), ClientID: "rp-" + rid(""), URI: "https://rp.example/backchannel",
		Subject: rid("usr_"), SID: rid("sid-"), NextAttemptAt: due, CreatedAt: due.Add(-time.Second)}
}

func enqueue(t *testing.T, s *sqlstore.Store, ds ...store.BackchannelLogout) {
	t.Helper()
	if err := s.EnqueueBackchannelLogouts(rctx(t), ds); err != nil {
		t.Fatalf("EnqueueBackchannelLogouts: %v", err)
	}
}

func claim(t *testing.T, s *sqlstore.Store, now time.Time, limit int, lease time.Duration) []store.BackchannelLogout {
	t.Helper()
	return claimWith(t, s, store.BackchannelClaim{Now: now, Limit: limit, Lease: lease})
}

func claimWith(t *testing.T, s *sqlstore.Store, c store.BackchannelClaim) []store.BackchannelLogout {
	t.Helper()
	got, err := s.ClaimBackchannelLogouts(rctx(t), c)
	if err != nil {
		t.Fatalf("ClaimBackchannelLogouts: %v", err)
	}
	for _, d := range got {
		wantUTC(t, "delivery next_attempt_at", d.NextAttemptAt)
		wantUTC(t, "delivery created_at", d.CreatedAt)
	}
	return got
}

func deliveryIDs(ds []store.BackchannelLogout) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// testBCLClaimComplete: a claim returns the due deliveries, oldest due
// first, up to the limit, as stored but leased until now+lease; a completed
// delivery is never claimed again; completing an unknown id is no error.
func testBCLClaimComplete(t *testing.T, s *sqlstore.Store) {
	now := bclTime()
	lease := time.Minute
	older, due, soon, later := newDelivery(now.Add(-time.Hour)), newDelivery(now), newDelivery(now.Add(-time.Minute)),
		newDelivery(now.Add(time.Microsecond))
	older.Attempts, older.LastError = 2, "503 from the client"
	soon.TenantID = rid("ten_") // an organisation's client: kept as queued
	enqueue(t, s, due, later)
	enqueue(t, s, older, soon)

	got := claim(t, s, now, 2, lease)
	want := []store.BackchannelLogout{older, soon}
	for i := range want {
		want[i].NextAttemptAt = now.Add(lease)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("first claim (limit 2):\n got %+v\nwant %+v (the two oldest due, leased)", got, want)
	}
	if got := deliveryIDs(claim(t, s, now, 10, lease)); !reflect.DeepEqual(got, []string{due.ID}) {
		t.Fatalf("second claim = %v, want only %s (due at now; the claimed ones are leased, the later one not due)", got, due.ID)
	}
	for _, id := range []string{older.ID, due.ID, rid("bcl-")} {
		if err := s.CompleteBackchannelLogout(rctx(t), id); err != nil {
			t.Fatalf("CompleteBackchannelLogout(%s): %v", id, err)
		}
	}
	// Due first: later (at now+1µs), then soon (leased until now+lease).
	if got := deliveryIDs(claim(t, s, now.Add(lease), 10, lease)); !reflect.DeepEqual(got, []string{later.ID, soon.ID}) {
		t.Fatalf("claim after the lease = %v, want %v (oldest due first; the completed ones gone)", got, []string{later.ID, soon.ID})
	}
	if got := claim(t, s, now.Add(lease), 0, lease); len(got) != 0 {
		t.Fatalf("claim with limit 0 = %v", got)
	}
}

// testBCLClaimFair: a claim is fair across clients (store.BackchannelClaim):
// each client's oldest due delivery comes before any client's second, what
// the caller has in flight of a client counts as claimed, and PerClient
// bounds a client's share. Client a has five deliveries due, the oldest of
// all; b one; c one, the newest.
func testBCLClaimFair(t *testing.T, s *sqlstore.Store) {
	tests := []struct {
		name      string
		limit     int
		perClient int
		inFlight  map[string]int // by client letter
		want      []string
	}{
		{name: "ok/a backlog does not come first", limit: 3, want: []string{"a1", "b1", "c1"}},
		{name: "ok/then round by round, oldest first", limit: 10, want: []string{"a1", "b1", "c1", "a2", "a3", "a4", "a5"}},
		{name: "ok/per client bound", limit: 10, perClient: 2, want: []string{"a1", "b1", "c1", "a2"}},
		{name: "ok/in flight ranks later", limit: 10, perClient: 2, inFlight: map[string]int{"a": 1},
			want: []string{"b1", "c1", "a1"}},
		{name: "ok/in flight lets the others first", limit: 2, inFlight: map[string]int{"a": 1},
			want: []string{"b1", "c1"}},
		{name: "fail/at the bound nothing more", limit: 10, perClient: 2, inFlight: map[string]int{"a": 2, "b": 3},
			want: []string{"c1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := bclTime()
			clients := map[string]string{"a": rid("rp-a-"), "b": rid("rp-b-"), "c": rid("rp-c-")}
			names := map[string]string{}
			var ds []store.BackchannelLogout
			add := func(name string, ago time.Duration) {
				d := newDelivery(now.Add(-ago))
				d.ClientID = clients[name[:1]]
				names[d.ID] = name
				ds = append(ds, d)
			}
			add("c1", 5*time.Minute)
			for i, ago := range []time.Duration{60, 50, 40, 30, 20} {
				add(fmt.Sprintf("a%d", i+1), ago*time.Minute)
			}
			add("b1", 45*time.Minute)
			enqueue(t, s, ds...)
			inFlight := map[string]int{}
			for letter, n := range tt.inFlight {
				inFlight[clients[letter]] = n
			}
			got := claimWith(t, s, store.BackchannelClaim{Now: now, Limit: tt.limit, Lease: time.Minute,
				PerClient: tt.perClient, InFlight: inFlight})
			gotNames := []string{}
			for _, d := range got {
				gotNames = append(gotNames, names[d.ID])
				if !d.NextAttemptAt.Equal(now.Add(time.Minute)) {
					t.Errorf("%s leased until %v, want %v", names[d.ID], d.NextAttemptAt, now.Add(time.Minute))
				}
			}
			if !reflect.DeepEqual(gotNames, tt.want) {
				t.Fatalf("claimed %v, want %v", gotNames, tt.want)
			}
			// What was not claimed is still due, to anyone.
			rest := claim(t, s, now, 10, time.Minute)
			if len(rest)+len(got) != len(ds) {
				t.Fatalf("%d claimed, then %d: want the %d deliveries in all", len(got), len(rest), len(ds))
			}
			for _, d := range ds {
				if err := s.CompleteBackchannelLogout(rctx(t), d.ID); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// testBCLLease: a claimed delivery is not claimed again before its lease
// runs out, and is claimed again when it has.
func testBCLLease(t *testing.T, s *sqlstore.Store) {
	now := bclTime()
	lease := 30 * time.Second
	d := newDelivery(now)
	enqueue(t, s, d)
	if got := claim(t, s, now, 5, lease); len(got) != 1 || !got[0].NextAttemptAt.Equal(now.Add(lease)) {
		t.Fatalf("first claim = %+v, want the delivery leased until %v", got, now.Add(lease))
	}
	if got := claim(t, s, now.Add(lease-time.Microsecond), 5, lease); len(got) != 0 {
		t.Fatalf("claim 1 µs before the lease runs out = %+v, want none", got)
	}
	again := now.Add(lease)
	got := claim(t, s, again, 5, lease)
	if len(got) != 1 || got[0].ID != d.ID || !got[0].NextAttemptAt.Equal(again.Add(lease)) || got[0].Attempts != 0 {
		t.Fatalf("claim when the lease ran out = %+v, want the delivery again (no attempt counted)", got)
	}
}

// testBCLRetry: a retry counts the attempt, keeps why it failed and makes
// the delivery due at next; an unknown id is store.ErrNotFound.
func testBCLRetry(t *testing.T, s *sqlstore.Store) {
	now := bclTime()
	d := newDelivery(now)
	enqueue(t, s, d)
	claim(t, s, now, 1, time.Minute)
	next := now.Add(10 * time.Second)
	if err := s.RetryBackchannelLogout(rctx(t), d.ID, next, "timeout after 5s"); err != nil {
		t.Fatalf("RetryBackchannelLogout: %v", err)
	}
	if got := claim(t, s, next.Add(-time.Microsecond), 1, time.Minute); len(got) != 0 {
		t.Fatalf("claim before the retry is due = %+v", got)
	}
	got := claim(t, s, next, 1, time.Minute)
	if len(got) != 1 || got[0].Attempts != 1 || got[0].LastError != "timeout after 5s" || !got[0].CreatedAt.Equal(d.CreatedAt) {
		t.Fatalf("claim of the retried delivery = %+v, want 1 attempt and its error", got)
	}
	if err := s.RetryBackchannelLogout(rctx(t), d.ID, next.Add(time.Minute), "connection refused"); err != nil {
		t.Fatal(err)
	}
	if got := claim(t, s, next.Add(time.Minute), 1, time.Minute); len(got) != 1 || got[0].Attempts != 2 || got[0].LastError != "connection refused" {
		t.Fatalf("second retry = %+v, want 2 attempts, the latest error", got)
	}
	err := s.RetryBackchannelLogout(rctx(t), rid("bcl-"), next, "x")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RetryBackchannelLogout of an unknown id: %v, want ErrNotFound", err)
	}
	if err := s.CompleteBackchannelLogout(rctx(t), d.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.RetryBackchannelLogout(rctx(t), d.ID, next, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RetryBackchannelLogout of a completed delivery: %v, want ErrNotFound", err)
	}
}

// testBCLEnqueueAllOrNone: a batch with an id already queued, or with an
// invalid delivery, stores none of its deliveries.
func testBCLEnqueueAllOrNone(t *testing.T, s *sqlstore.Store) {
	now := bclTime()
	first := newDelivery(now)
	enqueue(t, s, first)
	dup := []store.BackchannelLogout{newDelivery(now), newDelivery(now), first}
	if err := s.EnqueueBackchannelLogouts(rctx(t), dup); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("batch with a queued id: %v, want ErrAlreadyExists", err)
	}
	bad := newDelivery(now)
	bad.URI = ""
	if err := s.EnqueueBackchannelLogouts(rctx(t), []store.BackchannelLogout{newDelivery(now), bad}); err == nil {
		t.Fatal("a delivery without a URI was queued")
	}
	if got := deliveryIDs(claim(t, s, now, 10, time.Minute)); !reflect.DeepEqual(got, []string{first.ID}) {
		t.Fatalf("queued %v, want only %s (refused batches store nothing)", got, first.ID)
	}
	if err := s.EnqueueBackchannelLogouts(rctx(t), nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

// WarmPool opens n connections of the store's pool at once, so that racing
// callers start together instead of queueing behind connection set-up.
func WarmPool(t *testing.T, s *sqlstore.Store, n int) {
	t.Helper()
	sqlDB, err := s.DB().DB()
	if err != nil {
		t.Fatalf("DB: %v", err)
	}
	sqlDB.SetMaxIdleConns(n)
	conns := make([]*sql.Conn, n)
	for i := range conns {
		if conns[i], err = sqlDB.Conn(rctx(t)); err != nil {
			t.Fatalf("warm connection: %v", err)
		}
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// testBCLClaimRace: 8 callers, released together, claim 4 at a time from
// 50 due deliveries until none is left: each delivery is handed out
// exactly once (five rounds).
func testBCLClaimRace(t *testing.T, s *sqlstore.Store) {
	const n, callers = 50, 8
	WarmPool(t, s, callers)
	for round := 0; round < 5; round++ {
		now := bclTime()
		var ds []store.BackchannelLogout
		for i := 0; i < n; i++ {
			ds = append(ds, newDelivery(now.Add(-time.Duration(i)*time.Millisecond)))
		}
		enqueue(t, s, ds...)
		start := make(chan struct{})
		var wg sync.WaitGroup
		got, errs := make([][]string, callers), make([]error, callers)
		for c := 0; c < callers; c++ {
			wg.Add(1)
			go func(c int) {
				defer wg.Done()
				<-start
				for {
					batch, err := s.ClaimBackchannelLogouts(rctx(t), store.BackchannelClaim{Now: now, Limit: 4, Lease: time.Minute})
					if err != nil {
						errs[c] = err
						return
					}
					if len(batch) == 0 {
						return
					}
					got[c] = append(got[c], deliveryIDs(batch)...)
				}
			}(c)
		}
		close(start)
		wg.Wait()
		seen := map[string]int{}
		for c := range got {
			if errs[c] != nil {
				t.Fatalf("caller %d: %v", c, errs[c])
			}
			for _, id := range got[c] {
				seen[id]++
			}
		}
		for _, d := range ds {
			if seen[d.ID] != 1 {
				t.Fatalf("round %d: delivery %s handed out %d times, want exactly once", round, d.ID, seen[d.ID])
			}
		}
		if len(seen) != n {
			t.Fatalf("round %d: %d distinct deliveries claimed, want %d", round, len(seen), n)
		}
		if left := claim(t, s, now.Add(time.Minute), n, time.Minute); len(left) != n {
			t.Fatalf("round %d: %d deliveries back after the lease, want %d", round, len(left), n)
		}
		for _, d := range ds {
			if err := s.CompleteBackchannelLogout(rctx(t), d.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
}
