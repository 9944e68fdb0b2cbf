// Package storage keeps the state of one snapshotter: the bbolt records of
// its snapshots (MetaStore) and their directories on disk, and implements
// the whole snapshots.Snapshotter lifecycle on top of them (Snapshotter).
// A Driver (overlay, native) supplies only what differs: how the directory
// of a new snapshot is filled and how a snapshot is mounted.
//
// # Layout
//
//	<root>/metadata.db              the records (bbolt)
//	<root>/snapshots/<id>/fs        a snapshot's tree (overlay: its upper
//	                                directory; native: a full copy)
//	<root>/snapshots/<id>/work      overlay work directory of an active one
//	<root>/snapshots/new-*          a snapshot being created
//	<root>/snapshots/rm-*           a snapshot being removed
//
// The snapshots directory is marked chattr +T (FS_TOPDIR_FL) where the
// filesystem knows the flag, so that ext4 spreads snapshots over block
// groups (see spreadSubdirs).
//
// A snapshot's directory is named by its numeric id, never by its key:
// keys are client strings.
//
// # Schema
//
//	v1/
//	  snapshots/
//	    <key>/                 a snapshot, under its key (committed: its name)
//	      id       uvarint     directory name; from the bucket's sequence,
//	                           never reused once committed
//	      kind     1 byte      snapshots.Kind
//	      parent   string      key of the committed parent; absent if none
//	      created  time.MarshalBinary
//	      updated  time.MarshalBinary
//	      inodes   varint      usage measured at commit (committed only)
//	      size     varint
//	      labels/<k> = <v>     absent when there are no labels
//	  children/
//	    <parent id><child id> = <child key>   8-byte big-endian ids: the
//	                           children of a parent are one key prefix
//
// # Invariants
//
//   - a record and its directory change together; a crash of the process
//     at any point leaves at most directories without records (orphans),
//     which Cleanup removes, and a crash of the machine may also leave the
//     record of a creation that never returned without its directory,
//     which New drops:
//     creation fills a new-* directory first, then, in one write
//     transaction, records the snapshot and renames the directory to its
//     id before the transaction commits; if the commit fails the directory
//     is moved back and removed. The fsyncs of the new directory and of the
//     snapshots directory run beside the commit, and the creation returns
//     only once all three are done; so only a crash of the machine during a
//     creation can leave a record without its directory, of a snapshot
//     never returned. A directory already at that id can only be an orphan
//     of an uncommitted transaction (ids are allocated by the write
//     transaction) and is replaced.
//     Removal deletes the record first, then renames the directory to
//     rm-* and removes it;
//   - the parent chain of a record is complete: a snapshot with children
//     can not be removed, and parents are committed snapshots, which never
//     change their id;
//   - Cleanup lists the directories inside a write transaction (taken for
//     its exclusion, rolled back), skips the new-* and rm-* directories
//     this process is working on, and moves orphans named like ids aside
//     before the transaction ends, so a creation can never lose its new
//     directory to it; only one process opens a root at a time (bbolt's
//     file lock);
//   - expensive work (copying a parent, measuring usage) happens outside
//     write transactions; what it was based on is checked again inside;
//   - concurrent creations, commits, removals and label updates share one
//     write transaction, one sync of the snapshots directory and one bbolt
//     commit (group commit); their transaction functions only change
//     records, and the directory work of the calls that commit runs after
//     all of them succeeded, still inside the transaction
//     (MetaStore.Update, Tx.BeforeCommit, Tx.SyncDirBesideCommit).
package storage
