// Package batch is group commit's queue: the calls that arrive while one
// batch is being committed make up the next batch, so that a store whose
// commit costs an fsync commits many calls for one.
//
// Invariants: batches are committed one at a time, in the order their
// calls arrived; every call is in exactly one batch; a goroutine commits
// only while calls keep arriving. Isolate is the shared rule for a batch
// whose transaction one call fails: that call alone gets the error.
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

// Isolate commits batch through together, which applies every call in one
// transaction and reports the index of the call that failed it (or -1).
// That call then runs alone, so that it gets exactly its own error, and
// the others are tried together again: a failing call never fails its
// siblings. done gets each call's result once.
func Isolate[T any](batch []T, together func([]T) (failed int, err error), alone func(T) error, done func(T, error)) {
	for len(batch) > 0 {
		failed, err := together(batch)
		if failed < 0 {
			for _, c := range batch {
				done(c, err)
			}
			return
		}
		c := batch[failed]
		batch = append(batch[:failed:failed], batch[failed+1:]...)
		if len(batch) == 0 {
			done(c, err)
			return
		}
		done(c, alone(c))
	}
}
