package server

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

// The idle trim returns memory after a burst that ran the collector, and
// does nothing (no forced collection) when none ran since the last trim.
func TestIdleTrim(t *testing.T) {
	cycles := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	tr := &idleTrim{}
	runtime.GC()
	tr.trim()
	after := cycles()
	if tr.lastCycles != after {
		t.Fatalf("trim after a collection: last cycles %d, want %d", tr.lastCycles, after)
	}
	tr.trim() // nothing ran since: no forced collection
	if got := cycles(); got != after {
		t.Errorf("trim with nothing to return forced %d collections", got-after)
	}
}
