package runtime

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

// lineSplitter passes on whole lines however the reads split them, an
// unfinished line in pieces once it is too long, and keeps the rest.
func TestLineSplitter(t *testing.T) {
	long := strings.Repeat("x", maxShimLogLine+10)
	for _, tc := range []struct {
		name  string
		reads []string
		lines []string
		rest  string
	}{
		{"one read", []string{"a\nb\n"}, []string{"a", "b"}, ""},
		{"a line over two reads", []string{"level=info msg=a\nlevel=", "info msg=b\n"}, []string{"level=info msg=a", "level=info msg=b"}, ""},
		{"empty lines and reads", []string{"", "c\n\n", ""}, []string{"c", ""}, ""},
		{"an unfinished end", []string{"d\nta", "il"}, []string{"d"}, "tail"},
		{"a long whole line", []string{long + "\n"}, []string{long}, ""},
		{"a long unfinished line", []string{long, "more\n"}, []string{long, "more"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s lineSplitter
			var got []string
			for _, r := range tc.reads {
				got = append(got, s.feed([]byte(r))...)
			}
			if !slices.Equal(got, tc.lines) || s.rest() != tc.rest {
				t.Errorf("lines %q, rest %q; want %q, %q", short(got), s.rest(), short(tc.lines), tc.rest)
			}
		})
	}
}

// relayShimLog passes on what a pipe carries, line by line, and the
// unfinished end when the writer closes.
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
	var got []string
	done := make(chan struct{})
	go func() {
		relayShimLog(rc, func(l string) { got = append(got, l) })
		close(done)
	}()
	for _, chunk := range []string{"level=info msg=a\nlevel=", "info msg=b\n", "tail"} {
		if _, err := w.WriteString(chunk); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end when the writer closed")
	}
	if want := []string{"level=info msg=a", "level=info msg=b", "tail"}; !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
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
	if err := closer.Close(); err != nil {
		t.Fatal(err)
	}
	// the unfinished line comes out only when the relay ends
	waitFor(t, func() bool { return strings.Contains(out.String(), "unfinished") })
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
