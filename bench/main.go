// Command berth-bench compares berthd with containerd 1.6 on the same
// machine, in the same run: `make bench`, or `go run ./bench` from the
// module's top directory, as root.
//
// It builds berthd from this tree, starts it and /usr/bin/containerd on
// temporary roots, states and sockets, and measures each workload on one
// daemon at a time, alternating which goes first. Every number is printed
// beside containerd's and as a ratio, because on a shared machine the
// absolute numbers are noise and the ratio is the result.
//
// Rows come from three registries: workloads (workloads.go), operations
// measured at 1 and 16 clients; probes (probes.go), values read from each
// daemon's process such as its idle memory; and systems (system.go), what a
// user of ctr sees (imports, ctr run, 50 running containers and their
// shims' memory) or one API stream moves (a large blob), measured with the
// same ctr or Go client against both, berthd running the shim built with
// it. docs/benchmarks.md says what each row measures. A run leaves no
// process, mount, cgroup or directory behind, also when it fails or is
// interrupted (cleanup.go).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	containers "github.com/containerd/containerd/api/services/containers/v1"
	namespacesapi "github.com/containerd/containerd/api/services/namespaces/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// options are the command's flags.
type options struct {
	Only          string        `json:"only"`
	Reps          int           `json:"reps"`
	Ops           int           `json:"ops"`
	Duration      time.Duration `json:"duration_ns"`
	Clients       []int         `json:"clients"`
	Idle          time.Duration `json:"idle_ns"`
	ConnPerClient bool          `json:"conn_per_client"`
	Runs          int           `json:"runs"`       // ctr run --rm samples per daemon
	Containers    int           `json:"containers"` // detached containers per daemon
	BlobMiB       int           `json:"blob_mib"`   // the Content.Write blob
	Quick         bool          `json:"quick"`
	Berthd        string        `json:"-"`
	Containerd    string        `json:"-"`
	Ctr           string        `json:"-"`
	Runc          string        `json:"-"`
	JSON          string        `json:"-"`
	only          *regexp.Regexp
}

// cellTimeout bounds a fixed-ops cell, so that a very slow daemon cannot
// hold the benchmark up; a cell cut short reports the ops it did.
const cellTimeout = 60 * time.Second

func main() {
	var o options
	var clients string
	flag.StringVar(&o.Only, "only", "", "run only the workloads and probes whose names match this regular expression")
	flag.IntVar(&o.Reps, "reps", 3, "repetitions of each cell; the table shows the median")
	flag.IntVar(&o.Ops, "ops", 2000, "operations per cell of the fixed-count workloads (Create, Delete)")
	flag.DurationVar(&o.Duration, "duration", 2*time.Second, "length of each cell of the fixed-time workloads (Get, List, ListStream)")
	flag.StringVar(&clients, "clients", "1,16", "comma-separated numbers of concurrent clients")
	flag.DurationVar(&o.Idle, "idle", time.Second, "rest before reading memory")
	flag.BoolVar(&o.ConnPerClient, "conn-per-client", false, "give each client its own gRPC connection (default: all share one per daemon, as a containerd Go client does)")
	flag.StringVar(&o.Berthd, "berthd", "", "a berthd binary to use instead of building ./cmd/... (its shim is found beside it or on PATH)")
	flag.StringVar(&o.Containerd, "containerd", "/usr/bin/containerd", "the containerd 1.6 binary")
	flag.StringVar(&o.Ctr, "ctr", "/usr/bin/ctr", "the ctr both daemons are driven with in the system rows")
	flag.StringVar(&o.Runc, "runc", "/usr/sbin/runc", "the runc of the bare `runc run` reference")
	flag.IntVar(&o.Runs, "runs", 20, "`ctr run --rm` samples per daemon")
	flag.IntVar(&o.Containers, "containers", 50, "detached containers started on each daemon")
	flag.IntVar(&o.BlobMiB, "blob-mib", 256, "size of the blob written through Content.Write, in MiB")
	flag.BoolVar(&o.Quick, "quick", false, "fewer and shorter cells (2 reps, 500 ops, 1s, 10 runs, 20 containers, a 128 MiB blob): about 2 minutes instead of 5, noisier")
	flag.StringVar(&o.JSON, "json", "", "also write the raw numbers to this file")
	writeTo := flag.String("write-images", "", "only write the benchmark's image archives (busybox.tar, big.tar) into this directory, for profiling by hand, and exit")
	flag.Parse()
	if *writeTo != "" {
		if _, err := writeBusybox(*writeTo); err != nil {
			fatalf("%v", err)
		}
		if _, err := writeBigImage(context.Background(), *writeTo); err != nil {
			fatalf("%v", err)
		}
		return
	}
	if o.Quick { // sets only what was not given explicitly
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := func(name string, p *int, v int) {
			if !set[name] {
				*p = v
			}
		}
		quick("reps", &o.Reps, 2)
		quick("ops", &o.Ops, 500)
		quick("runs", &o.Runs, 10)
		quick("containers", &o.Containers, 20)
		quick("blob-mib", &o.BlobMiB, 128)
		if !set["duration"] {
			o.Duration = time.Second
		}
	}
	var err error
	if o.only, err = regexp.Compile(o.Only); err != nil {
		fatalf("--only: %v", err)
	}
	for _, s := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatalf("--clients: %q is not a positive number", s)
		}
		o.Clients = append(o.Clients, n)
	}
	if o.Reps < 1 || o.Ops < 1 || o.Duration <= 0 || o.Runs < 1 || o.Containers < 1 || o.BlobMiB < 1 {
		fatalf("--reps, --ops, --duration, --runs, --containers and --blob-mib must be positive")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, &o)
	if rep != nil {
		printTable(os.Stdout, rep)
		if o.JSON != "" {
			if werr := writeJSON(o.JSON, rep); werr != nil {
				err = errors.Join(err, werr)
			}
		}
	}
	if err != nil {
		fatalf("%v", err)
	}
	if rep.Failures > 0 {
		fatalf("%d failed operations or checks (see the errors column)", rep.Failures)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "berth-bench: "+format+"\n", args...)
	os.Exit(1)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "  "+format+"\n", args...)
}

// The report is what the table shows and --json writes.
type report struct {
	Started  time.Time         `json:"started"`
	Seconds  float64           `json:"seconds"`
	Host     map[string]string `json:"host"`
	Versions map[string]string `json:"versions"`
	Options  *options          `json:"options"`
	SpecSize int               `json:"spec_bytes"`
	Cells    []*cellResult     `json:"cells"`
	Probes   []*probeResult    `json:"probes"`
	System   []*sysRow         `json:"system,omitempty"`
	Phases   []phaseTable      `json:"phases,omitempty"`
	Targets  []target          `json:"targets,omitempty"`
	BigImage map[string]any    `json:"big_image,omitempty"`
	Failures int               `json:"failures"` // failed ops and checks, all cells and rows
	Notes    []string          `json:"notes,omitempty"`
}

type cellResult struct {
	Workload   string     `json:"workload"`
	Clients    int        `json:"clients"`
	FixedTime  bool       `json:"fixed_time"`
	Berthd     sideResult `json:"berthd"`
	Containerd sideResult `json:"containerd"`
	// Ratio is the median over the repetitions of berthd's ops/s ÷
	// containerd's in that repetition (the two run back to back, so they
	// share the machine's load of the moment); CPURatio likewise for the
	// daemon CPU time per op.
	Ratio    float64 `json:"ratio"`
	CPURatio float64 `json:"cpu_ratio"`
}

type sideResult struct {
	Reps           []repResult `json:"reps"`
	OpsPerSec      float64     `json:"median_ops_per_sec"`
	CPUPerOpUs     float64     `json:"median_daemon_cpu_us_per_op"`
	Errors         int         `json:"errors"`
	VerifyFailures int         `json:"verify_failures"`
	FirstError     string      `json:"first_error,omitempty"`
}

type repResult struct {
	Ops            int     `json:"ops"` // acknowledged
	Errors         int     `json:"errors"`
	VerifyFailures int     `json:"verify_failures"`
	Seconds        float64 `json:"seconds"`
	OpsPerSec      float64 `json:"ops_per_sec"`
	CPUSeconds     float64 `json:"daemon_cpu_seconds"` // user + system
	SysCPUSeconds  float64 `json:"daemon_sys_cpu_seconds"`
	CPUPerOpUs     float64 `json:"daemon_cpu_us_per_op"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	First          bool    `json:"ran_first"`
	FirstError     string  `json:"first_error,omitempty"`
}

type probeResult struct {
	Name       string  `json:"name"`
	Berthd     float64 `json:"berthd"`
	Containerd float64 `json:"containerd"`
	Ratio      float64 `json:"ratio"` // berthd ÷ containerd
}

// run starts both daemons, runs every selected workload and probe, stops
// the daemons and returns what it measured (also when it fails part way).
func run(ctx context.Context, o *options) (rep *report, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("run as root: containerd (and berthd's runtime) need it")
	}
	if _, err := os.Stat(o.Containerd); err != nil {
		return nil, fmt.Errorf("containerd 1.6 is needed at %s (apt-get install containerd): %v", o.Containerd, err)
	}
	rep = &report{
		Started:  time.Now(),
		Host:     hostInfo(),
		Versions: map[string]string{},
		Options:  o,
		SpecSize: len(specJSON("bench-0-0")),
	}
	started := rep
	defer func() { started.Seconds = time.Since(started.Started).Seconds() }()

	// one directory for the binaries, the image archives, the blob, the
	// FIFOs and the runc bundle; removed last, once the daemons are gone.
	work, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if n, uerr := unmountUnder(work); n > 0 || uerr != nil {
			err = errors.Join(err, fmt.Errorf("%d mounts were left below %s; unmounted them", n, work), uerr)
		}
		if rerr := os.RemoveAll(work); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	e, err := newSysEnv(o, rep, work)
	if err != nil {
		return rep, err
	}
	cgroupsBefore := cgroupParents()
	defer removeCgroups(e.tag, cgroupsBefore) // after runc's and the daemons' clean-up
	defer e.cleanupRunc()

	// build berthd and its shim while the images are written.
	bin := o.Berthd
	var buildErr error
	var wg sync.WaitGroup
	if bin == "" {
		progress("building berthd and the shim (go build ./cmd/...)")
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := filepath.Join(work, "bin")
			if buildErr = os.Mkdir(dir, 0o755); buildErr == nil {
				bin, buildErr = buildBerthd(dir)
			}
		}()
	}
	if err := e.writeImages(ctx); err != nil {
		wg.Wait()
		return rep, err
	}
	wg.Wait()
	if buildErr != nil {
		return rep, buildErr
	}

	var ds [2]*daemon // berthd, containerd: the order of every pair of columns
	defer func() {
		for _, d := range ds {
			if d != nil {
				if serr := d.stop(); serr != nil {
					err = errors.Join(err, serr)
				}
			}
		}
	}()
	progress("starting berthd")
	if ds[0], err = startBerthd(ctx, bin); err != nil {
		return rep, err
	}
	progress("starting containerd")
	if ds[1], err = startContainerd(ctx, o.Containerd); err != nil {
		return rep, err
	}
	e.ds = ds
	for _, d := range ds {
		d.sys = e
		rep.Versions[d.name] = d.version
		if o.ConnPerClient {
			if err := d.connectPerClient(slices.Max(o.Clients)); err != nil {
				return rep, err
			}
		}
		if err := createNamespace(ctx, d); err != nil {
			return rep, err
		}
	}

	progress("warming up")
	for _, d := range ds {
		if err := warmUp(ctx, d); err != nil {
			return rep, err
		}
	}
	if err := readProbes(ctx, o, rep, ds, phaseIdle); err != nil {
		return rep, err
	}

	turn := 0 // alternates which daemon runs first, across all cells
	for _, w := range workloads {
		if !o.only.MatchString(w.name) {
			continue
		}
		if err := runWorkload(ctx, o, rep, ds, w, &turn); err != nil {
			return rep, err
		}
	}

	if err := readProbes(ctx, o, rep, ds, phaseAfter); err != nil {
		return rep, err
	}
	if err := runSystems(ctx, e); err != nil {
		return rep, err
	}
	for _, d := range ds {
		if !d.alive() {
			return rep, fmt.Errorf("%s died:\n%s", d.name, d.logTail())
		}
	}
	return rep, nil
}

// runWorkload runs w's cells: for each client count, o.Reps pairs of runs,
// one on each daemon, never at the same time.
func runWorkload(ctx context.Context, o *options, rep *report, ds [2]*daemon, w workload, turn *int) error {
	progress("%s", w.name)
	if w.setup != nil {
		for _, d := range ds {
			teardown, err := w.setup(ctx, d)
			if err != nil {
				return fmt.Errorf("%s: setup on %s: %w", w.name, d.name, err)
			}
			defer func() {
				if ctx.Err() != nil {
					return // interrupted: the daemons and their directories are going away
				}
				if err := teardown(ctx); err != nil {
					rep.Failures++
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s: teardown on %s: %v", w.name, d.name, err))
				}
			}()
		}
	}
	for _, clients := range o.Clients {
		cr := &cellResult{Workload: w.name, Clients: clients, FixedTime: w.fixedTime}
		sides := [2]*sideResult{&cr.Berthd, &cr.Containerd}
		for r := range o.Reps {
			order := []int{0, 1}
			if *turn%2 == 1 {
				order = []int{1, 0}
			}
			*turn++
			for k, di := range order {
				d := ds[di]
				p := cellParams{tag: fmt.Sprintf("c%d-r%d", clients, r), ops: o.Ops, clients: clients}
				if w.fixedTime {
					p.ops = math.MaxInt32
				}
				res, err := runCell(ctx, o, d, w, p)
				if err != nil {
					return fmt.Errorf("%s at %d clients on %s: %w", w.name, clients, d.name, err)
				}
				res.First = k == 0
				sides[di].Reps = append(sides[di].Reps, res)
				progress("  %2d clients, rep %d, %-10s %9.1f ops/s  %4.0f µs CPU/op  (%d ops in %.2fs, %d errors, %d failed checks)",
					clients, r+1, d.name, res.OpsPerSec, res.CPUPerOpUs, res.Ops, res.Seconds, res.Errors, res.VerifyFailures)
				if !d.alive() {
					return fmt.Errorf("%s died:\n%s", d.name, d.logTail())
				}
			}
		}
		for _, s := range sides {
			s.summarize()
			rep.Failures += s.Errors + s.VerifyFailures
		}
		var ratios, cpuRatios []float64
		for r := range o.Reps {
			b, c := cr.Berthd.Reps[r], cr.Containerd.Reps[r]
			ratios = append(ratios, ratio(b.OpsPerSec, c.OpsPerSec))
			cpuRatios = append(cpuRatios, ratio(b.CPUPerOpUs, c.CPUPerOpUs))
		}
		cr.Ratio, cr.CPURatio = median(ratios), median(cpuRatios)
		rep.Cells = append(rep.Cells, cr)
		if w.goal > 0 {
			rep.Targets = append(rep.Targets, target{Row: fmt.Sprintf("%s at %d clients", w.name, clients),
				Goal: fmt.Sprintf("berthd ≥ %.1f× containerd's ops/s", w.goal), Value: cr.Ratio, Met: cr.Ratio >= w.goal})
		}
	}
	return nil
}

// runCell measures one run of w on d: p.clients goroutines take operation
// indices until p.ops are taken or the time is up.
func runCell(ctx context.Context, o *options, d *daemon, w workload, p cellParams) (repResult, error) {
	var res repResult
	c, err := w.cell(ctx, d, p)
	if err != nil {
		return res, err
	}
	limit := cellTimeout
	if w.fixedTime {
		limit = o.Duration
	}
	var (
		next, failed atomic.Int64
		firstOnce    sync.Once
		firstErr     error
		wg           sync.WaitGroup
		latencies    = make([][]time.Duration, p.clients)
	)
	user0, sys0, err := cpuSeconds(d.pid())
	if err != nil {
		return res, err
	}
	start := time.Now()
	deadline := start.Add(limit)
	for worker := range p.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(p.ops) || time.Now().After(deadline) {
					return
				}
				t := time.Now()
				err := c.op(ctx, worker, int(i))
				latencies[worker] = append(latencies[worker], time.Since(t))
				if err != nil {
					failed.Add(1)
					firstOnce.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	user1, sys1, err := cpuSeconds(d.pid())
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	all := slices.Concat(latencies...)
	slices.Sort(all)
	res.Errors = int(failed.Load())
	res.Ops = len(all) - res.Errors
	res.Seconds = elapsed.Seconds()
	res.OpsPerSec = float64(res.Ops) / res.Seconds
	res.CPUSeconds = user1 - user0 + sys1 - sys0
	res.SysCPUSeconds = sys1 - sys0
	if len(all) > 0 {
		res.CPUPerOpUs = res.CPUSeconds / float64(len(all)) * 1e6
		res.P50Ms = float64(all[len(all)/2].Microseconds()) / 1000
		res.P99Ms = float64(all[(len(all)*99)/100].Microseconds()) / 1000
	}
	if firstErr != nil {
		res.FirstError = firstErr.Error()
	}
	if c.after != nil {
		failures, err := c.after(ctx)
		res.VerifyFailures = failures
		if err != nil && res.FirstError == "" {
			res.FirstError = err.Error()
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	return res, nil
}

// summarize takes the medians over the repetitions and adds up failures.
func (s *sideResult) summarize() {
	var ops, cpu []float64
	for _, r := range s.Reps {
		ops = append(ops, r.OpsPerSec)
		cpu = append(cpu, r.CPUPerOpUs)
		s.Errors += r.Errors
		s.VerifyFailures += r.VerifyFailures
		if s.FirstError == "" {
			s.FirstError = r.FirstError
		}
	}
	s.OpsPerSec, s.CPUPerOpUs = median(ops), median(cpu)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// readProbes rests, then reads every selected probe of phase from both daemons.
func readProbes(ctx context.Context, o *options, rep *report, ds [2]*daemon, phase string) error {
	var selected []probe
	for _, p := range probes {
		if p.phase == phase && o.only.MatchString(p.name) {
			selected = append(selected, p)
		}
	}
	if len(selected) == 0 {
		return nil
	}
	progress("resting %v, then reading %s probes", o.Idle, phase)
	select {
	case <-time.After(o.Idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, p := range selected {
		pr := &probeResult{Name: p.name}
		var err error
		if pr.Berthd, err = p.read(ds[0]); err != nil {
			return fmt.Errorf("%s of berthd: %w", p.name, err)
		}
		if pr.Containerd, err = p.read(ds[1]); err != nil {
			return fmt.Errorf("%s of containerd: %w", p.name, err)
		}
		pr.Ratio = ratio(pr.Berthd, pr.Containerd)
		rep.Probes = append(rep.Probes, pr)
	}
	for _, d := range ds {
		if n := sharers(d); n > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s probes: %d other processes run %s's executable and share its pages, which lowers its PSS (not its RSS or anon RSS)",
				phase, n, d.name))
		}
	}
	return nil
}

// createNamespace makes the bench namespace, as `ctr -n bench namespaces
// create bench` would (containerd publishes the event in the caller's
// namespace, so one must be sent).
func createNamespace(ctx context.Context, d *daemon) error {
	_, err := namespacesapi.NewNamespacesClient(d.conn(0)).Create(nsContext(ctx), &namespacesapi.CreateNamespaceRequest{
		Namespace: &namespacesapi.Namespace{Name: namespace},
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("%s: create namespace %s: %w", d.name, namespace, err)
	}
	return nil
}

// warmUp runs every kind of operation a little, so that the idle memory is
// that of a daemon that has served, not of one that has only started.
func warmUp(ctx context.Context, d *daemon) error {
	const n = 100
	id := func(i int) string { return fmt.Sprintf("warmup-%d", i) }
	if err := create(ctx, d, n, id); err != nil {
		return err
	}
	c := containers.NewContainersClient(d.conn(0))
	if _, err := parallel(ctx, n, 16, func(w, i int) error {
		_, err := containersClient(d, w).Get(nsContext(ctx), &containers.GetContainerRequest{ID: id(i)})
		return err
	}); err != nil {
		return fmt.Errorf("%s: warm-up get: %w", d.name, err)
	}
	if _, err := c.List(nsContext(ctx), &containers.ListContainersRequest{}); err != nil {
		return fmt.Errorf("%s: warm-up list: %w", d.name, err)
	}
	if _, err := parallel(ctx, n, 16, func(w, i int) error { return deleteContainer(ctx, d, w, id(i), false) }); err != nil {
		return fmt.Errorf("%s: warm-up: %w", d.name, err)
	}
	return nil
}

func hostInfo() map[string]string {
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	return map[string]string{
		"cpus":    strconv.Itoa(runtime.NumCPU()),
		"kernel":  read("/proc/sys/kernel/osrelease"),
		"loadavg": read("/proc/loadavg"),
		"go":      runtime.Version(),
	}
}

func writeJSON(path string, rep *report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// printTable writes the human-readable report.
func printTable(out io.Writer, rep *report) {
	o := rep.Options
	conn := "all clients share one gRPC connection per daemon"
	if o.ConnPerClient {
		conn = "each client has its own gRPC connection"
	}
	fmt.Fprintf(out, "\nberthd %s vs containerd %s; %s CPUs, load average at start %s\n",
		rep.Versions["berthd"], rep.Versions["containerd"], rep.Host["cpus"], firstFields(rep.Host["loadavg"], 3))
	if len(rep.Cells)+len(rep.Probes) > 0 {
		printCells(out, rep, conn)
	}
	for _, c := range rep.Cells {
		for _, s := range []struct {
			name string
			r    *sideResult
		}{{"berthd", &c.Berthd}, {"containerd", &c.Containerd}} {
			if s.r.FirstError != "" {
				fmt.Fprintf(out, "%s at %d clients on %s: %d failed ops, %d failed checks; first: %s\n",
					c.Workload, c.Clients, s.name, s.r.Errors, s.r.VerifyFailures, s.r.FirstError)
			}
		}
	}
	printSystem(out, rep)
	if len(rep.Notes) > 0 {
		fmt.Fprintln(out)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(out, n)
	}
	fmt.Fprintf(out, "\n%.0f s in all\n", rep.Seconds)
}

// printCells writes the table of workloads and probes.
func printCells(out io.Writer, rep *report, conn string) {
	o := rep.Options
	fmt.Fprintf(out, "%d reps per cell; ops/s and CPU µs/op are medians; Create/Delete %d ops per cell, Get/List %v per cell;\n%s; spec %d bytes\n",
		o.Reps, o.Ops, o.Duration, conn, rep.SpecSize)
	fmt.Fprintf(out, "ratio = berthd ÷ containerd, for cells the median of the reps' ratios (each rep runs the two back to back):\n")
	fmt.Fprintf(out, "above 1 is better for ops/s, below 1 for CPU, memory and time; errors = failed ops and checks, berthd/containerd\n\n")

	rows := [][]string{{"workload", "clients", "berthd ops/s", "containerd ops/s", "ratio",
		"berthd CPU µs/op", "containerd CPU µs/op", "ratio", "errors b/c"}}
	for _, c := range rep.Cells {
		rows = append(rows, []string{c.Workload, strconv.Itoa(c.Clients),
			fmt.Sprintf("%.1f", c.Berthd.OpsPerSec), fmt.Sprintf("%.1f", c.Containerd.OpsPerSec), fmt.Sprintf("%.2fx", c.Ratio),
			fmt.Sprintf("%.0f", c.Berthd.CPUPerOpUs), fmt.Sprintf("%.0f", c.Containerd.CPUPerOpUs), fmt.Sprintf("%.2fx", c.CPURatio),
			fmt.Sprintf("%d/%d", c.Berthd.Errors+c.Berthd.VerifyFailures, c.Containerd.Errors+c.Containerd.VerifyFailures)})
	}
	for _, p := range rep.Probes {
		rows = append(rows, []string{p.Name, "", fmt.Sprintf("%.1f", p.Berthd), fmt.Sprintf("%.1f", p.Containerd), fmt.Sprintf("%.2fx", p.Ratio)})
	}
	writeColumns(out, rows)
}

func firstFields(s string, n int) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(n, len(f))], " ")
}

// writeColumns prints rows as columns: the first left-aligned, the others
// right-aligned, two spaces apart.
func writeColumns(out io.Writer, rows [][]string) {
	var width []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(out, strings.TrimRight(b.String(), " "))
	}
}
