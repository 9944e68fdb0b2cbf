package shim

import (
	"context"
	"time"

	"github.com/berth-dev/berth/internal/memtrim"
	task "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
)

// Task service names: v3 (containerd 2.x) has the same messages as v2.
const (
	taskServiceV2 = "containerd.task.v2.Task"
	taskServiceV3 = "containerd.task.v3.Task"
)

// unary adapts a typed handler to a ttrpc method; errors are converted to
// status here, once.
func unary[Req any, PReq interface {
	*Req
	proto.Message
}, Resp proto.Message](f func(context.Context, PReq) (Resp, error)) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		req := PReq(new(Req))
		if err := unmarshal(req); err != nil {
			return nil, err
		}
		resp, err := f(ctx, req)
		trimmer.Touch()
		if err != nil {
			return nil, errgrpc.ToGRPC(err)
		}
		return resp, nil
	}
}

// trimmer returns memory to the system once the shim has been quiet for
// a second after a burst of calls: a shim idles for hours.
var trimmer = memtrim.New(time.Second, nil)

// register serves s under both task service names.
func register(srv *ttrpc.Server, s *service) {
	methods := map[string]ttrpc.Method{
		"State":      unary[task.StateRequest](s.State),
		"Create":     unary[task.CreateTaskRequest](s.Create),
		"Start":      unary[task.StartRequest](s.Start),
		"Delete":     unary[task.DeleteRequest](s.Delete),
		"Pids":       unary[task.PidsRequest](s.Pids),
		"Pause":      unary[task.PauseRequest](s.Pause),
		"Resume":     unary[task.ResumeRequest](s.Resume),
		"Checkpoint": unary[task.CheckpointTaskRequest](s.Checkpoint),
		"Kill":       unary[task.KillRequest](s.Kill),
		"Exec":       unary[task.ExecProcessRequest](s.Exec),
		"ResizePty":  unary[task.ResizePtyRequest](s.ResizePty),
		"CloseIO":    unary[task.CloseIORequest](s.CloseIO),
		"Update":     unary[task.UpdateTaskRequest](s.Update),
		"Wait":       unary[task.WaitRequest](s.Wait),
		"Stats":      unary[task.StatsRequest](s.Stats),
		"Connect":    unary[task.ConnectRequest](s.Connect),
		"Shutdown":   unary[task.ShutdownRequest](s.Shutdown),
	}
	srv.RegisterService(taskServiceV2, &ttrpc.ServiceDesc{Methods: methods})
	srv.RegisterService(taskServiceV3, &ttrpc.ServiceDesc{Methods: methods})
}
