package apikeys

import (
	"sync"
	"time"
)

// gate admits one event per name per interval, in this instance's memory
// (last_used_at writes, rejection audits): N uses of a key within a minute
// cost one write. Names not seen for an interval are forgotten; past max
// names remembered at once, new names are refused until some are
// forgotten (so a flood of distinct names cannot grow it without bound).
type gate struct {
	every time.Duration
	max   int

	mu      sync.Mutex
	last    map[string]time.Time
	sweepAt time.Time
}

func newGate(every time.Duration, max int) *gate {
	return &gate{every: every, max: max, last: map[string]time.Time{}}
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
	t, ok := g.last[name]
	if ok && now.Sub(t) < g.every && !now.Before(t) {
		return false
	}
	if !ok && len(g.last) >= g.max {
		return false
	}
	g.last[name] = now
	return true
}
