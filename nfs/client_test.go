package nfs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/objfs/objfs/integration/difftest"
)

// dialTarget mounts the export with go-nfs-client on a connection of its own.
func dialTarget(t testing.TB, addr string, uid uint32) *nfsc.Target {
	t.Helper()
	// go-nfs-client binds a random local port without retrying when it
	// is taken; retry here so a collision is not a test failure.
	c, err := rpc.DialTCP("tcp", addr, false)
	for try := 0; err != nil && errors.Is(err, syscall.EADDRINUSE) && try < 20; try++ {
		c, err = rpc.DialTCP("tcp", addr, false)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	m := &nfsc.Mount{Client: c}
	v, err := m.Mount("/", rpc.NewAuthUnix("test", uid, uid).Auth())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func readAll(f io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	_, err := io.Copy(&buf, f)
	return buf.Bytes(), err
}

// TestPipeline runs the pipeline with 32 clients on separate
// connections: producers write tmp/<id> and rename it into inbox/;
// consumers claim items by renaming inbox/<id> to claimed/<consumer>/<id>
// and read them. Every item must end up claimed exactly once, whole.
func TestPipeline(t *testing.T) {
	const producers, consumers = 16, 16
	perProducer := 25
	if testing.Short() {
		perProducer = 5
	}
	total := producers * perProducer
	addr, f := newTestServer(t, Options{Squash: SquashNone})
	setup := dialTarget(t, addr, 0)
	for _, d := range []string{"tmp", "inbox", "claimed"} {
		if _, err := setup.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	for c := range consumers {
		if _, err := setup.Mkdir(fmt.Sprintf("claimed/c%d", c), 0o777); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var claimed atomic.Int64
	var mu sync.Mutex
	claims := map[int][]int{} // item -> consumers that claimed it
	var wg sync.WaitGroup
	fail := func(format string, a ...any) {
		t.Errorf(format, a...)
		cancel()
	}
	for p := range producers {
		v := dialTarget(t, addr, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				if ctx.Err() != nil {
					return
				}
				id := p*perProducer + i
				tmp := fmt.Sprintf("tmp/%d", id)
				fh, err := v.OpenFile(tmp, 0o644)
				if err != nil {
					fail("producer: create %s: %v", tmp, err)
					return
				}
				if _, err := fh.Write(difftest.PipelineItem(id)); err != nil {
					fail("producer: write %s: %v", tmp, err)
					return
				}
				if err := fh.Close(); err != nil {
					fail("producer: commit %s: %v", tmp, err)
					return
				}
				if err := v.Rename(tmp, fmt.Sprintf("inbox/%d", id)); err != nil {
					fail("producer: rename %s: %v", tmp, err)
					return
				}
			}
		}()
	}
	for c := range consumers {
		v := dialTarget(t, addr, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for claimed.Load() < int64(total) && ctx.Err() == nil {
				ents, err := v.ReadDirPlus("inbox")
				if err != nil {
					fail("consumer: list inbox: %v", err)
					return
				}
				if len(ents) == 0 {
					time.Sleep(time.Millisecond)
				}
				for _, e := range ents {
					var id int
					if _, err := fmt.Sscan(e.Name(), &id); err != nil {
						fail("consumer: unexpected entry %q", e.Name())
						return
					}
					dst := fmt.Sprintf("claimed/c%d/%d", c, id)
					if err := v.Rename("inbox/"+e.Name(), dst); err != nil {
						if errors.Is(err, os.ErrNotExist) {
							continue // another consumer won it
						}
						fail("consumer: claim %d: %v", id, err)
						return
					}
					claimed.Add(1)
					mu.Lock()
					claims[id] = append(claims[id], c)
					mu.Unlock()
					fh, err := v.Open(dst)
					if err != nil {
						fail("consumer: open %s: %v", dst, err)
						return
					}
					got, err := readAll(fh)
					if err != nil {
						fail("consumer: read %s: %v", dst, err)
						return
					}
					if !bytes.Equal(got, difftest.PipelineItem(id)) {
						fail("consumer: %s: read %d bytes that differ from the %d written", dst, len(got), len(difftest.PipelineItem(id)))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for id := range total {
		if cs := claims[id]; len(cs) != 1 {
			t.Errorf("item %d claimed by %v", id, cs)
		}
	}
	// What is stored agrees: nothing left in tmp or inbox, each item once.
	for _, d := range []string{"tmp", "inbox"} {
		ents, err := setup.ReadDirPlus(d)
		if err != nil || len(ents) != 0 {
			t.Errorf("%s: %d entries left (err %v)", d, len(ents), err)
		}
	}
	found := 0
	for c := range consumers {
		ents, err := setup.ReadDirPlus(fmt.Sprintf("claimed/c%d", c))
		if err != nil {
			t.Fatal(err)
		}
		found += len(ents)
	}
	if found != total {
		t.Errorf("%d items under claimed/, want %d", found, total)
	}
	_ = f
}

// BenchmarkSequential writes and reads a 64 MiB file through go-nfs-client
// (1 MiB FILE_SYNC WRITEs, 1 MiB READs) to show per-RPC cost.
func BenchmarkSequential(b *testing.B) {
	addr, _ := newTestServer(b, Options{Squash: SquashNone})
	v := dialTarget(b, addr, 0)
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i * 13)
	}
	b.SetBytes(int64(len(data)))
	for i := range b.N {
		name := fmt.Sprintf("big%d", i)
		w, err := v.OpenFile(name, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		r, err := v.Open(name)
		if err != nil {
			b.Fatal(err)
		}
		got, err := readAll(r)
		if err != nil || !bytes.Equal(got, data) {
			b.Fatalf("read back %d bytes, %v", len(got), err)
		}
	}
}
