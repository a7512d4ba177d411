package fs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// memStore is an in-memory objstore.Store for tests that do not need the
// files on disk (fsync-free, so the long random tests stay fast).
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
	gets map[string]int // reads of each key, found or not
	// onGet, if set, runs once, before the next read, without the lock.
	onGet func()
}

func (s *memStore) beforeGet() {
	s.mu.Lock()
	h := s.onGet
	s.onGet = nil
	s.mu.Unlock()
	if h != nil {
		h()
	}
}

func newMemStore() *memStore { return &memStore{objs: map[string][]byte{}, gets: map[string]int{}} }

// getCounts returns how often each key was read since the last call.
func (s *memStore) getCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.gets
	s.gets = map[string]int{}
	return g
}

func (s *memStore) Put(ctx context.Context, key string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[key] = bytes.Clone(data)
	return nil
}

func (s *memStore) Get(ctx context.Context, key string) ([]byte, error) {
	s.beforeGet()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets[key]++
	d, ok := s.objs[key]
	if !ok {
		return nil, fmt.Errorf("get %q: %w", key, objstore.ErrNotFound)
	}
	return bytes.Clone(d), nil
}

// GetInto copies into buf when the object fits, as a directory store reads
// into it, so that tests exercise the recycled buffers of read-ahead.
func (s *memStore) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
	s.beforeGet()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gets[key]++
	d, ok := s.objs[key]
	if !ok {
		return nil, fmt.Errorf("get %q: %w", key, objstore.ErrNotFound)
	}
	if len(d) > cap(buf) {
		return bytes.Clone(d), nil
	}
	return buf[:copy(buf[:len(d)], d)], nil
}

func (s *memStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objs, key)
	return nil
}

func (s *memStore) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	s.mu.Lock()
	var keys []string
	for k := range s.objs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sizes := map[string]int64{}
	for _, k := range keys {
		sizes[k] = int64(len(s.objs[k]))
	}
	s.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, sizes[k]); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) String() string { return "mem:" }
func (s *memStore) Close() error   { return nil }

// testVol is a formatted volume with a mounted FS.
type testVol struct {
	t       testing.TB
	ctx     context.Context
	metaDir string
	diskDir string // root of the objstore.Dir, when on disk
	store   objstore.Store
	opts    Options
	kv      *meta.Badger
	wrapKV  func(meta.KV) meta.KV // from volConfig
	m       *meta.Meta
	f       *FS
	closed  bool
}

// volConfig sets up a test volume.
type volConfig struct {
	blockSize, chunkSize, inlineMax int  // 0: defaults (64 KiB blocks, 64 MiB chunks, 16 KiB inline)
	onDisk                          bool // objstore.Dir in a temporary directory instead of memory
	version                         int  // format version; 0: the current one
	blockHash                       string
	opts                            Options
	wrapKV                          func(meta.KV) meta.KV // wraps the database the FS uses, when not nil
}

// quietLogger drops the expected error logs (corrupt blocks) from test output.
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

func newVol(t testing.TB, cfg volConfig) *testVol {
	t.Helper()
	ctx := context.Background()
	v := &testVol{t: t, ctx: ctx, metaDir: t.TempDir(), opts: cfg.opts, wrapKV: cfg.wrapKV}
	if v.opts.DeleteGrace == 0 {
		v.opts.DeleteGrace = time.Millisecond
	}
	if v.opts.Logger == nil {
		v.opts.Logger = quietLogger
	}
	if cfg.onDisk {
		v.diskDir = t.TempDir()
		s, err := objstore.NewDir(v.diskDir)
		if err != nil {
			t.Fatal(err)
		}
		v.store = s
	} else {
		v.store = newMemStore()
	}
	kv, err := meta.OpenBadger(v.metaDir, false)
	if err != nil {
		t.Fatal(err)
	}
	bs := cfg.blockSize
	if bs == 0 {
		bs = 64 << 10
	}
	fm := meta.NewFormat([]string{"local"}, bs)
	if cfg.chunkSize != 0 {
		fm.ChunkSize = cfg.chunkSize
	}
	if cfg.inlineMax != 0 {
		fm.InlineMax = cfg.inlineMax
	}
	if cfg.inlineMax < 0 {
		fm.InlineMax = 0
	}
	if cfg.version != 0 {
		fm.Version, fm.BlockHash = cfg.version, cfg.blockHash
	} else if cfg.blockHash != "" {
		fm.BlockHash = cfg.blockHash
	}
	if err := meta.Create(ctx, kv, fm); err != nil {
		_ = kv.Close()
		t.Fatalf("create volume: %v", err)
	}
	_ = kv.Close()
	v.open()
	t.Cleanup(func() {
		if !v.closed {
			_ = v.f.Close(ctx)
			_ = v.kv.Close()
		}
	})
	return v
}

// open opens Badger, the metadata and a new FS on the volume.
func (v *testVol) open() {
	v.t.Helper()
	kv, err := meta.OpenBadger(v.metaDir, false)
	if err != nil {
		v.t.Fatalf("open badger: %v", err)
	}
	var used meta.KV = kv
	if v.wrapKV != nil {
		used = v.wrapKV(kv)
	}
	m, err := meta.Open(v.ctx, used)
	if err != nil {
		_ = kv.Close()
		v.t.Fatalf("open meta: %v", err)
	}
	f, err := New(v.ctx, m, v.store, v.opts)
	if err != nil {
		_ = kv.Close()
		v.t.Fatalf("new fs: %v", err)
	}
	v.kv, v.m, v.f, v.closed = kv, m, f, false
}

// close closes the FS and Badger, as an unmount does.
func (v *testVol) close() {
	v.t.Helper()
	if err := v.f.Close(v.ctx); err != nil {
		v.t.Errorf("close fs: %v", err)
	}
	if err := v.kv.Close(); err != nil {
		v.t.Errorf("close badger: %v", err)
	}
	v.closed = true
}

// reopen unmounts and mounts again with the given options.
func (v *testVol) reopen(opts Options) {
	v.t.Helper()
	v.close()
	if opts.DeleteGrace == 0 {
		opts.DeleteGrace = v.opts.DeleteGrace
	}
	if opts.Logger == nil {
		opts.Logger = v.opts.Logger
	}
	v.opts = opts
	v.open()
}

func (v *testVol) create(parent uint64, name string, flags uint32) (uint64, uint64) {
	v.t.Helper()
	a, fh, err := v.f.Create(v.ctx, &meta.Root, parent, name, 0o644, flags|syscall.O_CREAT)
	if err != nil {
		v.t.Fatalf("create %q: %v", name, err)
	}
	return a.Ino, fh
}

func (v *testVol) openFile(ino uint64, flags uint32) uint64 {
	v.t.Helper()
	fh, err := v.f.Open(v.ctx, &meta.Root, ino, flags)
	if err != nil {
		v.t.Fatalf("open %d: %v", ino, err)
	}
	return fh
}

func (v *testVol) write(fh uint64, off uint64, data []byte) {
	v.t.Helper()
	n, err := v.f.Write(v.ctx, fh, off, data)
	if err != nil || n != len(data) {
		v.t.Fatalf("write %d bytes at %d: %d, %v", len(data), off, n, err)
	}
}

func (v *testVol) flush(fh uint64) {
	v.t.Helper()
	if err := v.f.Flush(v.ctx, fh); err != nil {
		v.t.Fatalf("flush: %v", err)
	}
}

func (v *testVol) release(fh uint64) {
	v.t.Helper()
	if err := v.f.Release(v.ctx, fh); err != nil {
		v.t.Fatalf("release: %v", err)
	}
}

func (v *testVol) truncate(ino uint64, fh uint64, size uint64) {
	v.t.Helper()
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetSize, Size: size}, fh); err != nil {
		v.t.Fatalf("truncate %d to %d: %v", ino, size, err)
	}
}

// read reads n bytes at off through fh.
func (v *testVol) read(fh uint64, off uint64, n int) []byte {
	v.t.Helper()
	buf := make([]byte, n)
	got, err := v.f.Read(v.ctx, fh, off, buf)
	if err != nil {
		v.t.Fatalf("read %d bytes at %d: %v", n, off, err)
	}
	return buf[:got]
}

// content reads a whole file through a fresh read-only handle.
func (v *testVol) content(ino uint64) []byte {
	v.t.Helper()
	a, err := v.f.GetAttr(v.ctx, ino)
	if err != nil {
		v.t.Fatalf("getattr %d: %v", ino, err)
	}
	fh := v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	// Read in odd-sized pieces so that reads cross block and chunk boundaries.
	var out []byte
	for off := uint64(0); off < a.Size+1; {
		p := v.read(fh, off, 77777)
		if len(p) == 0 {
			break
		}
		out = append(out, p...)
		off += uint64(len(p))
	}
	return out
}

// storedObjects lists the block objects in the store.
func (v *testVol) storedObjects() map[string]bool {
	v.t.Helper()
	out := map[string]bool{}
	err := v.store.List(v.ctx, "blocks/", func(k string, _ int64) error { out[k] = true; return nil })
	if err != nil {
		v.t.Fatalf("list store: %v", err)
	}
	return out
}

// referencedObjects returns the object keys of every block referenced by a
// slice of a live regular file (walking the tree, plus the given extra
// inodes, e.g. open unlinked files).
func (v *testVol) referencedObjects(extra ...uint64) map[string]bool {
	v.t.Helper()
	out := map[string]bool{}
	add := func(ino uint64) {
		d, err := v.m.ReadData(v.ctx, ino, 0, ^uint64(0))
		if err != nil {
			v.t.Fatalf("read layout of %d: %v", ino, err)
		}
		for _, ss := range d.Chunks {
			for _, s := range ss {
				for _, b := range s.Blocks {
					out[b.ID.ObjectKey()] = true
				}
			}
		}
	}
	var walk func(dir uint64)
	walk = func(dir uint64) {
		var ents []meta.Dirent
		if err := v.m.ReadDir(v.ctx, dir, 0, func(d meta.Dirent) bool { ents = append(ents, d); return true }); err != nil {
			v.t.Fatalf("readdir: %v", err)
		}
		for _, e := range ents {
			switch e.Type {
			case syscall.S_IFDIR:
				walk(e.Ino)
			case syscall.S_IFREG:
				add(e.Ino)
			}
		}
	}
	walk(meta.RootIno)
	for _, ino := range extra {
		add(ino)
	}
	return out
}

// waitStoreMatchesReferences polls until the store holds exactly the
// referenced blocks (background deletion runs about once a second), and
// fails with the difference if it does not within the timeout.
func (v *testVol) waitStoreMatchesReferences(timeout time.Duration, extra ...uint64) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		stored, refd := v.storedObjects(), v.referencedObjects(extra...)
		var missing, leaked []string
		for k := range refd {
			if !stored[k] {
				missing = append(missing, k)
			}
		}
		for k := range stored {
			if !refd[k] {
				leaked = append(leaked, k)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			v.t.Fatalf("%d referenced blocks are missing from the store, e.g. %s", len(missing), missing[0])
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			slices.Sort(leaked)
			v.t.Fatalf("after %v the store still holds %d unreferenced blocks (of %d stored, %d referenced), e.g. %s",
				timeout, len(leaked), len(stored), len(refd), leaked[0])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitOrphansReaped waits until the metadata lists no orphan.
func (v *testVol) waitOrphansReaped(timeout time.Duration) {
	v.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		o, err := v.m.Orphans(v.ctx)
		if err != nil {
			v.t.Fatal(err)
		}
		if len(o) == 0 {
			return
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("%d orphans still listed after %v (first %d)", len(o), timeout, o[0])
		}
	}
}

// waitCompactions waits until background compaction has nothing queued.
func (v *testVol) waitCompactions() {
	v.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); v.f.compactPending.Load() > 0; {
		if time.Now().After(deadline) {
			v.t.Fatalf("background compaction still has %d chunks queued", v.f.compactPending.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// checkNoLeaks fails if a stored block is neither referenced nor queued
// for deletion (such a block would stay forever), or if a referenced block
// is missing.
func (v *testVol) checkNoLeaks(extra ...uint64) {
	v.t.Helper()
	v.waitCompactions()
	// The queue is read before the store is listed: the background
	// deleter takes blocks off the queue and then deletes them, so in the
	// other order a block it is deleting would look leaked.
	queued := map[string]bool{}
	ids, err := v.m.PendingBlocks(v.ctx, time.Now().Add(time.Hour), nil, 1<<30)
	if err != nil {
		v.t.Fatal(err)
	}
	for _, id := range ids {
		queued[id.ObjectKey()] = true
	}
	stored, refd := v.storedObjects(), v.referencedObjects(extra...)
	leaked := 0
	for k := range stored {
		if !refd[k] && !queued[k] {
			leaked++
		}
	}
	missing := 0
	for k := range refd {
		if !stored[k] {
			missing++
		}
	}
	if leaked > 0 || missing > 0 {
		v.t.Errorf("store: %d blocks neither referenced nor queued for deletion (leaked), %d referenced blocks missing", leaked, missing)
	}
}

// pattern returns n bytes derived from seed, never all zero.
func pattern(seed uint64, n int) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x>>24) | 1
	}
	return b
}

// firstDiff describes where got and want first differ.
func firstDiff(got, want []byte) string {
	if len(got) != len(want) {
		n := min(len(got), len(want))
		if i := diffAt(got[:n], want[:n]); i >= 0 {
			return fmt.Sprintf("length %d, want %d; first differing byte at %d: %#x, want %#x", len(got), len(want), i, got[i], want[i])
		}
		return fmt.Sprintf("length %d, want %d (common prefix equal)", len(got), len(want))
	}
	if i := diffAt(got, want); i >= 0 {
		j := i
		for j < len(got) && got[j] != want[j] {
			j++
		}
		return fmt.Sprintf("bytes [%d, %d) differ: first %#x, want %#x", i, j, got[i], want[i])
	}
	return "equal"
}

func diffAt(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
