package runtime

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// relayShimLog passes on whole lines however the writes split them, an
// unfinished line in pieces once it is too long, and what is left when the
// fifo closes.
func TestRelayShimLog(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		relayShimLog(rc, func(l string) { lines <- l })
		close(done)
	}()
	long := strings.Repeat("x", maxShimLogLine+10)
	for _, chunk := range []string{"level=info msg=a\nlevel=", "info msg=b\n", "", "c\n\n", long + "\n", long, "more\n", "tail"} {
		if _, err := w.WriteString(chunk); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // separate reads
	}
	w.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end when the writer closed")
	}
	close(lines)
	var got []string
	for l := range lines {
		got = append(got, l)
	}
	// a whole line is passed on whatever its length; one that stays
	// unfinished past maxShimLogLine is passed on in pieces
	want := []string{"level=info msg=a", "level=info msg=b", "c", "", long, long, "more", "tail"}
	if !slices.Equal(got, want) {
		t.Errorf("lines %q,\nwant %q", short(got), short(want))
	}
}

func short(ls []string) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		if len(l) > 40 {
			l = l[:20] + "…" + l[len(l)-10:]
		}
		out[i] = l
	}
	return out
}

// openShimLog: what a shim writes to its log fifo reaches berthd's debug
// log with the task's fields, and closing the fifo ends the relay, with
// the unfinished line passed on.
func TestOpenShimLog(t *testing.T) {
	var out syncBuffer
	logger := logrus.New()
	logger.SetOutput(&out)
	logger.SetLevel(logrus.DebugLevel)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(logger))
	b := &bundle{ns: "ns1", id: "task1", path: t.TempDir()}
	closer, err := openShimLog(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(filepath.Join(b.path, "log"), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("shim says hello\nunfinished"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	waitFor(t, func() bool { return strings.Contains(out.String(), "shim says hello") })
	before := runtime.NumGoroutine()
	if err := closer.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "unfinished") && runtime.NumGoroutine() < before })
	for _, want := range []string{"level=debug", "namespace=ns1", "id=task1", "source=shim"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log %q lacks %q", out.String(), want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
