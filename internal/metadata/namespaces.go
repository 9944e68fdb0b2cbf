package metadata

import (
	"context"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/identifiers"
	"github.com/berth-dev/berth/internal/labels"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// Namespaces manages namespace records.
type Namespaces struct{ db *DB }

// Namespaces returns the namespace store.
func (db *DB) Namespaces() *Namespaces { return &Namespaces{db: db} }

// Create makes namespace name with labels; AlreadyExists if it exists.
func (s *Namespaces) Create(ctx context.Context, name string, lbls map[string]string) error {
	if err := identifiers.Validate(name); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	if err := labels.ValidateAll(lbls); err != nil {
		return fmt.Errorf("namespace %q: %w", name, err)
	}
	return s.db.Update(ctx, func(tx *bolt.Tx) error {
		if namespaceBucket(tx, name) != nil {
			return fmt.Errorf("namespace %q: %w", name, errdefs.ErrAlreadyExists)
		}
		b, err := tx.Bucket(bucketV1).CreateBucket([]byte(name))
		if err != nil {
			return err
		}
		return writeLabels(b, lbls)
	})
}

// Labels returns the labels of name. Like containerd 1.6, an unknown
// namespace has no labels rather than being NotFound: clients such as
// dockerd call Get before creating anything in a namespace.
func (s *Namespaces) Labels(ctx context.Context, name string) (map[string]string, error) {
	if err := identifiers.Validate(name); err != nil {
		return nil, fmt.Errorf("namespace: %w", err)
	}
	m := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := namespaceBucket(tx, name); b != nil {
			for k, v := range readLabels(b) {
				m[k] = v
			}
		}
		return nil
	})
	return m, err
}

// List returns every namespace name, sorted.
func (s *Namespaces) List(ctx context.Context) ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketV1).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}

// Update changes the labels of an existing namespace: with no paths the
// labels are replaced; "labels.<key>" sets (or, with an empty value, removes)
// one label. It returns the resulting labels.
func (s *Namespaces) Update(ctx context.Context, name string, lbls map[string]string, paths []string) (map[string]string, error) {
	if err := identifiers.Validate(name); err != nil {
		return nil, fmt.Errorf("namespace: %w", err)
	}
	var result map[string]string
	err := s.db.Update(ctx, func(tx *bolt.Tx) error {
		b := namespaceBucket(tx, name)
		if b == nil {
			return fmt.Errorf("namespace %q: %w", name, errdefs.ErrNotFound)
		}
		next, err := applyLabelPaths("namespace", name, readLabels(b), lbls, paths)
		if err != nil {
			return err
		}
		result = next
		return writeLabels(b, next)
	})
	return result, err
}

// Delete removes an empty namespace. A namespace that still holds objects is
// FailedPrecondition, naming what is left.
func (s *Namespaces) Delete(ctx context.Context, name string) error {
	if err := identifiers.Validate(name); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	return s.db.Update(ctx, func(tx *bolt.Tx) error {
		b := namespaceBucket(tx, name)
		if b == nil {
			return fmt.Errorf("namespace %q: %w", name, errdefs.ErrNotFound)
		}
		// as containerd: images, blobs, containers and snapshots keep a
		// namespace; leases and ingests go with it.
		var holds []string
		for _, path := range [][][]byte{{bucketImages}, {bucketContent, bucketBlob}, {bucketContainer}, {bucketSnapshots}} {
			if sub := bucketPath(tx, name, path...); sub != nil && !bucketEmpty(sub) {
				holds = append(holds, string(path[0]))
			}
		}
		if len(holds) > 0 {
			return fmt.Errorf("namespace %q must be empty, but it still has %v: %w", name, holds, errdefs.ErrFailedPrecondition)
		}
		return tx.Bucket(bucketV1).DeleteBucket([]byte(name))
	})
}

// bucketEmpty is true when b holds no keys, looking through sub-buckets.
func bucketEmpty(b *bolt.Bucket) bool {
	empty := true
	_ = b.ForEach(func(k, v []byte) error {
		if v != nil || !bucketEmpty(b.Bucket(k)) {
			empty = false
		}
		return nil
	})
	return empty
}

// applyLabelPaths computes new labels from current ones and an update.
// paths may hold "labels" (replace all) and "labels.<key>" (one key); any
// other path is InvalidArgument. With no paths, labels are replaced.
func applyLabelPaths(kind, name string, current, update map[string]string, paths []string) (map[string]string, error) {
	next := map[string]string{}
	for k, v := range current {
		next[k] = v
	}
	if len(paths) == 0 {
		paths = []string{"labels"}
	}
	for _, p := range paths {
		switch {
		case p == "labels":
			next = map[string]string{}
			for k, v := range update {
				next[k] = v
			}
		case strings.HasPrefix(p, "labels.") && len(p) > len("labels."):
			key := strings.TrimPrefix(p, "labels.")
			if v, ok := update[key]; ok && v != "" {
				next[key] = v
			} else {
				delete(next, key)
			}
		default:
			return nil, fmt.Errorf("cannot update field %q of %s %q: %w", p, kind, name, errdefs.ErrInvalidArgument)
		}
	}
	for k, v := range next {
		if v == "" {
			delete(next, k)
		}
	}
	if err := labels.ValidateAll(next); err != nil {
		return nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return next, nil
}
