package main

import (
	"fmt"
	"strings"
	"time"
)

// perRequest is d spread over n requests.
func perRequest(d time.Duration, n int64) time.Duration {
	if n <= 0 {
		return 0
	}
	return (d / time.Duration(n)).Round(time.Microsecond)
}

// stackCost is the CPU the whole stack (server, driver, Redis,
// PostgreSQL) spent per completed request of r.
func stackCost(r Result) time.Duration {
	if r.CPU == nil || r.Requests == 0 {
		return 0
	}
	return perRequest(r.CPU.Server+r.CPU.Driver+r.CPU.Redis+r.CPU.Postgres, r.Requests)
}

// stackBound is the most requests/s the machine's cores could complete at
// r's measured cost per request (0 when unmeasured).
func stackBound(r Result, cores int) float64 {
	c := stackCost(r)
	if c <= 0 {
		return 0
	}
	return float64(cores) / c.Seconds()
}

// costReason says, for a rate target r misses, what the measurements of
// the run say about why: the stack's cost per request, whose it is, the
// most the cores allow at that cost, and how much cheaper a request must
// get for the target.
func costReason(r Result, target float64, cores int) string {
	c, bound := stackCost(r), stackBound(r, cores)
	if c <= 0 {
		return ""
	}
	per := func(d time.Duration) string { return perRequest(d, r.Requests).String() }
	s := fmt.Sprintf("each request cost the stack %s of CPU (server %s, driver %s, Redis %s, PostgreSQL %s) with the machine %.0f%% busy; "+
		"at that cost %d fully busy cores complete at most %.0f/s", c, per(r.CPU.Server), per(r.CPU.Driver), per(r.CPU.Redis), per(r.CPU.Postgres),
		100*r.CPU.MachineBusy, cores, bound)
	cut := func(busy float64) (time.Duration, float64) {
		need := time.Duration(busy * float64(cores) / target * float64(time.Second))
		return need.Round(time.Microsecond), 100 * (1 - need.Seconds()/c.Seconds())
	}
	if bound < target {
		need, less := cut(1)
		s += fmt.Sprintf(", so the target needs a request at or under %s of the whole stack's CPU (%.0f%% less) even with no idle time", need, less)
	}
	if b := r.CPU.MachineBusy; b > 0 && b < 1 {
		if need, less := cut(b); less > 0 {
			s += fmt.Sprintf("; at the %.0f%% busy measured, at or under %s (%.0f%% less)", 100*b, need, less)
		}
	}
	return s
}

// signingShare is the share of r's server profile spent signing and
// verifying (0 without a profile).
func signingShare(r Result) float64 { return categoryShare(r, categories[0].name) }

// hashingShare is the share of r's server profile spent hashing passwords
// (0 without a profile).
func hashingShare(r Result) float64 { return categoryShare(r, categories[1].name) }

// categoryShare is the share of r's server profile in the category named
// name (0 without a profile).
func categoryShare(r Result, name string) float64 {
	for _, sh := range r.Shares {
		if sh.Category == name {
			return sh.Share
		}
	}
	return 0
}

// passwordReason is issue 21's line on the password grant from its
// sequential scenario (the bound measured just before and just after it,
// the CPU of every process, the server's profile): where a login's CPU
// went against the bound's cost of one hash (the same verification alone
// on every core: cores ÷ the bound's rate), and the most the ratio could
// be at that cost. The rest of a login is the stack's cost less one hash
// alone: timed on its own thread, a hash costs the same CPU in the server
// as alone (docs/benchmarks.md, the eighteenth session). The profile's
// hashing share of the server's CPU is given for what it is: more than the
// hash, since that CPU includes the profiler's own work.
func passwordReason(r Result, cores int) string {
	if r.HashBound[0] <= 0 || r.HashBound[1] <= 0 || stackCost(r) <= 0 {
		return ""
	}
	bound := (1/r.HashBound[0].Seconds() + 1/r.HashBound[1].Seconds()) / 2
	perHash := time.Duration(float64(cores) / bound * float64(time.Second)).Round(time.Microsecond)
	c := stackCost(r)
	rest := c - perHash
	server := perRequest(r.CPU.Server, r.Requests)
	s := fmt.Sprintf("- password grant (the sequential scenario) %.0f/s = %.1f%% of the argon2id bound measured around it (%.0f/s), target ≥ 90%%: %s. "+
		"A login cost the stack %s of CPU with the machine %.0f%% busy, against %s for one hash alone (%d cores ÷ the bound): "+
		"the rest of the login %s (Portcullis's own work %s, Redis, PostgreSQL and the driver %s). "+
		"At that cost a fully busy machine completes at most %.0f%% of the bound; 90%% needs the rest at or under %s.",
		r.RPS, 100*r.RPS/bound, bound, verdict(r.RPS >= 0.9*bound), c, 100*r.CPU.MachineBusy, perHash, cores,
		rest, server-perHash, perRequest(r.CPU.Driver+r.CPU.Redis+r.CPU.Postgres, r.Requests),
		100*perHash.Seconds()/c.Seconds(), (perHash / 9).Round(time.Microsecond))
	if hs := hashingShare(r); hs > 0 {
		hash := time.Duration(hs * float64(server)).Round(time.Microsecond)
		s += fmt.Sprintf(" The server's profile puts %s of a login in hashing (%+.0f%% against the hash alone: "+
			"its share of the server's CPU, which includes the profiler's own work).", hash, 100*(hash.Seconds()/perHash.Seconds()-1))
	}
	return s + switchesPerLogin(r) + "\n"
}

// switchesPerLogin says how often the cores switched tasks per login of r
// and how often the server's threads were switched out while runnable
// ("" when unmeasured): a wakeup on a core that is hashing slows that hash
// (docs/benchmarks.md, the sixteenth session).
func switchesPerLogin(r Result) string {
	if r.CPU == nil || r.CPU.Switches == 0 || r.Requests == 0 || r.CPU.Wall <= 0 {
		return ""
	}
	n := float64(r.Requests)
	return fmt.Sprintf(" The cores switched tasks %.0f times per login (%.0f/s), and the server's threads were switched out while runnable %.0f "+
		"times per login.", float64(r.CPU.Switches)/n, float64(r.CPU.Switches)/r.CPU.Wall.Seconds(), float64(r.CPU.ServerPreempted)/n)
}

// pathFloor says what path r cannot shed, from the same run's
// measurements, and what that leaves for the rest of it: the JWKS
// request's whole stack cost (the HTTP exchange every request pays), its
// signature or verification (the signing and verifying share of r's server
// profile), what Redis and PostgreSQL spent per request (its revocation
// check, say), and the driver's extra work for r's request and answer over
// the JWKS one. Rates are in inverse proportion to costs at equal machine
// load, so at that floor r would run at the JWKS rate times JWKS cost /
// floor; with every core busy, at cores / floor. The verdict takes the
// second, the more generous: a target above it cannot be met. target is
// the rate r must reach (60% of the JWKS rate for client_credentials).
func pathFloor(r, jwks Result, target float64, cores int) string {
	jc, crypto := stackCost(jwks), time.Duration(signingShare(r)*float64(perRequest(r.CPU.Server, r.Requests)))
	if jc <= 0 || crypto <= 0 || stackCost(r) <= 0 || jwks.RPS <= 0 {
		return ""
	}
	crypto = crypto.Round(time.Microsecond)
	stores := perRequest(r.CPU.Redis+r.CPU.Postgres, r.Requests)
	driverExtra := max(perRequest(r.CPU.Driver, r.Requests)-perRequest(jwks.CPU.Driver, jwks.Requests), 0)
	floor := jc + crypto + stores + driverExtra
	atLoad, allCores := jwks.RPS*jc.Seconds()/floor.Seconds(), float64(cores)/floor.Seconds()
	s := fmt.Sprintf(" What the path cannot shed, measured in this run: the JWKS request's whole stack cost (%s), the signature or "+
		"verification (%s: the signing and verifying share of the scenario's server profile), Redis and PostgreSQL (%s) and the driver's "+
		"extra work for this request and its answer over the JWKS one (%s). With nothing else, a request would cost %s and the path would "+
		"run at %.0f/s at the JWKS run's load (%.0f%% of the JWKS rate), at most %.0f/s with every core busy",
		jc, crypto, stores, driverExtra, floor, atLoad, 100*atLoad/jwks.RPS, allCores)
	if allCores < target {
		return s + ", under the target: it cannot be met on this machine."
	}
	need := (time.Duration(float64(jc)*jwks.RPS/target) - floor).Round(time.Microsecond)
	if need <= 0 {
		return s + "; at the JWKS run's load even the floor is under the target, which needs the machine busier than in that run."
	}
	return s + fmt.Sprintf("; the rest (Portcullis's own handling of the request beyond serving JWKS, and its garbage) cost %s "+
		"and must come to %s or less.", stackCost(r)-floor, need)
}

// writeIssue21 writes issue 21's targets for EdDSA, each against the
// bounds measured in the same run, with the measured reason for a target
// missed.
func writeIssue21(w *strings.Builder, all []StackResult, b Bounds, cores int) {
	var results []Result
	var paired Paired
	var passwordPaired Paired
	for _, s := range all {
		if s.Alg == "EdDSA" {
			results, paired, passwordPaired = s.Results, s.Paired, s.PasswordPaired
		}
	}
	get := func(sc string) *Result {
		for i := range results {
			if results[i].Scenario == sc {
				return &results[i]
			}
		}
		return nil
	}
	ceiling := get("http_ceiling")
	if len(results) == 0 || ceiling == nil {
		return
	}
	fmt.Fprintf(w, "\nIssue 21's targets (EdDSA), each against what this run measured; the HTTP ceiling is %.0f/s "+
		"(the bare server %.2f cores, the driver %.2f, the machine %.0f%% busy):\n\n",
		ceiling.RPS, ceiling.CPU.cores(ceiling.CPU.Server), ceiling.CPU.cores(ceiling.CPU.Driver), 100*ceiling.CPU.MachineBusy)
	aboveCeiling := func(target float64) string {
		if target > ceiling.RPS {
			return fmt.Sprintf(" The target is above the HTTP ceiling of this run (%.0f/s): no path can meet it on this machine while the driver shares its cores.", ceiling.RPS)
		}
		return ""
	}
	if r := get("jwks"); r != nil {
		fmt.Fprintf(w, "- JWKS %.0f/s (target ≥ 40,000/s): %s. It is %.0f%% of the HTTP ceiling; the server spends %s per request against the bare server's %s.%s\n",
			r.RPS, verdict(r.RPS >= 40000), 100*r.RPS/ceiling.RPS, perRequest(r.CPU.Server, r.Requests), perRequest(ceiling.CPU.Server, ceiling.Requests),
			aboveCeiling(40000))
	}
	if r := get("introspection"); r != nil {
		line := fmt.Sprintf("- introspection %.0f/s (target ≥ 20,000/s, half the EdDSA verify rate of both cores", r.RPS)
		if d := b.VerifyPerAlg["EdDSA"]; d > 0 {
			line += fmt.Sprintf(": %.0f/s in this run", 0.5/d.Seconds())
		}
		line += fmt.Sprintf("): %s", verdict(r.RPS >= 20000))
		if r.RPS < 20000 {
			line += "; " + costReason(*r, 20000, cores) + "." + aboveCeiling(20000)
			if j := get("jwks"); j != nil {
				line += pathFloor(*r, *j, 20000, cores)
			}
		}
		w.WriteString(line + "\n")
	}
	if r, j := get("client_credentials"), get("jwks"); r != nil && j != nil {
		line := fmt.Sprintf("- client_credentials %.0f/s = %.1f%% of the JWKS rate of this run (target ≥ 60%%): %s", r.RPS, 100*r.RPS/j.RPS, verdict(r.RPS >= 0.6*j.RPS))
		if r.RPS < 0.6*j.RPS {
			line += "; " + costReason(*r, 0.6*j.RPS, cores) + "." + pathFloor(*r, *j, 0.6*j.RPS, cores)
		}
		w.WriteString(line + "\n")
	}
	w.WriteString(pairedLine(paired))
	if r := get("password"); r != nil {
		w.WriteString(passwordReason(*r, cores))
	}
	w.WriteString(passwordPairedLine(passwordPaired))
	for _, t := range []struct {
		scenario, name string
		target         float64
	}{{"refresh", "refresh", 6000}, {"sso", "SSO round trips", 1500}} {
		r := get(t.scenario)
		if r == nil {
			continue
		}
		line := fmt.Sprintf("- %s %.0f/s (target ≥ %.0f/s): %s", t.name, r.RPS, t.target, verdict(r.RPS >= t.target && r.Errors == 0))
		if r.RPS < t.target {
			line += "; " + costReason(*r, t.target, cores) + "."
			if first := firstProbe(all); r.Probe > 0 && first > 0 {
				line += fmt.Sprintf(" The machine-speed probe before it read %.0f/s, %.0f%% of the run's first.", r.Probe, 100*r.Probe/first)
			}
		}
		w.WriteString(line + "\n")
	}
}
