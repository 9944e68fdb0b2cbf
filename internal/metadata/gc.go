package metadata

import (
	"context"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Labels that steer garbage collection, as containerd names them.
const (
	LabelGCRoot        = "containerd.io/gc.root"
	LabelGCRefContent  = "containerd.io/gc.ref.content"   // [.<anything>] = <digest>
	LabelGCRefSnapshot = "containerd.io/gc.ref.snapshot." // <snapshotter>[/<anything>] = <key>
	LabelGCExpire      = "containerd.io/gc.expire"        // RFC 3339
	LabelGCFlat        = "containerd.io/gc.flat"          // a lease whose resources hold nothing further
)

// GCResult is what a metadata collection leaves alive and what it removed.
type GCResult struct {
	// LiveContent holds every digest some namespace still records: the
	// blob files that must stay on disk.
	LiveContent map[digest.Digest]bool
	// LiveIngests holds the backend refs of every ingest still recorded.
	LiveIngests map[string]bool
	// LiveSnapshots holds, per namespace, "<snapshotter>/<key>" of every
	// snapshot reachable from a root.
	LiveSnapshots map[string]map[string]bool
	// Removed counts the records removed, by kind (content, ingests, leases).
	Removed map[string]int
}

type gcNode struct {
	kind string // "content" or "snapshot"
	key  string // a digest, or "<snapshotter>/<key>"
}

// CollectGarbage marks, in every namespace, what is reachable from the roots
// (images, containers, unexpired leases, gc.root labels, unexpired ingests)
// along gc.ref labels, and removes in the same transaction the records of
// unreachable blobs and ingests and of expired leases. Files are the
// caller's to remove, from the result, while no writer can commit.
func (db *DB) CollectGarbage(ctx context.Context) (GCResult, error) {
	var res GCResult
	err := db.Update(ctx, func(tx *bolt.Tx) error {
		res = GCResult{
			LiveContent:   map[digest.Digest]bool{},
			LiveIngests:   map[string]bool{},
			LiveSnapshots: map[string]map[string]bool{},
			Removed:       map[string]int{},
		}
		now := time.Now()
		v1 := tx.Bucket(bucketV1)
		var nss []string
		_ = v1.ForEachBucket(func(k []byte) error { nss = append(nss, string(k)); return nil })
		for _, ns := range nss {
			if err := collectNamespace(v1.Bucket([]byte(ns)), ns, now, &res); err != nil {
				return err
			}
		}
		return nil
	})
	return res, err
}

func collectNamespace(nsb *bolt.Bucket, ns string, now time.Time, res *GCResult) error {
	marked := map[gcNode]bool{}
	var queue []gcNode
	mark := func(n gcNode, follow bool) {
		if n.key == "" || marked[n] {
			return
		}
		marked[n] = true
		if follow {
			queue = append(queue, n)
		}
	}
	markRefs := func(lbls map[string]string) {
		for k, v := range lbls {
			switch {
			case k == LabelGCRefContent || strings.HasPrefix(k, LabelGCRefContent+"."):
				mark(gcNode{"content", v}, true)
			case strings.HasPrefix(k, LabelGCRefSnapshot):
				sn, _, _ := strings.Cut(strings.TrimPrefix(k, LabelGCRefSnapshot), "/")
				if sn != "" {
					mark(gcNode{"snapshot", sn + "/" + v}, true)
				}
			}
		}
	}
	liveIngest := map[string]bool{}

	// roots: images
	if ib := nsb.Bucket(bucketImages); ib != nil {
		_ = ib.ForEachBucket(func(name []byte) error {
			b := ib.Bucket(name)
			if tb := b.Bucket(bucketTarget); tb != nil {
				mark(gcNode{"content", string(tb.Get(keyDigest))}, true)
			}
			markRefs(readLabels(b))
			return nil
		})
	}
	// roots: containers
	if cb := nsb.Bucket(bucketContainer); cb != nil {
		_ = cb.ForEachBucket(func(id []byte) error {
			b := cb.Bucket(id)
			if sn, key := b.Get(keySnapshotter), b.Get(keySnapshotKey); len(sn) > 0 && len(key) > 0 {
				mark(gcNode{"snapshot", string(sn) + "/" + string(key)}, true)
			}
			markRefs(readLabels(b))
			return nil
		})
	}
	// roots: leases (expired ones are removed)
	if lb := nsb.Bucket(bucketLeases); lb != nil {
		var expired [][]byte
		_ = lb.ForEachBucket(func(id []byte) error {
			b := lb.Bucket(id)
			lbls := readLabels(b)
			if exp, ok := lbls[LabelGCExpire]; ok {
				if t, err := time.Parse(time.RFC3339Nano, exp); err == nil && now.After(t) {
					expired = append(expired, append([]byte(nil), id...))
					return nil
				}
			}
			_, flat := lbls[LabelGCFlat]
			if rb := b.Bucket(bucketContent); rb != nil {
				_ = rb.ForEach(func(k, _ []byte) error { mark(gcNode{"content", string(k)}, !flat); return nil })
			}
			if rb := b.Bucket(bucketIngests); rb != nil {
				_ = rb.ForEach(func(k, _ []byte) error { liveIngest[string(k)] = true; return nil })
			}
			if sb := b.Bucket(bucketSnapshots); sb != nil {
				_ = sb.ForEachBucket(func(sn []byte) error {
					return sb.Bucket(sn).ForEach(func(k, _ []byte) error {
						mark(gcNode{"snapshot", string(sn) + "/" + string(k)}, !flat)
						return nil
					})
				})
			}
			return nil
		})
		for _, id := range expired {
			if err := lb.DeleteBucket(id); err != nil {
				return err
			}
			res.Removed["leases"]++
		}
	}
	// roots: content labelled gc.root
	cb := nsb.Bucket(bucketContent)
	var blobs *bolt.Bucket
	if cb != nil {
		blobs = cb.Bucket(bucketBlob)
	}
	if blobs != nil {
		_ = blobs.ForEachBucket(func(d []byte) error {
			if _, ok := readLabels(blobs.Bucket(d))[LabelGCRoot]; ok {
				mark(gcNode{"content", string(d)}, true)
			}
			return nil
		})
	}
	// roots: snapshots labelled gc.root
	snapshotters := nsb.Bucket(bucketSnapshots)
	if snapshotters != nil {
		_ = snapshotters.ForEachBucket(func(sn []byte) error {
			sb := snapshotters.Bucket(sn)
			return sb.ForEachBucket(func(k []byte) error {
				if _, ok := readLabels(sb.Bucket(k))[LabelGCRoot]; ok {
					mark(gcNode{"snapshot", string(sn) + "/" + string(k)}, true)
				}
				return nil
			})
		})
	}
	// follow references: content labels; snapshot labels and parents
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		switch n.kind {
		case "content":
			if blobs == nil {
				continue
			}
			if b := blobs.Bucket([]byte(n.key)); b != nil {
				markRefs(readLabels(b))
			}
		case "snapshot":
			sn, key, _ := strings.Cut(n.key, "/")
			if snapshotters == nil || snapshotters.Bucket([]byte(sn)) == nil {
				continue
			}
			if b := snapshotters.Bucket([]byte(sn)).Bucket([]byte(key)); b != nil {
				markRefs(readLabels(b))
				if p := b.Get(keyParent); len(p) > 0 {
					mark(gcNode{"snapshot", sn + "/" + string(p)}, true)
				}
			}
		}
	}

	// sweep blob records
	if blobs != nil {
		var dead [][]byte
		_ = blobs.ForEachBucket(func(d []byte) error {
			if marked[gcNode{"content", string(d)}] {
				res.LiveContent[digest.Digest(d)] = true
			} else {
				dead = append(dead, append([]byte(nil), d...))
			}
			return nil
		})
		for _, d := range dead {
			if err := blobs.DeleteBucket(d); err != nil {
				return err
			}
			res.Removed["content"]++
		}
	}
	// sweep ingests: kept while leased or not yet expired
	if cb != nil {
		if ib := cb.Bucket(bucketIngests); ib != nil {
			var dead [][]byte
			_ = ib.ForEachBucket(func(ref []byte) error {
				b := ib.Bucket(ref)
				keep := liveIngest[string(ref)]
				if !keep {
					var t time.Time
					if v := b.Get(keyExpireAt); v != nil && t.UnmarshalBinary(v) == nil && now.Before(t) {
						keep = true
					}
				}
				if keep {
					res.LiveIngests[string(b.Get(keyRef))] = true
					// a writer may be about to commit bytes already on disk
					if exp := b.Get(keyExpected); len(exp) > 0 {
						res.LiveContent[digest.Digest(exp)] = true
					}
				} else {
					dead = append(dead, append([]byte(nil), ref...))
				}
				return nil
			})
			for _, r := range dead {
				if err := ib.DeleteBucket(r); err != nil {
					return err
				}
				res.Removed["ingests"]++
			}
		}
	}
	// sweep snapshot records; the data goes with the snapshotter's sweep.
	// What is unmarked is closed under children (a marked child marks its
	// parent), so only a marked parent needs its children index mended.
	snaps := map[string]bool{}
	if snapshotters != nil {
		var sns [][]byte
		_ = snapshotters.ForEachBucket(func(sn []byte) error { sns = append(sns, append([]byte(nil), sn...)); return nil })
		for _, sn := range sns {
			sb := snapshotters.Bucket(sn)
			var dead [][]byte
			_ = sb.ForEachBucket(func(k []byte) error {
				if marked[gcNode{"snapshot", string(sn) + "/" + string(k)}] {
					snaps[string(sn)+"/"+string(k)] = true
				} else {
					dead = append(dead, append([]byte(nil), k...))
				}
				return nil
			})
			for _, k := range dead {
				parent := sb.Bucket(k).Get(keyParent)
				if pb := sb.Bucket(parent); len(parent) > 0 && pb != nil {
					if cb := pb.Bucket(bucketChildren); cb != nil {
						if err := cb.Delete(k); err != nil {
							return err
						}
					}
				}
				if err := sb.DeleteBucket(k); err != nil {
					return err
				}
				res.Removed["snapshots"]++
			}
		}
	}
	res.LiveSnapshots[ns] = snaps
	return nil
}
