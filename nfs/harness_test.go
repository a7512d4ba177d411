package nfs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// testLog discards logs unless OBJFS_TEST_LOG is set.
func testLog() *slog.Logger {
	if os.Getenv("OBJFS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testVolume is a volume directory that can be opened, closed and opened
// again (for restart tests).
type testVolume struct {
	dir string
}

func newTestVolume(t testing.TB) *testVolume {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	kv, err := meta.OpenBadger(filepath.Join(dir, "meta"), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := meta.Create(ctx, kv, meta.NewFormat([]string{"file://" + filepath.Join(dir, "store")}, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := objstore.Create(ctx, "file://"+filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	return &testVolume{dir: dir}
}

// openFS opens the POSIX layer of the volume in dir; close undoes it.
func openFS(dir string) (f *fs.FS, close func() error, err error) {
	ctx := context.Background()
	kv, err := meta.OpenBadger(filepath.Join(dir, "meta"), false)
	if err != nil {
		return nil, nil, err
	}
	m, err := meta.Open(ctx, kv)
	if err != nil {
		_ = kv.Close()
		return nil, nil, err
	}
	store, err := objstore.Open(ctx, "file://"+filepath.Join(dir, "store"))
	if err != nil {
		_ = kv.Close()
		return nil, nil, err
	}
	f, err = fs.New(ctx, m, store, fs.Options{Logger: testLog(), DeleteGrace: time.Second})
	if err != nil {
		_ = store.Close()
		_ = kv.Close()
		return nil, nil, err
	}
	return f, func() error {
		return errors.Join(f.Close(ctx), store.Close(), kv.Close())
	}, nil
}

// open mounts the volume's POSIX layer; the returned close undoes it (and
// runs at the end of the test if not called before).
func (v *testVolume) open(t testing.TB) (*fs.FS, func()) {
	t.Helper()
	f, closeFS, err := openFS(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	closeFn := func() {
		if closed {
			return
		}
		closed = true
		if err := closeFS(); err != nil {
			t.Errorf("close volume: %v", err)
		}
	}
	t.Cleanup(closeFn)
	return f, closeFn
}

// startServer serves f on a loopback port until the returned stop is
// called (or the test ends).
func startServer(t testing.TB, f *fs.FS, opts Options) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = testLog()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, f, l, opts) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s of cancel")
		}
	}
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

// newServer is the common case: a fresh volume served with opts.
func newTestServer(t testing.TB, opts Options) (addr string, f *fs.FS) {
	t.Helper()
	f, _ = newTestVolume(t).open(t)
	addr, _ = startServer(t, f, opts)
	return addr, f
}
