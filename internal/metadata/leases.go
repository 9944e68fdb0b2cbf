package metadata

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/content"
	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/labels"
	"github.com/berth-dev/berth/internal/leases"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Lease is a lease record: a set of resources kept from garbage collection
// while it lives. The label containerd.io/gc.expire (RFC 3339) bounds its
// life; the garbage collector reads it.
type Lease struct {
	ID        string
	CreatedAt time.Time
	Labels    map[string]string
}

// LeaseResource names one resource held by a lease. Type is "content" (ID
// a digest), "ingests" (ID an ingest ref) or "snapshots/<snapshotter>" (ID
// a snapshot key).
type LeaseResource struct {
	ID   string
	Type string
}

var (
	bucketLeases    = []byte("leases")
	bucketContent   = []byte("content")   // v1/<ns>/content and leases/<id>/content
	bucketIngests   = []byte("ingests")   // content/ingests and leases/<id>/ingests
	bucketSnapshots = []byte("snapshots") // leases/<id>/snapshots
)

// Leases manages the lease records of the namespace in each call's context.
type Leases struct{ db *DB }

// Leases returns the lease store.
func (db *DB) Leases() *Leases { return &Leases{db: db} }

// Create stores a new lease; AlreadyExists if the ID is taken. Its
// creation time is set here.
func (s *Leases) Create(ctx context.Context, l Lease) (Lease, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return Lease{}, err
	}
	if err := leases.Validate(l.ID); err != nil {
		return Lease{}, err
	}
	if err := labels.ValidateAll(l.Labels); err != nil {
		return Lease{}, fmt.Errorf("lease %q: %w", l.ID, err)
	}
	l.CreatedAt = time.Now().UTC()
	err = s.db.Update(ctx, func(tx *bolt.Tx) error {
		lb, err := createBucketPath(tx, ns, bucketLeases)
		if err != nil {
			return err
		}
		if lb.Bucket([]byte(l.ID)) != nil {
			return fmt.Errorf("lease %q in namespace %q: %w", l.ID, ns, errdefs.ErrAlreadyExists)
		}
		b, err := lb.CreateBucket([]byte(l.ID))
		if err != nil {
			return err
		}
		if err := putTime(b, keyCreatedAt, l.CreatedAt); err != nil {
			return err
		}
		return writeLabels(b, l.Labels)
	})
	if err != nil {
		return Lease{}, err
	}
	return l, nil
}

// Delete removes a lease record; NotFound if missing. What it held becomes
// collectable; removing it is the garbage collector's job.
func (s *Leases) Delete(ctx context.Context, id string) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := leases.Validate(id); err != nil {
		return err
	}
	return s.db.Update(ctx, func(tx *bolt.Tx) error {
		lb := bucketPath(tx, ns, bucketLeases)
		if lb == nil || lb.Bucket([]byte(id)) == nil {
			return fmt.Errorf("lease %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
		}
		return lb.DeleteBucket([]byte(id))
	})
}

// List returns the leases matching any of fs (fields id and labels.<key>),
// sorted by ID.
func (s *Leases) List(ctx context.Context, fs ...string) ([]Lease, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	f, err := filters.ParseAll(fs...)
	if err != nil {
		return nil, err
	}
	var out []Lease
	err = s.db.View(func(tx *bolt.Tx) error {
		lb := bucketPath(tx, ns, bucketLeases)
		if lb == nil {
			return nil
		}
		return lb.ForEachBucket(func(k []byte) error {
			b := lb.Bucket(k)
			l := Lease{ID: string(k), CreatedAt: getTime(b, keyCreatedAt), Labels: readLabels(b)}
			if f.Match(leaseAdaptor(&l)) {
				out = append(out, l)
			}
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

func leaseAdaptor(l *Lease) filters.Adaptor {
	return filters.AdapterFunc(func(fp []string) (string, bool) {
		switch fp[0] {
		case "id":
			return l.ID, l.ID != ""
		case "labels":
			return filters.LabelField(l.Labels, fp[1:])
		}
		return "", false
	})
}

// resourcePath maps a resource to the buckets under leases/<id>/ that hold
// it and its key there. Unknown types are NotImplemented, as in containerd;
// malformed ones InvalidArgument.
func resourcePath(r LeaseResource) ([][]byte, []byte, error) {
	kind, rest, nested := strings.Cut(r.Type, "/")
	switch kind {
	case "content", "ingests":
		if nested {
			return nil, nil, fmt.Errorf("lease resource type %q: %w", r.Type, errdefs.ErrInvalidArgument)
		}
		if kind == "content" {
			if err := content.ValidateDigest(digest.Digest(r.ID)); err != nil {
				return nil, nil, fmt.Errorf("lease resource: %w", err)
			}
			return [][]byte{bucketContent}, []byte(r.ID), nil
		}
		if err := validateRef(r.ID); err != nil {
			return nil, nil, fmt.Errorf("lease resource: %w", err)
		}
		return [][]byte{bucketIngests}, []byte(r.ID), nil
	case "snapshots":
		if err := identifiers.Validate(rest); err != nil {
			return nil, nil, fmt.Errorf("lease resource type %q: snapshotter: %w", r.Type, err)
		}
		if err := validateKey("snapshot key", r.ID, maxKeyLength); err != nil {
			return nil, nil, fmt.Errorf("lease resource: %w", err)
		}
		return [][]byte{bucketSnapshots, []byte(rest)}, []byte(r.ID), nil
	}
	return nil, nil, fmt.Errorf("lease resource type %q: %w", r.Type, errdefs.ErrNotImplemented)
}

// AddResource makes lease id hold r. The resource need not exist (yet).
func (s *Leases) AddResource(ctx context.Context, id string, r LeaseResource) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := leases.Validate(id); err != nil {
		return err
	}
	path, key, err := resourcePath(r)
	if err != nil {
		return err
	}
	return s.db.Update(ctx, func(tx *bolt.Tx) error {
		lb := bucketPath(tx, ns, bucketLeases, []byte(id))
		if lb == nil {
			return fmt.Errorf("lease %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
		}
		return putResource(lb, key, path)
	})
}

// DeleteResource makes lease id release r; releasing a resource it does
// not hold is not an error.
func (s *Leases) DeleteResource(ctx context.Context, id string, r LeaseResource) error {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return err
	}
	if err := leases.Validate(id); err != nil {
		return err
	}
	path, key, err := resourcePath(r)
	if err != nil {
		return err
	}
	return s.db.Update(ctx, func(tx *bolt.Tx) error {
		lb := bucketPath(tx, ns, bucketLeases, []byte(id))
		if lb == nil {
			return fmt.Errorf("lease %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
		}
		return deleteResource(lb, key, path)
	})
}

// ListResources returns what lease id holds: content, then ingests, then
// snapshots by snapshotter, each sorted by ID.
func (s *Leases) ListResources(ctx context.Context, id string) ([]LeaseResource, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	if err := leases.Validate(id); err != nil {
		return nil, err
	}
	var out []LeaseResource
	err = s.db.View(func(tx *bolt.Tx) error {
		lb := bucketPath(tx, ns, bucketLeases, []byte(id))
		if lb == nil {
			return fmt.Errorf("lease %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
		}
		keys := func(b *bolt.Bucket, typ string) error {
			if b == nil {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				if v != nil {
					out = append(out, LeaseResource{ID: string(k), Type: typ})
				}
				return nil
			})
		}
		if err := keys(lb.Bucket(bucketContent), "content"); err != nil {
			return err
		}
		if err := keys(lb.Bucket(bucketIngests), "ingests"); err != nil {
			return err
		}
		sb := lb.Bucket(bucketSnapshots)
		if sb == nil {
			return nil
		}
		return sb.ForEachBucket(func(k []byte) error {
			return keys(sb.Bucket(k), "snapshots/"+string(k))
		})
	})
	return out, err
}

func putResource(lb *bolt.Bucket, key []byte, path [][]byte) error {
	b := lb
	for _, p := range path {
		var err error
		if b, err = b.CreateBucketIfNotExists(p); err != nil {
			return err
		}
	}
	return b.Put(key, []byte{})
}

func deleteResource(lb *bolt.Bucket, key []byte, path [][]byte) error {
	b := lb
	for _, p := range path {
		if b = b.Bucket(p); b == nil {
			return nil
		}
	}
	return b.Delete(key)
}

// addToLease makes the lease in ctx, if any, hold key under path (see
// resourcePath), in the same transaction as the change that created the
// resource. It reports whether ctx had a lease; a lease that does not exist
// is NotFound. Snapshot stores call it with path snapshots, <snapshotter>.
func addToLease(ctx context.Context, tx *bolt.Tx, ns string, key []byte, path ...[]byte) (bool, error) {
	id, ok := leases.FromContext(ctx)
	if !ok {
		return false, nil
	}
	lb := bucketPath(tx, ns, bucketLeases, []byte(id))
	if lb == nil {
		return false, fmt.Errorf("lease %q in namespace %q: %w", id, ns, errdefs.ErrNotFound)
	}
	return true, putResource(lb, key, path)
}

// removeFromLease makes the lease in ctx, if any and if it still exists,
// release key under path.
func removeFromLease(ctx context.Context, tx *bolt.Tx, ns string, key []byte, path ...[]byte) error {
	id, ok := leases.FromContext(ctx)
	if !ok {
		return nil
	}
	lb := bucketPath(tx, ns, bucketLeases, []byte(id))
	if lb == nil {
		return nil
	}
	return deleteResource(lb, key, path)
}
