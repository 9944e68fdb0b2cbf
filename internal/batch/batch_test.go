package batch

import (
	"sync"
	"testing"
)

// Calls added while a batch commits go into one later batch; every call
// is committed exactly once.
func TestQueue(t *testing.T) {
	var (
		mu      sync.Mutex
		seen    = map[int]int{}
		batches [][]int
	)
	release := make(chan struct{})
	first := true
	var q *Queue[int]
	q = New(func(b []int) {
		if first {
			first = false
			<-release // hold the first batch while others arrive
		}
		mu.Lock()
		batches = append(batches, b)
		for _, c := range b {
			seen[c]++
		}
		mu.Unlock()
	})
	q.Add(0)
	for !func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.pending) == 0 }() {
	}
	for i := 1; i <= 10; i++ {
		q.Add(i)
	}
	close(release)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == 11 {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for c, k := range seen {
		if k != 1 {
			t.Errorf("call %d committed %d times", c, k)
		}
	}
	if len(batches) != 2 || len(batches[1]) != 10 {
		t.Errorf("batches %v: want [0] then the ten that arrived meanwhile", batches)
	}
}
