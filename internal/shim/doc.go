// Package shim is containerd-shim-berth-v2: a runtime v2 shim that serves
// containerd's task API (containerd.task.v2.Task and containerd.task.v3.Task,
// one method table under both names) over ttrpc and drives runc, or any
// runc-compatible runtime named in the runc options, through go-runc.
//
// # Command line (as containerd and berthd invoke it)
//
//	containerd-shim-berth-v2 -namespace NS -address GRPC -publish-binary BIN -id ID [-debug] start
//	containerd-shim-berth-v2 -namespace NS -address GRPC -publish-binary BIN -id ID -bundle DIR [-debug] delete
//
// start runs with cwd = bundle and the task options (a protobuf Any) on stdin.
// It creates the task socket, re-executes itself without a verb as a
// daemon in a new session (the listener is handed down as fd 3), writes the
// socket's address into <bundle>/address and prints it, plain
// "unix:///…", on stdout. delete cleans up after a dead shim and prints a
// protobuf containerd.task.v2.DeleteResponse on stdout.
//
// # Files
//
//	<state>/s/<sha256(address/ns/id)>   task socket (0600, dir 0700); /run/berth/s/… when
//	                                    the state path would overflow sun_path
//	<bundle>/address                    "unix://<socket>", written by start
//	<bundle>/options.json               the runc options of the task (read by delete)
//	<bundle>/init.pid, <exec>.pid       written by runc
//	<bundle>/log.json                   runc's log; its last error becomes the RPC's message
//	<bundle>/init.exit                  "<status> <unix-nanos>" once init has exited
//	<bundle>/log                        fifo made by the daemon; the server's stdout and stderr
//
// <state> is the daemon's state directory, found from the bundle path
// <state>/io.containerd.runtime.v2.task/<ns>/<id>. runc's root defaults to
// <state>/runc/<ns> (the options' root, plus /<ns>, when given).
//
// # Invariants
//
//   - The server is a child subreaper and the only caller of wait4: one reaper
//     goroutine reaps every child and routes each exit either to the go-runc
//     command that started it (registered under a lock held across fork, so
//     no exit can be misrouted) or to the task service.
//   - Every container process's exit is reported once, and its events keep
//     the order create/exec-added, start/exec-started, exit, delete: an exit
//     that arrives while the start of its process is in flight (its pid not yet
//     known, or its TaskStart not yet queued) is held and replayed after it.
//     An init exit is held until the container's running execs have exited.
//   - Events are queued without blocking the task API and forwarded to
//     $TTRPC_ADDRESS in order, retried while the daemon is away; Shutdown and
//     SIGTERM flush the queue, bounded by a timeout.
//   - The rootfs mounted at Create is unmounted by Delete, by a failed
//     Create, and by the delete command.
//   - Errors carry errdefs classes and are converted to ttrpc status once, in
//     the method table.
//
// Rootfs mounts go through internal/mount (overlay, bind, long lowerdirs).
//
// # Memory
//
// A shim lives as long as its container and mostly waits, so it is kept
// small: ttrpc only (no gRPC), one P from the start (GOMAXPROCS=1 in its
// environment), no heap profiling and no cgroup-driven GOMAXPROCS
// (GODEBUG; both set by whoever launches the server, bootstrap.ServerEnv), no
// parent-death signal on runc (it would pin a thread per call), 8 KiB copy
// buffers, no blocking FIFO opens, the events connection closed when idle,
// and memory returned to the system after a burst of calls that ran the
// collector. Build it with CGO_ENABLED=0 to drop libc from its mappings.
package shim
