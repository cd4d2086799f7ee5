package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPairedRatio: the ratio is of the rates summed over the pairs, the
// line gives its verdict and the spread of the single pairs.
func TestPairedRatio(t *testing.T) {
	tests := []struct {
		name      string
		pairs     []Pair
		ratio     float64
		want      []string
		wantEmpty bool
	}{
		{name: "none", wantEmpty: true},
		{name: "met", pairs: []Pair{{20000, 13000}, {30000, 18000}}, ratio: 0.62,
			want: []string{"62.0% of the JWKS rate", "met", "60.0% to 65.0%", "13000/20000, 18000/30000", "2 interleaved pairs of 3s"}},
		{name: "missed", pairs: []Pair{{20000, 10000}, {20000, 12000}, {20000, 11000}}, ratio: 0.55,
			want: []string{"55.0% of the JWKS rate", "**missed**", "50.0% to 60.0%"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Paired{Pairs: tt.pairs, Slice: 3 * time.Second}
			if got := p.Ratio(); got < tt.ratio-1e-9 || got > tt.ratio+1e-9 {
				t.Fatalf("ratio %v, want %v", got, tt.ratio)
			}
			line := pairedLine(p)
			if tt.wantEmpty != (line == "") {
				t.Fatalf("line %q", line)
			}
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("line %q lacks %q", line, w)
				}
			}
		})
	}
}

// TestMeasurePaired: against a real HTTP server, the slices alternate
// JWKS then the grant, every round; a grant that fails fails the
// measurement instead of lowering the ratio.
func TestMeasurePaired(t *testing.T) {
	var mu sync.Mutex
	var order []string // the paths in the order served, repeats collapsed
	var failGrant atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		mu.Lock()
		if len(order) == 0 || order[len(order)-1] != path {
			order = append(order, path)
		}
		mu.Unlock()
		switch {
		case path == "/.well-known/jwks.json":
			_, _ = w.Write([]byte(`{"keys":[]}`))
		case path == "/oauth2/token" && !failGrant.Load():
			_, _ = w.Write([]byte(`{"access_token":"x"}`))
		default:
			http.Error(w, "no", http.StatusBadRequest)
		}
	}))
	defer srv.Close()
	o := Options{URL: srv.URL, Concurrency: 2, MaxRequests: 1 << 30, CCClient: "svc", CCSecret: "s"}
	p, err := measurePaired(o, 2, 200*time.Millisecond, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Pairs) != 2 || p.Ratio() <= 0 {
		t.Fatalf("pairs %+v", p.Pairs)
	}
	mu.Lock()
	got := strings.Join(order, " ")
	mu.Unlock()
	if want := "/.well-known/jwks.json /oauth2/token /.well-known/jwks.json /oauth2/token"; got != want {
		t.Fatalf("paths in the order %q, want %q", got, want)
	}
	failGrant.Store(true)
	if _, err := measurePaired(o, 1, 200*time.Millisecond, 20*time.Millisecond); err == nil {
		t.Fatal("a failing grant measured")
	}
}
