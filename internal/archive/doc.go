// Package archive applies OCI image layers (tar streams, plain, gzip or
// zstd) onto a directory and produces layers from the difference of two
// trees. The diff service and the unpacker use it for both the overlayfs and
// the native snapshotter.
//
// # API
//
//   - Apply(ctx, root, r, opts...) unpacks one layer onto root and returns
//     the sha256 digest and size of the uncompressed tar (the diff_id).
//     Options: WithOverlayWhiteouts (root is an overlayfs upper dir: OCI
//     whiteouts become 0/0 character devices and opaque markers become the
//     trusted.overlay.opaque xattr), WithParents (the lower dirs, topmost
//     first, from which implicitly created directories copy their
//     attributes), WithNoSameOwner (keep the applier's own uid/gid).
//   - Decompress(r) detects gzip or zstd by magic bytes, else passes r on;
//     a gzip stream of a known size of at least 1 MiB goes through ISA-L's
//     igzip when installed (on pipes, as nobody when berthd is root), in
//     process otherwise; gzip members follow one another until one is
//     followed by anything but a gzip header, which ends the stream.
//   - Diff(ctx, lower, upper, w) writes the layer that turns lower into upper;
//     DiffOverlayUpper(ctx, upper, w) writes it straight from an overlayfs
//     upper dir.
//   - SyncFS(root) flushes the filesystem holding root once, with syncfs(2);
//     Apply itself never fsyncs.
//
// # Invariants of Apply
//
//   - Nothing outside root is ever created, written, chmod'ed, chown'ed,
//     linked, removed, or has its times or xattrs changed, whatever the tar
//     says. This is the point of the package; the tests and FuzzApply check
//     it against a sentinel tree beside root.
//   - Entry names are cleaned lexically as if rooted at "/" ("../../x" is
//     "x", "/etc/x" is "etc/x"); an entry that cleans to root itself is
//     skipped.
//   - The parent directory of every entry is resolved inside root, with
//     symlinks interpreted as if root were "/" (openat2 RESOLVE_IN_ROOT, or
//     an equivalent component-by-component walk with O_NOFOLLOW where
//     openat2 is missing). Resolution is repeated for every entry and never
//     cached: an earlier entry may have replaced any directory by a symlink
//     (CVE-2025-47290).
//   - Every change is made relative to the resolved parent's file
//     descriptor, on the final component, which is never followed: *at
//     syscalls with AT_SYMLINK_NOFOLLOW or O_NOFOLLOW, fd-based fchown,
//     fchmod, fsetxattr and futimens where an fd of the object exists. A
//     symlink is never chmod'ed (CVE-2021-32760).
//   - Hardlink targets are resolved inside root the same way (a hardlink to
//     a symlink links the symlink itself); a missing target, root, or a
//     whiteout name is an error.
//   - An existing entry is removed before a new one of the layer takes its
//     name, except a directory over a directory, which merges. Removal never
//     follows symlinks.
//   - Native mode: ".wh.<name>" removes <name> in its (resolved) directory;
//     ".wh..wh..opq" removes every child of its directory that this layer
//     did not create, wherever the marker appears in the stream. Layer
//     entries are recognised by inode, so a pre-existing file hardlinked by
//     the layer counts as created by it. Whiteout files are never created.
//     "<name>" must be a plain name ("", "." and ".." are rejected).
//   - Overlay mode: ".wh.<name>" becomes a 0/0 character device, the opaque
//     marker sets trusted.overlay.opaque=y on its directory, and a directory
//     that replaces a whiteout device is marked opaque, so lower content
//     never shows through it.
//   - xattrs come from PAX SCHILY.xattr.* records. trusted.overlay.* and
//     user.overlay.* from a layer are dropped (they steer overlayfs).
//     Unsupported xattrs, and trusted.* or security.* refused by the kernel
//     (unprivileged), are logged and skipped; other failures are errors.
//   - Ownership is applied before xattrs and mode (chown clears setuid bits
//     and security.capability), times last; directory times are restored at
//     the end, after their children, and only if the directory at that name
//     is still the one the entry created.
//   - The digest covers the whole decompressed stream, to EOF, including
//     anything after the tar end marker.
//
// # Performance
//
// Apply streams: a producer goroutine reads the decompressed stream (from
// igzip, a child process, or klauspost's gzip and zstd in process) and
// hashes it into a bounded ring of 256 KiB chunks while the caller's
// goroutine parses the tar and makes the syscalls, so the halves overlap. Per regular file it costs one openat2 for the parent, one
// openat, the writes, fstat, futimens and two closes; chown and chmod only
// where the created inode differs from the header. Nothing is fsync'ed:
// call SyncFS once if the layer must be durable.
//
// # Diff
//
// Diff walks both trees in lexical order through directory file
// descriptors, never following symlinks, and writes PAX tar entries for
// added and changed files, ".wh.<name>" for removed ones (one for a removed
// directory tree), and ".wh..wh..opq" for a directory whose lower children
// are all gone (two or more). Changed directories are emitted before their
// children, and the parents of every change are emitted too. Regular files
// are compared by mode, owner, size, mtime, and by content when both mtimes
// have no sub-second part. Hardlinks inside upper are kept as tar hardlinks.
// Modification times are truncated to seconds (as containerd and Docker
// do); access and change times are not written; user and group names are
// never looked up. xattrs are carried except trusted.overlay.*,
// user.overlay.* and security.selinux. Sockets are skipped.
package archive
