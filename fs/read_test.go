package fs

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/cache"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore/faulty"
)

// readVol is a volume on a store that counts (and can fail) reads, with no
// memory cache, so every read shows where it was served from.
func readVol(t *testing.T, opts Options) (*testVol, *faulty.Store) {
	t.Helper()
	fst := faulty.New(newMemStore(), 1)
	opts.MemCacheBytes = -1
	v := newVol(t, volConfig{blockSize: 64 << 10, chunkSize: 1 << 20, inlineMax: 100, opts: opts})
	v.close()
	v.store = fst
	v.open()
	return v, fst
}

// storedFile writes data to a new file, commits it and drops the memory
// cache, so that reads of it start from the store.
func (v *testVol) storedFile(data []byte) (uint64, []byte) {
	v.t.Helper()
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.write(fh, 0, data)
	v.flush(fh)
	v.release(fh)
	v.f.DropCaches()
	return ino, data
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Blocks read from the store land in the disk cache; later reads, whole or
// partial, are served from it without the store, and a damaged entry is
// detected and read from the store again.
func TestReadsThroughDiskCache(t *testing.T) {
	dir := t.TempDir()
	dc, err := cache.OpenDisk(dir, 64<<20, quietLogger)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	v, fst := readVol(t, Options{DiskCache: dc, ReadAhead: -1})
	data := pattern(7, 5*64<<10+123)
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.write(fh, 0, data)
	v.flush(fh)
	v.release(fh)

	fh = v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	if got := v.read(fh, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatalf("first read: %s", firstDiff(got, data))
	}
	waitFor(t, "the disk cache to hold every block", func() bool { return dc.Stats().Entries == 6 })

	// The store now fails every read: what follows must come from disk.
	fst.SetErrorRate(faulty.OpGet, 1)
	gets := fst.Calls(faulty.OpGet)
	for _, r := range []struct{ off, n int }{{0, len(data)}, {100, 4096}, {64<<10 - 10, 20}, {5 * 64 << 10, 123}} {
		if got := v.read(fh, uint64(r.off), r.n); !bytes.Equal(got, data[r.off:r.off+r.n]) {
			t.Fatalf("read [%d,+%d) from the disk cache: %s", r.off, r.n, firstDiff(got, data[r.off:r.off+r.n]))
		}
	}
	if n := fst.Calls(faulty.OpGet); n != gets {
		t.Fatalf("%d store reads although the disk cache holds every block", n-gets)
	}

	// Damage every cached file: reads must notice and go to the store.
	fst.SetErrorRate(faulty.OpGet, 0)
	damaged := 0
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || len(fi.Name()) != 64 {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)-1] ^= 0xff
		damaged++
		return os.WriteFile(p, b, 0o600)
	})
	if err != nil || damaged != 6 {
		t.Fatalf("damaged %d cache files (want 6): %v", damaged, err)
	}
	if got := v.read(fh, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatalf("read with a damaged disk cache: %s", firstDiff(got, data))
	}
	if c := dc.Stats().Corrupt; c == 0 {
		t.Fatal("no damaged disk cache entry was detected")
	}
}

// A sequential reader makes the blocks after its position come in before
// it asks for them.
func TestReadAhead(t *testing.T) {
	v, fst := readVol(t, Options{ReadAhead: 4 * 64 << 10})
	v.f.blocks.cache = cache.NewMemory(64 << 20)
	ino, data := v.storedFile(pattern(3, 16*64<<10))

	fh := v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	gets := fst.Calls(faulty.OpGet)
	if got := v.read(fh, 0, 4096); !bytes.Equal(got, data[:4096]) {
		t.Fatal("first read returned wrong data")
	}
	// The reader asked for one block; read-ahead fetches the next ones.
	// (The store counts a Get when it starts, before the block has
	// arrived: wait for the blocks themselves.)
	for i := 1; i <= 4; i++ {
		waitFor(t, fmt.Sprintf("block %d fetched ahead", i), func() bool {
			return v.f.blocks.cached(v.blockAt(ino, uint64(i)*64<<10))
		})
	}
	if n := fst.Calls(faulty.OpGet) - gets; n < 4 {
		t.Fatalf("%d store reads for 4 blocks fetched ahead", n)
	}
	// A random reader gets no read-ahead.
	v.f.DropCaches()
	gets = fst.Calls(faulty.OpGet)
	_, missesBefore, _ := v.f.CacheStats()
	v.read(fh, 9*64<<10, 10)
	if _, misses, _ := v.f.CacheStats(); misses-missesBefore != 1 {
		t.Fatalf("one read of a block not in memory counted %d cache misses, want 1", misses-missesBefore)
	}
	v.read(fh, 2*64<<10, 10)
	time.Sleep(100 * time.Millisecond)
	if n := fst.Calls(faulty.OpGet) - gets; n != 2 {
		t.Fatalf("random reads caused %d store reads, want 2", n)
	}
}

// blockAt returns the block holding file offset off of ino.
func (v *testVol) blockAt(ino, off uint64) meta.BlockRef {
	v.t.Helper()
	cs := uint64(v.f.format.ChunkSize)
	d, err := v.m.ReadData(v.ctx, ino, off/cs, off/cs)
	if err != nil {
		v.t.Fatal(err)
	}
	pos := uint32(off % cs)
	for _, sg := range visible(d.Chunks[off/cs], pos, pos+1) {
		if spans := blocksOf(sg.s, sg.lo-sg.s.Pos, sg.hi-sg.s.Pos); len(spans) == 1 {
			return spans[0].ref
		}
	}
	v.t.Fatalf("no block at offset %d", off)
	return meta.BlockRef{}
}

// With ReadAheadBypassesDiskCache (volumes on local directory stores),
// blocks a sequential reader's read-ahead fetched stay out of the disk
// cache, while a block fetched for a random read goes in; without it,
// read-ahead fills the disk cache too.
func TestReadAheadAndTheDiskCache(t *testing.T) {
	for _, bypass := range []bool{false, true} {
		t.Run(fmt.Sprint("bypass=", bypass), func(t *testing.T) {
			dc, err := cache.OpenDisk(t.TempDir(), 64<<20, quietLogger)
			if err != nil {
				t.Fatal(err)
			}
			defer dc.Close()
			v, fst := readVol(t, Options{DiskCache: dc, ReadAhead: 4 * 64 << 10, ReadAheadBypassesDiskCache: bypass})
			v.f.blocks.cache = cache.NewMemory(64 << 20)
			ino, _ := v.storedFile(pattern(5, 16*64<<10))

			fh := v.openFile(ino, syscall.O_RDONLY)
			defer v.release(fh)
			gets := fst.Calls(faulty.OpGet)
			v.read(fh, 0, 4096) // block 0 by the reader; 1-4 by read-ahead
			waitFor(t, "read-ahead", func() bool { return fst.Calls(faulty.OpGet)-gets >= 5 })
			v.read(fh, 12*64<<10, 10) // a random read of block 12
			// Offers are written in the background: wait for the ones
			// expected in every case, then give the others time to show.
			waitFor(t, "the reader's blocks in the disk cache", func() bool { return dc.Stats().Entries >= 2 })
			time.Sleep(200 * time.Millisecond)
			want := int64(6) // blocks 0-4 and 12
			if bypass {
				want = 2 // blocks 0 and 12
			}
			if got := dc.Stats().Entries; got != want {
				t.Errorf("disk cache holds %d blocks, want %d", got, want)
			}
			for _, i := range []uint64{0, 12} {
				if _, ok := dc.Get(v.blockAt(ino, i*64<<10).ID.String()); !ok {
					t.Errorf("block %d, read by the reader itself, is not in the disk cache", i)
				}
			}
		})
	}
}

// An NFS client reads without opening: each READ acquires and releases the
// inode. Read-ahead must still follow it from one READ to the next.
func TestReadAheadForStatelessReads(t *testing.T) {
	v, fst := readVol(t, Options{ReadAhead: 4 * 64 << 10})
	v.f.blocks.cache = cache.NewMemory(64 << 20)
	ino, data := v.storedFile(pattern(9, 16*64<<10))

	read := func(off, n int) {
		t.Helper()
		buf := make([]byte, n)
		got, err := v.f.ReadInode(v.ctx, &meta.Root, ino, uint64(off), buf)
		if err != nil || !bytes.Equal(buf[:got], data[off:off+n]) {
			t.Fatalf("ReadInode [%d,+%d): %d bytes, %v", off, n, got, err)
		}
	}
	// Each READ starts with a fresh in-memory inode; the first one's
	// read-ahead covers blocks 1-4, later ones must continue the stream
	// to bring in blocks 5-7.
	cachedFrom := func(lo, hi uint64) func() bool {
		return func() bool {
			for i := lo; i <= hi; i++ {
				if !v.f.blocks.cached(v.blockAt(ino, i*64<<10)) {
					return false
				}
			}
			return true
		}
	}
	for off := 0; off < 4*64<<10; off += 64 << 10 {
		read(off, 64<<10)
	}
	// Read-ahead skips a round while its fetches are all busy; let the
	// first window land (blocks 1-3 have been read, and so left it), then
	// read on.
	waitFor(t, "the first read-ahead window", cachedFrom(4, 4))
	read(4*64<<10, 64<<10)
	waitFor(t, "read-ahead of a stateless reader", cachedFrom(5, 7))
	// A READ elsewhere is no stream: nothing is fetched ahead of it.
	v.f.DropCaches()
	gets := fst.Calls(faulty.OpGet)
	read(11*64<<10, 10)
	time.Sleep(100 * time.Millisecond)
	if n := fst.Calls(faulty.OpGet) - gets; n != 1 {
		t.Fatalf("a random stateless READ caused %d store reads, want 1", n)
	}
}

// A sequential reader's blocks come from read-ahead in recycled buffers:
// each block is fetched once, none lands in the memory cache (a stream
// read once must not push out the hot blocks), and a handful of buffers
// serve the whole file.
func TestSequentialReadRecyclesBuffers(t *testing.T) {
	v, fst := readVol(t, Options{ReadAhead: 4 * 64 << 10})
	v.f.blocks.cache = cache.NewMemory(64 << 20)
	const nblocks = 48
	ino, data := v.storedFile(pattern(11, nblocks*64<<10))

	fh := v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	gets := fst.Calls(faulty.OpGet)
	for off := 0; off < len(data); off += 16 << 10 {
		if got := v.read(fh, uint64(off), 16<<10); !bytes.Equal(got, data[off:off+16<<10]) {
			t.Fatalf("read at %d: %s", off, firstDiff(got, data[off:off+16<<10]))
		}
	}
	if n := fst.Calls(faulty.OpGet) - gets; n != nblocks {
		t.Errorf("%d store reads for %d blocks, want one each", n, nblocks)
	}
	if n := v.f.blocks.cache.Len(); n > 1 {
		t.Errorf("the memory cache holds %d blocks after a stream, want at most the reader's first", n)
	}
	st := v.f.ReadAheadStats()
	if st.Hits < (nblocks-1)*4 || st.Unread != 0 || st.Bytes != 0 {
		t.Errorf("read-ahead: %+v; want >= %d hits, nothing unread or held", st, (nblocks-1)*4)
	}
	if st.Buffers > 8 {
		t.Errorf("read-ahead allocated %d buffers for %d blocks, want at most 8 (recycled)", st.Buffers, nblocks)
	}
}

// Holes read as zeros whatever the reader's buffer held before (the FUSE
// front end reuses its buffers): a chunk never written, a gap inside a
// chunk, and a tail past the data that a truncate extended. Checked both
// committed and still buffered.
func TestHolesReadAsZeros(t *testing.T) {
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprint("committed=", commit), func(t *testing.T) {
			v := newVol(t, volConfig{blockSize: 64 << 10, chunkSize: 1 << 20, inlineMax: 100})
			const size = 5<<20 + 12345
			want := make([]byte, size)
			ino, fh := v.create(meta.RootIno, "sparse", syscall.O_RDWR)
			defer v.release(fh)
			for _, w := range []struct{ off, n int }{
				{0, 70000},              // chunk 0, partly
				{2<<20 + 5000, 1000},    // chunk 2: a gap before and after
				{3<<20 - 10, 20},        // across the chunk 2/3 boundary
				{4<<20 + 777, 64 << 10}, // chunk 4
			} {
				p := pattern(uint64(w.off), w.n)
				v.write(fh, uint64(w.off), p)
				copy(want[w.off:], p)
			}
			v.truncate(ino, fh, size)
			if commit {
				v.flush(fh)
				v.f.DropCaches()
			}
			for _, r := range []struct{ off, n int }{
				{0, size}, {70000 - 10, 1 << 20}, {1 << 20, 1 << 20}, {2<<20 + 4000, 1 << 20}, {5 << 20, 12345},
			} {
				buf := bytes.Repeat([]byte{0xaa}, r.n)
				n, err := v.f.Read(v.ctx, fh, uint64(r.off), buf)
				if err != nil || n != r.n {
					t.Fatalf("read [%d,+%d): %d bytes, %v", r.off, r.n, n, err)
				}
				if !bytes.Equal(buf, want[r.off:r.off+r.n]) {
					t.Fatalf("read [%d,+%d): %s", r.off, r.n, firstDiff(buf, want[r.off:r.off+r.n]))
				}
			}
		})
	}
}

// ReadView hands a sequential reader the bytes of blocks read ahead, and
// of blocks in the memory cache, where they lie: the same bytes Read
// gives. A block read ahead keeps its buffer until its view is released,
// however far the reader moves on. Whatever one block at hand cannot
// serve whole and unchanged is read into the caller's buffer, as Read
// does.
func TestReadView(t *testing.T) {
	const bs = 64 << 10
	v, _ := readVol(t, Options{ReadAhead: 4 * bs})
	ino, data := v.storedFile(pattern(5, 16*bs))
	fh := v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	// view reads n bytes at off and reports whether they came as a view
	// (not in the buffer given).
	view := func(fh, off uint64, n int) ([]byte, func(), bool) {
		t.Helper()
		buf := make([]byte, n)
		got, release, err := v.f.ReadView(v.ctx, fh, off, buf)
		if err != nil {
			t.Fatalf("view of [%d,+%d): %v", off, n, err)
		}
		return got, release, len(got) > 0 && &got[0] != &buf[0]
	}

	// Nothing at hand yet (no memory cache, no read-ahead): read.
	if got, _, ok := view(fh, 0, 4096); ok || !bytes.Equal(got, data[:4096]) {
		t.Fatalf("first read: viewed %v, %s", ok, firstDiff(got, data[:4096]))
	}
	v.read(fh, 0, bs) // starts read-ahead
	var held []byte
	var releaseHeld func()
	for off := uint64(bs); off < 16*bs; off += bs / 2 {
		waitFor(t, fmt.Sprintf("block at %d read ahead", off), func() bool {
			return v.f.blocks.cached(v.blockAt(ino, off))
		})
		got, release, ok := view(fh, off, bs/2)
		if !ok {
			t.Fatalf("sequential view at %d declined with its block read ahead", off)
		}
		if !bytes.Equal(got, data[off:off+bs/2]) {
			t.Fatalf("view at %d: %s", off, firstDiff(got, data[off:off+bs/2]))
		}
		if off == 2*bs {
			held, releaseHeld = got, release // kept while the reader moves on
			continue
		}
		release()
		release() // a second call does nothing
	}
	if !bytes.Equal(held, data[2*bs:2*bs+bs/2]) {
		t.Fatalf("a view not released was overwritten: %s", firstDiff(held, data[2*bs:2*bs+bs/2]))
	}
	releaseHeld()
	if st := v.f.ReadAheadStats(); st.Buffers > 9 {
		t.Fatalf("%d read-ahead buffers for a 16-block stream: released views were not recycled", st.Buffers)
	}

	// A block in the memory cache is viewed wherever the read falls.
	v.f.blocks.cache = cache.NewMemory(64 << 20)
	v.read(fh, 9*bs, 10)
	if got, release, ok := view(fh, 9*bs+100, 1000); !ok || !bytes.Equal(got, data[9*bs+100:9*bs+1100]) {
		t.Fatalf("view of a cached block: ok %v", ok)
	} else {
		release()
	}

	// Read, not viewed: across two blocks, past the end, over buffered
	// writes.
	for _, c := range []struct {
		off uint64
		n   int
	}{{bs - 100, 200}, {9*bs - 100, 200}, {16*bs - 100, 200}, {16 * bs, 10}} {
		got, release, ok := view(fh, c.off, c.n)
		want := data[min(c.off, 16*bs):min(c.off+uint64(c.n), 16*bs)]
		if ok || !bytes.Equal(got, want) {
			t.Errorf("read of [%d,+%d): viewed %v, %s", c.off, c.n, ok, firstDiff(got, want))
		}
		release()
	}
	rw := v.openFile(ino, syscall.O_RDWR)
	defer v.release(rw)
	v.write(rw, 9*bs+500, []byte("buffered"))
	if got, _, ok := view(rw, 9*bs+496, 16); ok || string(got[4:12]) != "buffered" {
		t.Errorf("read over a buffered write: viewed %v, %q", ok, got)
	}
	wo := v.openFile(ino, syscall.O_WRONLY)
	defer v.release(wo)
	if _, _, err := v.f.ReadView(v.ctx, wo, 0, make([]byte, 10)); err != syscall.EBADF {
		t.Errorf("view through a write-only handle: %v, want EBADF", err)
	}

	// A hole and an inline file have no block to view.
	_, sfh := v.create(meta.RootIno, "sparse", syscall.O_RDWR)
	defer v.release(sfh)
	v.write(sfh, 4*bs, []byte("end"))
	v.flush(sfh)
	_, mfh := v.create(meta.RootIno, "small", syscall.O_RDWR)
	defer v.release(mfh)
	v.write(mfh, 0, []byte("inline"))
	v.flush(mfh)
	if got, _, ok := view(sfh, 100, 1000); ok || !bytes.Equal(got, make([]byte, 1000)) {
		t.Errorf("read of a hole: viewed %v, %q", ok, got)
	}
	if got, _, ok := view(mfh, 0, 6); ok || string(got) != "inline" {
		t.Errorf("read of an inline file: viewed %v, %q", ok, got)
	}
}
