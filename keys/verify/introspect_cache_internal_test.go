package verify

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"testing"
	"time"
)

// TestIntrospectionCacheUpkeepIsCheap counts the cache entries compared per
// answer cached when the cache is full (the heaps' steps; before the change,
// the entries makeRoom's loops visited).
// Found by a review: with the cache full of live positive answers, every
// forged API key's negative answer scanned all of it twice under in.mu
// (about 20000 entries, 230 µs), so about 4400 forged keys a second held the
// lock every token and API-key check takes. Each answer now costs a few
// heap steps (at most 4 log2 MaxCacheEntries), whatever the cache holds,
// and the flood still evicts no live positive answer.
func TestIntrospectionCacheUpkeepIsCheap(t *testing.T) {
	const (
		max   = DefaultIntrospectionCacheMax
		flood = 2000
	)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pos, neg := &introspection{active: true}, &introspection{}
	cases := []struct {
		name string
		fill func(in *Introspector) // the cache before the flood, at start
		// each answer of the flood: its kind and the clock's step before it
		positive      bool
		tick          time.Duration
		wantPositives int // live positive answers kept after the flood
	}{
		{
			name: "ok/forged_keys_at_a_cache_full_of_live_positives",
			fill: func(in *Introspector) {
				for i := range max {
					in.keep(cacheKey(i), pos, start, start.Add(time.Minute))
				}
			},
			wantPositives: max,
		},
		{
			name: "ok/forged_keys_at_a_cache_full_of_live_positives_and_one_negative",
			fill: func(in *Introspector) {
				for i := range max - 1 {
					in.keep(cacheKey(i), pos, start, start.Add(time.Minute))
				}
				in.keep(cacheKey(max), neg, start, start.Add(time.Minute))
			},
			wantPositives: max - 1,
		},
		{
			name: "ok/forged_keys_while_positives_expire_one_by_one",
			fill: func(in *Introspector) {
				for i := range max {
					in.keep(cacheKey(i), pos, start, start.Add(time.Duration(i+1)*time.Millisecond))
				}
			},
			tick:          time.Millisecond,
			wantPositives: max - flood,
		},
		{
			name: "ok/real_keys_at_a_cache_full_of_live_positives",
			fill: func(in *Introspector) {
				for i := range max {
					in.keep(cacheKey(i), pos, start, start.Add(time.Minute))
				}
			},
			positive:      true,
			wantPositives: max,
		},
	}
	limit := 4 * bits.Len(max)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, err := NewIntrospector(IntrospectorOptions{Endpoint: "http://127.0.0.1/introspect", ClientID: "c", ClientSecret: "s", MaxCacheEntries: max})
			if err != nil {
				t.Fatal(err)
			}
			in.mu.Lock()
			defer in.mu.Unlock()
			tc.fill(in)
			in.positive.steps, in.negative.steps = 0, 0
			now := start
			res := neg
			if tc.positive {
				res = pos
			}
			for i := range flood {
				now = now.Add(tc.tick)
				in.keep(cacheKey(1<<32+i), res, now, now.Add(MaxAPIKeyCacheTTL))
			}
			steps := in.positive.steps + in.negative.steps
			t.Logf("%d steps for %d answers", steps, flood)
			if per := steps / flood; per > limit {
				t.Errorf("%d entries compared for %d answers (%d each), want at most %d each", steps, flood, per, limit)
			}
			if len(in.cache) > max {
				t.Errorf("%d cached answers, want at most %d", len(in.cache), max)
			}
			checkCacheHeaps(t, in)
			live := 0
			for k, e := range in.cache {
				if e.res.active && now.Before(e.until) && binary.BigEndian.Uint64(k[:]) < 1<<32 {
					live++
				}
			}
			if tc.positive {
				live = len(in.cache)
			}
			if live != tc.wantPositives {
				t.Errorf("%d live positive answers kept, want %d", live, tc.wantPositives)
			}
		})
	}
}

// cacheKey is the i-th distinct cache key.
func cacheKey(i int) [sha256.Size]byte {
	var k [sha256.Size]byte
	binary.BigEndian.PutUint64(k[:], uint64(i))
	return k
}

// checkCacheHeaps fails t unless the heaps hold exactly the cached answers,
// each of its kind, at its index, in heap order.
func checkCacheHeaps(t *testing.T, in *Introspector) {
	t.Helper()
	if n := in.positive.Len() + in.negative.Len(); n != len(in.cache) {
		t.Fatalf("heaps hold %d answers, the cache %d", n, len(in.cache))
	}
	for _, h := range []*expiryHeap{&in.positive, &in.negative} {
		for i, e := range h.es {
			if e.index != i || in.cache[e.key] != e || in.kind(e.res.active) != h {
				t.Fatalf("answer %d of a heap is misplaced", i)
			}
			if i > 0 && e.until.Before(h.es[(i-1)/2].until) {
				t.Fatalf("answer %d of a heap expires before its parent", i)
			}
		}
	}
}
