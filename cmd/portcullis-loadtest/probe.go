package main

import (
	"crypto/ed25519"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The machine's speed probe. This machine is a virtual one whose host
// slows it under sustained load (no steal time is reported, so only the
// work done per second shows it): the same SSO scenario measured about
// 20% less throughput at about 20% more CPU per round trip in every
// process alike when it ran after five minutes of load than on a rested
// machine. A scenario's figure therefore depends on what ran before it.
// The probe puts a number on that in every run: a fixed piece of pure
// computation (Ed25519 signatures, which no process's state, cache or
// data can speed up or slow down) on every core at once, just before each
// scenario, with nothing else running. The report shows each scenario's
// probe beside its figures, so a reader can tell a slower path from a
// slower machine. It changes nothing that is measured.

// probeDuration is how long one probe signs: a few hundred milliseconds
// spans several scheduling periods of the host.
const probeDuration = 300 * time.Millisecond

// probeKey is the probe's fixed signing key.
var probeKey = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

// probeSpeed signs for d on every core at once and returns the signatures
// completed per second.
func probeSpeed(d time.Duration) float64 {
	var n atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	msg := []byte("portcullis machine speed probe")
	start := time.Now()
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				_ = ed25519.Sign(probeKey, msg)
				n.Add(1)
			}
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds()
}
