package main

// berth tasks: the Tasks service as ctr's tasks commands use it (containerd-api-surface.md
// §2.1). A task is a container's running (or exited, not yet deleted) init process and its
// execs; its streams are FIFOs the client makes (stdio.go).

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1stats "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	containersapi "github.com/containerd/containerd/api/services/containers/v1"
	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
)

func init() {
	// berth containers rm first makes sure no task runs: a stopped task is deleted with the
	// container, a live one is refused. Prepended: it must come before the snapshot's removal.
	containerRemoveSteps = append([]func(context.Context, *client, *containersapi.Container) error{removeStoppedTask}, containerRemoveSteps...)
}

func tasksCommand() *cli.Command {
	return &cli.Command{
		Name:    "tasks",
		Aliases: []string{"task", "t"},
		Usage:   "manage tasks: the running processes of containers",
		Subcommands: []*cli.Command{
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list tasks: TASK PID STATUS",
				Flags:   []cli.Flag{quietFlag(), jsonFlag()},
				Action:  tasksList,
			},
			{
				Name:      "start",
				Usage:     "start a container's task and wait for it (berth's streams connected)",
				ArgsUsage: "ID",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "start the task and return"},
					&cli.BoolFlag{Name: "null-io", Usage: "connect no streams"},
					fifoDirFlag(),
				},
				Action: tasksStart,
			},
			{
				Name:      "attach",
				Usage:     "connect to the streams of a running task and wait for it (signals are passed on)",
				ArgsUsage: "ID",
				Action:    tasksAttach,
			},
			{
				Name:      "exec",
				Usage:     "run another process in a running task and wait for it",
				ArgsUsage: "ID COMMAND [ARG…]",
				Description: `The process gets the container's process settings (environment, user, capabilities)
	with COMMAND as its arguments. Flags go before ID.`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "exec-id", Usage: "`ID` of the process (default: a random one)"},
					&cli.BoolFlag{Name: "tty", Aliases: []string{"t"}, Usage: "give the process a terminal"},
					&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "start the process and return"},
					&cli.StringFlag{Name: "cwd", Usage: "working `DIR` of the process"},
					&cli.GenericFlag{Name: "env", Aliases: []string{"e"}, Usage: "set an environment variable `KEY=VALUE` (repeatable)", Value: &repeatedFlag{}},
					&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as numeric `UID[:GID]`"},
					&cli.BoolFlag{Name: "null-io", Usage: "connect no streams"},
					fifoDirFlag(),
				},
				Action: tasksExec,
			},
			{
				Name:      "kill",
				Usage:     "signal a task (default: the container's stop signal, else SIGTERM)",
				ArgsUsage: "ID [ID…]",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "signal", Aliases: []string{"s"}, Usage: "`SIGNAL` by name (SIGKILL, KILL) or number (9)"},
					&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "signal every process of the task"},
					&cli.StringFlag{Name: "exec-id", Usage: "signal the exec `ID` instead"},
				},
				Action: tasksKill,
			},
			{
				Name:      "ps",
				Usage:     "list a task's processes: PID INFO",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{jsonFlag()},
				Action:    tasksPs,
			},
			{
				Name:      "pause",
				Usage:     "freeze tasks",
				ArgsUsage: "ID [ID…]",
				Action:    tasksPause,
			},
			{
				Name:      "resume",
				Usage:     "thaw paused tasks",
				ArgsUsage: "ID [ID…]",
				Action:    tasksResume,
			},
			{
				Name:      "metrics",
				Aliases:   []string{"metric", "stats"},
				Usage:     "print a task's cgroup metrics: memory, cpu, pids",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{jsonFlag()},
				Action:    tasksMetrics,
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove", "delete", "del"},
				Usage:     "delete exited tasks (their exit status is printed when not 0)",
				ArgsUsage: "ID [ID…]",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "kill running tasks first"},
					&cli.StringFlag{Name: "exec-id", Usage: "delete the exited exec `ID` instead"},
				},
				Action: tasksRemove,
			},
		},
	}
}

// statusName is a task status as ctr prints it: RUNNING, STOPPED, PAUSED, …
func statusName(s task.Status) string {
	if n, ok := task.Status_name[int32(s)]; ok {
		return n
	}
	return "UNKNOWN"
}

// taskView is a task's process as --json prints it.
type taskView struct {
	ID         string     `json:"id"`
	Pid        uint32     `json:"pid"`
	Status     string     `json:"status"`
	Stdin      string     `json:"stdin,omitempty"`
	Stdout     string     `json:"stdout,omitempty"`
	Stderr     string     `json:"stderr,omitempty"`
	Terminal   bool       `json:"terminal,omitempty"`
	ExitStatus *uint32    `json:"exit_status,omitempty"`
	ExitedAt   *time.Time `json:"exited_at,omitempty"`
}

func newTaskView(p *task.Process) taskView {
	v := taskView{
		ID: p.GetID(), Pid: p.GetPid(), Status: statusName(p.GetStatus()),
		Stdin: p.GetStdin(), Stdout: p.GetStdout(), Stderr: p.GetStderr(), Terminal: p.GetTerminal(),
	}
	if v.ID == "" {
		v.ID = p.GetContainerID()
	}
	if p.GetStatus() == task.Status_STOPPED {
		st := p.GetExitStatus()
		v.ExitStatus = &st
		v.ExitedAt = jsonTime(p.GetExitedAt())
	}
	return v
}

func tasksList(c *cli.Context) error {
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := tasksapi.NewTasksClient(cl.conn).List(ctx, &tasksapi.ListTasksRequest{})
	if err != nil {
		return cl.fail(err, "list", cl.object("tasks", ""))
	}
	w := c.App.Writer
	switch {
	case wantJSON(c):
		views := make([]taskView, 0, len(resp.GetTasks()))
		for _, p := range resp.GetTasks() {
			views = append(views, newTaskView(p))
		}
		return printJSON(w, views)
	case c.Bool("quiet"):
		for _, p := range resp.GetTasks() {
			fmt.Fprintln(w, newTaskView(p).ID)
		}
		return nil
	}
	t := newTable(w, "TASK", "PID", "STATUS")
	for _, p := range resp.GetTasks() {
		v := newTaskView(p)
		t.row(v.ID, strconv.FormatUint(uint64(v.Pid), 10), v.Status)
	}
	return t.flush()
}

// oneID returns the single ID argument of c.
func oneID(c *cli.Context, what string) (string, error) {
	if c.NArg() != 1 {
		return "", usagef(c, "expected one %s", what)
	}
	return c.Args().First(), nil
}

// getContainer calls Containers.Get.
func getContainer(ctx context.Context, cl *client, id string) (*containersapi.Container, error) {
	resp, err := containersapi.NewContainersClient(cl.conn).Get(ctx, &containersapi.GetContainerRequest{ID: id})
	if err != nil {
		return nil, cl.fail(err, "get", cl.object("container", id))
	}
	return resp.GetContainer(), nil
}

// tasksStart is ctr's tasks start: Containers.Get → Snapshots.Mounts → FIFOs → Tasks.Create →
// Wait ‖ Start → (unless -d) exit → Tasks.Delete; berth exits with the task's status.
func tasksStart(c *cli.Context) error {
	id, err := oneID(c, "container ID")
	if err != nil {
		return err
	}
	return withStatus(c, func(ctx context.Context, cl *client) (uint32, error) {
		ctr, err := getContainer(ctx, cl, id)
		if err != nil {
			return 0, err
		}
		if !c.Bool("detach") && !c.Bool("null-io") && specTerminal(ctr) && !isTerminal(os.Stdin) {
			return 0, fmt.Errorf("container %q has a terminal: start it from a terminal, or detached with: berth tasks start -d %s", id, id)
		}
		return startTask(ctx, cl, ctr, taskStart{
			detach: c.Bool("detach"), nullIO: c.Bool("null-io"), fifoDir: c.String("fifo-dir"),
			stdout: c.App.Writer, stderr: c.App.ErrWriter,
		})
	})
}

// specTerminal reports whether the container's process has a terminal.
func specTerminal(ctr *containersapi.Container) bool {
	var spec specs.Spec
	return json.Unmarshal(ctr.GetSpec().GetValue(), &spec) == nil && spec.Process != nil && spec.Process.Terminal
}

// tasksAttach is ctr's tasks attach: Tasks.Get for the FIFO paths → open them here → Wait,
// passing signals (and window sizes) on → Tasks.Delete once the task has exited; berth exits
// with its status.
func tasksAttach(c *cli.Context) error {
	id, err := oneID(c, "container ID")
	if err != nil {
		return err
	}
	return withStatus(c, func(ctx context.Context, cl *client) (uint32, error) {
		api := tasksapi.NewTasksClient(cl.conn)
		resp, err := api.Get(ctx, &tasksapi.GetRequest{ContainerID: id})
		if err != nil {
			return 0, cl.fail(err, "attach to", cl.object("task", id))
		}
		proc := resp.GetProcess()
		fifos := &fifoSet{stdin: proc.GetStdin(), stdout: proc.GetStdout(), stderr: proc.GetStderr(), terminal: proc.GetTerminal()}
		for _, p := range []string{fifos.stdin, fifos.stdout, fifos.stderr} {
			if p != "" && (strings.Contains(p, "://") && !strings.HasPrefix(p, "fifo://")) {
				return 0, fmt.Errorf("task %q writes its output to %s, not to FIFOs: there is nothing to attach to", id, p)
			}
		}
		fifos.stdin = strings.TrimPrefix(fifos.stdin, "fifo://")
		fifos.stdout = strings.TrimPrefix(fifos.stdout, "fifo://")
		fifos.stderr = strings.TrimPrefix(fifos.stderr, "fifo://")
		if fifos.stdin == "" && fifos.stdout == "" && fifos.stderr == "" {
			return 0, fmt.Errorf("task %q was started without streams (--null-io): there is nothing to attach to", id)
		}
		p := &localProcess{id: id, fifos: fifos, gone: make(chan struct{})}
		defer p.close(true)
		if fifos.terminal && isTerminal(os.Stdin) {
			if p.term, err = openLocalTerminal(); err != nil {
				return 0, err
			}
		}
		// as ctr's attach: the end of berth's input is not the end of the task's (no CloseIO)
		if p.io, err = openClientIO(fifos, processStreams{stdin: os.Stdin, stdout: c.App.Writer, stderr: c.App.ErrWriter}, false, nil); err != nil {
			return 0, err
		}
		waitc := make(chan processExit, 1)
		go func() {
			r, err := api.Wait(ctx, &tasksapi.WaitRequest{ContainerID: id})
			waitc <- processExit{r.GetExitStatus(), err}
		}()
		signals := newSignalForwarder()
		defer signals.stop()
		r := p.waitExit(ctx, api, waitc, signals)
		if r.err != nil {
			return 0, cl.fail(r.err, "wait for", cl.object("task", id))
		}
		if _, err := api.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: id}); err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) {
			p.drain()
			return r.status, cl.fail(err, "remove", cl.object("task", id))
		}
		p.drain()
		p.io.close()
		removeTaskFIFOs("", proc.GetStdin(), proc.GetStdout(), proc.GetStderr())
		return r.status, nil
	})
}

// processSpecJSON is the container's process with args (and the flags' changes) applied, as
// Tasks.Exec's spec.
func execProcessSpec(ctr *containersapi.Container, args []string, tty bool, cwd string, env []string, user string) (*anypb.Any, error) {
	var spec specs.Spec
	if err := json.Unmarshal(ctr.GetSpec().GetValue(), &spec); err != nil || spec.Process == nil {
		return nil, fmt.Errorf("container %q has no OCI process spec to exec with", ctr.GetID())
	}
	p := *spec.Process
	p.Args = args
	p.Terminal = tty
	if cwd != "" {
		p.Cwd = cwd
	}
	p.Env = mergeEnv(p.Env, env)
	if tty {
		p.Env = mergeEnv(p.Env, []string{"TERM=xterm"})
	}
	if user != "" {
		name, group, hasGroup := strings.Cut(user, ":")
		uid, err := strconv.ParseUint(name, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--user %q: exec takes a numeric UID[:GID]", user)
		}
		p.User = specs.User{UID: uint32(uid)}
		if hasGroup {
			gid, err := strconv.ParseUint(group, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("--user %q: exec takes a numeric UID[:GID]", user)
			}
			p.User.GID = uint32(gid)
		}
	}
	b, err := json.Marshal(&p)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: processTypeURL, Value: b}, nil
}

// tasksExec is ctr's tasks exec: Containers.Get (the process spec) → FIFOs → Tasks.Exec →
// Wait ‖ Start → exit → Tasks.DeleteProcess; berth exits with the process's status.
func tasksExec(c *cli.Context) error {
	if err := requireArgs(c, 2, "a container ID and a COMMAND"); err != nil {
		return err
	}
	id, args := c.Args().First(), c.Args().Tail()
	execID := c.String("exec-id")
	if execID == "" {
		execID = "exec-" + newLeaseID()
	}
	tty, detach, nullIO := c.Bool("tty"), c.Bool("detach"), c.Bool("null-io")
	if tty && nullIO {
		return usagef(c, "--tty and --null-io cannot be used together")
	}
	if tty && !detach && !isTerminal(os.Stdin) {
		return usagef(c, "--tty needs a terminal on stdin (run berth from a terminal, or drop -t)")
	}
	for _, e := range repeated(c, "env") {
		if k, _, _ := strings.Cut(e, "="); k == "" {
			return usagef(c, "invalid --env %q: expected KEY=VALUE", e)
		}
	}
	return withStatus(c, func(ctx context.Context, cl *client) (uint32, error) {
		ctr, err := getContainer(ctx, cl, id)
		if err != nil {
			return 0, err
		}
		spec, err := execProcessSpec(ctr, args, tty, c.String("cwd"), repeated(c, "env"), c.String("user"))
		if err != nil {
			return 0, err
		}
		o := taskStart{detach: detach, nullIO: nullIO, fifoDir: c.String("fifo-dir"), stdout: c.App.Writer, stderr: c.App.ErrWriter}
		p, err := newLocalProcess(id, execID, tty && !detach, tty, o)
		if err != nil {
			return 0, err
		}
		defer p.close(detach)
		api := tasksapi.NewTasksClient(cl.conn)
		_, err = api.Exec(ctx, &tasksapi.ExecProcessRequest{
			ContainerID: id, ExecID: execID, Terminal: tty, Spec: spec,
			Stdin: p.fifos.stdin, Stdout: p.fifos.stdout, Stderr: p.fifos.stderr,
		})
		if err != nil {
			return 0, cl.fail(err, "exec in", cl.object("task", id),
				when(errdefs.ErrAlreadyExists, fmt.Sprintf("already has a process %q: choose another --exec-id", execID)))
		}
		p.created(ctx, api)
		status, err := p.follow(ctx, cl, api, detach)
		if detach {
			return 0, err
		}
		if _, derr := api.DeleteProcess(ctx, &tasksapi.DeleteProcessRequest{ContainerID: id, ExecID: execID}); derr != nil && err == nil {
			err = cl.fail(derr, "remove", cl.object("process", execID))
		}
		p.drain()
		return status, err
	})
}

// parseSignal takes SIGKILL, KILL, kill or 9.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("invalid signal number %d", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q (use a name like SIGTERM or a number)", s)
}

// tasksKill calls Tasks.Kill; without -s the signal is the container's stop signal label.
func tasksKill(c *cli.Context) error {
	var sig syscall.Signal
	if s := c.String("signal"); s != "" {
		var err error
		if sig, err = parseSignal(s); err != nil {
			return usagef(c, "%v", err)
		}
	}
	return forEachArg(c, "at least one container ID", func(cl *client, ctx context.Context, id string) error {
		api := tasksapi.NewTasksClient(cl.conn)
		s := sig
		if s == 0 {
			s = syscall.SIGTERM
			if ctr, err := getContainer(ctx, cl, id); err == nil {
				if label := ctr.GetLabels()[labelStopSignal]; label != "" {
					if ls, err := parseSignal(label); err == nil {
						s = ls
					}
				}
			}
		}
		_, err := api.Kill(ctx, &tasksapi.KillRequest{ContainerID: id, ExecID: c.String("exec-id"), Signal: uint32(s), All: c.Bool("all")})
		return cl.fail(err, "signal", cl.object("task", id),
			when(errdefs.ErrFailedPrecondition, "is not running: nothing to signal"))
	})
}

// psView is a process of a task as --json prints it.
type psView struct {
	Pid  uint32          `json:"pid"`
	Info json.RawMessage `json:"info,omitempty"`
}

// tasksPs calls Tasks.ListPids; INFO is the exec ID of exec processes (runc's ProcessDetails).
func tasksPs(c *cli.Context) error {
	id, err := oneID(c, "container ID")
	if err != nil {
		return err
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := tasksapi.NewTasksClient(cl.conn).ListPids(ctx, &tasksapi.ListPidsRequest{ContainerID: id})
	if err != nil {
		return cl.fail(err, "list processes of", cl.object("task", id))
	}
	w := c.App.Writer
	if wantJSON(c) {
		views := make([]psView, 0, len(resp.GetProcesses()))
		for _, p := range resp.GetProcesses() {
			views = append(views, psView{Pid: p.GetPid(), Info: anyJSON(p.GetInfo())})
		}
		return printJSON(w, views)
	}
	t := newTable(w, "PID", "INFO")
	for _, p := range resp.GetProcesses() {
		info := ""
		if a := p.GetInfo(); a != nil {
			var d runcoptions.ProcessDetails
			if a.GetTypeUrl() == "containerd.runc.v1.ProcessDetails" && proto.Unmarshal(a.GetValue(), &d) == nil {
				info = "exec " + d.GetExecID()
			} else {
				info = string(anyJSON(a))
			}
		}
		t.row(strconv.FormatUint(uint64(p.GetPid()), 10), info)
	}
	return t.flush()
}

func tasksPause(c *cli.Context) error {
	return forEachArg(c, "at least one container ID", func(cl *client, ctx context.Context, id string) error {
		api := tasksapi.NewTasksClient(cl.conn)
		_, err := api.Pause(ctx, &tasksapi.PauseTaskRequest{ContainerID: id})
		return cl.fail(err, "pause", cl.object("task", id), when(errdefs.ErrFailedPrecondition, "is not running: only running tasks can be paused"))
	})
}

func tasksResume(c *cli.Context) error {
	return forEachArg(c, "at least one container ID", func(cl *client, ctx context.Context, id string) error {
		api := tasksapi.NewTasksClient(cl.conn)
		_, err := api.Resume(ctx, &tasksapi.ResumeTaskRequest{ContainerID: id})
		return cl.fail(err, "resume", cl.object("task", id), when(errdefs.ErrFailedPrecondition, "is not paused: only paused tasks can be resumed"))
	})
}

// metricRow is one line of berth tasks metrics.
type metricRow struct{ name, value string }

// unlimited is where a cgroup limit stops meaning anything (v1's "no limit" is just below
// 2^63, v2's "max" is 2^64-1).
const unlimited = uint64(math.MaxInt64) / 2

func memoryValue(n uint64) string {
	if n >= unlimited {
		return "unlimited"
	}
	return fmt.Sprintf("%s (%d)", byteSize(int64(n)), n)
}

func limitValue(n uint64) string {
	if n == 0 || n >= unlimited {
		return "unlimited"
	}
	return strconv.FormatUint(n, 10)
}

// metricRows summarises cgroup v1 or v2 metrics; the type URL says which.
func metricRows(a *anypb.Any) ([]metricRow, proto.Message, error) {
	switch a.GetTypeUrl() {
	case "io.containerd.cgroups.v1.Metrics":
		var m v1stats.Metrics
		if err := proto.Unmarshal(a.GetValue(), &m); err != nil {
			return nil, nil, err
		}
		mem, cpu := m.GetMemory(), m.GetCPU().GetUsage()
		return []metricRow{
			{"memory.usage", memoryValue(mem.GetUsage().GetUsage())},
			{"memory.limit", memoryValue(mem.GetUsage().GetLimit())},
			{"memory.max_usage", memoryValue(mem.GetUsage().GetMax())},
			{"memory.rss", memoryValue(mem.GetRSS())},
			{"memory.cache", memoryValue(mem.GetCache())},
			{"cpu.usage", time.Duration(cpu.GetTotal()).String()},
			{"cpu.user", time.Duration(cpu.GetUser()).String()},
			{"cpu.system", time.Duration(cpu.GetKernel()).String()},
			{"pids.current", strconv.FormatUint(m.GetPids().GetCurrent(), 10)},
			{"pids.limit", limitValue(m.GetPids().GetLimit())},
		}, &m, nil
	case "io.containerd.cgroups.v2.Metrics":
		var m v2stats.Metrics
		if err := proto.Unmarshal(a.GetValue(), &m); err != nil {
			return nil, nil, err
		}
		mem, cpu := m.GetMemory(), m.GetCPU()
		return []metricRow{
			{"memory.usage", memoryValue(mem.GetUsage())},
			{"memory.limit", memoryValue(mem.GetUsageLimit())},
			{"memory.anon", memoryValue(mem.GetAnon())},
			{"memory.file", memoryValue(mem.GetFile())},
			{"cpu.usage", (time.Duration(cpu.GetUsageUsec()) * time.Microsecond).String()},
			{"cpu.user", (time.Duration(cpu.GetUserUsec()) * time.Microsecond).String()},
			{"cpu.system", (time.Duration(cpu.GetSystemUsec()) * time.Microsecond).String()},
			{"pids.current", strconv.FormatUint(m.GetPids().GetCurrent(), 10)},
			{"pids.limit", limitValue(m.GetPids().GetLimit())},
		}, &m, nil
	}
	return nil, nil, fmt.Errorf("metrics of type %q are not known to berth", a.GetTypeUrl())
}

// tasksMetrics calls Tasks.Metrics{filters: id==ID} and prints METRIC VALUE rows.
func tasksMetrics(c *cli.Context) error {
	id, err := oneID(c, "container ID")
	if err != nil {
		return err
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	api := tasksapi.NewTasksClient(cl.conn)
	resp, err := api.Metrics(ctx, &tasksapi.MetricsRequest{Filters: []string{"id==" + id}})
	if err != nil {
		return cl.fail(err, "get metrics of", cl.object("task", id))
	}
	if len(resp.GetMetrics()) == 0 {
		if _, err := api.Get(ctx, &tasksapi.GetRequest{ContainerID: id}); err != nil {
			return cl.fail(err, "get metrics of", cl.object("task", id))
		}
		return fmt.Errorf("task %q in namespace %q has no metrics (has it exited?)", id, cl.namespace)
	}
	m := resp.GetMetrics()[0]
	rows, msg, err := metricRows(m.GetData())
	if err != nil {
		return fmt.Errorf("task %q: %w", id, err)
	}
	w := c.App.Writer
	if wantJSON(c) {
		return printJSON(w, struct {
			ID        string          `json:"id"`
			Timestamp *time.Time      `json:"timestamp,omitempty"`
			Type      string          `json:"type"`
			Metrics   json.RawMessage `json:"metrics"`
		}{m.GetID(), jsonTime(m.GetTimestamp()), m.GetData().GetTypeUrl(), protoJSON(msg)})
	}
	t := newTable(w, "METRIC", "VALUE")
	for _, r := range rows {
		t.row(r.name, r.value)
	}
	return t.flush()
}

// tasksRemove calls Tasks.Delete (Tasks.DeleteProcess with --exec-id); -f kills and waits
// first. The FIFOs berth or ctr made for the task are removed with it.
func tasksRemove(c *cli.Context) error {
	execID, force := c.String("exec-id"), c.Bool("force")
	return forEachArg(c, "at least one container ID", func(cl *client, ctx context.Context, id string) error {
		api := tasksapi.NewTasksClient(cl.conn)
		obj := cl.object("task", id)
		if execID != "" {
			obj = cl.object("process", execID)
		}
		got, err := api.Get(ctx, &tasksapi.GetRequest{ContainerID: id, ExecID: execID})
		if err != nil {
			return cl.fail(err, "remove", obj)
		}
		proc := got.GetProcess()
		if force && proc.GetStatus() != task.Status_STOPPED {
			if err := killAndWait(ctx, cl, api, id, execID, proc.GetStatus()); err != nil {
				return err
			}
		}
		running := fmt.Sprintf("is running: stop it with `berth tasks kill %s` or use `berth tasks rm -f %s`", id, id)
		var status uint32
		if execID != "" {
			resp, err := api.DeleteProcess(ctx, &tasksapi.DeleteProcessRequest{ContainerID: id, ExecID: execID})
			if err != nil {
				return cl.fail(err, "remove", obj, when(errdefs.ErrFailedPrecondition, running))
			}
			status = resp.GetExitStatus()
		} else {
			resp, err := api.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: id})
			if err != nil {
				return cl.fail(err, "remove", obj, when(errdefs.ErrFailedPrecondition, running))
			}
			status = resp.GetExitStatus()
		}
		removeTaskFIFOs("", proc.GetStdin(), proc.GetStdout(), proc.GetStderr())
		if status != 0 {
			name := id
			if execID != "" {
				name = id + "/" + execID
			}
			fmt.Fprintf(c.App.Writer, "%s: exit status %d\n", name, status)
		}
		return nil
	})
}

// killAndWait sends SIGKILL (to all the task's processes) and waits, at most 30s, for the
// exit; a paused task is thawed so that it can die.
func killAndWait(ctx context.Context, cl *client, api tasksapi.TasksClient, id, execID string, st task.Status) error {
	obj := cl.object("task", id)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	waitc := make(chan error, 1)
	go func() {
		_, err := api.Wait(wctx, &tasksapi.WaitRequest{ContainerID: id, ExecID: execID})
		waitc <- err
	}()
	_, err := api.Kill(ctx, &tasksapi.KillRequest{ContainerID: id, ExecID: execID, Signal: uint32(syscall.SIGKILL), All: execID == ""})
	if err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) && !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		return cl.fail(err, "kill", obj)
	}
	if st == task.Status_PAUSED || st == task.Status_PAUSING {
		_, _ = api.Resume(ctx, &tasksapi.ResumeTaskRequest{ContainerID: id})
	}
	if err := <-waitc; err != nil {
		return cl.fail(err, "wait for", obj)
	}
	return nil
}

// removeStoppedTask is the containers rm step: no task is fine, a stopped one is deleted, a
// live one refused.
func removeStoppedTask(ctx context.Context, cl *client, c *containersapi.Container) error {
	api := tasksapi.NewTasksClient(cl.conn)
	resp, err := api.Get(ctx, &tasksapi.GetRequest{ContainerID: c.GetID()})
	if err != nil {
		if errdefs.IsNotFound(errgrpc.ToNative(err)) {
			return nil
		}
		return cl.fail(err, "get", cl.object("task", c.GetID()))
	}
	proc := resp.GetProcess()
	if proc.GetStatus() != task.Status_STOPPED {
		return fmt.Errorf("container %q in namespace %q has a %s task: stop it first with `berth tasks kill %s`, or use `berth tasks rm -f %s`",
			c.GetID(), cl.namespace, strings.ToLower(statusName(proc.GetStatus())), c.GetID(), c.GetID())
	}
	if _, err := api.Delete(ctx, &tasksapi.DeleteTaskRequest{ContainerID: c.GetID()}); err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		return cl.fail(err, "remove", cl.object("task", c.GetID()))
	}
	removeTaskFIFOs("", proc.GetStdin(), proc.GetStdout(), proc.GetStderr())
	return nil
}
