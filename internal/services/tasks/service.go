// Package tasks serves containerd.services.tasks.v1.Tasks: a thin edge over
// the runtime manager, which starts shims, and the shims themselves, which
// run the processes. Task events (/tasks/create, start, exit, delete, …)
// are published by the shims, and by the runtime manager for dead shims.
package tasks

import (
	"bytes"
	"context"
	"io"
	"os"

	"fmt"
	"github.com/berth-dev/berth/internal/archive"
	"github.com/berth-dev/berth/internal/content"
	"github.com/containerd/containerd/api/types/runc/options"
	"google.golang.org/protobuf/proto"
	"time"

	"github.com/berth-dev/berth/internal/filters"
	"github.com/berth-dev/berth/internal/metadata"
	"github.com/berth-dev/berth/internal/namespaces"
	"github.com/berth-dev/berth/internal/runtime"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	api "github.com/containerd/containerd/api/services/tasks/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Service answers the Tasks API.
type Service struct {
	api.UnimplementedTasksServer
	containers *metadata.Containers
	content    content.Store
	runtime    *runtime.Manager
}

// New returns the service; cs receives checkpoints.
func New(c *metadata.Containers, cs content.Store, r *runtime.Manager) *Service {
	return &Service{containers: c, content: cs, runtime: r}
}

// RegisterGRPC adds the service to s.
func (s *Service) RegisterGRPC(g *grpc.Server) { api.RegisterTasksServer(g, s) }

// Create starts the container's shim and creates its init process, with the
// rootfs mounts the client passes (the daemon does not look them up).
func (s *Service) Create(ctx context.Context, req *api.CreateTaskRequest) (*api.CreateTaskResponse, error) {
	c, err := s.containers.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	if req.Checkpoint != nil {
		return nil, fmt.Errorf("restoring task %q from a checkpoint is not supported by berth yet: %w", req.ContainerID, errdefs.ErrNotImplemented)
	}
	if req.TaskApiAddress != "" {
		return nil, fmt.Errorf("task %q: an external task API address is not supported: %w", req.ContainerID, errdefs.ErrNotImplemented)
	}
	if c.Spec == nil {
		return nil, fmt.Errorf("container %q has no spec: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	opts := req.Options
	if opts == nil {
		opts = c.Runtime.Options
	}
	rt := c.Runtime.Name
	if req.RuntimePath != "" {
		rt = req.RuntimePath
	}
	_, pid, err := s.runtime.Create(ctx, c.ID, runtime.CreateOpts{
		Spec: c.Spec.Value, Rootfs: req.Rootfs, Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr,
		Terminal: req.Terminal, Runtime: rt, Options: opts,
	})
	if err != nil {
		return nil, err
	}
	return &api.CreateTaskResponse{ContainerID: c.ID, Pid: pid}, nil
}

// Start starts the init process or an exec.
func (s *Service) Start(ctx context.Context, req *api.StartRequest) (*api.StartResponse, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	r, err := s.runtime.Start(ctx, t, req.ExecID)
	if err != nil {
		return nil, shimErr(err)
	}
	return &api.StartResponse{Pid: r.Pid}, nil
}

// Delete removes a stopped task and its shim; FailedPrecondition while it runs.
func (s *Service) Delete(ctx context.Context, req *api.DeleteTaskRequest) (*api.DeleteResponse, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	r, err := s.runtime.Delete(ctx, t)
	if err != nil {
		return nil, err
	}
	return &api.DeleteResponse{ID: t.ID, Pid: r.Pid, ExitStatus: r.ExitStatus, ExitedAt: r.ExitedAt}, nil
}

// DeleteProcess removes a stopped exec.
func (s *Service) DeleteProcess(ctx context.Context, req *api.DeleteProcessRequest) (*api.DeleteResponse, error) {
	if req.ExecID == "" {
		return nil, fmt.Errorf("exec id is required; delete the task itself with Delete: %w", errdefs.ErrInvalidArgument)
	}
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	r, err := t.Shim().Delete(ctx, &taskapi.DeleteRequest{ID: t.ID, ExecID: req.ExecID})
	if err != nil {
		return nil, shimErr(err)
	}
	return &api.DeleteResponse{ID: req.ExecID, Pid: r.Pid, ExitStatus: r.ExitStatus, ExitedAt: r.ExitedAt}, nil
}

func (s *Service) state(ctx context.Context, t *runtime.Task, execID string) (*task.Process, error) {
	st, err := t.Shim().State(ctx, &taskapi.StateRequest{ID: t.ID, ExecID: execID})
	if err != nil {
		return nil, shimErr(err)
	}
	id := t.ID
	if execID != "" {
		id = execID
	}
	return &task.Process{
		ContainerID: t.ID, ID: id, Pid: st.Pid, Status: st.Status,
		Stdin: st.Stdin, Stdout: st.Stdout, Stderr: st.Stderr, Terminal: st.Terminal,
		ExitStatus: st.ExitStatus, ExitedAt: st.ExitedAt,
	}, nil
}

// Get returns the state of the init process or an exec.
func (s *Service) Get(ctx context.Context, req *api.GetRequest) (*api.GetResponse, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	p, err := s.state(ctx, t, req.ExecID)
	if err != nil {
		return nil, err
	}
	return &api.GetResponse{Process: p}, nil
}

// List returns the init processes of the namespace's tasks.
func (s *Service) List(ctx context.Context, req *api.ListTasksRequest) (*api.ListTasksResponse, error) {
	ts, err := s.runtime.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &api.ListTasksResponse{}
	for _, t := range ts {
		p, err := s.state(ctx, t, "")
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue // deleted meanwhile
			}
			return nil, err
		}
		resp.Tasks = append(resp.Tasks, p)
	}
	return resp, nil
}

// Kill signals a process, or all of the task's processes.
func (s *Service) Kill(ctx context.Context, req *api.KillRequest) (*emptypb.Empty, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim().Kill(ctx, &taskapi.KillRequest{ID: t.ID, ExecID: req.ExecID, Signal: req.Signal, All: req.All}); err != nil {
		return nil, shimErr(err)
	}
	return &emptypb.Empty{}, nil
}

// Exec adds a process to a running task.
func (s *Service) Exec(ctx context.Context, req *api.ExecProcessRequest) (*emptypb.Empty, error) {
	if req.ExecID == "" {
		return nil, fmt.Errorf("exec id is required: %w", errdefs.ErrInvalidArgument)
	}
	if req.Spec == nil {
		return nil, fmt.Errorf("exec %q: a process spec is required: %w", req.ExecID, errdefs.ErrInvalidArgument)
	}
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	_, err = t.Shim().Exec(ctx, &taskapi.ExecProcessRequest{
		ID: t.ID, ExecID: req.ExecID, Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, Terminal: req.Terminal, Spec: req.Spec,
	})
	if err != nil {
		return nil, shimErr(err)
	}
	return &emptypb.Empty{}, nil
}

// ResizePty resizes a process's terminal.
func (s *Service) ResizePty(ctx context.Context, req *api.ResizePtyRequest) (*emptypb.Empty, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim().ResizePty(ctx, &taskapi.ResizePtyRequest{ID: t.ID, ExecID: req.ExecID, Width: req.Width, Height: req.Height}); err != nil {
		return nil, shimErr(err)
	}
	return &emptypb.Empty{}, nil
}

// CloseIO closes a process's stdin.
func (s *Service) CloseIO(ctx context.Context, req *api.CloseIORequest) (*emptypb.Empty, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim().CloseIO(ctx, &taskapi.CloseIORequest{ID: t.ID, ExecID: req.ExecID, Stdin: req.Stdin}); err != nil {
		return nil, shimErr(err)
	}
	return &emptypb.Empty{}, nil
}

// Pause freezes the task.
func (s *Service) Pause(ctx context.Context, req *api.PauseTaskRequest) (*emptypb.Empty, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim().Pause(ctx, &taskapi.PauseRequest{ID: t.ID}); err != nil {
		return nil, shimErr(err)
	}
	return &emptypb.Empty{}, nil
}

// Resume thaws the task.
func (s *Service) Resume(ctx context.Context, req *api.ResumeTaskRequest) (*emptypb.Empty, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim().Resume(ctx, &taskapi.ResumeRequest{ID: t.ID}); err != nil {
		return nil, shimErr(err)
	}
	return &emptypb.Empty{}, nil
}

// ListPids lists the task's processes.
func (s *Service) ListPids(ctx context.Context, req *api.ListPidsRequest) (*api.ListPidsResponse, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	r, err := t.Shim().Pids(ctx, &taskapi.PidsRequest{ID: t.ID})
	if err != nil {
		return nil, shimErr(err)
	}
	return &api.ListPidsResponse{Processes: r.Processes}, nil
}

// Media types of a checkpoint in the content store, as containerd's.
const (
	MediaTypeCheckpoint       = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
	MediaTypeCheckpointConfig = "application/vnd.containerd.container.checkpoint.config.v1+proto"
)

// Checkpoint has the shim checkpoint the task with criu. With an image path
// in the options the checkpoint stays there; otherwise, as containerd does,
// it is written to the content store as a tar, with the container's spec,
// and their descriptors are returned.
func (s *Service) Checkpoint(ctx context.Context, req *api.CheckpointTaskRequest) (*api.CheckpointTaskResponse, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	c, err := s.containers.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	var opts options.CheckpointOptions
	if req.Options != nil && len(req.Options.Value) > 0 {
		if err := proto.Unmarshal(req.Options.Value, &opts); err != nil {
			return nil, fmt.Errorf("checkpoint options of %q: %v: %w", req.ContainerID, err, errdefs.ErrInvalidArgument)
		}
	}
	dir := opts.ImagePath
	if dir == "" {
		if dir, err = os.MkdirTemp("", "berth-checkpoint-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	if _, err := t.Shim().Checkpoint(ctx, &taskapi.CheckpointTaskRequest{ID: t.ID, Path: dir, Options: req.Options}); err != nil {
		return nil, shimErr(err)
	}
	if opts.ImagePath != "" {
		return &api.CheckpointTaskResponse{}, nil
	}
	pr, pw := io.Pipe()
	go func() {
		empty, err := os.MkdirTemp("", "berth-empty-")
		if err == nil {
			err = archive.Diff(ctx, empty, dir, pw)
			os.RemoveAll(empty)
		}
		pw.CloseWithError(err)
	}()
	cp, err := s.writeBlob(ctx, "checkpoint-"+t.ID, MediaTypeCheckpoint, pr)
	pr.Close()
	if err != nil {
		return nil, err
	}
	spec, err := proto.Marshal(c.Spec)
	if err != nil {
		return nil, err
	}
	sd, err := s.writeBlob(ctx, "checkpoint-config-"+t.ID, MediaTypeCheckpointConfig, bytes.NewReader(spec))
	if err != nil {
		return nil, err
	}
	return &api.CheckpointTaskResponse{Descriptors: []*types.Descriptor{cp, sd}}, nil
}

func (s *Service) writeBlob(ctx context.Context, ref, mediaType string, r io.Reader) (*types.Descriptor, error) {
	w, err := s.content.Writer(ctx, content.WithRef(ref))
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if err := w.Truncate(0); err != nil {
		return nil, err
	}
	n, err := io.Copy(w, r)
	if err != nil {
		return nil, err
	}
	d := w.Digest()
	if err := w.Commit(ctx, n, d); err != nil && !errdefs.IsAlreadyExists(err) {
		return nil, err
	}
	return &types.Descriptor{MediaType: mediaType, Digest: d.String(), Size: n}, nil
}

// Update changes the task's resources.
func (s *Service) Update(ctx context.Context, req *api.UpdateTaskRequest) (*emptypb.Empty, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	if _, err := t.Shim().Update(ctx, &taskapi.UpdateTaskRequest{ID: t.ID, Resources: req.Resources, Annotations: req.Annotations}); err != nil {
		return nil, shimErr(err)
	}
	return &emptypb.Empty{}, nil
}

// Metrics returns the cgroup metrics of the tasks matching any filter
// (fields: id, namespace).
func (s *Service) Metrics(ctx context.Context, req *api.MetricsRequest) (*api.MetricsResponse, error) {
	f, err := filters.ParseAll(req.Filters...)
	if err != nil {
		return nil, err
	}
	ns, _ := namespaces.Namespace(ctx)
	ts, err := s.runtime.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &api.MetricsResponse{}
	for _, t := range ts {
		match := f.Match(filters.AdapterFunc(func(fp []string) (string, bool) {
			switch {
			case len(fp) == 1 && fp[0] == "id":
				return t.ID, true
			case len(fp) == 1 && fp[0] == "namespace":
				return ns, true
			}
			return "", false
		}))
		if !match {
			continue
		}
		st, err := t.Shim().Stats(ctx, &taskapi.StatsRequest{ID: t.ID})
		if err != nil {
			if errdefs.IsNotFound(shimErr(err)) {
				continue
			}
			return nil, shimErr(err)
		}
		resp.Metrics = append(resp.Metrics, &types.Metric{Timestamp: timestamppb.New(time.Now()), ID: t.ID, Data: st.Stats})
	}
	return resp, nil
}

// Wait blocks until the process exits; it works before Start too.
func (s *Service) Wait(ctx context.Context, req *api.WaitRequest) (*api.WaitResponse, error) {
	t, err := s.runtime.Get(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	r, err := t.Shim().Wait(ctx, &taskapi.WaitRequest{ID: t.ID, ExecID: req.ExecID})
	if err != nil {
		return nil, shimErr(err)
	}
	return &api.WaitResponse{ExitStatus: r.ExitStatus, ExitedAt: r.ExitedAt}, nil
}

func shimErr(err error) error { return runtime.FromShim(err) }
