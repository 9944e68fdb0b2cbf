package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/mount"
	"github.com/berth-dev/berth/internal/snapshots"
)

// Layout names the paths under a snapshotter's root.
type Layout string

// DB is the bbolt file.
func (l Layout) DB() string { return filepath.Join(string(l), "metadata.db") }

// Snapshots is the directory holding one directory per snapshot.
func (l Layout) Snapshots() string { return filepath.Join(string(l), "snapshots") }

// Dir is the directory of snapshot id.
func (l Layout) Dir(id string) string { return filepath.Join(l.Snapshots(), id) }

// FS is the tree of snapshot id.
func (l Layout) FS(id string) string { return filepath.Join(l.Snapshots(), id, "fs") }

// Work is the overlay work directory of snapshot id.
func (l Layout) Work(id string) string { return filepath.Join(l.Snapshots(), id, "work") }

// Driver is what a snapshotter adds to Snapshotter.
type Driver interface {
	// Populate fills dir, a new empty directory that becomes the
	// snapshot's directory, for a snapshot of kind on the parent chain
	// parentIDs (nearest first). It must at least create dir/fs.
	Populate(ctx context.Context, dir string, kind snapshots.Kind, parentIDs []string) error
	// Mounts returns the mounts of an active or view snapshot.
	Mounts(s Snapshot) []mount.Mount
}

// Snapshotter implements snapshots.Snapshotter on a root directory with a
// Driver. See the package documentation for the layout and invariants.
type Snapshotter struct {
	layout Layout
	ms     *MetaStore
	driver Driver

	// mu guards busy: names under snapshots/ that creations and removals
	// of this process are working on, which Cleanup must leave alone.
	mu   sync.Mutex
	busy map[string]int
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)

// New opens the snapshotter at root, creating root as needed, marks its
// snapshots directory chattr +T where the filesystem knows the flag, and
// drops the records a machine crash left without their directory.
func New(root string, driver Driver) (*Snapshotter, error) {
	l := Layout(root)
	if err := os.MkdirAll(l.Snapshots(), 0o700); err != nil {
		return nil, fmt.Errorf("snapshotter root: %w", err)
	}
	spreadSubdirs(l.Snapshots())
	ms, err := NewMetaStore(l.DB())
	if err != nil {
		return nil, err
	}
	s := &Snapshotter{layout: l, ms: ms, driver: driver, busy: map[string]int{}}
	if err := s.dropLost(); err != nil {
		ms.Close()
		return nil, err
	}
	return s, nil
}

// dropLost removes the records whose directory is missing. Only a crash of
// the machine during their creation leaves such a record (see the package
// documentation), and that creation never returned. A record with
// children is kept, and so is every record when all of several, or more
// than 256, lost their directory: that is a snapshots directory replaced
// or not mounted, not a crash.
func (s *Snapshotter) dropLost() error {
	var lost []string
	total := 0
	if err := s.ms.View(func(tx *Tx) error {
		ids := tx.IDs()
		total = len(ids)
		for id, key := range ids {
			if _, err := os.Lstat(s.layout.Dir(id)); errors.Is(err, os.ErrNotExist) {
				lost = append(lost, key)
			}
		}
		return nil
	}); err != nil || len(lost) == 0 {
		return err
	}
	if len(lost) > 256 || len(lost) == total && total > 1 {
		log.L.WithField("root", string(s.layout)).WithField("records", len(lost)).Warn("snapshot records without their directories kept: the snapshots directory looks replaced or missing")
		return nil
	}
	return s.ms.Update(func(tx *Tx) error {
		for _, key := range lost {
			if _, _, err := tx.Remove(key); errdefs.IsFailedPrecondition(err) {
				log.L.WithField("key", key).Warn("snapshot record without its directory kept: it has children")
			} else if err != nil {
				return err
			} else {
				log.L.WithField("key", key).Info("dropped a snapshot record whose directory was lost")
			}
		}
		return nil
	})
}

// Layout returns the paths of the snapshotter.
func (s *Snapshotter) Layout() Layout { return s.layout }

// Stat implements snapshots.Snapshotter.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.View(func(tx *Tx) error {
		_, info, _, err = tx.GetInfo(key)
		return err
	})
	return info, err
}

// Update implements snapshots.Snapshotter.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.ms.Update(func(tx *Tx) error {
		out, err = tx.UpdateInfo(info, fieldpaths...)
		return err
	})
	return out, err
}

// Usage implements snapshots.Snapshotter: an active snapshot's fs is
// measured now.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	err := s.ms.View(func(tx *Tx) (err error) {
		id, info, usage, err = tx.GetInfo(key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, err
	}
	if info.Kind == snapshots.KindActive {
		return DiskUsage(ctx, s.layout.FS(id))
	}
	return usage, nil
}

// Mounts implements snapshots.Snapshotter.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var snap Snapshot
	err := s.ms.View(func(tx *Tx) (err error) {
		snap, err = tx.GetSnapshot(key)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.driver.Mounts(snap), nil
}

// Prepare implements snapshots.Snapshotter.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

// View implements snapshots.Snapshotter.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

func applyOpts(opts []snapshots.Opt) (snapshots.Info, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return snapshots.Info{}, err
		}
	}
	_, err := cleanLabels(base.Labels)
	return base, err
}

func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) (_ []mount.Mount, err error) {
	base, err := applyOpts(opts)
	if err != nil {
		return nil, err
	}
	var parentIDs []string
	if err := s.ms.View(func(tx *Tx) (err error) {
		parentIDs, err = tx.CheckCreate(key, parent)
		return err
	}); err != nil {
		return nil, err
	}

	tmp, err := s.tempDir()
	if err != nil {
		return nil, err
	}
	tmpName := filepath.Base(tmp)
	defer func() {
		if tmp != "" {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				log.G(ctx).WithError(rerr).WithField("path", tmp).Warn("remove unused snapshot directory")
			}
		}
		s.release(tmpName)
	}()
	if err := s.driver.Populate(ctx, tmp, kind, parentIDs); err != nil {
		// The parent may have gone meanwhile: say so rather than how
		// copying it failed.
		if verr := s.ms.View(func(tx *Tx) error {
			ids, err := tx.CheckCreate(key, parent)
			if err == nil && !slices.Equal(ids, parentIDs) {
				err = fmt.Errorf("parent %q of %q changed: %w", parent, key, errdefs.ErrAborted)
			}
			return err
		}); verr != nil {
			return nil, verr
		}
		return nil, fmt.Errorf("populate snapshot %q: %w", key, err)
	}
	// The entries Populate made in tmp are synced from here on, beside the
	// transaction; see below.
	tmpSynced := syncDirAsync(tmp)
	defer tmpSynced() // before tmp may be removed

	var (
		snap      Snapshot
		installed string
		dirSynced func() error
	)
	err = s.ms.Update(func(tx *Tx) (err error) {
		snap, err = tx.CreateSnapshot(kind, key, parent, base.Labels)
		if err != nil {
			return err
		}
		if !slices.Equal(snap.ParentIDs, parentIDs) {
			return fmt.Errorf("parent %q of %q changed: %w", parent, key, errdefs.ErrAborted)
		}
		dir, src := s.layout.Dir(snap.ID), tmp
		tx.BeforeCommit(func() error {
			if err := os.Rename(src, dir); err != nil {
				if !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOTEMPTY) {
					return fmt.Errorf("install snapshot %q: %w", key, err)
				}
				// An orphan of a transaction that never committed.
				if err := os.RemoveAll(dir); err != nil {
					return fmt.Errorf("replace orphan directory of snapshot %q: %w", key, err)
				}
				if err := os.Rename(src, dir); err != nil {
					return fmt.Errorf("install snapshot %q: %w", key, err)
				}
			}
			installed, tmp = dir, ""
			return nil
		}, func() {
			// back where it was: the transaction may be tried again (a
			// sibling in its batch failed), or tmp is removed on return.
			if err := os.Rename(installed, src); err != nil {
				log.G(ctx).WithError(err).WithField("path", installed).Warn("move back the directory of a snapshot that was not recorded")
				if err := os.RemoveAll(installed); err != nil {
					log.G(ctx).WithError(err).WithField("path", installed).Warn("remove directory of a snapshot that was not recorded")
				}
			}
			installed, tmp = "", src
		})
		dirSynced = tx.SyncDirBesideCommit(s.layout.Snapshots())
		return nil
	})
	if err != nil {
		// a directory installed for a transaction that did not commit was
		// moved back (to tmp, removed on return) by its undo.
		return nil, err
	}
	// The snapshot is returned only once its directory is durable too: the
	// fsyncs of tmp (its entries) and of the snapshots directory (the
	// rename) ran while the record was committed, not before, which saves
	// a sync's latency. So a crash of the machine (not of this process:
	// the page cache survives that) in the middle of a creation can leave
	// a record whose directory was lost; that snapshot was never returned,
	// and New drops the record when the root is opened again.
	if err := errors.Join(tmpSynced(), dirSynced()); err != nil {
		if rerr := s.Remove(context.WithoutCancel(ctx), key); rerr != nil {
			log.G(ctx).WithError(rerr).WithField("key", key).Warn("remove snapshot whose directory could not be synced")
		}
		return nil, fmt.Errorf("snapshot %q: %w", key, err)
	}
	return s.driver.Mounts(snap), nil
}

// Commit implements snapshots.Snapshotter: the usage of the active
// snapshot is measured, then it is recorded as committed.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	base, err := applyOpts(opts)
	if err != nil {
		return err
	}
	var id string
	if err := s.ms.View(func(tx *Tx) (err error) {
		id, err = tx.CheckCommit(name, key)
		return err
	}); err != nil {
		return err
	}
	usage, err := DiskUsage(ctx, s.layout.FS(id))
	if err != nil {
		return fmt.Errorf("usage of snapshot %q: %w", key, err)
	}
	return s.ms.Update(func(tx *Tx) error {
		return tx.CommitActive(key, name, id, usage, base.Labels)
	})
}

// Remove implements snapshots.Snapshotter. Once the record is gone the
// directory is removed; a failure there is logged, not returned, and left
// to Cleanup.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var id string
	acquired := false
	err := s.ms.Update(func(tx *Tx) (err error) {
		if id, _, err = tx.Remove(key); err != nil {
			return err
		}
		// Taken inside the transaction: no Cleanup can list the
		// directory as an orphan before it is marked.
		tx.BeforeCommit(func() error {
			s.acquire(id)
			acquired = true
			return nil
		}, func() {
			s.release(id)
			acquired = false
		})
		return nil
	})
	if err != nil {
		if acquired {
			s.release(id)
		}
		return err
	}
	defer s.release(id)
	doomed := filepath.Join(s.layout.Snapshots(), fmt.Sprintf("rm-%s-%d", id, time.Now().UnixNano()))
	s.acquire(filepath.Base(doomed))
	defer s.release(filepath.Base(doomed))
	if err := os.Rename(s.layout.Dir(id), doomed); err != nil {
		log.G(ctx).WithError(err).WithField("key", key).Warn("move removed snapshot's directory aside; left to cleanup")
		return nil
	}
	if err := os.RemoveAll(doomed); err != nil {
		log.G(ctx).WithError(err).WithField("path", doomed).Warn("remove removed snapshot's directory; left to cleanup")
	}
	return nil
}

// Walk implements snapshots.Snapshotter. fn runs outside any transaction.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, fs ...string) error {
	filter, err := snapshots.ParseFilters(fs...)
	if err != nil {
		return err
	}
	var infos []snapshots.Info
	if err := s.ms.View(func(tx *Tx) error {
		return tx.Walk(func(info snapshots.Info) error {
			if filter.Match(snapshots.AdaptInfo(info)) {
				infos = append(infos, info)
			}
			return nil
		})
	}); err != nil {
		return err
	}
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

// Cleanup implements snapshots.Snapshotter: every entry of the snapshots
// directory that is not the directory of a recorded snapshot, nor in use
// by a creation or removal in progress, is removed.
//
// The entries are listed inside a write transaction, which excludes
// creations from installing directories meanwhile. An orphan named like an
// id (left by a creation whose transaction never committed) is moved aside
// before the transaction ends, so that a creation that gets that id next
// finds the name free instead of losing its directory to this removal.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	var (
		doomed []string
		errs   []error
	)
	err := s.ms.Exclusive(func(tx *Tx) error {
		ids := tx.IDs()
		s.mu.Lock()
		defer s.mu.Unlock()
		entries, err := os.ReadDir(s.layout.Snapshots())
		if err != nil {
			return err
		}
		stamp := time.Now().UnixNano()
		for _, e := range entries {
			name := e.Name()
			if _, ok := ids[name]; ok || s.busy[name] > 0 {
				continue
			}
			p := filepath.Join(s.layout.Snapshots(), name)
			if isID(name) {
				aside := filepath.Join(s.layout.Snapshots(), fmt.Sprintf("rm-cleanup-%d-%s", stamp, name))
				if err := os.Rename(p, aside); err != nil {
					errs = append(errs, fmt.Errorf("move orphan %q aside: %w", p, err))
					continue
				}
				p = aside
			}
			s.busy[filepath.Base(p)]++
			doomed = append(doomed, p)
		}
		// Nothing was written: roll back rather than sync a commit.
		return errReadOnly
	})
	if !errors.Is(err, errReadOnly) {
		errs = append(errs, err)
	}
	for _, d := range doomed {
		if rerr := os.RemoveAll(d); rerr != nil {
			errs = append(errs, rerr)
		} else {
			log.G(ctx).WithField("path", d).Debug("removed orphan snapshot directory")
		}
		s.release(filepath.Base(d))
	}
	return errors.Join(errs...)
}

// errReadOnly ends a write transaction, taken for its exclusion alone,
// without committing.
var errReadOnly = errors.New("read-only use of a write transaction")

// isID reports whether a directory name could be a snapshot id.
func isID(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// Close implements snapshots.Snapshotter.
func (s *Snapshotter) Close() error {
	return s.ms.Close()
}

// tempDir makes a new-* directory under snapshots, marked busy.
func (s *Snapshotter) tempDir() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir, err := os.MkdirTemp(s.layout.Snapshots(), "new-")
	if err != nil {
		return "", fmt.Errorf("new snapshot directory: %w", err)
	}
	s.busy[filepath.Base(dir)]++
	return dir, nil
}

func (s *Snapshotter) acquire(name string) {
	s.mu.Lock()
	s.busy[name]++
	s.mu.Unlock()
}

func (s *Snapshotter) release(name string) {
	s.mu.Lock()
	if s.busy[name]--; s.busy[name] <= 0 {
		delete(s.busy, name)
	}
	s.mu.Unlock()
}

// syncDirAsync starts syncDir(dir) and returns a function that waits for
// it and returns its error (each time it is called). dir is opened before
// syncDirAsync returns, so it may be renamed meanwhile.
func syncDirAsync(dir string) func() error {
	f, err := os.Open(dir)
	if err != nil {
		return func() error { return err }
	}
	done := make(chan error, 1)
	go func() {
		err := f.Sync()
		if err != nil {
			err = fmt.Errorf("sync %q: %w", dir, err)
		}
		f.Close()
		done <- err
	}()
	return sync.OnceValue(func() error { return <-done })
}

// syncDir makes the entries of dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %q: %w", dir, err)
	}
	return nil
}

// fsTopdirFlag is FS_TOPDIR_FL (chattr +T), which x/sys does not name.
const fsTopdirFlag = 0x00020000

// spreadSubdirs marks dir as the top of unrelated trees (chattr +T) where
// the filesystem knows the flag (ext2/3/4; elsewhere it is ignored): ext4
// then places each new snapshot directory, and the files beneath it, in
// its own block group instead of beside the last one. Without this, on an
// ext4 without a journal, a snapshot unpacked just after another was
// removed lands in the group of the removed one, where the kernel skips
// each recently deleted inode one by one for every file it creates
// (find_inode_bit/recently_deleted): unpacking 3,000 files after removing
// 3,000 took about half a second more. Best effort: a failure only costs
// that time.
func spreadSubdirs(dir string) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopdirFlag != 0 {
		return
	}
	_ = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|fsTopdirFlag))
}
