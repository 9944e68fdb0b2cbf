// Package gc is berthd's garbage collector: it removes the blobs, ingests,
// leases (and, with the snapshot store, snapshots) that nothing holds.
//
// A collection marks from the roots and removes unreachable records in one
// metadata transaction (metadata.DB.CollectGarbage), then, while no content
// writer can open, commit, delete or abort (metadata.ContentStore.Exclusive),
// deletes the blob files no namespace records and the backend ingests no
// namespace records, and last lets each snapshot store remove the backend
// snapshots no record names and the backend its own leftovers, such as the
// half-made directories of a killed berthd (metadata.SnapshotStore.Collect).
// Invariants:
//   - nothing a live lease, an image, a container or a gc.root label holds
//     (directly or along gc.ref labels) is removed;
//   - a blob committed concurrently is either recorded before the mark (and
//     kept) or committed after the sweep: never deleted in between;
//   - collections are serialised; requests made while one runs are coalesced
//     into the next.
//
// Scheduling follows containerd's: a `sync` delete collects before it
// returns; a collection runs shortly after start-up; other deletions are
// counted and a collection is scheduled after DeletionThreshold of them.
// Content nothing refers to therefore stays until one of those, as with
// containerd (a blob ingested with `ctr content ingest` can still be read).
package gc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/metadata"
	"github.com/containerd/log"
	digest "github.com/opencontainers/go-digest"
)

// Stats tells what one collection removed and how long it took.
type Stats struct {
	Records   map[string]int // metadata records, by kind
	Blobs     int            // blob files
	Snapshots int            // snapshots removed from snapshotters
	Ingests   int            // backend ingests
	Duration  time.Duration
}

// Config is the section [plugins."io.containerd.gc.v1.scheduler"].
type Config struct {
	// DeletionThreshold schedules a collection after this many deletions
	// without sync; 0 leaves them to the next sync delete or start-up.
	DeletionThreshold int `toml:"deletion_threshold"`
	// StartupDelay is how long after start-up the first collection runs.
	StartupDelay string `toml:"startup_delay"`
}

// DefaultConfig is containerd's default behaviour, but for the start-up
// collection:
// The start-up collection runs before berthd serves (containerd runs it
// 100ms after), so no client can race it.
func DefaultConfig() *Config { return &Config{DeletionThreshold: 100, StartupDelay: "0s"} }

// Collector runs collections, on demand and after deletions.
type Collector struct {
	db        *metadata.DB
	content   *metadata.ContentStore
	snapshots []*metadata.SnapshotStore
	delay     time.Duration
	threshold int64
	deletions atomic.Int64

	run     sync.Mutex // one collection at a time
	trigger chan struct{}
	stop    chan struct{}
	done    chan struct{}
	started bool
}

// New returns a collector; Start begins background collections. delay is
// the start-up delay and the pause before a scheduled collection.
func New(db *metadata.DB, cs *metadata.ContentStore, delay time.Duration, deletionThreshold int, snaps ...*metadata.SnapshotStore) *Collector {
	return &Collector{db: db, content: cs, snapshots: snaps, delay: delay, threshold: int64(deletionThreshold),
		trigger: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// Collect runs one collection now.
func (c *Collector) Collect(ctx context.Context) (Stats, error) {
	return c.collect(ctx, true)
}

// collect is Collect; without leftovers, the snapshotters keep their own
// leftovers for the next collection.
func (c *Collector) collect(ctx context.Context, leftovers bool) (Stats, error) {
	c.run.Lock()
	defer c.run.Unlock()
	c.deletions.Store(0)
	start := time.Now()
	var st Stats
	err := c.content.Exclusive(func(backend content.Store) error {
		res, err := c.db.CollectGarbage(ctx)
		if err != nil {
			return err
		}
		st.Records = res.Removed
		var dead []content.Info
		if err := backend.Walk(ctx, func(info content.Info) error {
			if !res.LiveContent[info.Digest] {
				dead = append(dead, info)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, info := range dead {
			if err := backend.Delete(ctx, info.Digest); err != nil {
				log.G(ctx).WithError(err).WithField("digest", info.Digest).Warn("gc: delete blob")
				continue
			}
			st.Blobs++
		}
		statuses, err := backend.ListStatuses(ctx)
		if err != nil {
			return err
		}
		for _, s := range statuses {
			if res.LiveIngests[s.Ref] {
				continue
			}
			if err := backend.Abort(ctx, s.Ref); err == nil {
				st.Ingests++
			}
		}
		return nil
	})
	if err == nil {
		// snapshot records went in the metadata collection; now their data
		for _, ss := range c.snapshots {
			collect := ss.Sweep
			if leftovers {
				collect = ss.Collect
			}
			n, serr := collect(ctx)
			st.Snapshots += n
			if serr != nil {
				log.G(ctx).WithError(serr).WithField("snapshotter", ss.Name()).Warn("gc: clean up snapshots")
			}
		}
	}
	st.Duration = time.Since(start)
	if err == nil && (st.Blobs > 0 || st.Ingests > 0 || st.Snapshots > 0 || len(st.Records) > 0) {
		log.G(ctx).WithField("records", st.Records).WithField("blobs", st.Blobs).WithField("ingests", st.Ingests).WithField("snapshots", st.Snapshots).
			WithField("d", st.Duration).Debug("garbage collected")
	}
	return st, err
}

// Deleted tells the collector something was deleted: with wait (a client's
// `sync` delete), it collects now and returns when done; otherwise it
// schedules a collection.
func (c *Collector) Deleted(ctx context.Context, wait bool) error {
	if !wait {
		c.countDeletion()
		return nil
	}
	_, err := c.Collect(ctx)
	return err
}

func (c *Collector) countDeletion() {
	if c.threshold > 0 && c.deletions.Add(1) >= c.threshold {
		c.Schedule()
	}
}

// Schedule asks for a collection soon; it never blocks.
func (c *Collector) Schedule() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// Start runs scheduled collections in the background until Close, and one
// for what an earlier daemon left behind: before returning when the delay is
// 0 (then the snapshotters' own leftovers, whose removal may take long, go
// in a second collection in the background), in the background after the
// delay otherwise.
func (c *Collector) Start(ctx context.Context) {
	c.started = true
	c.content.SetDeleteHook(func(context.Context, digest.Digest) { c.countDeletion() })
	if c.delay == 0 {
		if _, err := c.collect(ctx, false); err != nil {
			log.G(ctx).WithError(err).Warn("start-up garbage collection failed")
		}
		// what a crash left in the snapshotters' directories (removing it
		// may take long) goes in a collection once berthd serves
		c.Schedule()
	} else {
		c.Schedule()
	}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stop:
				return
			case <-c.trigger:
			}
			select { // let a burst of deletions finish first
			case <-c.stop:
				return
			case <-time.After(c.delay):
			}
			if _, err := c.Collect(ctx); err != nil {
				log.G(ctx).WithError(err).Warn("garbage collection failed")
			}
		}
	}()
}

// Close stops background collections.
func (c *Collector) Close() error {
	if !c.started {
		return nil
	}
	select {
	case <-c.stop:
	default:
		close(c.stop)
		<-c.done
	}
	return nil
}
