package server

import (
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// idleTrim returns the memory a burst of requests left behind to the
// system once the daemon has had no request for a while: the collector
// runs at its default target while berthd is busy (a lower one cost List
// and Get a third more CPU), and an idle berthd does not keep the peak.
// Kept reply buffers (see codec) are let go then too. Without those and
// without a collection since the last trim there is nothing to return, and
// forcing one would only touch the collector's metadata.
type idleTrim struct {
	timer      *time.Timer
	mu         sync.Mutex
	lastCycles uint64
}

// idleAfter is how long berthd must be quiet before it trims.
const idleAfter = 500 * time.Millisecond

var trimmer = func() *idleTrim {
	t := &idleTrim{}
	t.timer = time.AfterFunc(time.Hour, t.trim)
	t.timer.Stop()
	return t
}()

// touch (re)starts the quiet period; every call and stream ends with it.
func (t *idleTrim) touch() { t.timer.Reset(idleAfter) }

func (t *idleTrim) trim() {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	dropped := replies.drop()
	if dropped == 0 && (s[0].Value.Kind() != metrics.KindUint64 || s[0].Value.Uint64() == t.lastCycles) {
		return
	}
	debug.FreeOSMemory()
	metrics.Read(s)
	t.lastCycles = s[0].Value.Uint64()
}
