package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
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

// lookupUser resolves USER[:GROUP] (names or numbers) against the passwd
// and group files of the root filesystem at root, read inside it
// (readRootFile): a known user brings its primary group and the groups
// that list it as a member; an unknown numeric user gets group 0.
func lookupUser(root, user string) (specs.User, error) {
	ref, err := parseUser(user)
	if err != nil {
		return specs.User{}, err
	}
	name, group, hasGroup := ref.name, ref.group, ref.hasGroup
	uid, uidNum, gid, gidNum := ref.uid, ref.uidNum, ref.gid, ref.gidNum
	passwd, err := readRootFile(root, "etc/passwd")
	if err != nil {
		return specs.User{}, err
	}
	groups, err := readRootFile(root, "etc/group")
	if err != nil {
		return specs.User{}, err
	}
	var u specs.User
	username := ""
	for _, f := range colonRecords(passwd, 7) {
		id, num, err := parseID(f[2])
		if err != nil || !num {
			continue
		}
		if (uidNum && id == uid) || (!uidNum && f[0] == name) {
			g, _, _ := parseID(f[3])
			u.UID, u.GID, username = id, g, f[0]
			break
		}
	}
	switch {
	case username == "" && !uidNum:
		return u, fmt.Errorf("no user %q in the image's /etc/passwd", name)
	case username == "":
		u.UID, u.GID = uid, 0
	}
	if hasGroup {
		if gidNum {
			u.GID = gid
		} else {
			ok := false
			for _, f := range colonRecords(groups, 4) {
				if g, num, err := parseID(f[2]); f[0] == group && num && err == nil {
					u.GID, ok = g, true
					break
				}
			}
			if !ok {
				return u, fmt.Errorf("no group %q in the image's /etc/group", group)
			}
		}
	}
	if username == "" {
		return u, nil
	}
	for _, f := range colonRecords(groups, 4) {
		g, num, err := parseID(f[2])
		if err != nil || !num || g == u.GID {
			continue
		}
		for _, member := range strings.Split(f[3], ",") {
			if member == username {
				u.AdditionalGids = append(u.AdditionalGids, g)
			}
		}
	}
	return u, nil
}

// readRootFile reads name below root, resolving every link inside root
// (openat2 RESOLVE_IN_ROOT). A missing file reads as empty; anything but a
// regular file (a FIFO would block the read forever, a device never end
// it), or one over maxUserFile, is an error (containerd's CVE-2026-47262).
func readRootFile(root, name string) ([]byte, error) {
	dir, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, name, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the image's /%s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("the image's /%s is not a regular file (%s)", name, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxUserFile+1))
	if err == nil && len(b) > maxUserFile {
		err = fmt.Errorf("the image's /%s is larger than %d MiB", name, maxUserFile>>20)
	}
	return b, err
}

// colonRecords splits /etc/passwd-style lines into n fields, skipping
// malformed ones.
func colonRecords(b []byte, n int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(nil, maxUserFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, ":", n)
		if len(f) == n {
			out = append(out, f)
		}
	}
	return out
}
