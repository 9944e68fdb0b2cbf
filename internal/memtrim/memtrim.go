// Package memtrim returns memory to the system once a process has been
// quiet for a while after a burst of work: berthd and its shims idle for
// hours between requests, and the Go runtime would keep the burst's peak.
//
// Invariant: a trim forces a collection only when there is something to
// return: a collection ran since the last trim, or the release hook let
// memory go. Forcing one otherwise would only touch the collector's
// metadata (which costs resident memory in a small process).
package memtrim

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// Trimmer trims after a quiet period that every Touch restarts.
type Trimmer struct {
	quiet      time.Duration
	release    func() bool // lets caches go; reports whether it freed any
	timer      *time.Timer
	mu         sync.Mutex
	lastCycles uint64
}

// New returns a trimmer that trims quiet after the last Touch. release,
// if not nil, runs first at each trim.
func New(quiet time.Duration, release func() (freed bool)) *Trimmer {
	t := &Trimmer{quiet: quiet, release: release}
	t.timer = time.AfterFunc(time.Hour, t.Trim)
	t.timer.Stop()
	return t
}

// Touch (re)starts the quiet period.
func (t *Trimmer) Touch() { t.timer.Reset(t.quiet) }

// Trim returns memory to the system if there is any to return.
func (t *Trimmer) Trim() {
	t.mu.Lock()
	defer t.mu.Unlock()
	freed := t.release != nil && t.release()
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if !freed && (s[0].Value.Kind() != metrics.KindUint64 || s[0].Value.Uint64() == t.lastCycles) {
		return
	}
	debug.FreeOSMemory()
	metrics.Read(s)
	t.lastCycles = s[0].Value.Uint64()
}
