package batch

import (
	"errors"
	"slices"
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

// A call that fails the batch runs alone and gets its own error; the
// others are committed together, once each.
func TestIsolate(t *testing.T) {
	bad := errors.New("bad")
	var rounds [][]int
	got := map[int]error{}
	Isolate([]int{1, 2, 3, 4}, func(b []int) (int, error) {
		rounds = append(rounds, slices.Clone(b))
		for i, c := range b {
			if c == 2 || c == 4 {
				return i, bad
			}
		}
		return -1, nil
	}, func(c int) error {
		if c == 2 {
			return bad
		}
		return nil
	}, func(c int, err error) {
		if _, dup := got[c]; dup {
			t.Errorf("call %d done twice", c)
		}
		got[c] = err
	})
	if got[2] != bad || got[1] != nil || got[3] != nil || got[4] != nil || len(got) != 4 {
		t.Errorf("results %v: want only 2 failed (4 fails together but not alone)", got)
	}
	if len(rounds) != 3 || !slices.Equal(rounds[2], []int{1, 3}) {
		t.Errorf("rounds %v: want [1 2 3 4], [1 3 4], [1 3]", rounds)
	}
}
