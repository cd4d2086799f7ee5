package passcheck

import (
	"context"
	"sync"
	"time"
)

// MaxRefusalFloor caps the time every refusal is padded to: however slow an
// imported hash is, a refusal of another account never waits longer.
const MaxRefusalFloor = 2 * time.Second

// dummyClass is the class of the dummy verification (the current parameters),
// followed by " twice" when it runs the hash twice (password.RunsTwice).
const dummyClass = "dummy"

// maxClasses bounds the classes kept; a class beyond it counts as otherClass.
const (
	maxClasses = 64
	otherClass = "other"
)

// maxSampleRatio bounds a sample: none counts for more than this multiple
// of the current floor, so one outlier (a first sample taken under load, a
// garbage collection pause) cannot jump the floor; a class truly slower is
// learnt over a few samples instead (each may raise the floor by this
// factor at most). Above the ratio of the slowest hash users bring in
// (argon2-cffi's defaults take about 7 times the current parameters), so
// such a class is learnt from its first verification.
const maxSampleRatio = 8

// refusalFloor keeps, per class of verification (password.VerifyClass: the
// hash class, and its own class for one that runs the hash twice), a smoothed
// estimate of one verification's run time (the hasher's own measure,
// which leaves out the wait for a hashing slot: a queue of concurrent
// requests is not a class's cost): an exponentially weighted moving
// average (weight 1/4 for a new sample), so one garbage collection pause
// moves it by a quarter and fades, where a raw maximum would keep it for
// good. A class's first sample is its estimate, and no sample counts for
// more than maxSampleRatio times the current floor. Its floor is the
// largest estimate, capped at MaxRefusalFloor. It is safe for concurrent
// use.
type refusalFloor struct {
	mu  sync.Mutex
	est map[string]time.Duration
}

// observe records one completed verification of class whose hash ran for
// d (0: nothing was hashed, which tells nothing).
func (f *refusalFloor) observe(class string, d time.Duration) {
	if d <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.est == nil {
		f.est = make(map[string]time.Duration)
	}
	if m := f.slowest(); m > 0 {
		d = min(d, maxSampleRatio*m)
	}
	old, ok := f.est[class]
	if !ok && len(f.est) >= maxClasses {
		class = otherClass
		old, ok = f.est[class]
	}
	if !ok {
		f.est[class] = d
		return
	}
	f.est[class] = old + (d-old)/4
}

// floor is the time a refusal takes at least: the slowest class's estimate,
// capped at MaxRefusalFloor.
func (f *refusalFloor) floor() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return min(f.slowest(), MaxRefusalFloor)
}

// slowest is the largest estimate (0 with none); f.mu is held.
func (f *refusalFloor) slowest() time.Duration {
	var m time.Duration
	for _, d := range f.est {
		m = max(m, d)
	}
	return m
}

// sleepCtx waits d, or less when ctx is done first.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
