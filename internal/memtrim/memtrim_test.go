package memtrim

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// The idle trim returns memory after a burst that ran the collector, and
// does nothing (no forced collection) when none ran since the last trim.
func TestIdleTrim(t *testing.T) {
	cycles := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	tr := New(time.Hour, nil)
	runtime.GC()
	tr.Trim()
	after := cycles()
	if tr.lastCycles != after {
		t.Fatalf("trim after a collection: last cycles %d, want %d", tr.lastCycles, after)
	}
	tr.Trim() // nothing ran since: no forced collection
	if got := cycles(); got != after {
		t.Errorf("trim with nothing to return forced %d collections", got-after)
	}
}

// A release hook that freed something makes the trim collect even without
// a collection since the last one.
func TestTrimAfterRelease(t *testing.T) {
	released := 0
	tr := New(time.Hour, func() bool { released++; return true })
	tr.Trim()
	before := tr.lastCycles
	tr.Trim()
	if released != 2 || tr.lastCycles == before {
		t.Errorf("release ran %d times, collections %d -> %d: want 2 and a collection", released, before, tr.lastCycles)
	}
}
