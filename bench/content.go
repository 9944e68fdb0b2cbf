package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	digest "github.com/opencontainers/go-digest"
)

// writeChunk is the size of each WRITE message, as containerd's client sends
// them when it copies a blob (content.Copy with a 1 MiB buffer).
const writeChunk = 1 << 20

// contentWrite: one large random blob through Content.Write, as
// containerd's Go client writes it (STAT, then one WRITE per MiB, each
// waiting for its answer, then COMMIT with the expected size and digest),
// beside a plain copy of the same file with an fsync on the same disk.
func contentWrite(ctx context.Context, e *sysEnv) error {
	size := int64(e.o.BlobMiB) << 20
	src := filepath.Join(e.dir, "blob")
	dgst, err := writeRandomFile(src, size)
	if err != nil {
		return err
	}
	defer os.Remove(src)
	name := fmt.Sprintf("content Write of %d MiB, 1 MiB messages", e.o.BlobMiB)
	r := e.addRow(&sysRow{Name: name, Unit: "MB/s", Higher: true, RefName: "plain copy+fsync"})
	for rep := range e.o.Reps {
		// three-way rotation: berthd, containerd and the plain copy each go
		// first, second and third in turn.
		steps := []func() error{
			func() error {
				v, err := writeBlob(ctx, e.ds[0], src, size, dgst, rep)
				r.BerthdReps = append(r.BerthdReps, v)
				progress("  rep %d, berthd     %8.1f MB/s", rep+1, v)
				return err
			},
			func() error {
				v, err := writeBlob(ctx, e.ds[1], src, size, dgst, rep)
				r.ContainerdReps = append(r.ContainerdReps, v)
				progress("  rep %d, containerd %8.1f MB/s", rep+1, v)
				return err
			},
			func() error {
				v, err := plainCopy(src, filepath.Join(e.dir, "blob.copy"), size)
				r.RefReps = append(r.RefReps, v)
				progress("  rep %d, plain copy %8.1f MB/s", rep+1, v)
				return err
			},
		}
		for k := range steps {
			if err := steps[(k+rep)%len(steps)](); err != nil {
				return err
			}
		}
	}
	r.summarize()
	// the goal is about time: berthd's time ÷ the copy's = copy MB/s ÷ berthd MB/s.
	var vsPlain []float64
	for i := range r.BerthdReps {
		vsPlain = append(vsPlain, ratio(r.RefReps[i], r.BerthdReps[i]))
	}
	e.atMost(name, "berthd's time ≤ 1.2× the plain copy's", median(vsPlain), 1.2)
	return nil
}

// writeRandomFile writes size random bytes to path and returns their digest.
func writeRandomFile(path string, size int64) (digest.Digest, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{'b', 'l', 'o', 'b'})
	if _, err := io.CopyN(io.MultiWriter(f, h), rng, size); err != nil {
		return "", err
	}
	return digest.NewDigest(digest.SHA256, h), f.Close()
}

// writeBlob streams the file at src into d's content store, then deletes
// the blob again, and returns MB/s (10^6 bytes) from the first message to
// the answer to COMMIT.
func writeBlob(ctx context.Context, d *daemon, src string, size int64, dgst digest.Digest, rep int) (float64, error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cs := contentapi.NewContentClient(d.conn(0))
	ref := fmt.Sprintf("bench-blob-%d", rep)
	buf := make([]byte, writeChunk)
	settle()
	start := time.Now()
	took, err := func() (time.Duration, error) {
		ctx, cancel := context.WithCancel(nsContext(ctx))
		defer cancel()
		stream, err := cs.Write(ctx)
		if err != nil {
			return 0, err
		}
		send := func(req *contentapi.WriteContentRequest) (*contentapi.WriteContentResponse, error) {
			if err := stream.Send(req); err != nil {
				return nil, err
			}
			return stream.Recv()
		}
		if _, err := send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_STAT, Ref: ref, Total: size, Expected: dgst.String()}); err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		var off int64
		for off < size {
			n, err := io.ReadFull(f, buf[:min(int64(len(buf)), size-off)])
			if err != nil {
				return 0, err
			}
			resp, err := send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_WRITE, Offset: off, Data: buf[:n]})
			if err != nil {
				return 0, fmt.Errorf("write at %d: %w", off, err)
			}
			off += int64(n)
			if resp.GetOffset() != off {
				return 0, fmt.Errorf("write: answered offset %d, want %d", resp.GetOffset(), off)
			}
		}
		resp, err := send(&contentapi.WriteContentRequest{Action: contentapi.WriteAction_COMMIT, Total: size, Offset: off, Expected: dgst.String()})
		if err != nil {
			return 0, fmt.Errorf("commit: %w", err)
		}
		took := time.Since(start)
		if resp.GetDigest() != dgst.String() {
			return 0, fmt.Errorf("commit: answered digest %q, want %s", resp.GetDigest(), dgst)
		}
		_ = stream.CloseSend()
		return took, nil
	}()
	if err != nil {
		return 0, fmt.Errorf("%s: content write: %w", d.name, err)
	}
	info, err := cs.Info(nsContext(ctx), &contentapi.InfoRequest{Digest: dgst.String()})
	if err != nil || info.GetInfo().GetSize() != size {
		return 0, fmt.Errorf("%s: info of the written blob: size %d, %v", d.name, info.GetInfo().GetSize(), err)
	}
	if _, err := cs.Delete(nsContext(ctx), &contentapi.DeleteContentRequest{Digest: dgst.String()}); err != nil {
		return 0, fmt.Errorf("%s: delete the written blob: %w", d.name, err)
	}
	return float64(size) / 1e6 / took.Seconds(), nil
}

// plainCopy copies src to dst with a 1 MiB buffer and an fsync, as the
// floor for writing the same bytes to the same disk, and returns MB/s.
func plainCopy(src, dst string, size int64) (float64, error) {
	settle()
	start := time.Now()
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	defer os.Remove(dst)
	defer out.Close()
	n, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, writeChunk))
	if err == nil && n != size {
		err = fmt.Errorf("copied %d bytes of %d", n, size)
	}
	if err == nil {
		err = out.Sync()
	}
	if err == nil {
		err = out.Close()
	}
	if err != nil {
		return 0, fmt.Errorf("plain copy: %w", err)
	}
	return float64(size) / 1e6 / time.Since(start).Seconds(), nil
}
