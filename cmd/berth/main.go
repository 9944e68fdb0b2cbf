// Command berth is the command line of berthd. It speaks containerd's gRPC API, so it also
// drives containerd.
//
// Layout: this file holds the app, the global flags, the connection and the error rendering;
// output.go the tables and JSON; every command group has its own file (version.go,
// plugins.go, namespaces.go, containers.go, events.go, …) and registers itself in commands.
//
// A command group follows one pattern:
//
//	cl, ctx, err := connect(c)      // dial, namespace in the outgoing metadata
//	if err != nil { return err }
//	defer cl.Close()
//	_, err = containers.NewContainersClient(cl.conn).Get(ctx, req)
//	if err != nil { return cl.fail(err, "get", cl.object("container", id)) }
//
// Errors are converted from gRPC once (fail) and rendered once (render), naming the object
// and saying what to do. Usage errors (usagef) are returned before any connection is made.
package main

import (
	"context"
	"errors"
	"fmt"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// version is the client version; set at link time with -ldflags "-X main.version=…".
var version = ""

const (
	defaultAddress   = "/run/berth/berthd.sock"
	defaultNamespace = "default"
	maxMsgSize       = 16 << 20 // containerd's limit, both ways
)

// commands lists every command group, in the order help shows them. Each is built anew for
// every app: urfave/cli writes into the commands it runs.
var commands = []func() *cli.Command{
	versionCommand,
	pluginsCommand,
	namespacesCommand,
	imagesCommand,
	contentCommand,
	containersCommand,
	runCommand,
	tasksCommand,
	snapshotsCommand,
	leasesCommand,
	eventsCommand,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit status: 0 on success, 1 when a
// request failed, 2 on a usage error, 130 when interrupted (events ends there with 0).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return 130
	}
	fmt.Fprintln(stderr, "berth: "+render(err))
	var u *usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := cli.NewApp()
	app.Name = "berth"
	app.Usage = "command line for berthd (and any containerd-compatible daemon)"
	app.Version = clientVersion()
	app.Writer = stdout
	app.ErrWriter = stderr
	app.EnableBashCompletion = true
	app.HideHelpCommand = true
	app.Flags = []cli.Flag{
		&cli.StringFlag{
			Name:    "address",
			Aliases: []string{"a"},
			Usage:   "berthd socket `PATH` [$BERTH_ADDRESS, $CONTAINERD_ADDRESS]",
			Value:   fromEnv(defaultAddress, "BERTH_ADDRESS", "CONTAINERD_ADDRESS"),
		},
		&cli.StringFlag{
			Name:    "namespace",
			Aliases: []string{"n"},
			Usage:   "`NAMESPACE` of the objects to work on [$BERTH_NAMESPACE, $CONTAINERD_NAMESPACE]",
			Value:   fromEnv(defaultNamespace, "BERTH_NAMESPACE", "CONTAINERD_NAMESPACE"),
		},
		&cli.DurationFlag{
			Name:  "timeout",
			Usage: "give up connecting to berthd after `DURATION`",
			Value: 10 * time.Second,
		},
		jsonFlag(),
	}
	for _, cmd := range commands {
		app.Commands = append(app.Commands, cmd())
	}
	app.Action = func(c *cli.Context) error {
		if c.NArg() == 0 {
			return cli.ShowAppHelp(c)
		}
		return usagef(c, "unknown command %q", c.Args().First())
	}
	app.ExitErrHandler = func(*cli.Context, error) {} // run renders errors and picks the status
	app.OnUsageError = onUsageError
	setUsageErrors(app.Commands)
	return app
}

// onUsageError turns the parser's complaints (unknown flags, bad values) into usage errors.
func onUsageError(c *cli.Context, err error, _ bool) error {
	return usagef(c, "%v", err)
}

// setUsageErrors makes every command report its usage errors, and groups reject unknown
// subcommands (the parser would print help and succeed).
func setUsageErrors(cmds []*cli.Command) {
	for _, cmd := range cmds {
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = onUsageError
		}
		if len(cmd.Subcommands) > 0 && cmd.Action == nil {
			cmd.Action = func(c *cli.Context) error {
				if c.NArg() == 0 {
					return cli.ShowSubcommandHelp(c)
				}
				return usagef(c, "unknown command %q", c.Args().First())
			}
		}
		setUsageErrors(cmd.Subcommands)
	}
}

// fromEnv is the first non-empty environment variable of names, or def.
func fromEnv(def string, names ...string) string {
	for _, name := range names {
		if v := os.Getenv(name); v != "" {
			return v
		}
	}
	return def
}

func clientVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// usageError is a command line the command cannot run: it says what was expected.
type usageError struct {
	command string // "containers rm"
	usage   string // "ID [ID…]"
	msg     string
}

func (e *usageError) Error() string {
	s := e.msg
	if e.command != "" {
		s = e.command + ": " + s
	}
	switch {
	case e.usage != "":
		s += " (usage: berth " + e.command + " " + e.usage + ")"
	case e.command != "":
		s += " (see: berth " + e.command + " --help)"
	default:
		s += " (see: berth --help)"
	}
	return s
}

// usagef reports a usage error of the command c.
func usagef(c *cli.Context, format string, args ...any) error {
	e := &usageError{msg: fmt.Sprintf(format, args...)}
	if c != nil {
		e.command = commandPath(c)
		if e.command != "" && c.Command != nil {
			e.usage = c.Command.ArgsUsage
		}
	}
	return e
}

// commandPath is the command's words after "berth", e.g. "containers rm".
func commandPath(c *cli.Context) string {
	if c.Command == nil {
		return ""
	}
	path := c.Command.HelpName
	if c.App != nil {
		path = strings.TrimPrefix(path, c.App.HelpName)
	}
	return strings.TrimSpace(path)
}

// requireArgs returns a usage error unless c has at least min positional arguments; what
// names them, e.g. "a container ID".
func requireArgs(c *cli.Context, min int, what string) error {
	if c.NArg() < min {
		return usagef(c, "expected %s", what)
	}
	return nil
}

// parseLabels parses KEY=VALUE arguments; "KEY=" maps KEY to "" (which removes the label in
// an update).
func parseLabels(args []string) (map[string]string, error) {
	labels := make(map[string]string, len(args))
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if strings.HasPrefix(arg, "-") {
			return nil, fmt.Errorf("flag %q must come before the arguments", arg)
		}
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid label %q: expected KEY=VALUE (KEY= removes the label)", arg)
		}
		labels[k] = v
	}
	return labels, nil
}

// client is a connection to berthd and the namespace the command works in.
type client struct {
	conn      *grpc.ClientConn
	address   string
	namespace string
}

// connect dials berthd at --address within --timeout and returns the client and a context
// that carries --namespace in the outgoing metadata.
func connect(c *cli.Context) (*client, context.Context, error) {
	address := strings.TrimPrefix(c.String("address"), "unix://")
	ns := c.String("namespace")
	if address == "" {
		return nil, nil, usagef(nil, "empty address: pass --address PATH (default %s)", defaultAddress)
	}
	if ns == "" {
		return nil, nil, usagef(nil, "empty namespace: pass --namespace NAME (default %s)", defaultNamespace)
	}
	conn, err := dial(c.Context, address, c.Duration("timeout"))
	if err != nil {
		return nil, nil, err
	}
	cl := &client{conn: conn, address: address, namespace: ns}
	return cl, metadata.AppendToOutgoingContext(c.Context, namespaceHeader, ns), nil
}

const namespaceHeader = "containerd-namespace"

// Close closes the connection.
func (cl *client) Close() error { return cl.conn.Close() }

// object names kind id in the client's namespace.
func (cl *client) object(kind, id string) object {
	return object{kind: kind, id: id, namespace: cl.namespace}
}

// dial connects to the unix socket at address and waits until the connection is ready, the
// first attempt fails, or timeout passes.
func dial(ctx context.Context, address string, timeout time.Duration) (*grpc.ClientConn, error) {
	d := &socketDialer{}
	conn, err := grpc.NewClient("passthrough:///"+address,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d.dial),
		grpc.WithAuthority("localhost"),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
	)
	if err != nil {
		return nil, &reachError{address: address, err: err}
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return conn, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			conn.Close()
			return nil, newReachError(address, d.lastError())
		}
		if !conn.WaitForStateChange(wctx, s) {
			conn.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			err := d.lastError()
			if err == nil {
				err = fmt.Errorf("no answer within %s", timeout)
			}
			return nil, newReachError(address, err)
		}
	}
}

// socketDialer dials unix sockets and keeps the last failure, which gRPC hides behind its
// connection state.
type socketDialer struct {
	mu   sync.Mutex
	last error
}

func (d *socketDialer) dial(ctx context.Context, address string) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", address)
	if err != nil {
		d.mu.Lock()
		d.last = err
		d.mu.Unlock()
	}
	return conn, err
}

func (d *socketDialer) lastError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// reachError is a failure to connect to berthd at all.
type reachError struct {
	address string
	err     error
}

func newReachError(address string, err error) *reachError {
	if fi, serr := os.Stat(address); serr == nil && fi.Mode()&fs.ModeSocket == 0 {
		err = fmt.Errorf("%w: %v", syscall.ENOTSOCK, err)
	}
	return &reachError{address: address, err: err}
}

func (e *reachError) Error() string {
	const advice = ": is it running? (start berthd, or pass --address)"
	switch {
	case errors.Is(e.err, syscall.ENOTSOCK):
		return fmt.Sprintf("cannot reach berthd at %s: not a socket (pass --address with berthd's socket)", e.address)
	case errors.Is(e.err, fs.ErrNotExist):
		return fmt.Sprintf("cannot reach berthd at %s (no socket there)%s", e.address, advice)
	case errors.Is(e.err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot reach berthd at %s (connection refused)%s", e.address, advice)
	case errors.Is(e.err, fs.ErrPermission):
		return fmt.Sprintf("cannot reach berthd at %s: permission denied (run berth as root, or get write access to the socket)", e.address)
	case e.err == nil:
		return fmt.Sprintf("cannot reach berthd at %s%s", e.address, advice)
	}
	return fmt.Sprintf("cannot reach berthd at %s (%v)%s", e.address, e.err, advice)
}

func (e *reachError) Unwrap() error { return e.err }

// object names what a request was about, so that its errors can say what to do.
type object struct {
	kind      string // a noun: singular with an id ("container"), plural without ("containers")
	id        string // empty for listings and other requests about no one object
	namespace string // empty for objects outside namespaces (namespaces themselves)
}

func (o object) String() string { return o.name() + o.where() }

// name is `kind "id"`, or the kind alone.
func (o object) name() string {
	if o.id == "" {
		return o.kind
	}
	return fmt.Sprintf("%s %q", o.kind, o.id)
}

// where is ` in namespace "ns"`, or "" outside namespaces.
func (o object) where() string {
	if o.namespace == "" {
		return ""
	}
	return fmt.Sprintf(" in namespace %q", o.namespace)
}

// plural is the kind's command group: "containers", "namespaces", "content".
func (o object) plural() string {
	switch {
	case o.id == "", o.kind == "content":
		return o.kind
	}
	return o.kind + "s"
}

// listCommand is the command line that lists objects of this kind.
func (o object) listCommand() string {
	if o.namespace == "" {
		return "berth " + o.plural() + " ls"
	}
	return fmt.Sprintf("berth -n %s %s ls", o.namespace, o.plural())
}

// advice overrides what an error of a class says about the object, e.g.
// when(errdefs.ErrFailedPrecondition, "is not empty: remove its containers and images first").
type advice struct {
	class error
	text  string
}

func when(class error, text string) advice { return advice{class: class, text: text} }

// requestError is a request berthd refused, classified once from its gRPC status.
type requestError struct {
	op      string // verb: "create", "get", "list", "update", "remove", "subscribe to"
	obj     object
	address string
	err     error // errgrpc.ToNative of the status: errdefs classes
	advice  []advice
}

// fail converts err, returned by a request to op obj, into a requestError; nil stays nil.
// Cancellation by the user stays context.Canceled.
func (cl *client) fail(err error, op string, obj object, advice ...advice) error {
	if err == nil {
		return nil
	}
	native := errgrpc.ToNative(err)
	if errors.Is(native, context.Canceled) {
		return context.Canceled
	}
	return &requestError{op: op, obj: obj, address: cl.address, err: native, advice: advice}
}

func (e *requestError) Unwrap() error { return e.err }

// detail is the daemon's message without the class name, or "".
func (e *requestError) detail() string {
	msg := e.err.Error()
	class := e.className()
	if class == "" {
		return msg
	}
	for msg != "" && strings.HasSuffix(msg, class) {
		msg = strings.TrimSuffix(strings.TrimSuffix(msg, class), ": ")
	}
	return msg
}

// errorClasses are the errdefs classes rendered by name.
var errorClasses = []error{
	errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrInvalidArgument,
	errdefs.ErrFailedPrecondition, errdefs.ErrConflict, errdefs.ErrNotModified,
	errdefs.ErrUnavailable, errdefs.ErrNotImplemented, errdefs.ErrOutOfRange,
	errdefs.ErrPermissionDenied, errdefs.ErrResourceExhausted, errdefs.ErrAborted,
	errdefs.ErrInternal, errdefs.ErrDataLoss, errdefs.ErrUnauthenticated, errdefs.ErrUnknown,
	context.DeadlineExceeded,
}

func (e *requestError) className() string {
	for _, class := range errorClasses {
		if errors.Is(e.err, class) {
			return class.Error()
		}
	}
	return ""
}

func (e *requestError) Error() string {
	o, detail := e.obj, e.detail()
	withDetail := func(s string) string {
		if detail != "" {
			s += " (berthd: " + detail + ")"
		}
		return s
	}
	for _, a := range e.advice {
		if errors.Is(e.err, a.class) {
			return withDetail(o.String() + " " + a.text)
		}
	}
	switch {
	case errdefs.IsNotFound(e.err) && o.id != "":
		return fmt.Sprintf("%s not found%s (list %s with: %s)", o.name(), o.where(), o.plural(), o.listCommand())
	case errdefs.IsAlreadyExists(e.err) && o.id != "":
		rm := "berth " + o.plural() + " rm " + o.id
		if o.namespace != "" {
			rm = fmt.Sprintf("berth -n %s %s rm %s", o.namespace, o.plural(), o.id)
		}
		return fmt.Sprintf("%s already exists%s (choose another name, or remove it first with: %s)", o.name(), o.where(), rm)
	case errdefs.IsNotImplemented(e.err):
		return withDetail(fmt.Sprintf("berthd at %s cannot %s %s: not implemented (upgrade berthd)", e.address, e.op, o))
	case errdefs.IsUnavailable(e.err) && strings.Contains(e.err.Error(), "shim exited"):
		return fmt.Sprintf("cannot %s %s: the task's shim exited before it answered (berthd's log, at debug level, has the shim's)", e.op, o)
	case errdefs.IsUnavailable(e.err):
		return withDetail(fmt.Sprintf("cannot %s %s: berthd at %s is unavailable (try again; is it shutting down?)", e.op, o, e.address))
	case errdefs.IsDeadlineExceeded(e.err):
		return withDetail(fmt.Sprintf("cannot %s %s: timed out", e.op, o))
	}
	s := fmt.Sprintf("cannot %s %s", e.op, o)
	if class := e.className(); class != "" {
		s += ": " + class
	}
	if detail != "" {
		s += ": " + detail
	}
	return s
}

// render is the one line printed after "berth: " for a failed command.
func render(err error) string {
	return err.Error()
}

// forEach runs fn for each argument and goes on after failures; every failure is reported,
// the last one as the command's error.
func forEach(c *cli.Context, args []string, fn func(arg string) error) error {
	var failed []error
	for _, arg := range args {
		if err := fn(arg); err != nil {
			if errors.Is(err, context.Canceled) {
				return err
			}
			failed = append(failed, err)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	for _, err := range failed[:len(failed)-1] {
		fmt.Fprintln(c.App.ErrWriter, "berth: "+render(err))
	}
	return failed[len(failed)-1]
}

// labelPaths lists the field paths "labels.KEY" that set (or, with an empty value, remove)
// the labels, in key order.
func labelPaths(labels map[string]string) []string {
	paths := sortedKeys(labels)
	for i, k := range paths {
		paths[i] = "labels." + k
	}
	return paths
}

// labeler is one kind of object that `label NAME [k=v…]` works on: with
// labels it updates them with one "labels.<key>" mask path per label, as ctr
// does ("k=" removes k); without labels it prints the object's labels.
type labeler struct {
	what   string                                  // the argument, for usage errors: "a container ID"
	check  func(c *cli.Context, name string) error // optional check of the argument
	object func(cl *client, name string) object
	get    func(ctx context.Context, cl *client, name string) (map[string]string, error)
	update func(ctx context.Context, cl *client, name string, labels map[string]string, mask *fieldmaskpb.FieldMask) error
}

func (l labeler) run(c *cli.Context) error {
	if err := requireArgs(c, 1, l.what); err != nil {
		return err
	}
	name := c.Args().First()
	if l.check != nil {
		if err := l.check(c, name); err != nil {
			return err
		}
	}
	labels, err := parseLabels(c.Args().Tail())
	if err != nil {
		return usagef(c, "%v", err)
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	if len(labels) == 0 {
		current, err := l.get(ctx, cl, name)
		if err != nil {
			return cl.fail(err, "get", l.object(cl, name))
		}
		return printLabels(c, current)
	}
	err = l.update(ctx, cl, name, labels, &fieldmaskpb.FieldMask{Paths: labelPaths(labels)})
	return cl.fail(err, "label", l.object(cl, name))
}

// forEachArg checks that there is at least one argument (what), connects,
// and runs fn for each argument on that one connection, going on past
// failures as forEach does.
func forEachArg(c *cli.Context, what string, fn func(cl *client, ctx context.Context, arg string) error) error {
	if err := requireArgs(c, 1, what); err != nil {
		return err
	}
	cl, ctx, err := connect(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	return forEach(c, c.Args().Slice(), func(arg string) error { return fn(cl, ctx, arg) })
}
