package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/mount"
)

// maxID is the largest user or group id accepted. Larger numbers are
// refused, never wrapped (containerd's CVE-2024-40635 turned 2^32 into 0).
const maxID = math.MaxInt32

// maxUserFile bounds what is read of the image's /etc/passwd and /etc/group.
const maxUserFile = 10 << 20

// resolveUser turns USER[:GROUP] into ids, with the image's root filesystem
// mounted read-only for the lookup of names (lookupUser).
func resolveUser(ctx context.Context, user string, rootfs []mount.Mount) (specs.User, error) {
	ref, err := parseUser(user)
	if err != nil {
		return specs.User{}, err
	}
	if ref.uidNum && ref.hasGroup && ref.gidNum {
		return specs.User{UID: ref.uid, GID: ref.gid}, nil // no lookup needed
	}
	var u specs.User
	err = mount.WithReadonlyTempMount(ctx, rootfs, func(root string) error {
		u, err = lookupUser(root, user)
		return err
	})
	return u, err
}

// userRef is a parsed USER[:GROUP]: each part a name or a number.
type userRef struct {
	name, group    string
	hasGroup       bool
	uid, gid       uint32
	uidNum, gidNum bool
}

func parseUser(user string) (r userRef, err error) {
	r.name, r.group, r.hasGroup = strings.Cut(user, ":")
	if r.uid, r.uidNum, err = parseID(r.name); err != nil {
		return r, err
	}
	r.gid, r.gidNum, err = parseID(r.group)
	return r, err
}

// parseID parses a numeric id; numeric reports whether s is a number at all
// (else it is a name). A number above maxID is an error.
func parseID(s string) (id uint32, numeric bool, err error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > maxID {
		return 0, true, fmt.Errorf("id %s is out of range (at most %d)", s, maxID)
	}
	return uint32(v), true, nil
}

// fileID parses an id field of /etc/passwd or /etc/group: ok only for a
// number in range.
func fileID(s string) (uint32, bool) {
	id, numeric, err := parseID(s)
	return id, numeric && err == nil
}

// lookupUser resolves USER[:GROUP] (names or numbers) against the passwd
// and group files of the root filesystem at root, read inside it
// (readRootFile), as Docker and runc do: a known user brings its primary
// group and, unless GROUP is given, the groups that list it as a member;
// an unknown numeric user gets group 0. Entries whose ids are not numbers
// in range are skipped, never read as 0.
func lookupUser(root, user string) (specs.User, error) {
	ref, err := parseUser(user)
	if err != nil {
		return specs.User{}, err
	}
	passwd, err := readRootFile(root, "etc/passwd")
	if err != nil {
		return specs.User{}, err
	}
	groups, err := readRootFile(root, "etc/group")
	if err != nil {
		return specs.User{}, err
	}
	u := specs.User{UID: ref.uid}
	username := ""
	for _, f := range colonRecords(passwd, 4) {
		id, idOK := fileID(f[2])
		g, gOK := fileID(f[3])
		if !idOK || !gOK {
			continue
		}
		if (ref.uidNum && id == ref.uid) || (!ref.uidNum && f[0] == ref.name) {
			u.UID, u.GID, username = id, g, f[0]
			break
		}
	}
	if username == "" && !ref.uidNum {
		return u, fmt.Errorf("no user %q in the image's /etc/passwd", ref.name)
	}
	switch {
	case ref.hasGroup && ref.gidNum:
		u.GID = ref.gid
	case ref.hasGroup:
		g := groupIDs(groups, func(name string, _ []string) bool { return name == ref.group })
		if len(g) == 0 {
			return u, fmt.Errorf("no group %q in the image's /etc/group", ref.group)
		}
		u.GID = g[0]
	case username != "":
		// the implicit form: the groups that list the user
		for _, id := range groupIDs(groups, func(_ string, members []string) bool { return slices.Contains(members, username) }) {
			if id != u.GID && !slices.Contains(u.AdditionalGids, id) {
				u.AdditionalGids = append(u.AdditionalGids, id)
			}
		}
	}
	return u, nil
}

// groupIDs returns the ids of the groups of an /etc/group file for which
// match (name, members) is true, in file order; entries whose id is not a
// number in range are skipped.
func groupIDs(groups []byte, match func(name string, members []string) bool) []uint32 {
	var ids []uint32
	for _, f := range colonRecords(groups, 3) {
		g, ok := fileID(f[2])
		if !ok {
			continue
		}
		var members []string
		if len(f) > 3 && f[3] != "" {
			members = strings.Split(f[3], ",")
		}
		if match(f[0], members) {
			ids = append(ids, g)
		}
	}
	return ids
}

// readRootFile reads name below root, resolving every link inside root
// (openat2 RESOLVE_IN_ROOT). A missing file reads as empty. Anything but a
// regular file (a FIFO would block the read forever, a device never end it
// or act on being opened) is refused before it is opened for reading, and
// so is a file over maxUserFile (containerd's CVE-2026-47262).
func readRootFile(root, name string) ([]byte, error) {
	dir, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	path, err := unix.Openat2(dir, name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the image's /%s: %w", name, err)
	}
	defer unix.Close(path)
	var st unix.Stat_t
	if err := unix.Fstat(path, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("the image's /%s is not a regular file", name)
	}
	if st.Size > maxUserFile {
		return nil, fmt.Errorf("the image's /%s is larger than %d MiB", name, maxUserFile>>20)
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", path), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxUserFile+1))
	if err == nil && len(b) > maxUserFile {
		err = fmt.Errorf("the image's /%s is larger than %d MiB", name, maxUserFile>>20)
	}
	return b, err
}

// colonRecords splits /etc/passwd-style lines into their fields, skipping
// lines of fewer than n.
func colonRecords(b []byte, n int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(nil, maxUserFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) >= n {
			out = append(out, f)
		}
	}
	return out
}
