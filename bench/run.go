package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	eventsapi "github.com/containerd/containerd/api/services/events/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/klauspost/compress/gzip"
)

// runRm: `ctr run --rm busybox ID true`, one run at a time, the two daemons
// and a bare `runc run` of the same rootfs taking turns, with the events
// each daemon publishes meanwhile to show where the time goes.
func runRm(ctx context.Context, e *sysEnv) error {
	for _, d := range e.ds {
		if err := e.importOnce(ctx, d, e.busybox); err != nil {
			return err
		}
	}
	run := func(ctx context.Context, d *daemon, id string) (time.Duration, error) {
		args := append(append([]string{"run", "--rm"}, e.runFlags(d)...), e.busybox.ref, id, "true")
		return e.ctr(ctx, d, args...)
	}
	// one unmeasured run each: the first exec of a shim binary reads it from disk.
	for _, d := range e.ds {
		if _, err := run(ctx, d, e.id(d, "warm")); err != nil {
			return err
		}
	}
	bundle, err := e.runcBundle()
	if err != nil {
		progress("  no bare runc reference: %v", err)
	}
	var logs [2]*eventLog
	for i, d := range e.ds {
		if logs[i], err = subscribe(ctx, d); err != nil {
			return err
		}
		defer logs[i].stop()
	}
	time.Sleep(100 * time.Millisecond) // let the subscriptions reach the daemons

	var lat [3][]float64 // ms: berthd, containerd, runc
	var starts [2][]time.Time
	for i := range e.o.Runs {
		for k := range 3 {
			who := (k + i) % 3
			if who == 2 {
				id := fmt.Sprintf("%s-runc-rm%d", e.tag, i)
				if bundle == "" {
					continue
				}
				took, err := e.runcRun(ctx, bundle, id)
				if err != nil {
					return err
				}
				lat[2] = append(lat[2], float64(took.Microseconds())/1000)
				continue
			}
			starts[who] = append(starts[who], time.Now())
			took, err := run(ctx, e.ds[who], e.id(e.ds[who], fmt.Sprintf("rm%d", i)))
			if err != nil {
				return err
			}
			lat[who] = append(lat[who], float64(took.Microseconds())/1000)
		}
	}
	progress("  berthd %v ms", rounded(lat[0]))
	progress("  containerd %v ms", rounded(lat[1]))
	if len(lat[2]) > 0 {
		progress("  runc run %v ms", rounded(lat[2]))
	}
	for _, q := range []struct {
		name string
		q    float64
		goal float64
	}{{"median", 0.5, 0.5}, {"p90", 0.9, 0}} {
		name := fmt.Sprintf("ctr run --rm busybox true, %s of %d", q.name, e.o.Runs)
		r := e.addRow(&sysRow{Name: name, Unit: "ms", Berthd: quantile(lat[0], q.q), Containerd: quantile(lat[1], q.q),
			BerthdReps: lat[0], ContainerdReps: lat[1]})
		r.Ratio = ratio(r.Berthd, r.Containerd)
		if len(lat[2]) > 0 {
			r.RefName, r.Ref, r.RefReps = "bare runc run", quantile(lat[2], q.q), lat[2]
		}
		if q.goal > 0 {
			e.atMost(name, "berthd ≤ 0.5× containerd's", r.Ratio, q.goal)
		}
	}
	e.rep.Phases = append(e.rep.Phases, phaseTable{Title: "ctr run --rm busybox true", Rows: phases(logs, starts, [2][]float64{lat[0], lat[1]})})
	return nil
}

// runDetached: start e.o.Containers containers with `ctr run -d … sleep
// 600`, one after the other (the daemons taking turns), then read the
// memory of every shim and of the daemons, then kill and delete them all
// and check that nothing is left.
func runDetached(ctx context.Context, e *sysEnv) error {
	n := e.o.Containers
	for _, d := range e.ds {
		if err := e.importOnce(ctx, d, e.busybox); err != nil {
			return err
		}
	}
	var total [2]time.Duration
	for i := range n {
		for _, d := range e.order() {
			args := append(append([]string{"run", "-d"}, e.runFlags(d)...), e.busybox.ref, e.id(d, fmt.Sprintf("d%d", i)), "sleep", "600")
			took, err := e.ctr(ctx, d, args...)
			if err != nil {
				return err
			}
			total[e.index(d)] += took
		}
	}
	name := fmt.Sprintf("%d × ctr run -d (one after another), total", n)
	r := e.addRow(&sysRow{Name: name, Unit: "s", Berthd: total[0].Seconds(), Containerd: total[1].Seconds()})
	r.Ratio = ratio(r.Berthd, r.Containerd)
	e.atMost(name, "berthd ≤ 0.5× containerd's time", r.Ratio, 0.5)
	progress("  started %d on each: berthd %.2fs, containerd %.2fs", n, r.Berthd, r.Containerd)

	select {
	case <-time.After(2 * e.o.Idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	// per shim process serving a task, and the PSS of every shim (a shim
	// waiting for the next task included) summed and divided by the
	// containers: the same figure while each container has its own shim,
	// and the one that still compares if a runtime groups containers into
	// fewer shims or keeps spare ones.
	var rss, pss, perContainer, shims, drss, danon [2]float64
	for i, d := range e.ds {
		all := shimPids(d.address)
		pids, waiting := taskShims(all)
		shims[i] = float64(len(pids))
		if len(pids) == 0 {
			return fmt.Errorf("%s: no shim processes with %d containers running", d.name, n)
		}
		if len(waiting) > 0 {
			e.rep.Notes = append(e.rep.Notes, fmt.Sprintf("%s also ran %d shim(s) launched ahead of the next task, not in the per-shim rows; their PSS is in the per-container row", d.name, len(waiting)))
		}
		for _, pid := range all {
			v, err := procKiB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Rss:")
			if err != nil {
				return err
			}
			w, err := procKiB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
			if err != nil {
				return err
			}
			perContainer[i] += w / float64(n)
			if slices.Contains(waiting, pid) {
				continue
			}
			rss[i] += v / float64(len(pids))
			pss[i] += w / float64(len(pids))
		}
		if k := sharersOf(pids[0], all); k > 0 {
			e.rep.Notes = append(e.rep.Notes, fmt.Sprintf("%s's shim binary is also run by %d processes outside this benchmark, which lowers its shims' PSS", d.name, k))
		}
		var err error
		if drss[i], err = rssMiB(d); err != nil {
			return err
		}
		if danon[i], err = anonMiB(d); err != nil {
			return err
		}
	}
	for _, m := range []struct {
		name string
		unit string
		v    [2]float64
		goal bool
	}{
		{"shim processes", "", shims, false},
		{"shim RSS, mean per shim", "MiB", rss, true},
		{"shim PSS, mean per shim", "MiB", pss, true},
		{"shims' PSS per container", "MiB", perContainer, false},
		{fmt.Sprintf("daemon RSS with %d running", n), "MiB", drss, true},
		{fmt.Sprintf("daemon anon RSS with %d running", n), "MiB", danon, false},
	} {
		r := e.addRow(&sysRow{Name: m.name, Unit: m.unit, Berthd: m.v[0], Containerd: m.v[1], Ratio: ratio(m.v[0], m.v[1])})
		if m.goal {
			e.atMost(m.name, "berthd ≤ 0.5× containerd's", r.Ratio, 0.5)
		}
	}

	var down [2]time.Duration
	var errs []error
	for k, d := range e.order() {
		progress("  removing %s's containers (%s)", d.name, map[bool]string{true: "first", false: "second"}[k == 0])
		took, err := e.removeDetached(ctx, d, n, func(i int) string { return e.id(d, fmt.Sprintf("d%d", i)) })
		down[e.index(d)] = took
		errs = append(errs, err)
	}
	dr := e.addRow(&sysRow{Name: fmt.Sprintf("then kill, delete and rm all %d", n), Unit: "s", Berthd: down[0].Seconds(), Containerd: down[1].Seconds()})
	dr.Ratio = ratio(dr.Berthd, dr.Containerd)
	return errors.Join(errs...)
}

// removeDetached kills, deletes and removes runDetached's containers on d
// with ctr, the way a user would, and checks that no task, container, shim
// or mount is left. It returns the time the ctr commands took.
func (e *sysEnv) removeDetached(ctx context.Context, d *daemon, n int, id func(int) string) (time.Duration, error) {
	var took, kill, del, rm time.Duration
	timed := func(sum *time.Duration, args ...string) error {
		t, err := e.ctr(ctx, d, args...)
		took += t
		*sum += t
		return err
	}
	for i := range n {
		if err := timed(&kill, "tasks", "kill", "-s", "SIGKILL", id(i)); err != nil {
			return took, err
		}
	}
	retries := 0
	for i := range n {
		// the kill is asynchronous: a task that has not exited yet refuses deletion.
		for try := 0; ; try++ {
			err := timed(&del, "tasks", "delete", id(i))
			if err == nil {
				break
			}
			if try == 100 || ctx.Err() != nil {
				return took, err
			}
			retries++
			time.Sleep(50 * time.Millisecond)
		}
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = id(i)
	}
	if err := timed(&rm, append([]string{"containers", "rm"}, ids...)...); err != nil {
		return took, err
	}
	progress("  %s: %d kills %.2fs, %d task deletes %.2fs (%d retried: not yet stopped), containers rm %.2fs",
		d.name, n, kill.Seconds(), n, del.Seconds(), retries, rm.Seconds())

	var errs []error
	// one shim waiting for the next task may stay.
	serving := func() ([]int, []int) { return taskShims(shimPids(d.address)) }
	deadline := time.Now().Add(10 * time.Second)
	for p, w := serving(); (len(p) > 0 || len(w) > 1) && time.Now().Before(deadline); p, w = serving() {
		time.Sleep(50 * time.Millisecond)
	}
	if p, w := serving(); len(p) > 0 || len(w) > 1 {
		errs = append(errs, fmt.Errorf("%s: %d shims still running 10 s after every task was deleted: %v (and %d waiting for a task: %v)", d.name, len(p), p, len(w), w))
	}
	if m := mountsUnder(d.dir); len(m) > 0 {
		errs = append(errs, fmt.Errorf("%s: %d mounts left below %s: %v", d.name, len(m), d.dir, m[:min(3, len(m))]))
	}
	if tl, err := tasksapi.NewTasksClient(d.conn(0)).List(nsContext(ctx), &tasksapi.ListTasksRequest{}); err != nil || len(tl.GetTasks()) > 0 {
		errs = append(errs, fmt.Errorf("%s: tasks left: %d (%v)", d.name, len(tl.GetTasks()), err))
	}
	if cl, err := containers.NewContainersClient(d.conn(0)).List(nsContext(ctx), &containers.ListContainersRequest{}); err != nil || len(cl.GetContainers()) > 0 {
		errs = append(errs, fmt.Errorf("%s: containers left: %d (%v)", d.name, len(cl.GetContainers()), err))
	}
	return took, errors.Join(errs...)
}

// id is a container ID for d: unique to this run and to d, because ctr
// gives a container the cgroup /bench/ID whichever daemon runs it, and two
// daemons' containers must not share one (runc delete kills and removes
// the whole cgroup).
func (e *sysEnv) id(d *daemon, name string) string {
	return fmt.Sprintf("%s-%s-%s", e.tag, d.name[:1], name)
}

// index is d's column: 0 for berthd, 1 for containerd.
func (e *sysEnv) index(d *daemon) int {
	if d == e.ds[0] {
		return 0
	}
	return 1
}

// sharersOf counts the processes outside pids that run pid's executable.
func sharersOf(pid int, pids []int) int {
	self, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range allPids() {
		if slices.Contains(pids, p) {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p)); err == nil && exe == self {
			n++
		}
	}
	return n
}

// runcBundle makes an OCI bundle of the busybox layer's files for bare runc
// runs: `runc spec`, with `true` as the process, no terminal, a writable
// root and the cgroup path ctr would give (/bench/ID).
func (e *sysEnv) runcBundle() (string, error) {
	if _, err := os.Stat(e.o.Runc); err != nil {
		return "", err
	}
	b := filepath.Join(e.dir, "runc-bundle")
	if err := untarGz(e.busybox.gz, filepath.Join(b, "rootfs")); err != nil {
		return "", err
	}
	if out, err := exec.Command(e.o.Runc, "spec", "--bundle", b).CombinedOutput(); err != nil {
		return "", fmt.Errorf("runc spec: %v: %s", err, out)
	}
	p := filepath.Join(b, "config.json")
	raw, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return "", err
	}
	proc, _ := spec["process"].(map[string]any)
	root, _ := spec["root"].(map[string]any)
	linux, _ := spec["linux"].(map[string]any)
	if proc == nil || root == nil || linux == nil {
		return "", fmt.Errorf("runc spec: unexpected config.json")
	}
	proc["terminal"], proc["args"], root["readonly"] = false, []string{"true"}, false
	linux["cgroupsPath"] = "/" + namespace + "/" + e.tag + "-runc"
	if raw, err = json.Marshal(spec); err != nil {
		return "", err
	}
	return b, os.WriteFile(p, raw, 0o644)
}

// runcRun runs the bundle with `runc run` in the foreground (runc deletes
// the container when it exits).
func (e *sysEnv) runcRun(ctx context.Context, bundle, id string) (time.Duration, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, e.o.Runc, "--root", e.runcRoot(), "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("runc run: %v: %s", err, lastLines(out.String(), 5))
	}
	return took, nil
}

func (e *sysEnv) runcRoot() string { return filepath.Join(e.dir, "runc-root") }

// cleanupRunc force-deletes what bare runc runs left (a run interrupted
// part way).
func (e *sysEnv) cleanupRunc() {
	entries, _ := os.ReadDir(e.runcRoot())
	for _, ent := range entries {
		_ = exec.Command(e.o.Runc, "--root", e.runcRoot(), "delete", "-f", ent.Name()).Run()
	}
}

// untarGz unpacks a gzip tar of directories, files and symlinks (the
// busybox layer, which the benchmark made itself) into dir.
func untarGz(layer []byte, dir string) error {
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, os.FileMode(h.Mode).Perm()); err != nil {
				return err
			}
			if err := os.Chmod(p, os.FileMode(h.Mode&0o7777)|modeBits(h.Mode)); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm())
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		}
	}
}

// modeBits turns the sticky, setuid and setgid bits of a tar mode into Go's.
func modeBits(m int64) os.FileMode {
	var fm os.FileMode
	if m&0o1000 != 0 {
		fm |= os.ModeSticky
	}
	if m&0o2000 != 0 {
		fm |= os.ModeSetgid
	}
	if m&0o4000 != 0 {
		fm |= os.ModeSetuid
	}
	return fm
}

// eventLog records the topics and timestamps a daemon publishes in the
// bench namespace.
type eventLog struct {
	mu     sync.Mutex
	events []event
	cancel context.CancelFunc
	done   chan struct{}
}

type event struct {
	topic string
	at    time.Time
}

func subscribe(ctx context.Context, d *daemon) (*eventLog, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := eventsapi.NewEventsClient(d.conn(0)).Subscribe(ctx, &eventsapi.SubscribeRequest{})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s: subscribe: %w", d.name, err)
	}
	l := &eventLog{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			env, err := stream.Recv()
			if err != nil {
				return
			}
			if env.GetNamespace() != namespace || env.GetTimestamp() == nil {
				continue
			}
			l.mu.Lock()
			l.events = append(l.events, event{topic: env.GetTopic(), at: env.GetTimestamp().AsTime()})
			l.mu.Unlock()
		}
	}()
	return l, nil
}

func (l *eventLog) stop() {
	l.cancel()
	<-l.done
}

// phases is, for each topic, the median over the runs of the time from the
// start of a run to the topic's first event in it (the run's events are
// those stamped while its ctr ran: lat[i][j] ms from starts[i][j]), ordered
// by time, then ctr's own exit.
func phases(logs [2]*eventLog, starts [2][]time.Time, lat [2][]float64) []phaseRow {
	offsets := [2]map[string][]float64{{}, {}}
	for i, l := range logs {
		l.mu.Lock()
		evs := slices.Clone(l.events)
		l.mu.Unlock()
		for j, s := range starts[i] {
			end := s.Add(time.Duration(lat[i][j]*float64(time.Millisecond)) + time.Millisecond)
			seen := map[string]bool{}
			for _, ev := range evs {
				if ev.at.Before(s) || !ev.at.Before(end) || seen[ev.topic] {
					continue
				}
				seen[ev.topic] = true
				offsets[i][ev.topic] = append(offsets[i][ev.topic], float64(ev.at.Sub(s).Microseconds())/1000)
			}
		}
	}
	var rows []phaseRow
	topics := map[string]bool{}
	for _, o := range offsets {
		for t := range o {
			topics[t] = true
		}
	}
	for t := range topics {
		row := phaseRow{Step: t, BerthdMs: -1, Containerd: -1}
		if v := offsets[0][t]; len(v) > 0 {
			row.BerthdMs = median(v)
		}
		if v := offsets[1][t]; len(v) > 0 {
			row.Containerd = median(v)
		}
		rows = append(rows, row)
	}
	key := func(r phaseRow) float64 {
		if r.Containerd >= 0 {
			return r.Containerd
		}
		return r.BerthdMs
	}
	sort.Slice(rows, func(i, j int) bool { return key(rows[i]) < key(rows[j]) })
	rows = append(rows, phaseRow{Step: "ctr exits", BerthdMs: median(lat[0]), Containerd: median(lat[1])})
	return rows
}

// quantile is the q-quantile of v (nearest rank; the median for 0.5).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	if q == 0.5 {
		return median(v)
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func rounded(v []float64) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.0f", x)
	}
	return b.String()
}
