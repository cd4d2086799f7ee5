package apikeys

import (
	"sync"
	"time"
)

// gate admits one event per name per interval, in this instance's memory
// (last_used_at writes, rejection audits): N uses of a key within a minute
// cost one write. Names not seen for an interval are forgotten.
type gate struct {
	every time.Duration

	mu      sync.Mutex
	last    map[string]time.Time
	sweepAt time.Time
}

func newGate(every time.Duration) *gate {
	return &gate{every: every, last: map[string]time.Time{}}
}

// allow reports whether an event for name at now may pass (and records it).
func (g *gate) allow(name string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.After(g.sweepAt) {
		for n, t := range g.last {
			if now.Sub(t) >= g.every {
				delete(g.last, n)
			}
		}
		g.sweepAt = now.Add(g.every)
	}
	if t, ok := g.last[name]; ok && now.Sub(t) < g.every && !now.Before(t) {
		return false
	}
	g.last[name] = now
	return true
}
