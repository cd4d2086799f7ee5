//go:build !race

// The overhead test times code; under the race detector timings mean nothing,
// so it is built only without it.

package verify_test

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"
)

// maxOverhead is what the verifier may add to the bare signature check.
const maxOverhead = 20 * time.Microsecond

// TestVerifierOverhead: for each algorithm, the whole check costs at most
// maxOverhead more than the bare signature check of the same token, both
// measured with testing.Benchmark in this run.
//
// The machine is shared, and the load changes from one moment to the next,
// so the two are measured back to back in many short pairs (alternating
// which goes first), and two estimates are taken: the median of the
// per-pair differences (load hitting both halves of a pair cancels out, a
// few disturbed pairs do not move it) and the difference of the fastest
// runs (load only ever adds time). Noise moves the two differently; a real
// regression raises both. An attempt passes when either is within the
// limit, and up to three attempts are made, so a burst of load elsewhere
// does not fail the test while a verifier that really costs more than
// maxOverhead fails every attempt.
func TestVerifierOverhead(t *testing.T) {
	f := flag.Lookup("test.benchtime")
	if f == nil {
		t.Fatal("test.benchtime flag not registered")
	}
	old := f.Value.String()
	const (
		pairs      = 21
		iterations = 200
		attempts   = 3
	)
	if err := f.Value.Set(fmt.Sprintf("%dx", iterations)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Value.Set(old) })
	for _, alg := range benchAlgs {
		t.Run(string(alg), func(t *testing.T) {
			bc := newBenchCase(t, alg)
			ctx := context.Background()
			bareRun := func() testing.BenchmarkResult {
				return testing.Benchmark(func(b *testing.B) {
					for b.Loop() {
						if !bc.bare() {
							b.Fatal("refused")
						}
					}
				})
			}
			fullRun := func() testing.BenchmarkResult {
				return testing.Benchmark(func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if _, err := bc.v.Verify(ctx, bc.token); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
			perOp := func(r testing.BenchmarkResult) float64 {
				if r.N == 0 {
					t.Fatal("a benchmark failed")
				}
				return float64(r.T.Nanoseconds()) / float64(r.N)
			}
			for attempt := 1; ; attempt++ {
				var full, bare, diff []float64
				var allocs int64
				for i := 0; i < pairs; i++ {
					var rb, rf testing.BenchmarkResult
					if i%2 == 0 {
						rb, rf = bareRun(), fullRun()
					} else {
						rf, rb = fullRun(), bareRun()
					}
					b, fu := perOp(rb), perOp(rf)
					bare, full, diff = append(bare, b), append(full, fu), append(diff, fu-b)
					allocs = rf.AllocsPerOp()
				}
				byMedian := time.Duration(median(diff))
				byMin := time.Duration(slices.Min(full) - slices.Min(bare))
				t.Logf("%s attempt %d: bare signature %.1f µs, whole check %.1f µs (medians); overhead %.1f µs (median of %d pair differences of %d ops), %.1f µs (fastest runs); %d allocs per check",
					alg, attempt, median(bare)/1e3, median(full)/1e3, us(byMedian), pairs, iterations, us(byMin), allocs)
				if byMedian <= maxOverhead || byMin <= maxOverhead {
					return
				}
				if attempt == attempts {
					t.Fatalf("%s: the verifier adds %.1f µs (median) / %.1f µs (fastest) to the bare signature check, more than %s, in %d attempts",
						alg, us(byMedian), us(byMin), maxOverhead, attempts)
				}
			}
		})
	}
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }
