package runtime

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
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
		relayShimLog(rc, func(l []byte) { lines <- string(l) })
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
