// Package batch is group commit's queue: the calls that arrive while one
// batch is being committed make up the next batch, so that a store whose
// commit costs an fsync commits many calls for one.
//
// Invariants: batches are committed one at a time, in the order their
// calls arrived; every call is in exactly one batch; a goroutine commits
// only while calls keep arriving.
package batch

import "sync"

// Queue hands batches of calls to its commit function.
type Queue[T any] struct {
	commit  func([]T)
	mu      sync.Mutex
	pending []T
	running bool
}

// New returns a queue that commits with commit.
func New[T any](commit func(batch []T)) *Queue[T] {
	return &Queue[T]{commit: commit}
}

// Add queues c for the next batch.
func (q *Queue[T]) Add(c T) {
	q.mu.Lock()
	q.pending = append(q.pending, c)
	if !q.running {
		q.running = true
		go q.loop()
	}
	q.mu.Unlock()
}

func (q *Queue[T]) loop() {
	for {
		q.mu.Lock()
		batch := q.pending
		q.pending = nil
		if len(batch) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		q.commit(batch)
	}
}
