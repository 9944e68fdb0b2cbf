package shim

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/berth-dev/berth/internal/mount"
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// cgroup is where a container's processes are accounted: one directory in
// unified (v2) mode, one per controller in legacy or hybrid (v1) mode.
type cgroup struct {
	unified bool
	dir     string            // v2
	dirs    map[string]string // v1: controller -> directory
}

func unifiedMode() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

type cgroupMount struct{ root, point string }

// cgroupMounts reads this process's mount table for cgroup file systems.
func cgroupMounts() (v1m map[string]cgroupMount, v2m *cgroupMount, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	v1m = make(map[string]cgroupMount)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 > len(fields) {
			continue
		}
		m := cgroupMount{root: mount.UnescapeMountinfo(fields[3]), point: mount.UnescapeMountinfo(fields[4])}
		switch fields[sep+1] {
		case "cgroup2":
			if v2m == nil {
				mm := m
				v2m = &mm
			}
		case "cgroup":
			for _, opt := range strings.Split(fields[sep+3], ",") {
				if _, seen := v1m[opt]; !seen && opt != "rw" && opt != "ro" {
					v1m[opt] = m
				}
			}
		}
	}
	return v1m, v2m, sc.Err()
}

func joinMount(m cgroupMount, path string) string {
	rel := path
	if m.root != "/" {
		rel = strings.TrimPrefix(path, m.root)
	}
	return filepath.Join(m.point, rel)
}

// loadCgroup finds the cgroup of pid from /proc/<pid>/cgroup.
func loadCgroup(pid int) (*cgroup, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	v1m, v2m, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	cg := &cgroup{unified: unifiedMode(), dirs: make(map[string]string)}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			if v2m != nil {
				cg.dir = joinMount(*v2m, parts[2])
			}
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			if m, ok := v1m[ctrl]; ok {
				cg.dirs[ctrl] = joinMount(m, parts[2])
			}
		}
	}
	if cg.unified && cg.dir == "" {
		return nil, fmt.Errorf("no cgroup v2 path for pid %d", pid)
	}
	return cg, nil
}

// joinCgroup moves pid into the cgroup at path (the shim_cgroup option).
func joinCgroup(path string, pid int) error {
	v1m, v2m, err := cgroupMounts()
	if err != nil {
		return err
	}
	procs := []byte(strconv.Itoa(pid))
	if unifiedMode() && v2m != nil {
		return os.WriteFile(filepath.Join(v2m.point, path, "cgroup.procs"), procs, 0)
	}
	done := map[string]bool{}
	joined := 0
	for _, m := range v1m {
		if done[m.point] {
			continue
		}
		done[m.point] = true
		dir := filepath.Join(m.point, path)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), procs, 0); err != nil {
			return err
		}
		joined++
	}
	if joined == 0 {
		return fmt.Errorf("cgroup %s exists in no hierarchy: %w", path, os.ErrNotExist)
	}
	return nil
}

// metrics reads the cgroup's statistics as containerd encodes them:
// io.containerd.cgroups.v1.Metrics or io.containerd.cgroups.v2.Metrics.
func (cg *cgroup) metrics() (*anypb.Any, error) {
	var m proto.Message
	if cg.unified {
		m = cg.v2Metrics()
	} else {
		m = cg.v1Metrics()
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: string(proto.MessageName(m)), Value: b}, nil
}

func (cg *cgroup) v1Metrics() *v1.Metrics {
	m := &v1.Metrics{}
	if d, ok := cg.dirs["pids"]; ok {
		m.Pids = &v1.PidsStat{Current: readUint(d, "pids.current"), Limit: readUint(d, "pids.max")}
	}
	if d, ok := cg.dirs["cpuacct"]; ok {
		u := &v1.CPUUsage{Total: readUint(d, "cpuacct.usage")}
		for _, f := range strings.Fields(readString(d, "cpuacct.usage_percpu")) {
			v, _ := strconv.ParseUint(f, 10, 64)
			u.PerCPU = append(u.PerCPU, v)
		}
		kv := readKV(d, "cpuacct.stat")
		// USER_HZ ticks (100 per second) to nanoseconds.
		u.User, u.Kernel = kv["user"]*1e7, kv["system"]*1e7
		m.CPU = &v1.CPUStat{Usage: u}
	}
	if d, ok := cg.dirs["cpu"]; ok {
		if m.CPU == nil {
			m.CPU = &v1.CPUStat{}
		}
		kv := readKV(d, "cpu.stat")
		m.CPU.Throttling = &v1.Throttle{Periods: kv["nr_periods"], ThrottledPeriods: kv["nr_throttled"], ThrottledTime: kv["throttled_time"]}
	}
	if d, ok := cg.dirs["memory"]; ok {
		ms := &v1.MemoryStat{}
		rename := map[string]string{
			"pgpgin": "pg_pg_in", "pgpgout": "pg_pg_out", "pgfault": "pg_fault", "pgmajfault": "pg_maj_fault",
			"total_pgpgin": "total_pg_pg_in", "total_pgpgout": "total_pg_pg_out", "total_pgfault": "total_pg_fault",
			"total_pgmajfault": "total_pg_maj_fault", "hierarchical_memsw_limit": "hierarchical_swap_limit",
		}
		setFields(ms.ProtoReflect(), readKV(d, "memory.stat"), rename)
		entry := func(prefix string) *v1.MemoryEntry {
			return &v1.MemoryEntry{
				Usage: readUint(d, prefix+"usage_in_bytes"), Max: readUint(d, prefix+"max_usage_in_bytes"),
				Failcnt: readUint(d, prefix+"failcnt"), Limit: readUint(d, prefix+"limit_in_bytes"),
			}
		}
		ms.Usage, ms.Swap, ms.Kernel, ms.KernelTCP = entry("memory."), entry("memory.memsw."), entry("memory.kmem."), entry("memory.kmem.tcp.")
		m.Memory = ms
		oc := readKV(d, "memory.oom_control")
		m.MemoryOomControl = &v1.MemoryOomControl{OomKillDisable: oc["oom_kill_disable"], UnderOom: oc["under_oom"], OomKill: oc["oom_kill"]}
	}
	if d, ok := cg.dirs["blkio"]; ok {
		bs := &v1.BlkIOStat{}
		prefix := "blkio.io_"
		if readString(d, "blkio.io_service_bytes_recursive") == "" {
			prefix = "blkio.throttle.io_"
		}
		bs.IoServiceBytesRecursive = readBlkio(d, prefix+"service_bytes_recursive")
		bs.IoServicedRecursive = readBlkio(d, prefix+"serviced_recursive")
		m.Blkio = bs
	}
	return m
}

func (cg *cgroup) v2Metrics() *v2.Metrics {
	d := cg.dir
	m := &v2.Metrics{Pids: &v2.PidsStat{Current: readUint(d, "pids.current"), Limit: readUint(d, "pids.max")}}
	cpu := &v2.CPUStat{}
	setFields(cpu.ProtoReflect(), readKV(d, "cpu.stat"), nil)
	m.CPU = cpu
	ms := &v2.MemoryStat{}
	setFields(ms.ProtoReflect(), readKV(d, "memory.stat"), nil)
	ms.Usage, ms.UsageLimit = readUint(d, "memory.current"), readUint(d, "memory.max")
	ms.SwapUsage, ms.SwapLimit = readUint(d, "memory.swap.current"), readUint(d, "memory.swap.max")
	ms.MaxUsage, ms.SwapMaxUsage = readUint(d, "memory.peak"), readUint(d, "memory.swap.peak")
	m.Memory = ms
	ev := &v2.MemoryEvents{}
	setFields(ev.ProtoReflect(), readKV(d, "memory.events"), nil)
	m.MemoryEvents = ev
	io := &v2.IOStat{}
	for _, line := range strings.Split(readString(d, "io.stat"), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		e := &v2.IOEntry{}
		if _, err := fmt.Sscanf(fields[0], "%d:%d", &e.Major, &e.Minor); err != nil {
			continue
		}
		kv := map[string]uint64{}
		for _, f := range fields[1:] {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k], _ = strconv.ParseUint(v, 10, 64)
			}
		}
		setFields(e.ProtoReflect(), kv, nil)
		io.Usage = append(io.Usage, e)
	}
	m.Io = io
	return m
}

// setFields sets the uint64 fields of msg named like the keys of kv.
func setFields(msg protoreflect.Message, kv map[string]uint64, rename map[string]string) {
	fields := msg.Descriptor().Fields()
	for k, v := range kv {
		if r, ok := rename[k]; ok {
			k = r
		}
		fd := fields.ByName(protoreflect.Name(k))
		if fd != nil && fd.Kind() == protoreflect.Uint64Kind && fd.Cardinality() != protoreflect.Repeated {
			msg.Set(fd, protoreflect.ValueOfUint64(v))
		}
	}
}

func readString(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readUint reads a one-number file; "max" and errors read as 0.
func readUint(dir, name string) uint64 {
	v, _ := strconv.ParseUint(readString(dir, name), 10, 64)
	return v
}

// readKV reads a "key value" per line file.
func readKV(dir, name string) map[string]uint64 {
	kv := make(map[string]uint64)
	for _, line := range strings.Split(readString(dir, name), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err == nil {
			kv[k] = n
		}
	}
	return kv
}

func readBlkio(dir, name string) []*v1.BlkIOEntry {
	var out []*v1.BlkIOEntry
	for _, line := range strings.Split(readString(dir, name), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		e := &v1.BlkIOEntry{Op: f[1]}
		if _, err := fmt.Sscanf(f[0], "%d:%d", &e.Major, &e.Minor); err != nil {
			continue
		}
		e.Value, _ = strconv.ParseUint(f[2], 10, 64)
		out = append(out, e)
	}
	return out
}

// oomWatch reports OOM kills in the cgroup: v1 through an eventfd on
// memory.oom_control, v2 through inotify on memory.events (oom_kill rising).
// stop ends it; it also ends by itself when the cgroup goes away.
type oomWatch struct {
	f    *os.File
	once sync.Once
}

func (w *oomWatch) stop() {
	if w != nil {
		w.once.Do(func() { w.f.Close() })
	}
}

func (cg *cgroup) watchOOM(ctx context.Context, onOOM func()) (*oomWatch, error) {
	if cg.unified {
		return cg.watchOOMv2(ctx, onOOM)
	}
	dir, ok := cg.dirs["memory"]
	if !ok {
		return nil, fmt.Errorf("no memory cgroup: %w", errdefs.ErrNotImplemented)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	ocf, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		unix.Close(efd)
		return nil, err
	}
	defer ocf.Close()
	ctl := fmt.Sprintf("%d %d", efd, ocf.Fd())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(ctl), 0); err != nil {
		unix.Close(efd)
		return nil, err
	}
	w := &oomWatch{f: os.NewFile(uintptr(efd), "oom-eventfd")}
	go func() {
		defer w.stop()
		var buf [8]byte
		for {
			if _, err := w.f.Read(buf[:]); err != nil {
				return
			}
			// the eventfd also fires when the cgroup is removed.
			if _, err := os.Lstat(filepath.Join(dir, "memory.oom_control")); err != nil {
				return
			}
			onOOM()
		}
	}()
	return w, nil
}

func (cg *cgroup) watchOOMv2(ctx context.Context, onOOM func()) (*oomWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	events := filepath.Join(cg.dir, "memory.events")
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return nil, err
	}
	w := &oomWatch{f: os.NewFile(uintptr(fd), "oom-inotify")}
	last := readKV(cg.dir, "memory.events")["oom_kill"]
	go func() {
		defer w.stop()
		buf := make([]byte, 512)
		for {
			n, err := w.f.Read(buf)
			if err != nil {
				return
			}
			if n > 0 && !exists(events) {
				return
			}
			if v := readKV(cg.dir, "memory.events")["oom_kill"]; v > last {
				last = v
				onOOM()
			}
		}
	}()
	log.G(ctx).WithField("cgroup", cg.dir).Debug("watching memory.events for oom kills")
	return w, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
