//go:build linux

package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// pagesize bounds the data mount(2) accepts: the kernel copies one page of
// it, terminating NUL included.
var pagesize = os.Getpagesize()

// flag is what a flag option does to the mount flags.
type flag struct {
	clear bool
	flag  uintptr
}

var flagOptions = map[string]flag{
	"async":         {true, unix.MS_SYNCHRONOUS},
	"atime":         {true, unix.MS_NOATIME},
	"bind":          {false, unix.MS_BIND},
	"defaults":      {false, 0},
	"dev":           {true, unix.MS_NODEV},
	"diratime":      {true, unix.MS_NODIRATIME},
	"dirsync":       {false, unix.MS_DIRSYNC},
	"exec":          {true, unix.MS_NOEXEC},
	"mand":          {false, unix.MS_MANDLOCK},
	"noatime":       {false, unix.MS_NOATIME},
	"nodev":         {false, unix.MS_NODEV},
	"nodiratime":    {false, unix.MS_NODIRATIME},
	"noexec":        {false, unix.MS_NOEXEC},
	"nomand":        {true, unix.MS_MANDLOCK},
	"norelatime":    {true, unix.MS_RELATIME},
	"nostrictatime": {true, unix.MS_STRICTATIME},
	"nosuid":        {false, unix.MS_NOSUID},
	"rbind":         {false, unix.MS_BIND | unix.MS_REC},
	"relatime":      {false, unix.MS_RELATIME},
	"remount":       {false, unix.MS_REMOUNT},
	"ro":            {false, unix.MS_RDONLY},
	"rw":            {true, unix.MS_RDONLY},
	"strictatime":   {false, unix.MS_STRICTATIME},
	"suid":          {true, unix.MS_NOSUID},
	"sync":          {false, unix.MS_SYNCHRONOUS},
	"private":       {false, unix.MS_PRIVATE},
	"rprivate":      {false, unix.MS_PRIVATE | unix.MS_REC},
	"shared":        {false, unix.MS_SHARED},
	"rshared":       {false, unix.MS_SHARED | unix.MS_REC},
	"slave":         {false, unix.MS_SLAVE},
	"rslave":        {false, unix.MS_SLAVE | unix.MS_REC},
	"unbindable":    {false, unix.MS_UNBINDABLE},
	"runbindable":   {false, unix.MS_UNBINDABLE | unix.MS_REC},
}

const propagation = unix.MS_SHARED | unix.MS_PRIVATE | unix.MS_SLAVE | unix.MS_UNBINDABLE

// parseOptions splits fstab-style options into mount flags and the data
// options for the filesystem, in their order.
func parseOptions(options []string) (uintptr, []string) {
	var (
		flags uintptr
		data  []string
	)
	for _, o := range options {
		f, ok := flagOptions[o]
		switch {
		case !ok:
			data = append(data, o)
		case f.clear:
			flags &^= f.flag
		default:
			flags |= f.flag
		}
	}
	return flags, data
}

// Mount mounts m on target.
func (m *Mount) Mount(target string) error {
	target, err := filepath.Abs(target)
	if err != nil {
		return err
	}
	flags, opts := parseOptions(m.Options)
	data := strings.Join(opts, ",")
	var chdir string
	if m.Type == "overlay" && len(data) >= pagesize {
		dir, compact, ok := compactLowerdir(opts)
		if !ok {
			return fmt.Errorf("overlay mount data is %d bytes, more than mount(2) takes (%d), and its lowerdirs share no parent to shorten them with", len(data), pagesize-1)
		}
		chdir, data = dir, strings.Join(compact, ",")
		if len(data) >= pagesize {
			return fmt.Errorf("overlay mount data is %d bytes with lowerdirs relative to %q, more than mount(2) takes (%d)", len(data), dir, pagesize-1)
		}
	}

	oflags := flags &^ propagation
	if flags&unix.MS_REMOUNT == 0 || data != "" {
		if err := mountAt(chdir, m.Source, target, m.Type, oflags, data); err != nil {
			return err
		}
	}
	if flags&propagation != 0 {
		pflags := flags & (propagation | unix.MS_REC | unix.MS_SILENT)
		if err := unix.Mount("", target, "", pflags, ""); err != nil {
			return fmt.Errorf("set propagation of %q: %w", target, err)
		}
	}
	const bindRO = unix.MS_BIND | unix.MS_RDONLY
	if oflags&bindRO == bindRO && oflags&unix.MS_REMOUNT == 0 {
		// mount(2) ignores MS_RDONLY when binding: remount read-only.
		if err := unix.Mount("", target, "", oflags|unix.MS_REMOUNT, ""); err != nil {
			return fmt.Errorf("remount %q read-only: %w", target, err)
		}
	}
	return nil
}

// compactLowerdir rewrites the lowerdir option of overlay data options so
// that its directories are relative to their deepest common parent
// directory, which it returns. ok is false when nothing can be gained: no
// lowerdir, relative or escaped paths, or no common parent below "/".
func compactLowerdir(opts []string) (dir string, out []string, ok bool) {
	idx := -1
	for i, o := range opts {
		if strings.HasPrefix(o, "lowerdir=") {
			idx = i
			break
		}
	}
	if idx < 0 {
		return "", nil, false
	}
	value := strings.TrimPrefix(opts[idx], "lowerdir=")
	if strings.ContainsRune(value, '\\') {
		// Escaped ':' or ',' in a path: leave such mounts alone.
		return "", nil, false
	}
	lowers := strings.Split(value, ":")
	var common []string
	for i, l := range lowers {
		if !filepath.IsAbs(l) {
			return "", nil, false
		}
		parent := strings.Split(filepath.Dir(filepath.Clean(l)), "/")[1:]
		if i == 0 {
			common = parent
			continue
		}
		n := 0
		for n < len(common) && n < len(parent) && common[n] == parent[n] {
			n++
		}
		common = common[:n]
	}
	if len(common) == 0 || common[0] == "" {
		return "", nil, false
	}
	dir = "/" + strings.Join(common, "/")
	rel := make([]string, len(lowers))
	for i, l := range lowers {
		rel[i] = strings.TrimPrefix(filepath.Clean(l), dir+"/")
	}
	out = append([]string(nil), opts...)
	out[idx] = "lowerdir=" + strings.Join(rel, ":")
	return dir, out, true
}

// mountAt calls mount(2), with dir as the working directory when it is not
// empty. The working directory is changed only for a locked OS thread that
// has unshared its filesystem attributes and is never unlocked, so that Go
// discards the thread when the goroutine ends.
func mountAt(dir, source, target, fstype string, flags uintptr, data string) error {
	if dir == "" {
		return unix.Mount(source, target, fstype, flags, data)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare filesystem attributes: %w", err)
			return
		}
		if err := unix.Chdir(dir); err != nil {
			errc <- fmt.Errorf("chdir %q: %w", dir, err)
			return
		}
		errc <- unix.Mount(source, target, fstype, flags, data)
	}()
	return <-errc
}

// Unmount unmounts target, retrying for a while when it is busy. A target
// that is not a mount point (EINVAL) is not an error.
func Unmount(target string, flags int) error {
	if err := unmount(target, flags); err != nil && !errors.Is(err, unix.EINVAL) {
		return err
	}
	return nil
}

func unmount(target string, flags int) error {
	for range 50 {
		err := unix.Unmount(target, flags)
		if errors.Is(err, unix.EBUSY) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("unmount %q: %w", target, err)
		}
		return nil
	}
	return fmt.Errorf("unmount %q: %w", target, unix.EBUSY)
}

// UnmountAll unmounts target until it is no longer a mount point, undoing a
// stack of mounts. An empty or missing target is not an error.
func UnmountAll(target string, flags int) error {
	if target == "" {
		return nil
	}
	if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for {
		if err := unmount(target, flags); err != nil {
			if errors.Is(err, unix.EINVAL) {
				return nil
			}
			return err
		}
	}
}
