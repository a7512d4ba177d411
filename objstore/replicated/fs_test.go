package replicated_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/replicated"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// blockVerifier is the check the file system uses: a block key names the
// hash of its content, by the volume's block hash.
func blockVerifier(f *meta.Format) func(key string, data []byte) bool {
	return func(key string, data []byte) bool {
		id, ok := meta.ParseObjectKey(key)
		if !ok {
			return true
		}
		return f.HashBlock(data) == id
	}
}

// volume is a file system over three local directory stores, N=3, W=2.
type volume struct {
	t      *testing.T
	ctx    context.Context
	roots  []string
	kv     *meta.Badger
	m      *meta.Meta
	rs     *replicated.Store
	f      *fs.FS
	inodes map[string]uint64
}

const blockSize = 16 << 10

func newVolume(t *testing.T) *volume {
	t.Helper()
	v := &volume{t: t, ctx: context.Background(), inodes: map[string]uint64{}}
	base := t.TempDir()
	var urls []string
	for i := 0; i < 3; i++ {
		root := filepath.Join(base, fmt.Sprintf("s%d", i))
		if err := os.Mkdir(root, 0o700); err != nil {
			t.Fatal(err)
		}
		v.roots = append(v.roots, root)
		urls = append(urls, "file://"+root)
	}
	kv, err := meta.OpenBadger(filepath.Join(base, "meta"), false)
	if err != nil {
		t.Fatal(err)
	}
	f := meta.NewFormat(urls, blockSize)
	f.Replicas, f.WriteQuorum = 3, 2
	if err := meta.Create(v.ctx, kv, f); err != nil {
		t.Fatal(err)
	}
	m, err := meta.Open(v.ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	v.kv, v.m = kv, m
	v.open()
	t.Cleanup(func() {
		v.closeFS()
		_ = kv.Close()
	})
	return v
}

// open starts a new replicated store over fresh directory stores (as a new
// process would) and a file system without a block cache over it, so
// every read reaches the stores.
func (v *volume) open() {
	v.t.Helper()
	var stores []objstore.Store
	for _, root := range v.roots {
		d, err := objstore.NewDir(root)
		if err != nil {
			v.t.Fatal(err)
		}
		stores = append(stores, d)
	}
	format := v.m.Format()
	rs, err := replicated.New(stores, 3, 2, blockVerifier(&format), quiet)
	if err != nil {
		v.t.Fatal(err)
	}
	f, err := fs.New(v.ctx, v.m, rs, fs.Options{MemCacheBytes: -1, Logger: quiet})
	if err != nil {
		v.t.Fatal(err)
	}
	v.rs, v.f = rs, f
}

func (v *volume) closeFS() {
	if v.f == nil {
		return
	}
	if err := v.f.Close(v.ctx); err != nil {
		v.t.Errorf("close fs: %v", err)
	}
	if err := v.rs.Close(); err != nil {
		v.t.Errorf("close store: %v", err)
	}
	v.f, v.rs = nil, nil
}

func (v *volume) write(name string, data []byte) error {
	a, fh, err := v.f.Create(v.ctx, &meta.Root, meta.RootIno, name, 0o644, syscall.O_RDWR|syscall.O_CREAT)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if _, err := v.f.Write(v.ctx, fh, 0, data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := v.f.Fsync(v.ctx, fh); err != nil {
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	if err := v.f.Release(v.ctx, fh); err != nil {
		return fmt.Errorf("release %s: %w", name, err)
	}
	v.inodes[name] = a.Ino
	return nil
}

func (v *volume) read(ino uint64, size int) ([]byte, error) {
	buf := make([]byte, size+1)
	n, err := v.f.ReadInode(v.ctx, &meta.Root, ino, 0, buf)
	return buf[:n], err
}

// copies counts the good copies of every referenced block.
func (v *volume) copies() map[meta.BlockID]int {
	v.t.Helper()
	out := map[meta.BlockID]int{}
	format := v.m.Format()
	err := v.m.ForEachBlock(v.ctx, func(id meta.BlockID, _ uint32, _ uint64) error {
		out[id] = 0
		for _, root := range v.roots {
			b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(id.ObjectKey())))
			if err == nil && format.HashBlock(b) == id {
				out[id]++
			}
		}
		return nil
	})
	if err != nil {
		v.t.Fatal(err)
	}
	return out
}

// scrubAll runs Scrub over every block, as `objfs scrub` does.
func (v *volume) scrubAll() (restored, lost int) {
	v.t.Helper()
	err := v.m.ForEachBlock(v.ctx, func(id meta.BlockID, _ uint32, _ uint64) error {
		r, err := v.rs.Scrub(v.ctx, id.ObjectKey())
		restored += r.Restored
		if r.Lost {
			lost++
		}
		return err
	})
	if err != nil {
		v.t.Fatal(err)
	}
	return restored, lost
}

func content(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestLoseAStoreWhileWorking: one of three stores disappears while files
// are written and read. With a write quorum of two, no read and no write
// fails and nothing is lost; scrub then restores the third copies.
func TestLoseAStoreWhileWorking(t *testing.T) {
	v := newVolume(t)
	const files = 24
	want := map[string][]byte{}
	var mu sync.Mutex // guards want and v.inodes
	var wg sync.WaitGroup
	errs := make(chan error, files*4)
	lostAt := files / 3
	written := make(chan struct{}, files)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < files; i += 2 {
				name := fmt.Sprintf("f%02d", i)
				data := content(uint64(i), 3*blockSize+i*1000)
				a, fh, err := v.f.Create(v.ctx, &meta.Root, meta.RootIno, name, 0o644, syscall.O_RDWR|syscall.O_CREAT)
				if err == nil {
					_, err = v.f.Write(v.ctx, fh, 0, data)
					if err == nil {
						err = v.f.Fsync(v.ctx, fh)
					}
					if rerr := v.f.Release(v.ctx, fh); err == nil {
						err = rerr
					}
				}
				if err != nil {
					errs <- fmt.Errorf("write %s: %w", name, err)
					return
				}
				mu.Lock()
				want[name] = data
				v.inodes[name] = a.Ino
				mu.Unlock()
				written <- struct{}{}
			}
		}()
	}
	// The reader re-reads everything written so far, over and over, and
	// removes the store once a third of the files are in.
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := 0
		for range written {
			if n++; n == lostAt {
				// Writes landing meanwhile can make one RemoveAll
				// fail with "directory not empty"; once the root is
				// gone no write can recreate it.
				var err error
				for try := 0; try < 100; try++ {
					if err = os.RemoveAll(v.roots[1]); err == nil {
						break
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			mu.Lock()
			snapshot := map[string][]byte{}
			for k, d := range want {
				snapshot[k] = d
			}
			inodes := map[string]uint64{}
			for k, ino := range v.inodes {
				inodes[k] = ino
			}
			mu.Unlock()
			for name, d := range snapshot {
				got, err := v.read(inodes[name], len(d))
				if err != nil || !bytes.Equal(got, d) {
					errs <- fmt.Errorf("read %s: %d bytes, %v; want %d bytes", name, len(got), err, len(d))
					return
				}
			}
			if n == files {
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	// Every block has at least two copies; some have lost their third.
	short := 0
	for id, n := range v.copies() {
		if n < 2 {
			t.Errorf("block %s has %d copies, want at least 2", id, n)
		}
		if n < 3 {
			short++
		}
	}
	if short == 0 {
		t.Fatal("no block lost a copy: the store was not removed in time")
	}

	// The operator replaces the store with an empty directory; a fresh
	// process (new store objects) scrubs.
	v.closeFS()
	if err := os.Mkdir(v.roots[1], 0o700); err != nil {
		t.Fatal(err)
	}
	v.open()
	restored, lost := v.scrubAll()
	if restored != short || lost != 0 {
		t.Errorf("scrub restored %d copies (want %d), lost %d", restored, short, lost)
	}
	for id, n := range v.copies() {
		if n != 3 {
			t.Errorf("after scrub, block %s has %d copies, want 3", id, n)
		}
	}
	for name, d := range want {
		got, err := v.read(v.inodes[name], len(d))
		if err != nil || !bytes.Equal(got, d) {
			t.Errorf("after scrub, read %s: %d bytes, %v", name, len(got), err)
		}
	}
}

// TestFlippedBytes: corrupt copies are never returned. A file reads right
// while one copy of each block is good, and fails with EIO when none is.
func TestFlippedBytes(t *testing.T) {
	v := newVolume(t)
	tests := []struct {
		name    string
		corrupt int // copies of each of the file's blocks to damage
		wantEIO bool
	}{
		{"one copy", 1, false},
		{"two copies", 2, false},
		{"every copy", 3, true},
	}
	for i, tc := range tests {
		if err := v.write(tc.name, content(uint64(100+i), 2*blockSize+7)); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the background third copies are in: damage must hit the
	// copies the test means.
	v.closeFS()
	for id, n := range v.copies() {
		if n != 3 {
			t.Fatalf("block %s has %d copies before the test", id, n)
		}
	}
	for i, tc := range tests {
		d, err := v.m.ReadData(v.ctx, v.inodes[tc.name], 0, ^uint64(0))
		if err != nil {
			t.Fatal(err)
		}
		for _, ss := range d.Chunks {
			for _, s := range ss {
				for _, b := range s.Blocks {
					for c := 0; c < tc.corrupt; c++ {
						// Damage different copies for different files.
						root := v.roots[(c+i)%3]
						p := filepath.Join(root, filepath.FromSlash(b.ID.ObjectKey()))
						data, err := os.ReadFile(p)
						if err != nil {
							t.Fatal(err)
						}
						data[len(data)/2] ^= 0x10
						if err := os.WriteFile(p, data, 0o600); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
		}
	}
	v.open()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := content(uint64(100+i), 2*blockSize+7)
			for round := 0; round < 3; round++ { // each copy gets to be first
				got, err := v.read(v.inodes[tc.name], len(want))
				if tc.wantEIO {
					if !errors.Is(err, syscall.EIO) {
						t.Fatalf("read = %d bytes, %v; want EIO", len(got), err)
					}
				} else if err != nil {
					t.Fatalf("read: %v", err)
				}
				if !bytes.Equal(got, want[:len(got)]) {
					t.Fatalf("read returned wrong bytes")
				}
				if !tc.wantEIO && len(got) != len(want) {
					t.Fatalf("read %d bytes, want %d", len(got), len(want))
				}
			}
		})
	}
	// Read repair and scrub together put back every good copy they can.
	v.scrubAll()
	for id, n := range v.copies() {
		if n != 3 && n != 0 {
			t.Errorf("after scrub block %s has %d good copies, want 3 (or 0 if none was left)", id, n)
		}
	}
}
