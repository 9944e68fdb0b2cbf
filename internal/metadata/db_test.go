package metadata

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/anypb"
)

func openDB(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestGroupCommitIsolation runs many concurrent writers, a third of which
// fail after writing; the failures must not take their siblings' writes
// down, nor leave their own partial writes behind.
func TestGroupCommitIsolation(t *testing.T) {
	db := openDB(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 300)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = db.Update(ctx, func(tx *bolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte("t"))
				if err != nil {
					return err
				}
				if err := b.Put([]byte(fmt.Sprint(i)), []byte("v")); err != nil {
					return err
				}
				if i%3 == 0 {
					return fmt.Errorf("writer %d: %w", i, errdefs.ErrConflict)
				}
				if i == 7 {
					panic("writer 7 panics")
				}
				return nil
			})
		}(i)
	}
	wg.Wait()
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("t"))
		for i := range errs {
			v := b.Get([]byte(fmt.Sprint(i)))
			switch {
			case i%3 == 0:
				if !errdefs.IsConflict(errs[i]) || v != nil {
					return fmt.Errorf("failing writer %d: err %v, value %q", i, errs[i], v)
				}
			case i == 7:
				if !errdefs.IsInternal(errs[i]) || v != nil {
					return fmt.Errorf("panicking writer: err %v, value %q", errs[i], v)
				}
			default:
				if errs[i] != nil || v == nil {
					return fmt.Errorf("writer %d: err %v, value %q", i, errs[i], v)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenLocked(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meta.db")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(p); err == nil {
		t.Fatal("a second Open of a held database succeeded")
	}
}

func spec() *anypb.Any { return &anypb.Any{TypeUrl: "x", Value: []byte("{}")} }

func TestContainersAndNamespaces(t *testing.T) {
	db := openDB(t)
	ns := db.Namespaces()
	cs := db.Containers()
	ctx := namespaces.WithNamespace(context.Background(), "n1")
	if _, err := cs.Create(context.Background(), Container{ID: "a", Runtime: Runtime{Name: "r"}, Spec: spec()}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("create without namespace: %v", err)
	}
	c, err := cs.Create(ctx, Container{ID: "a", Labels: map[string]string{"k": "v"}, Runtime: Runtime{Name: "r"}, Spec: spec(),
		Extensions: map[string]*anypb.Any{"e": {TypeUrl: "t", Value: []byte("1")}}})
	if err != nil || c.CreatedAt.IsZero() {
		t.Fatalf("create: %v %+v", err, c)
	}
	names, _ := ns.List(ctx)
	if len(names) != 1 || names[0] != "n1" {
		t.Fatalf("namespace not created implicitly: %v", names)
	}
	got, err := cs.Get(ctx, "a")
	if err != nil || got.Labels["k"] != "v" || got.Extensions["e"].TypeUrl != "t" || got.Spec.TypeUrl != "x" {
		t.Fatalf("get: %v %+v", err, got)
	}
	if err := ns.Delete(ctx, "n1"); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("delete non-empty namespace: %v", err)
	}
	for _, tc := range []struct {
		paths []string
		upd   Container
		check func(Container) error
	}{
		{[]string{"labels.k2"}, Container{ID: "a", Labels: map[string]string{"k2": "v2"}}, func(c Container) error {
			if c.Labels["k"] != "v" || c.Labels["k2"] != "v2" {
				return errors.New("labels.k2 not merged")
			}
			return nil
		}},
		{[]string{"labels"}, Container{ID: "a", Labels: map[string]string{"only": "1"}}, func(c Container) error {
			if len(c.Labels) != 1 || c.Labels["only"] != "1" {
				return errors.New("labels not replaced")
			}
			return nil
		}},
		{[]string{"extensions.e"}, Container{ID: "a"}, func(c Container) error {
			if len(c.Extensions) != 0 {
				return errors.New("extension not removed")
			}
			return nil
		}},
		{[]string{"image", "snapshotkey"}, Container{ID: "a", Image: "img", SnapshotKey: "k"}, func(c Container) error {
			return fmt.Errorf("snapshot key without snapshotter accepted: %+v", c)
		}},
	} {
		got, err := cs.Update(ctx, tc.upd, tc.paths...)
		if tc.paths[0] == "image" {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%v: %v", tc.paths, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.paths, err)
		}
		if err := tc.check(got); err != nil {
			t.Errorf("%v: %v", tc.paths, err)
		}
	}
	if err := cs.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := cs.Delete(ctx, "a"); !errdefs.IsNotFound(err) {
		t.Fatalf("second delete: %v", err)
	}
	if err := ns.Delete(ctx, "n1"); err != nil {
		t.Fatalf("delete emptied namespace: %v", err)
	}
}
