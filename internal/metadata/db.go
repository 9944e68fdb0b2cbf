// Package metadata keeps berthd's records in one bbolt file, namespaced.
//
// Schema (bucket names end in /; everything else is a key):
//
//	version                          varint schema version (1)
//	v1/                              schema version bucket
//	  <namespace>/                   exists iff the namespace exists
//	    labels/<key> = <value>       namespace labels
//	    containers/<id>/
//	      createdat, updatedat       time.MarshalBinary
//	      spec                       proto-marshalled google.protobuf.Any
//	      image, snapshotter, snapshotKey, sandbox
//	      runtime/ name, options     options: proto-marshalled Any
//	      extensions/<name>          proto-marshalled Any
//	      labels/<key> = <value>
//	    images/<name>/               name: a reference, not an identifier
//	      createdat, updatedat
//	      target/ digest, mediatype, size      size: signed varint
//	      labels/<key> = <value>
//	      annotations/<key> = <value>          the target's annotations
//	    content/
//	      blob/<digest>/             a blob this namespace sees (bytes in the
//	        createdat, updatedat     shared content store, io.containerd.content.v1)
//	        size                     signed varint
//	        labels/<key> = <value>
//	      ingests/<ref>/             an ingest this namespace started
//	        ref                      the backend's ref: <namespace>/<seq>/<ref>
//	        expireat                 unleased ingests: when GC may abort it
//	        expected                 the digest declared, if any
//	    leases/<id>/                 id: any text (ctr uses paths), not an identifier
//	      createdat
//	      labels/<key> = <value>     containerd.io/gc.expire, …
//	      content/<digest> = ""      resources the lease holds
//	      ingests/<ref> = ""
//	      snapshots/<snapshotter>/<key> = ""
//
// Snapshot records live under v1/<ns>/snapshots/<snapshotter>/<key>/,
// documented in snapshots.go.
//
// Invariants:
//   - every mutation runs in a bbolt read-write transaction and is fsync'd
//     before Update returns; concurrent mutations share one transaction and
//     one fsync (group commit), and a failing mutation never takes a
//     sibling's changes down with it: the batch is retried without it;
//   - names (namespaces, IDs) are validated before they become keys;
//   - a namespace bucket is made by the first object created in it.
package metadata

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-dev/berth/internal/batch"
)

const schemaVersion = 1

var (
	bucketV1        = []byte("v1")
	keyVersion      = []byte("version")
	bucketLabels    = []byte("labels")
	bucketContainer = []byte("containers")
	keyCreatedAt    = []byte("createdat")
	keyUpdatedAt    = []byte("updatedat")
)

// DB is the metadata database.
type DB struct {
	bolt  *bolt.DB
	queue *batch.Queue[*call]
}

type call struct {
	fn  func(*bolt.Tx) error
	err chan error
}

// Open opens (creating if needed) the database file at path. It fails fast
// when another process holds the file.
func Open(path string) (*DB, error) {
	b, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w (is another berthd using this root?)", path, err)
	}
	db := &DB{bolt: b}
	db.queue = batch.New(db.commit)
	err = b.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketV1); err != nil {
			return err
		}
		v := make([]byte, binary.MaxVarintLen64)
		return tx.Bucket(bucketV1).Put(keyVersion, v[:binary.PutUvarint(v, schemaVersion)])
	})
	if err != nil {
		b.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the database.
func (db *DB) Close() error { return db.bolt.Close() }

// Path is the database file.
func (db *DB) Path() string { return db.bolt.Path() }

// View runs fn in a read-only transaction.
func (db *DB) View(fn func(*bolt.Tx) error) error { return db.bolt.View(fn) }

// Update runs fn in a read-write transaction that is durable when Update
// returns nil. fn may run more than once (when a sibling in its batch
// fails), so it must not depend on state it changed in an earlier run.
func (db *DB) Update(ctx context.Context, fn func(*bolt.Tx) error) error {
	c := &call{fn: fn, err: make(chan error, 1)}
	db.queue.Add(c)
	return <-c.err
}

// commit applies a batch in one transaction; a call that fails it runs
// alone and the others are tried together again (batch.Isolate).
func (db *DB) commit(calls []*call) {
	batch.Isolate(calls, func(calls []*call) (failed int, err error) {
		failed = -1
		err = db.bolt.Update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := safe(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		return failed, err
	}, func(c *call) error {
		return db.bolt.Update(func(tx *bolt.Tx) error { return safe(c.fn, tx) })
	}, func(c *call, err error) { c.err <- err })
}

func safe(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("metadata transaction panicked: %v: %w", r, errdefs.ErrInternal)
		}
	}()
	return fn(tx)
}

// namespaceBucket returns the bucket of ns, or nil.
func namespaceBucket(tx *bolt.Tx, ns string) *bolt.Bucket {
	return tx.Bucket(bucketV1).Bucket([]byte(ns))
}

// createBucketPath creates (if needed) and returns v1/<ns>/<path...>.
func createBucketPath(tx *bolt.Tx, ns string, path ...[]byte) (*bolt.Bucket, error) {
	b, err := tx.Bucket(bucketV1).CreateBucketIfNotExists([]byte(ns))
	if err != nil {
		return nil, err
	}
	for _, p := range path {
		if b, err = b.CreateBucketIfNotExists(p); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// bucketPath returns v1/<ns>/<path...>, or nil when any part is missing.
func bucketPath(tx *bolt.Tx, ns string, path ...[]byte) *bolt.Bucket {
	b := namespaceBucket(tx, ns)
	for _, p := range path {
		if b == nil {
			return nil
		}
		b = b.Bucket(p)
	}
	return b
}

func putTime(b *bolt.Bucket, k []byte, t time.Time) error {
	v, err := t.MarshalBinary()
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

func getTime(b *bolt.Bucket, k []byte) time.Time {
	var t time.Time
	if v := b.Get(k); v != nil {
		_ = t.UnmarshalBinary(v)
	}
	return t
}

// writeLabels replaces the labels bucket under b with m.
func writeLabels(b *bolt.Bucket, m map[string]string) error {
	if b.Bucket(bucketLabels) != nil {
		if err := b.DeleteBucket(bucketLabels); err != nil {
			return err
		}
	}
	if len(m) == 0 {
		return nil
	}
	lb, err := b.CreateBucket(bucketLabels)
	if err != nil {
		return err
	}
	for k, v := range m {
		if v == "" {
			continue
		}
		if err := lb.Put([]byte(k), []byte(v)); err != nil {
			return err
		}
	}
	return nil
}

func readLabels(b *bolt.Bucket) map[string]string {
	lb := b.Bucket(bucketLabels)
	if lb == nil {
		return nil
	}
	m := map[string]string{}
	_ = lb.ForEach(func(k, v []byte) error {
		m[string(k)] = string(v)
		return nil
	})
	return m
}
