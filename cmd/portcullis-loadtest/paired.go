package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The client_credentials target of issue 21 is a ratio: the grant's rate
// against the JWKS rate of the same run. Measured as two scenarios of 10 s
// one after the other, the ratio read anywhere from 44% to 66% for the
// same binary, because this machine's speed drifts between them (probe.go).
// The paired measurement runs the two paths in short slices, one after the
// other, several times over, so that both see the same machine: the ratio
// is that of their rates summed over the slices, and the spread of the
// single pairs is reported with it.

// pairedScenario is the -scenarios name of the paired measurement.
const pairedScenario = "cc_paired"

// pairedRounds and pairedSlice are how many pairs of slices the paired
// measurement runs, and how long each slice is measured (after a warm-up
// of pairedWarmup).
const (
	pairedRounds = 6
	pairedSlice  = 3 * time.Second
	pairedWarmup = time.Second
)

// Pair is one round of a paired measurement: the rate a target compares
// against (Base: JWKS for client_credentials, the argon2id bound for the
// password grant) and the path's rate (Path) measured next to it.
type Pair struct {
	Base, Path float64
}

// Ratio is the path's rate over the base rate of the pair.
func (p Pair) Ratio() float64 { return p.Path / p.Base }

// Paired is a paired measurement.
type Paired struct {
	Pairs []Pair
	Slice time.Duration
}

// Ratio is the path's rate over the base rate, each summed over the pairs
// (the slices are equally long), or 0 without pairs.
func (p Paired) Ratio() float64 {
	var base, path float64
	for _, pr := range p.Pairs {
		base += pr.Base
		path += pr.Path
	}
	if base == 0 {
		return 0
	}
	return path / base
}

// spread is the lowest and highest ratio of the single pairs and their
// rates as "path/base, ..." for the report.
func (p Paired) spread() (lo, hi float64, rates string) {
	lo, hi = p.Pairs[0].Ratio(), p.Pairs[0].Ratio()
	all := make([]string, len(p.Pairs))
	for i, pr := range p.Pairs {
		lo, hi = min(lo, pr.Ratio()), max(hi, pr.Ratio())
		all[i] = fmt.Sprintf("%.0f/%.0f", pr.Path, pr.Base)
	}
	return lo, hi, strings.Join(all, ", ")
}

// runScenario runs one scenario (Run; a fake in tests).
type runScenario func(ctx context.Context, o Options, scenario string) (Result, error)

// measurePaired runs rounds pairs of a JWKS slice and a client_credentials
// slice with run, each measured for slice after a warm-up. A slice with
// errors fails the measurement: the ratio is of successful requests.
func measurePaired(run runScenario, o Options, rounds int, slice, warmup time.Duration) (Paired, error) {
	o.Duration, o.Warmup = slice, warmup
	p := Paired{Slice: slice}
	for range rounds {
		var pair Pair
		for _, sc := range []struct {
			name string
			rate *float64
		}{{"jwks", &pair.Base}, {"client_credentials", &pair.Path}} {
			r, err := run(context.Background(), o, sc.name)
			if err != nil {
				return p, fmt.Errorf("%s: %w", pairedScenario, err)
			}
			if r.Errors > 0 || r.RPS == 0 {
				return p, fmt.Errorf("%s: %s had %d errors in %d requests", pairedScenario, sc.name, r.Errors, r.Requests)
			}
			*sc.rate = r.RPS
		}
		p.Pairs = append(p.Pairs, pair)
	}
	return p, nil
}

// pairedLine is the report's line on the paired measurement.
func pairedLine(p Paired) string {
	return p.line("client_credentials against JWKS", "JWKS, then client_credentials", pairedScenario, "the JWKS rate", 0.6,
		"client_credentials/JWKS")
}

// line is the report's line on a paired measurement: what was measured
// against what, in which order, its scenario, what the ratio is of (base)
// against target, and the pairs' rates (perSecond names them); "" without
// pairs.
func (p Paired) line(what, order, scenario, base string, target float64, perSecond string) string {
	if len(p.Pairs) == 0 {
		return ""
	}
	lo, hi, rates := p.spread()
	return fmt.Sprintf("- %s in %d interleaved pairs of %s slices (%s, so that both see the same machine; %s measurement, "+
		"cmd/portcullis-loadtest/paired.go): %.1f%% of %s (target ≥ %.0f%%): %s. The single pairs read %.1f%% to %.1f%% (%s per second: %s).\n",
		what, len(p.Pairs), p.Slice, order, scenario, 100*p.Ratio(), base, 100*target, verdict(p.Ratio() >= target), 100*lo, 100*hi, perSecond, rates)
}

// The password target is a ratio too: the grant's rate against the
// argon2id bound (the hash alone on every core). Measured around a 10 s
// scenario, the bound just before and just after it read as far apart as
// 74/s and 58/s, and the ratio of one binary from 69% to 93% in six quick
// runs: the machine's speed moves within seconds. The password pairing
// alternates slices of the bound and of the grant, switching which goes
// first every round (bound then grant, grant then bound, ...), so that a
// drift within a round cancels over two.

// passwordPairedScenario is the -scenarios name of the password grant's
// paired measurement.
const passwordPairedScenario = "password_paired"

// passwordPairedRounds and passwordPairedSlice are how many pairs of
// slices the password pairing runs and how long each slice is measured
// (the grant's after a warm-up of pairedWarmup). A slice holds a few
// hundred logins: at most the two being hashed when it ends are cut off.
// Single pairs of one binary read from 80% to 100% of the bound (a
// standard deviation of 4.3 points over thirty pairs), and the target sits
// inside that spread: twelve pairs (about two minutes) put the standard
// error of their mean near 1.2 points, where six left it near 1.8.
const (
	passwordPairedRounds = 12
	passwordPairedSlice  = 4 * time.Second
)

// measurePasswordPaired runs rounds pairs of a bound slice (bound: the
// hash's rate on every core over the given time) and a password grant
// slice (run), the bound first in even rounds and last in odd ones. A
// grant slice with errors fails the measurement: the ratio is of
// successful logins.
func measurePasswordPaired(run runScenario, bound func(time.Duration) float64, o Options, rounds int, slice, warmup time.Duration) (Paired, error) {
	o.Duration, o.Warmup = slice, warmup
	p := Paired{Slice: slice}
	for i := range rounds {
		var pair Pair
		steps := []func() error{
			func() error { pair.Base = bound(slice); return nil },
			func() error {
				r, err := run(context.Background(), o, "password")
				if err != nil {
					return fmt.Errorf("%s: %w", passwordPairedScenario, err)
				}
				if r.Errors > 0 || r.RPS == 0 {
					return fmt.Errorf("%s: password had %d errors in %d requests", passwordPairedScenario, r.Errors, r.Requests)
				}
				pair.Path = r.RPS
				return nil
			},
		}
		if i%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return p, err
			}
		}
		if pair.Base <= 0 {
			return p, fmt.Errorf("%s: the password-hash bound measured nothing", passwordPairedScenario)
		}
		p.Pairs = append(p.Pairs, pair)
	}
	return p, nil
}

// passwordPairedLine is the report's line on the password pairing.
func passwordPairedLine(p Paired) string {
	return p.line("password grant against the argon2id bound", "the bound first in every other pair", passwordPairedScenario,
		"the bound", 0.9, "logins/bound")
}
