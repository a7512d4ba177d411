package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/cache"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// TestBlocksFreedAfterDeletingEverything writes, overwrites, truncates and
// renames files of all sizes, deletes everything, and expects the object
// store to end up empty.
func TestBlocksFreedAfterDeletingEverything(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 1000, onDisk: true})
	d, err := v.f.Mkdir(v.ctx, &meta.Root, meta.RootIno, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{10, 999, 1001, 4096, 4097, 70000, 200000}
	for i, n := range sizes {
		parent := uint64(meta.RootIno)
		if i%2 == 1 {
			parent = d.Ino
		}
		ino, fh := v.create(parent, fmt.Sprint("f", i), syscall.O_RDWR)
		v.write(fh, 0, pattern(uint64(i), n))
		v.flush(fh)
		v.write(fh, uint64(n/3), pattern(uint64(i+100), n/2+1)) // partial overwrite
		v.flush(fh)
		if i%3 == 0 {
			v.truncate(ino, fh, uint64(n/2))
		}
		v.release(fh)
	}
	// The same content twice shares blocks; delete one copy first.
	for _, name := range []string{"dupA", "dupB"} {
		_, fh := v.create(meta.RootIno, name, syscall.O_RDWR)
		v.write(fh, 0, pattern(7, 50000))
		v.release(fh)
	}
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "dupA"); err != nil {
		t.Fatal(err)
	}
	// A rename over an existing file frees the replaced file's blocks.
	if err := v.f.Rename(v.ctx, &meta.Root, meta.RootIno, "f0", d.Ino, "f1", 0); err != nil {
		t.Fatal(err)
	}
	v.waitStoreMatchesReferences(6 * time.Second)
	if len(v.storedObjects()) == 0 {
		t.Fatal("nothing stored: the test wrote nothing to blocks")
	}
	if ino, err := v.f.Lookup(v.ctx, &meta.Root, meta.RootIno, "dupB"); err != nil || !bytes.Equal(v.content(ino.Ino), pattern(7, 50000)) {
		t.Fatalf("shared blocks freed while still referenced (dupB: %v)", err)
	}

	// Delete everything.
	var rm func(dir uint64)
	rm = func(dir uint64) {
		var ents []meta.Dirent
		_ = v.f.ReadDir(v.ctx, &meta.Root, dir, 0, func(e meta.Dirent) bool { ents = append(ents, e); return true })
		for _, e := range ents {
			if e.Type == syscall.S_IFDIR {
				rm(e.Ino)
				if err := v.f.Rmdir(v.ctx, &meta.Root, dir, e.Name); err != nil {
					t.Fatal(err)
				}
			} else if err := v.f.Unlink(v.ctx, &meta.Root, dir, e.Name); err != nil {
				t.Fatal(err)
			}
		}
	}
	rm(meta.RootIno)
	deadline := time.Now().Add(6 * time.Second)
	for len(v.storedObjects()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(v.storedObjects()); n > 0 {
		t.Errorf("%d objects left in the store after deleting every file", n)
	}
	deadline = time.Now().Add(3 * time.Second)
	for v.m.Stats() != (meta.Stats{Inodes: 1, Dirs: 1}) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if st := v.m.Stats(); st != (meta.Stats{Inodes: 1, Dirs: 1}) {
		t.Errorf("stats of an emptied volume: %+v", st)
	}
}

// TestOverwriteFreesOldBlocks: rewriting a file's content (in place, or via
// O_TRUNC) must eventually free the blocks of the old content.
func TestOverwriteFreesOldBlocks(t *testing.T) {
	tests := []struct {
		name  string
		trunc bool
	}{
		{"O_TRUNC rewrite", true},
		{"in-place full overwrite", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, onDisk: true})
			const size = 150000
			ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
			v.write(fh, 0, pattern(1, size))
			v.release(fh)
			oldObjects := v.storedObjects()
			if len(oldObjects) < size/4096 {
				t.Fatalf("only %d objects stored for %d bytes", len(oldObjects), size)
			}
			flags := uint32(syscall.O_RDWR)
			if tc.trunc {
				flags |= syscall.O_TRUNC
			}
			fh = v.openFile(ino, flags)
			v.write(fh, 0, pattern(2, size))
			v.release(fh)
			if got := v.content(ino); !bytes.Equal(got, pattern(2, size)) {
				t.Fatalf("content after rewrite: %s", firstDiff(got, pattern(2, size)))
			}
			v.waitStoreMatchesReferences(6 * time.Second)
			left := 0
			for k := range v.storedObjects() {
				if oldObjects[k] {
					left++
				}
			}
			if left > 0 {
				t.Errorf("%d of %d blocks of the overwritten content are still stored (and referenced)", left, len(oldObjects))
			}
		})
	}
}

// TestCompactionBoundsSlices makes 2,000 small overwrites at random offsets
// of a 1 MiB file, each committed on its own: the number of slices per chunk
// must stay bounded, the content right, and the store must end up holding
// only referenced blocks.
func TestCompactionBoundsSlices(t *testing.T) {
	const (
		size      = 1 << 20
		chunkSize = 256 << 10
	)
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: chunkSize})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	model := pattern(0, size)
	v.write(fh, 0, model)
	v.flush(fh)
	r := rand.New(rand.NewPCG(5, 5))
	maxSlices := 0
	for i := range 2000 {
		n := 1 + r.IntN(300)
		off := r.IntN(size - n)
		data := pattern(uint64(i+1), n)
		v.write(fh, uint64(off), data)
		copy(model[off:], data)
		v.flush(fh)
		v.waitCompactions()
		d, err := v.m.ReadData(v.ctx, ino, 0, size/chunkSize)
		if err != nil {
			t.Fatal(err)
		}
		for idx, ss := range d.Chunks {
			maxSlices = max(maxSlices, len(ss))
			if len(ss) > compactAlways+1 {
				t.Fatalf("after %d overwrites chunk %d has %d slices", i+1, idx, len(ss))
			}
		}
		if i%250 == 0 {
			off := uint64(r.IntN(size))
			if got, want := v.read(fh, off, 100000), model[off:min(size, off+100000)]; !bytes.Equal(got, want) {
				t.Fatalf("after %d overwrites, read at %d: %s", i+1, off, firstDiff(got, want))
			}
		}
	}
	v.release(fh)
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Fatalf("content: %s", firstDiff(got, model))
	}
	t.Logf("largest slice count seen: %d", maxSlices)
	v.checkNoLeaks()
	v.reopen(v.opts)
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Fatalf("content after remount: %s", firstDiff(got, model))
	}
}

// TestCorruptBlockIsEIO flips one byte of a stored block: reads that touch
// it fail with EIO, never return wrong bytes; reads elsewhere still work.
func TestCorruptBlockIsEIO(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: -1, onDisk: true})
	const size = 5 * 4096
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	content := pattern(3, size)
	v.write(fh, 0, content)
	v.release(fh)
	d, err := v.m.ReadData(v.ctx, ino, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ss := d.Chunks[0]
	if len(ss) != 1 || len(ss[0].Blocks) != 5 {
		t.Fatalf("layout: %+v", ss)
	}
	victim := ss[0].Blocks[2] // bytes [8192, 12288)
	root := v.diskDir
	v.close()
	p := filepath.Join(root, filepath.FromSlash(victim.ID.ObjectKey()))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read block file: %v", err)
	}
	b[100] ^= 0x01
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v.opts.MemCacheBytes = -1
	v.open()
	tests := []struct {
		name    string
		off, n  int
		wantEIO bool
	}{
		{"whole file", 0, size, true},
		{"just the corrupt block", 8192, 4096, true},
		{"one byte of it", 8192 + 100, 1, true},
		{"crossing into it", 8000, 500, true},
		{"before it", 0, 8192, false},
		{"after it", 12288, size - 12288, false},
	}
	for _, ro := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/handle-less=%v", tc.name, ro), func(t *testing.T) {
				buf := make([]byte, tc.n)
				var n int
				var err error
				if ro {
					n, err = v.f.ReadInode(v.ctx, &meta.Root, ino, uint64(tc.off), buf)
				} else {
					fh := v.openFile(ino, syscall.O_RDONLY)
					n, err = v.f.Read(v.ctx, fh, uint64(tc.off), buf)
					v.release(fh)
				}
				if tc.wantEIO {
					if !errors.Is(err, syscall.EIO) {
						t.Errorf("read: n=%d err=%v, want an error wrapping EIO", n, err)
					}
					if n > 0 && !bytes.Equal(buf[:n], content[tc.off:tc.off+n]) {
						t.Errorf("read of a corrupt block returned %d wrong bytes", n)
					}
					return
				}
				if err != nil || n != tc.n || !bytes.Equal(buf, content[tc.off:tc.off+tc.n]) {
					t.Errorf("read away from the corrupt block: n=%d err=%v, equal=%v", n, err, bytes.Equal(buf[:n], content[tc.off:tc.off+n]))
				}
			})
		}
	}
	// A missing block is EIO too.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	fh = v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	if _, err := v.f.Read(v.ctx, fh, 8192, make([]byte, 10)); !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a missing block: %v, want EIO", err)
	}
}

// TestDeletionKeepsUp: freeing many blocks at once (deleting a file of
// 3,000 blocks) must not take minutes to reach the store: background
// deletion has to keep up with the rate at which blocks are freed, or a
// steady overwrite workload grows the store without bound.
func TestDeletionKeepsUp(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 1 << 20})
	const nblocks = 3000
	_, fh := v.create(meta.RootIno, "big", syscall.O_RDWR)
	v.write(fh, 0, pattern(9, nblocks*4096))
	v.release(fh)
	if n := len(v.storedObjects()); n != nblocks {
		t.Fatalf("%d objects stored, want %d", n, nblocks)
	}
	if err := v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "big"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v.waitStoreMatchesReferences(5 * time.Second)
	t.Logf("%d blocks freed in %v", nblocks, time.Since(start))
}

// A chunk left fragmented on disk (its compaction cut short by an unmount
// or a crash) is compacted once a reader finds it, without any write.
func TestReadCompactsFragmentedChunk(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 1 << 20})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.release(fh)
	// 40 slices, as 40 commits of adjacent writes leave them (backwards:
	// appends merge), written straight to metadata so that no compaction
	// is queued.
	piece := pattern(3, 4096)
	ref, err := v.f.blocks.put(v.ctx, piece, false)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 40*4096)
	for i := 39; i >= 0; i-- {
		s := meta.Slice{Pos: uint32(i * 4096), Len: 4096, Blocks: []meta.BlockRef{ref}}
		if _, err := v.m.Write(v.ctx, ino, meta.WriteIn{Chunks: []meta.ChunkWrite{{Index: 0, Slices: []meta.Slice{s}}}, End: uint64(len(want)), Mtime: 1}); err != nil {
			t.Fatal(err)
		}
		copy(want[i*4096:], piece)
	}
	v.f.blocks.release(ref.ID)
	slices := func() int {
		d, err := v.m.ReadData(v.ctx, ino, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(d.Chunks[0])
	}
	v.waitCompactions()
	if n := slices(); n != 40 {
		t.Fatalf("before any read: %d slices, want the 40 written", n)
	}
	fh = v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	if got := v.read(fh, 0, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("read: %s", firstDiff(got, want))
	}
	v.waitCompactions()
	if n := slices(); n >= compactAt {
		t.Fatalf("after a read: %d slices, want the chunk compacted", n)
	}
	if got := v.read(fh, 0, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("read after compaction: %s", firstDiff(got, want))
	}
}

// TestCompactionWindows: compaction rewrites a chunk a few blocks at a
// time, yet leaves one slice per run of data (holes stay holes), blocks
// full but for the last of each run, and the same content.
func TestCompactionWindows(t *testing.T) {
	const bs = 4096
	v := newVol(t, volConfig{blockSize: bs, chunkSize: 256 << 10})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.release(fh)
	model := make([]byte, 150<<10)
	written := make([]bool, len(model))
	rng := rand.New(rand.NewPCG(9, 9))
	hole := [2]int{60 << 10, 64 << 10}
	for i := range 40 {
		off := rng.IntN(140 << 10)
		n := 1 + rng.IntN(12<<10)
		if off < hole[1] && off+n > hole[0] {
			continue // keep the hole
		}
		data := pattern(uint64(100+i), n)
		v.commitSlice(ino, off, data, uint64(len(model)))
		copy(model[off:], data)
		for j := off; j < off+n; j++ {
			written[j] = true
		}
	}
	runs := 0
	for j := range written {
		if written[j] && (j == 0 || !written[j-1]) {
			runs++
		}
	}
	if err := v.f.maybeCompact(v.ctx, ino, 0); err != nil {
		t.Fatal(err)
	}
	d, err := v.m.ReadData(v.ctx, ino, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ss := d.Chunks[0]
	if len(ss) != runs {
		t.Errorf("%d slices after compaction, want one per run of data: %d", len(ss), runs)
	}
	for _, s := range ss {
		var sum uint32
		for k, b := range s.Blocks {
			sum += b.Size
			if k < len(s.Blocks)-1 && b.Size != bs {
				t.Errorf("slice at %d: block %d of %d has %d bytes, want %d", s.Pos, k, len(s.Blocks), b.Size, bs)
			}
		}
		if sum != s.Len {
			t.Errorf("slice at %d: blocks hold %d bytes, slice %d", s.Pos, sum, s.Len)
		}
		for j := s.Pos; j < s.Pos+s.Len; j++ {
			if !written[j] {
				t.Fatalf("slice at %d covers the unwritten byte %d", s.Pos, j)
			}
		}
	}
	fh = v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	if got := v.read(fh, 0, len(model)); !bytes.Equal(got, model) {
		t.Fatalf("read after compaction: %s", firstDiff(got, model))
	}
}

// TestVisible: for random stacks of slices and random ranges, visible
// returns disjoint segments inside the range in which every byte is served
// by the newest slice covering it, and nothing where no slice covers it.
func TestVisible(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for round := range 500 {
		ss := make([]meta.Slice, rng.IntN(30))
		for i := range ss {
			pos := uint32(rng.IntN(1000))
			ss[i] = meta.Slice{Pos: pos, Len: 1 + uint32(rng.IntN(300))}
			if rng.IntN(5) > 0 { // else a hole slice
				ss[i].Blocks = []meta.BlockRef{{Size: ss[i].Len}}
			}
		}
		lo := uint32(rng.IntN(1100))
		hi := lo + uint32(rng.IntN(400))
		// The model: the newest slice covering each byte, or none (-1)
		// where that is a hole slice or there is none.
		want := make([]int, hi-lo)
		for b := range want {
			want[b] = -1
			for i := len(ss) - 1; i >= 0; i-- {
				if p := lo + uint32(b); p >= ss[i].Pos && p < ss[i].Pos+ss[i].Len {
					if !ss[i].Hole() {
						want[b] = i
					}
					break
				}
			}
		}
		got := make([]int, hi-lo)
		for b := range got {
			got[b] = -1
		}
		for _, sg := range visible(ss, lo, hi) {
			if sg.lo < lo || sg.hi > hi || sg.lo >= sg.hi {
				t.Fatalf("round %d: segment [%d, %d) outside [%d, %d) or empty", round, sg.lo, sg.hi, lo, hi)
			}
			i := -2 // not one of ss: fails the comparison below
			for k := range ss {
				if &ss[k] == sg.s {
					i = k
				}
			}
			for p := sg.lo; p < sg.hi; p++ {
				if got[p-lo] != -1 {
					t.Fatalf("round %d: byte %d in two segments", round, p)
				}
				got[p-lo] = i
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: served by %v, want %v", round, got, want)
		}
	}
}

// BenchmarkVisible: a 4 KiB read of a chunk of 24 slices (random writes).
func BenchmarkVisible(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 5))
	ss := make([]meta.Slice, 24)
	for i := range ss {
		ss[i] = meta.Slice{Pos: uint32(rng.IntN(64<<20 - 4096)), Len: 4096, Blocks: []meta.BlockRef{{Size: 4096}}}
	}
	ss[0] = meta.Slice{Pos: 0, Len: 64 << 20, Blocks: []meta.BlockRef{{Size: 64 << 20}}} // not a hole slice
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		lo := uint32(i*4096) % (64<<20 - 4096)
		visible(ss, lo, lo+4096)
	}
}

// TestDamagedSlicesAreEIO reads files whose slice lists a damaged volume
// could hold: references to missing blocks, blocks of another size than
// referenced, a slice longer than its blocks. Each read that touches the
// damage fails with EIO (never a panic, never wrong bytes); reads of the
// same file away from it, and of the undamaged file whose block the
// damaged references name, still work. The block the references misname
// is read from the memory cache in one run, from the disk cache in the
// other.
func TestDamagedSlicesAreEIO(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(fmt.Sprintf("disk-cache=%v", disk), func(t *testing.T) { testDamagedSlices(t, disk) })
	}
}

func testDamagedSlices(t *testing.T, disk bool) {
	cfg := volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: -1}
	var dc *cache.Disk
	if disk {
		var err error
		if dc, err = cache.OpenDisk(t.TempDir(), 64<<20, quietLogger); err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		cfg.opts = Options{DiskCache: dc, MemCacheBytes: -1, ReadAhead: -1}
	}
	v := newVol(t, cfg)
	good, fh := v.create(meta.RootIno, "good", syscall.O_RDWR)
	content := pattern(7, 3*4096)
	v.write(fh, 0, content)
	v.release(fh)
	if disk {
		if got := v.content(good); !bytes.Equal(got, content) {
			t.Fatalf("first read: %s", firstDiff(got, content))
		}
		waitFor(t, "the disk cache to hold the blocks", func() bool { return dc.Stats().Entries == 3 })
	}
	d, err := v.m.ReadData(v.ctx, good, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	real := d.Chunks[0][0].Blocks[0] // a stored 4096-byte block: content[:4096]
	missing := meta.BlockRef{ID: meta.BlockID{1, 2, 3}, Size: 4096}
	type span struct{ off, n int }
	for _, tc := range []struct {
		name   string
		slices []meta.Slice
		size   uint64
		bad    []span // reads that must fail with EIO
		good   []span // reads that must return the file's bytes
	}{
		{"block missing from the store", []meta.Slice{{Pos: 0, Len: 4096, Blocks: []meta.BlockRef{missing}}}, 4096,
			[]span{{0, 4096}, {0, 1}, {4095, 1}, {0, 64 << 10}}, nil},
		{"block longer than referenced", []meta.Slice{{Pos: 0, Len: 1000, Blocks: []meta.BlockRef{{ID: real.ID, Size: 1000}}}}, 1000,
			[]span{{0, 1000}, {0, 1}, {999, 1}, {0, 64 << 10}}, nil},
		{"block shorter than referenced", []meta.Slice{{Pos: 0, Len: 8192, Blocks: []meta.BlockRef{{ID: real.ID, Size: 8192}}}}, 8192,
			[]span{{0, 8192}, {0, 1}, {8191, 1}, {0, 64 << 10}}, nil},
		{"slice longer than its blocks", []meta.Slice{{Pos: 0, Len: 8192, Blocks: []meta.BlockRef{real}}}, 8192,
			[]span{{0, 8192}, {0, 1}, {8191, 1}}, nil},
		{"second block missing, mid-chunk", []meta.Slice{{Pos: 100, Len: 8000, Blocks: []meta.BlockRef{real, missing}}}, 8100,
			[]span{{0, 8100}, {4196, 1}, {4000, 500}, {8099, 1}}, []span{{0, 100}, {100, 4096}, {50, 1000}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ino, fh := v.create(meta.RootIno, strings.ReplaceAll(tc.name, " ", "-"), syscall.O_RDWR)
			v.release(fh)
			if _, err := v.m.Write(v.ctx, ino, meta.WriteIn{Chunks: []meta.ChunkWrite{{Index: 0, Slices: tc.slices}}, End: tc.size}); err != nil {
				t.Fatal(err)
			}
			// What the file holds where it is intact: a hole before
			// the slice, then the real block's bytes.
			want := make([]byte, tc.size)
			if len(tc.slices[0].Blocks) > 0 && tc.slices[0].Blocks[0].ID == real.ID {
				copy(want[tc.slices[0].Pos:], content[:min(4096, int(tc.slices[0].Len))])
			}
			read := func(r span) ([]byte, error) {
				buf := make([]byte, r.n)
				fh := v.openFile(ino, syscall.O_RDONLY)
				defer v.release(fh)
				n, err := v.f.Read(v.ctx, fh, uint64(r.off), buf)
				if _, err2 := v.f.ReadInode(v.ctx, &meta.Root, ino, uint64(r.off), make([]byte, r.n)); (err2 == nil) != (err == nil) {
					t.Errorf("read [%d,+%d): with a handle %v, without %v", r.off, r.n, err, err2)
				}
				return buf[:n], err
			}
			for _, r := range tc.bad {
				if got, err := read(r); !errors.Is(err, syscall.EIO) {
					t.Errorf("read [%d,+%d): %d bytes, err=%v, want EIO", r.off, r.n, len(got), err)
				}
			}
			for _, r := range tc.good {
				if got, err := read(r); err != nil || !bytes.Equal(got, want[r.off:r.off+r.n]) {
					t.Errorf("read [%d,+%d) away from the damage: %v, %s", r.off, r.n, err, firstDiff(got, want[r.off:r.off+r.n]))
				}
			}
			if got := v.content(good); !bytes.Equal(got, content) {
				t.Errorf("the undamaged file: %s", firstDiff(got, content))
			}
		})
	}
}

// claimingStore answers every read with the bytes stored and says they
// were verified when claim is set, as a replicated store does.
type claimingStore struct {
	objstore.Store
	claim bool
}

func (s claimingStore) GetVerified(ctx context.Context, key string, buf []byte) ([]byte, bool, error) {
	data, err := objstore.GetInto(ctx, s.Store, key, buf)
	return data, err == nil && s.claim, err
}

// TestFetchTrustsVerifyingStores: a block a store reports verified is not
// hashed again (a replicated store has just hashed it); one it does not is,
// and a wrong size is refused either way.
func TestFetchTrustsVerifyingStores(t *testing.T) {
	ctx := context.Background()
	data := pattern(5, 4096)
	ref := meta.BlockRef{ID: meta.BlockID(sha256.Sum256(data)), Size: 4096}
	for _, tc := range []struct {
		claim      bool
		size       uint32
		wantHashes int
		wantErr    bool
	}{
		{true, 4096, 0, false},
		{false, 4096, 1, false},
		{true, 100, 0, true}, // a reference of another size: EIO, whoever verified
	} {
		mem := newMemStore()
		if err := mem.Put(ctx, ref.ID.ObjectKey(), data); err != nil {
			t.Fatal(err)
		}
		hashes := 0
		hash := func(b []byte) meta.BlockID { hashes++; return sha256.Sum256(b) }
		b := newBlocks(claimingStore{mem, tc.claim}, hash, cache.NewMemory(1<<20), nil, quietLogger)
		r := ref
		r.Size = tc.size
		got, err := b.fetchStore(ctx, r, nil)
		if (err != nil) != tc.wantErr || (err == nil && !bytes.Equal(got, data)) {
			t.Errorf("claim %v, size %d: %d bytes, %v", tc.claim, tc.size, len(got), err)
		}
		if tc.wantErr && !errors.Is(err, syscall.EIO) {
			t.Errorf("claim %v, size %d: %v, want EIO", tc.claim, tc.size, err)
		}
		if hashes != tc.wantHashes {
			t.Errorf("claim %v, size %d: %d hashes, want %d", tc.claim, tc.size, hashes, tc.wantHashes)
		}
	}
}

// errAfter is a context whose Err reports cancellation after n calls: it
// stops an operation of several transactions after the first.
type errAfter struct {
	context.Context
	left atomic.Int32
}

func (c *errAfter) Err() error {
	if c.left.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// TestLargeTruncation: files of more 4 KiB blocks than one metadata
// transaction can release are emptied by O_TRUNC and by a truncation cut
// short after its first transaction, which the next start finishes; all
// their blocks are freed. (O_TRUNC used to fail with EFBIG.)
func TestLargeTruncation(t *testing.T) {
	const size = 112 << 20 // 28,672 distinct blocks
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 1 << 20})
	fill := func(name string) uint64 {
		ino, fh := v.create(meta.RootIno, name, syscall.O_WRONLY)
		for off := uint64(0); off < size; off += 1 << 20 {
			v.write(fh, off, pattern(off, 1<<20))
		}
		v.release(fh)
		return ino
	}

	f := fill("f")
	fh := v.openFile(f, syscall.O_WRONLY|syscall.O_TRUNC)
	v.write(fh, 0, []byte("new"))
	v.release(fh)
	if got := v.content(f); string(got) != "new" {
		t.Fatalf("after O_TRUNC and a write: %d bytes %q...", len(got), got[:min(len(got), 8)])
	}

	g := fill("g")
	ctx := &errAfter{Context: v.ctx}
	ctx.left.Store(1)
	if _, err := v.m.SetAttr(ctx, &meta.Root, g, meta.SetAttrIn{Valid: meta.SetSize, Size: 10}); err != nil {
		t.Fatalf("truncate: %v", err)
	}
	if tr, err := v.m.Truncations(v.ctx); err != nil || len(tr) != 1 || tr[0] != g {
		t.Fatalf("truncations %v (%v): the truncation was not cut short", tr, err)
	}
	v.reopen(v.opts)
	if tr, err := v.m.Truncations(v.ctx); err != nil || len(tr) != 0 {
		t.Errorf("truncations left after the start: %v (%v)", tr, err)
	}
	if got := v.content(g); !bytes.Equal(got, pattern(0, 10)) {
		t.Errorf("after the truncation: %d bytes", len(got))
	}
	v.waitStoreMatchesReferences(10 * time.Second)
	v.checkNoLeaks()
}

// TestCompactionReadsOnceUncached: compaction reads each block it copies
// from once, however many pieces of it are visible between newer slices,
// and leaves the memory cache as it found it: what it reads is about to be
// replaced, and what it writes is not being read.
func TestCompactionReadsOnceUncached(t *testing.T) {
	const bs = 4096
	v := newVol(t, volConfig{blockSize: bs, chunkSize: 256 << 10, inlineMax: -1})
	store := v.store.(*memStore)
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	model := pattern(1, 64<<10) // 16 blocks, one slice
	v.write(fh, 0, model)
	v.flush(fh)
	v.release(fh)
	// The commit queued a look at the chunk; were it to run after the
	// slices below, it would compact them before the test does.
	v.waitCompactions()
	// Small slices over it, none across a window of compaction
	// (compactWindow blocks), so that each block lies in one window.
	rng := rand.New(rand.NewPCG(5, 5))
	window := compactWindow * bs
	for i := range compactAt + 6 {
		// Enough bytes for compaction to be worth it (see needsCompaction).
		n := 500 + rng.IntN(500)
		off := rng.IntN(len(model)/window)*window + rng.IntN(window-n)
		data := pattern(uint64(1000+i), n)
		v.commitSlice(ino, off, data, uint64(len(model)))
		copy(model[off:], data)
	}
	v.waitCompactions()
	d, err := v.m.ReadData(v.ctx, ino, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	old := d.Chunks[0]
	if !needsCompaction(old) {
		t.Fatalf("%d slices before compaction, which needsCompaction declines", len(old))
	}
	v.f.DropCaches()
	store.getCounts()
	if err := v.f.maybeCompact(v.ctx, ino, 0); err != nil {
		t.Fatal(err)
	}
	if n, b := v.f.blocks.cache.Len(), v.f.blocks.cache.Bytes(); n != 0 || b != 0 {
		t.Errorf("compaction left %d blocks (%d bytes) in the memory cache, want none", n, b)
	}
	gets := store.getCounts()
	visibleBlocks := map[string]bool{}
	for _, sg := range visible(old, 0, uint32(len(model))) {
		var bstart uint32
		for _, b := range sg.s.Blocks {
			if bstart < sg.hi-sg.s.Pos && bstart+b.Size > sg.lo-sg.s.Pos {
				visibleBlocks[b.ID.ObjectKey()] = true
			}
			bstart += b.Size
		}
	}
	for key := range visibleBlocks {
		if gets[key] != 1 {
			t.Errorf("block %s read %d times by compaction, want once", key, gets[key])
		}
		delete(gets, key)
	}
	for key, n := range gets {
		t.Errorf("compaction read %s (%d times), which no visible byte needs", key, n)
	}
	if d, err = v.m.ReadData(v.ctx, ino, 0, 0); err != nil {
		t.Fatal(err)
	}
	if len(d.Chunks[0]) != 1 {
		t.Errorf("%d slices after compaction, want 1", len(d.Chunks[0]))
	}
	fh = v.openFile(ino, syscall.O_RDONLY)
	defer v.release(fh)
	if got := v.read(fh, 0, len(model)); !bytes.Equal(got, model) {
		t.Fatalf("read after compaction: %s", firstDiff(got, model))
	}
}

// TestCompactionKeepsConcurrentWrites: a write committed while a chunk is
// being compacted does not make the compaction fail (a file written in
// small commits faster than its chunk compacts was never compacted); the
// compacted slices go under it, and the content is right.
func TestCompactionKeepsConcurrentWrites(t *testing.T) {
	const bs = 4096
	v := newVol(t, volConfig{blockSize: bs, chunkSize: 256 << 10, inlineMax: -1})
	store := v.store.(*memStore)
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	model := pattern(1, 64<<10)
	v.write(fh, 0, model)
	v.flush(fh)
	v.release(fh)
	commit := func(off int, data []byte) {
		v.commitSlice(ino, off, data, uint64(len(model)))
		copy(model[off:], data)
	}
	rng := rand.New(rand.NewPCG(6, 6))
	for i := range compactAt + 6 {
		// Each over a byte of the base no other covers, so none drops another.
		commit(i*2000+rng.IntN(500), pattern(uint64(100+i), 1000))
	}
	v.waitCompactions()
	v.f.DropCaches()
	// Mid-compaction (at its first read), one more write: one that covers
	// a slice being compacted whole, the case a write drops a slice in.
	store.onGet = func() { commit(2*2000, pattern(999, 3000)) }
	if err := v.f.maybeCompact(v.ctx, ino, 0); err != nil {
		t.Fatal(err)
	}
	if store.onGet != nil {
		t.Fatal("compaction read nothing from the store")
	}
	d, err := v.m.ReadData(v.ctx, ino, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ss := d.Chunks[0]; len(ss) != 2 || ss[1].Pos != 2*2000 || ss[1].Len != 3000 {
		t.Errorf("after compaction: %d slices, want the compacted one and the write made meanwhile (the newest is [%d,+%d))",
			len(ss), ss[len(ss)-1].Pos, ss[len(ss)-1].Len)
	}
	fh = v.openFile(ino, syscall.O_RDONLY)
	if got := v.read(fh, 0, len(model)); !bytes.Equal(got, model) {
		t.Fatalf("read after compaction: %s", firstDiff(got, model))
	}
	v.release(fh)
	v.checkNoLeaks()
}

// TestNeedsCompaction: when a chunk's slices are worth rewriting.
func TestNeedsCompaction(t *testing.T) {
	const mib = 1 << 20
	s := func(pos, n uint32) meta.Slice {
		return meta.Slice{Pos: pos, Len: n, Blocks: []meta.BlockRef{{Size: n}}}
	}
	hole := func(pos, n uint32) meta.Slice { return meta.Slice{Pos: pos, Len: n} }
	// base, then k slices of n bytes at distinct offsets inside it
	over := func(base meta.Slice, k int, n uint32) []meta.Slice {
		ss := []meta.Slice{base}
		for i := range k {
			ss = append(ss, s(base.Pos+uint32(i)*7919%(base.Len-n), n))
		}
		return ss
	}
	runs := func(k int, gap uint32) []meta.Slice { // a compacted sparse chunk
		var ss []meta.Slice
		for i := range k {
			ss = append(ss, s(uint32(i)*(4096+gap), 4096))
		}
		return ss
	}
	descending := func(k int) []meta.Slice { // adjacent commits written backwards
		var ss []meta.Slice
		for i := k - 1; i >= 0; i-- {
			ss = append(ss, s(uint32(i)*4096, 4096))
		}
		return ss
	}
	tests := []struct {
		name string
		ss   []meta.Slice
		want bool
	}{
		{"empty", nil, false},
		{"one slice", []meta.Slice{s(0, 64*mib)}, false},
		{"23 large overwrites", over(s(0, 4*mib), compactAt-1, mib), false},
		{"24 large overwrites", over(s(0, 4*mib), compactAt, mib), true},
		{"24 4 KiB writes into 64 MiB", over(s(0, 64*mib), compactAt, 4096), false},
		{"one short of compactAlways 4 KiB writes into 64 MiB", over(s(0, 64*mib), compactAlways-1, 4096), false},
		{"compactAlways 4 KiB writes into 64 MiB", over(s(0, 64*mib), compactAlways, 4096), true},
		{"24 4 KiB writes into 512 KiB", over(s(0, 512<<10), compactAt, 4096), true},
		{"300 disjoint runs", runs(300, 1), false},
		{"300 runs, 23 newer", append(runs(300, 1), over(s(0, 4096), compactAt-1, 100)[1:]...), false},
		{"40 adjacent slices backwards", descending(40), true},
		{"touching slices in order", runs(300, 0), true},
		{"a punch of a quarter", []meta.Slice{s(0, 64*mib), hole(16*mib, 16*mib)}, true},
		{"a punch of an eighth", []meta.Slice{s(0, 56*mib), hole(0, 8*mib)}, true},
		{"a 4 KiB punch", []meta.Slice{s(0, 64*mib), hole(mib, 4096)}, false},
		{"a hole beside the data", []meta.Slice{s(0, 4*mib), hole(8*mib, 8*mib)}, false},
	}
	for _, tt := range tests {
		if got := needsCompaction(tt.ss); got != tt.want {
			t.Errorf("%s (%d slices): needsCompaction = %v, want %v", tt.name, len(tt.ss), got, tt.want)
		}
	}
}

// TestDenseCommitRewritesChunk: a buffer of many small writes over a
// written chunk commits as that chunk rewritten (one slice per run, whole
// blocks), not as a block and a slice per write; the same writes into an
// unwritten region, where they are disjoint runs, commit as they are.
func TestDenseCommitRewritesChunk(t *testing.T) {
	const bs = 4096
	const cs = 256 << 10
	v := newVol(t, volConfig{blockSize: bs, chunkSize: cs, inlineMax: -1})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	model := pattern(1, cs) // chunk 0 written
	v.write(fh, 0, model)
	v.flush(fh)
	objects := len(v.storedObjects())
	rng := rand.New(rand.NewPCG(7, 7))
	writes := compactAt + 10
	for i := range writes {
		// Into chunk 0, and one crossing into chunk 1 at the end.
		off := rng.IntN(cs - 2000)
		if i == writes-1 {
			off = cs - 500
		}
		data := pattern(uint64(100+i), 2000) // enough to be worth it: see needsCompaction
		v.write(fh, uint64(off), data)
		if grow := off + len(data) - len(model); grow > 0 {
			model = append(model, make([]byte, grow)...)
		}
		copy(model[off:], data)
	}
	v.flush(fh)
	d, err := v.m.ReadData(v.ctx, ino, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ss := d.Chunks[0]; len(ss) != 1 || ss[0].Pos != 0 || ss[0].Len != cs {
		t.Errorf("chunk 0: %d slices, want it rewritten as one", len(ss))
	}
	if ss := d.Chunks[1]; len(ss) != 1 || ss[0].Pos != 0 || ss[0].Len != 1500 {
		t.Errorf("chunk 1: %d slices, want one of the 1500 bytes that crossed into it", len(ss))
	}
	v.waitStoreMatchesReferences(5 * time.Second)
	// The old blocks of chunk 0 are gone and its new ones are whole: the
	// store holds as many objects as before, plus chunk 1's.
	if n := len(v.storedObjects()); n != objects+1 {
		t.Errorf("%d objects stored, want %d: the chunk's %d blocks and chunk 1's one", n, objects+1, objects)
	}
	// Disjoint writes into unwritten chunk 2 (sparse): kept as they are.
	for i := range writes {
		off := 2*cs + i*5000
		data := pattern(uint64(500+i), 1000)
		v.write(fh, uint64(off), data)
		if grow := off + len(data) - len(model); grow > 0 {
			model = append(model, make([]byte, grow)...)
		}
		copy(model[off:], data)
	}
	v.flush(fh)
	if d, err = v.m.ReadData(v.ctx, ino, 2, 2); err != nil {
		t.Fatal(err)
	}
	if n := len(d.Chunks[2]); n != writes {
		t.Errorf("chunk 2: %d slices, want the %d disjoint writes as they are", n, writes)
	}
	v.release(fh)
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Fatalf("content: %s", firstDiff(got, model))
	}
	v.checkNoLeaks()
	v.reopen(v.opts)
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Fatalf("content after remount: %s", firstDiff(got, model))
	}
}

// commitSlice stores data as one block and commits it as one slice at off
// of ino, straight to the metadata (no buffer, no compaction queued); the
// file's size becomes end. The block is not cached.
func (v *testVol) commitSlice(ino uint64, off int, data []byte, end uint64) {
	v.t.Helper()
	ref, err := v.f.blocks.put(v.ctx, data, true)
	if err != nil {
		v.t.Fatal(err)
	}
	defer v.f.blocks.release(ref.ID)
	s := meta.Slice{Pos: uint32(off), Len: uint32(len(data)), Blocks: []meta.BlockRef{ref}}
	if _, err := v.m.Write(v.ctx, ino, meta.WriteIn{Chunks: []meta.ChunkWrite{{Index: 0, Slices: []meta.Slice{s}}}, End: end, Mtime: 1}); err != nil {
		v.t.Fatal(err)
	}
}
