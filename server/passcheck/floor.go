package passcheck

import (
	"context"
	"sync"
	"time"
)

// MaxRefusalFloor caps the time every refusal is padded to: however slow an
// imported hash is, a refusal of another account never waits longer.
const MaxRefusalFloor = 2 * time.Second

// dummyClass is the class of the dummy verification (the current parameters).
const dummyClass = "dummy"

// maxClasses bounds the classes kept; a class beyond it counts as otherClass.
const (
	maxClasses = 64
	otherClass = "other"
)

// refusalFloor keeps, per hash class (password.HashClass), a smoothed
// estimate of one verification's wall time: an exponentially weighted
// moving average (weight 1/4 for a new sample), so one garbage collection
// pause or a burst of load moves it by a quarter and fades, where a raw
// maximum would keep it for good. Its floor is the largest estimate, capped
// at MaxRefusalFloor. It is safe for concurrent use.
type refusalFloor struct {
	mu  sync.Mutex
	est map[string]time.Duration
}

// observe records one completed verification of class that took d.
func (f *refusalFloor) observe(class string, d time.Duration) {
	if d < 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.est == nil {
		f.est = make(map[string]time.Duration)
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
	var m time.Duration
	for _, d := range f.est {
		m = max(m, d)
	}
	return min(m, MaxRefusalFloor)
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
