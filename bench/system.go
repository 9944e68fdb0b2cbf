package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// A system row measures what a user of ctr sees (an import, a run, 50
// containers) or what one API stream moves (a large blob), one operation at
// a time, with Debian's ctr or the benchmark's own gRPC client, the same for
// both daemons. containerd runs its own containerd-shim-runc-v2 and berthd
// the shim built with it. To add rows, add an entry to systems.
type system struct {
	name string // what --only matches
	run  func(ctx context.Context, e *sysEnv) error
}

var systems = []system{
	{name: "images.Import.NoUnpack", run: importNoUnpack},
	{name: "images.Import.Unpack", run: importUnpack},
	{name: "content.Write", run: contentWrite},
	{name: "ctr.Run.Rm", run: runRm},
	{name: "ctr.Run.Detached", run: runDetached},
}

// sysEnv is what the system rows share.
type sysEnv struct {
	o    *options
	rep  *report
	ds   [2]*daemon // berthd, containerd
	dir  string     // the benchmark's temporary directory: archives, blob, FIFOs, runc bundle
	tag  string     // unique to this run: the prefix of every container ID it makes
	turn int        // alternates which daemon goes first

	busybox *imageFile
	big     *imageFile
}

// sysRow is one row of the system table.
type sysRow struct {
	Name   string `json:"name"`
	Unit   string `json:"unit"`
	Higher bool   `json:"higher_is_better"`
	// Berthd and Containerd are medians over the repetitions (or the one
	// value of a row measured once).
	Berthd     float64 `json:"berthd"`
	Containerd float64 `json:"containerd"`
	// Ratio is berthd ÷ containerd: the median of the repetitions' own
	// ratios where the two ran back to back, else of the medians (latency
	// percentiles, means over shims).
	Ratio float64 `json:"ratio"`
	// Ref is a reference measured beside them: a plain file copy, a bare
	// runc run.
	RefName        string    `json:"reference_name,omitempty"`
	Ref            float64   `json:"reference,omitempty"`
	BerthdReps     []float64 `json:"berthd_reps,omitempty"`
	ContainerdReps []float64 `json:"containerd_reps,omitempty"`
	RefReps        []float64 `json:"reference_reps,omitempty"`
}

// target is a goal from the design brief and whether this run met it.
type target struct {
	Row   string  `json:"row"`
	Goal  string  `json:"goal"`
	Value float64 `json:"value"`
	Met   bool    `json:"met"`
}

// phaseTable shows where the time of a ctr command goes: the median time
// from its start to each event the daemon publishes meanwhile.
type phaseTable struct {
	Title string     `json:"title"`
	Rows  []phaseRow `json:"rows"`
}

// phaseRow is the median time from the start of a ctr command to an event.
type phaseRow struct {
	Step       string  `json:"step"`
	BerthdMs   float64 `json:"berthd_ms"` // -1: not seen
	Containerd float64 `json:"containerd_ms"`
}

func (e *sysEnv) addRow(r *sysRow) *sysRow {
	e.rep.System = append(e.rep.System, r)
	return r
}

// atMost records the goal value ≤ limit.
func (e *sysEnv) atMost(row, goal string, value, limit float64) {
	e.rep.Targets = append(e.rep.Targets, target{Row: row, Goal: goal, Value: value, Met: value > 0 && value <= limit})
}

func (e *sysEnv) fail(format string, args ...any) {
	e.rep.Failures++
	e.rep.Notes = append(e.rep.Notes, fmt.Sprintf(format, args...))
}

// order is the order of the two daemons for the next repetition.
func (e *sysEnv) order() []*daemon {
	e.turn++
	if e.turn%2 == 0 {
		return []*daemon{e.ds[1], e.ds[0]}
	}
	return []*daemon{e.ds[0], e.ds[1]}
}

// pairs runs measure on both daemons reps times, alternating which goes
// first, and fills r with the medians and the median of the per-rep ratios.
func (e *sysEnv) pairs(ctx context.Context, r *sysRow, reps int, measure func(ctx context.Context, d *daemon, rep int) (float64, error)) error {
	for rep := range reps {
		for _, d := range e.order() {
			v, err := measure(ctx, d, rep)
			if err != nil {
				return err
			}
			progress("  rep %d, %-10s %10.3f %s", rep+1, d.name, v, r.Unit)
			if d == e.ds[0] {
				r.BerthdReps = append(r.BerthdReps, v)
			} else {
				r.ContainerdReps = append(r.ContainerdReps, v)
			}
		}
	}
	r.summarize()
	return nil
}

// summarize sets the medians and the median of the per-rep ratios.
func (r *sysRow) summarize() {
	r.Berthd, r.Containerd = median(r.BerthdReps), median(r.ContainerdReps)
	if len(r.RefReps) > 0 {
		r.Ref = median(r.RefReps)
	}
	var ratios []float64
	for i := range min(len(r.BerthdReps), len(r.ContainerdReps)) {
		ratios = append(ratios, ratio(r.BerthdReps[i], r.ContainerdReps[i]))
	}
	r.Ratio = median(ratios)
}

// ctr runs Debian's ctr against d in the bench namespace and returns how
// long it took.
func (e *sysEnv) ctr(ctx context.Context, d *daemon, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, e.o.Ctr, append([]string{"-a", d.address, "-n", namespace}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return took, ctx.Err()
		}
		return took, fmt.Errorf("%s: ctr %s: %v\n%s", d.name, strings.Join(args, " "), err, lastLines(out.String(), 8))
	}
	return took, nil
}

// runFlags are the flags every `ctr run` gets: its FIFOs in the benchmark's
// directory rather than /run/containerd/fifo, and runc's state in the
// daemon's directory rather than /run/containerd/runc, so that a run leaves
// nothing outside its temporary directories. Both daemons get the same.
func (e *sysEnv) runFlags(d *daemon) []string {
	return []string{"--fifo-dir", e.dir + "/fifo", "--runc-root", d.dir + "/runc"}
}

// importOnce imports img into d unless it already has it.
func (e *sysEnv) importOnce(ctx context.Context, d *daemon, img *imageFile) error {
	if d.imported[img.path] {
		return nil
	}
	if _, err := e.ctr(ctx, d, "images", "import", img.path); err != nil {
		return err
	}
	if d.imported == nil {
		d.imported = map[string]bool{}
	}
	d.imported[img.path] = true
	return nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// settle writes back every dirty page before a measured write, so that
// what one daemon left in the page cache does not slow the next one's
// fsyncs.
func settle() { syscall.Sync() }

// runSystems runs every selected system row. A row that fails is reported
// (and fails the benchmark) but does not stop the others.
func runSystems(ctx context.Context, e *sysEnv) error {
	for _, s := range systems {
		if !e.o.only.MatchString(s.name) {
			continue
		}
		progress("%s", s.name)
		if err := s.run(ctx, e); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.fail("%s: %v", s.name, err)
			progress("  failed: %v", err)
		}
		for _, d := range e.ds {
			if !d.alive() {
				return fmt.Errorf("%s died:\n%s", d.name, d.logTail())
			}
		}
	}
	return nil
}

// printSystem writes the system table, the phases of ctr run and the targets.
func printSystem(out io.Writer, rep *report) {
	if len(rep.System) > 0 {
		fmt.Fprintf(out, "\nsystem rows (the same ctr %s, or the same Go client, against both; runc %s; ratio = berthd ÷ containerd)\n\n", rep.Versions["ctr"], rep.Versions["runc"])
		rows := [][]string{{"row", "unit", "berthd", "containerd", "ratio", "better", "reference"}}
		for _, r := range rep.System {
			better := "lower"
			if r.Higher {
				better = "higher"
			}
			ref := ""
			if r.RefName != "" {
				ref = fmt.Sprintf("%s %s", r.RefName, num(r.Ref))
			}
			b, c := num(r.Berthd), num(r.Containerd)
			if r.Unit == "" { // a count
				b, c = fmt.Sprintf("%.0f", r.Berthd), fmt.Sprintf("%.0f", r.Containerd)
			}
			rows = append(rows, []string{r.Name, r.Unit, b, c, fmt.Sprintf("%.2fx", r.Ratio), better, ref})
		}
		writeColumns(out, rows)
	}
	for _, t := range rep.Phases {
		fmt.Fprintf(out, "\n%s, where the time goes: median ms from the exec of ctr to each event (the daemon's timestamp)\n\n", t.Title)
		rows := [][]string{{"step", "berthd", "containerd"}}
		for _, p := range t.Rows {
			rows = append(rows, []string{p.Step, ms(p.BerthdMs), ms(p.Containerd)})
		}
		writeColumns(out, rows)
	}
	if len(rep.Targets) > 0 {
		fmt.Fprintf(out, "\ntargets\n\n")
		rows := [][]string{{"row", "goal", "this run", "met"}}
		for _, t := range rep.Targets {
			met := "MISSED"
			if t.Met {
				met = "met"
			}
			rows = append(rows, []string{t.Row, t.Goal, fmt.Sprintf("%.3f", t.Value), met})
		}
		writeColumns(out, rows)
	}
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func ms(v float64) string {
	if v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

// newSysEnv prepares the shared state: the tag and the FIFO directory.
func newSysEnv(o *options, rep *report, dir string) (*sysEnv, error) {
	if err := os.MkdirAll(dir+"/fifo", 0o700); err != nil {
		return nil, err
	}
	return &sysEnv{o: o, rep: rep, dir: dir, tag: fmt.Sprintf("bb%d", os.Getpid())}, nil
}

// writeImages writes the busybox archive, and the big image when a row
// that imports it is selected, and records the tools' versions.
func (e *sysEnv) writeImages(ctx context.Context) error {
	for name, bin := range map[string]string{"ctr": e.o.Ctr, "runc": e.o.Runc} {
		if out, err := exec.Command(bin, "--version").Output(); err == nil {
			e.rep.Versions[name] = strings.TrimPrefix(strings.Fields(strings.SplitN(string(out), "\n", 2)[0] + " ? ? ?")[2], "v")
		}
	}
	var err error
	if e.busybox, err = writeBusybox(e.dir); err != nil {
		return err
	}
	for _, s := range systems {
		if strings.HasPrefix(s.name, "images.Import") && e.o.only.MatchString(s.name) {
			progress("writing the big image (about 200 MB of files, 85 MB gzip)")
			start := time.Now()
			if e.big, err = writeBigImage(ctx, e.dir); err != nil {
				return fmt.Errorf("big image: %w", err)
			}
			progress("  %d files, %.1f MB tar, %.1f MB gzip layer, in %.1fs", e.big.files, float64(e.big.rawSize)/1e6, float64(e.big.gzBytes)/1e6, time.Since(start).Seconds())
			e.rep.BigImage = map[string]any{"files": e.big.files, "tar_bytes": e.big.rawSize, "gzip_bytes": e.big.gzBytes, "layer": e.big.layer.String()}
			break
		}
	}
	return nil
}
