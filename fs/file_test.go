package fs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// modelFile is a file under test and the bytes it must hold.
type modelFile struct {
	name  string
	ino   uint64
	fh    uint64 // O_RDWR handle
	app   uint64 // O_WRONLY|O_APPEND handle
	model []byte
}

// TestDataPathMatchesModel drives files through thousands of seeded random
// writes, reads, truncations, flushes and remounts, comparing every read
// with an in-memory model. Small blocks and chunks make writes and reads
// cross block and chunk boundaries; a small inline limit makes files move
// between inline and chunked storage.
func TestDataPathMatchesModel(t *testing.T) {
	configs := []struct {
		seed                            uint64
		blockSize, chunkSize, inlineMax int
		maxSize                         int // 0: 5 chunks or 200,000 bytes
	}{
		{1, 4096, 64 << 10, 3000, 0},
		{2, 4096, 64 << 10, 3000, 0},
		{3, 8192, 64 << 10, 3000, 0},
		{4, 4096, 4096, 16 << 10, 0}, // chunks smaller than the inline limit
		{5, 16 << 10, 256 << 10, 100, 0},
		// Files of up to 256 one-block chunks: truncations release more
		// chunks than one transaction does (64) and finish in steps.
		{6, 4096, 4096, 3000, 1 << 20},
		{7, 4096, 4096, 3000, 1 << 20},
	}
	for _, cfg := range configs {
		blockSize, chunkSize, inlineMax := cfg.blockSize, cfg.chunkSize, cfg.inlineMax
		maxSize := max(5*chunkSize+1234, 200000)
		if cfg.maxSize != 0 {
			maxSize = cfg.maxSize
		}
		seed := cfg.seed
		t.Run(fmt.Sprintf("seed%d-block%d-chunk%d-inline%d", seed, blockSize, chunkSize, inlineMax), func(t *testing.T) {
			v := newVol(t, volConfig{blockSize: blockSize, chunkSize: chunkSize, inlineMax: inlineMax})
			r := rand.New(rand.NewPCG(seed, 99))
			files := make([]*modelFile, 3)
			openAll := func() {
				for _, mf := range files {
					mf.fh = v.openFile(mf.ino, syscall.O_RDWR)
					mf.app = v.openFile(mf.ino, syscall.O_WRONLY|syscall.O_APPEND)
				}
			}
			for i := range files {
				mf := &modelFile{name: fmt.Sprint("f", i)}
				mf.ino, mf.fh = v.create(meta.RootIno, mf.name, syscall.O_RDWR)
				mf.app = v.openFile(mf.ino, syscall.O_WRONLY|syscall.O_APPEND)
				files[i] = mf
			}
			verify := func(what string, mf *modelFile) {
				t.Helper()
				a, err := v.f.GetAttr(v.ctx, mf.ino)
				if err != nil {
					t.Fatalf("%s: getattr: %v", what, err)
				}
				if a.Size != uint64(len(mf.model)) {
					t.Fatalf("%s: %s has size %d, model %d", what, mf.name, a.Size, len(mf.model))
				}
				if got := v.content(mf.ino); !bytes.Equal(got, mf.model) {
					t.Fatalf("%s: content of %s: %s", what, mf.name, firstDiff(got, mf.model))
				}
			}
			randOff := func(mf *modelFile) uint64 {
				n := len(mf.model)
				switch r.IntN(6) {
				case 0: // near a chunk boundary
					return uint64(max(0, (r.IntN(maxSize/chunkSize)+1)*chunkSize-r.IntN(3*blockSize)))
				case 1: // beyond EOF, leaving a hole
					return uint64(n + r.IntN(2*chunkSize))
				case 2: // at EOF
					return uint64(n)
				case 3: // inside the inline range
					return uint64(r.IntN(inlineMax))
				default:
					return uint64(r.IntN(n + 1))
				}
			}
			const ops = 2500
			counts := map[string]int{}
			for i := range ops {
				mf := files[r.IntN(len(files))]
				what := fmt.Sprintf("op %d", i)
				op := r.IntN(100)
				switch {
				case op < 45:
					counts["write"]++
				case op < 50:
					counts["append"]++
				case op < 75:
					counts["read"]++
				case op < 85:
					counts["truncate"]++
				case op < 92:
					counts["flush"]++
				case op < 95:
					counts["copy"]++
				default:
					counts["verify/remount"]++
				}
				switch {
				case op < 45: // write
					off := randOff(mf)
					sizes := []int{100, 3000, 20000, 2 * chunkSize}
					if cfg.maxSize != 0 {
						sizes = append(sizes, maxSize/3) // dense runs of many chunks
					}
					size := 1 + r.IntN(sizes[r.IntN(len(sizes))])
					if off+uint64(size) > uint64(maxSize) {
						continue
					}
					data := pattern(uint64(i), size)
					v.write(mf.fh, off, data)
					if end := int(off) + size; end > len(mf.model) {
						mf.model = append(mf.model, make([]byte, end-len(mf.model))...)
					}
					copy(mf.model[off:], data)
				case op < 50: // O_APPEND write: the offset given is ignored
					size := 1 + r.IntN(5000)
					if len(mf.model)+size > maxSize {
						continue
					}
					data := pattern(uint64(i)+1e6, size)
					v.write(mf.app, uint64(r.IntN(100)), data)
					mf.model = append(mf.model, data...)
				case op < 75: // read a random range
					off := uint64(r.IntN(len(mf.model) + 10))
					n := 1 + r.IntN(3*chunkSize)
					got := v.read(mf.fh, off, n)
					var want []byte
					if off < uint64(len(mf.model)) {
						want = mf.model[off:min(uint64(len(mf.model)), off+uint64(n))]
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("%s: read %d at %d of %s: %s", what, n, off, mf.name, firstDiff(got, want))
					}
				case op < 85: // truncate up or down
					var size int
					switch r.IntN(4) {
					case 0:
						size = r.IntN(inlineMax + 1)
					case 1:
						size = 0
					default:
						size = r.IntN(maxSize)
					}
					v.truncate(mf.ino, mf.fh, uint64(size))
					if size > len(mf.model) {
						mf.model = append(mf.model, make([]byte, size-len(mf.model))...)
					} else {
						mf.model = mf.model[:size]
					}
				case op < 92:
					v.flush([]uint64{mf.fh, mf.app}[r.IntN(2)])
				case op < 95: // copy_file_range, often chunk-aligned so that blocks are shared
					dst := files[r.IntN(len(files))]
					offIn, offOut := randOff(mf), randOff(dst)
					if r.IntN(2) == 0 {
						offIn = uint64(r.IntN(len(mf.model)/chunkSize+1) * chunkSize)
						offOut = uint64(r.IntN(maxSize/chunkSize) * chunkSize)
					}
					n := uint64(1 + r.IntN(3*chunkSize))
					if r.IntN(3) == 0 {
						n = uint64(maxSize) // to the end of the source
					}
					k := uint64(0)
					if offIn < uint64(len(mf.model)) {
						k = min(n, uint64(len(mf.model))-offIn)
					}
					if offOut+k > uint64(maxSize) {
						continue
					}
					if mf == dst && offIn < offOut+n && offOut < offIn+n {
						if _, _, err := v.f.CopyFileRange(v.ctx, mf.fh, offIn, dst.fh, offOut, n, nil); !errors.Is(err, syscall.EINVAL) {
							t.Fatalf("%s: overlapping copy within %s: %v, want EINVAL", what, mf.name, err)
						}
						continue
					}
					if k == 0 {
						if c, _, err := v.f.CopyFileRange(v.ctx, mf.fh, offIn, dst.fh, offOut, n, nil); c != 0 || err != nil {
							t.Fatalf("%s: copy from %d, past the end of %s: %d, %v", what, offIn, mf.name, c, err)
						}
						continue
					}
					var done uint64
					for done < k {
						c, _, err := v.f.CopyFileRange(v.ctx, mf.fh, offIn+done, dst.fh, offOut+done, n-done, nil)
						if err != nil || c == 0 {
							t.Fatalf("%s: copy %d bytes at %d of %s to %d of %s: copied %d, then %d, %v", what, n, offIn, mf.name, offOut, dst.name, done, c, err)
						}
						done += c
					}
					if done != k {
						t.Fatalf("%s: copied %d bytes, want %d", what, done, k)
					}
					data := bytes.Clone(mf.model[min(offIn, uint64(len(mf.model))):][:k])
					if end := int(offOut + k); end > len(dst.model) {
						dst.model = append(dst.model, make([]byte, end-len(dst.model))...)
					}
					copy(dst.model[offOut:], data)
				case op < 99 || r.IntN(3) != 0:
					verify(what, mf)
				default: // unmount and mount again (about every 300 ops)
					counts["remount"]++
					for _, mf := range files {
						v.release(mf.fh)
						v.release(mf.app)
					}
					v.reopen(v.opts)
					openAll()
					for _, mf := range files {
						verify(what+" after remount", mf)
					}
				}
			}
			t.Logf("operations: %v", counts)
			if counts["remount"] < 2 || counts["truncate"] < 100 {
				t.Errorf("the random mix exercised too little: %v", counts)
			}
			for _, mf := range files {
				verify("end", mf)
				v.release(mf.fh)
				v.release(mf.app)
			}
			v.reopen(v.opts)
			for _, mf := range files {
				verify("end after remount", mf)
			}
			// The totals match the files, and no block is leaked.
			st := v.m.Stats()
			var total int64
			for _, mf := range files {
				total += int64(len(mf.model))
			}
			if st.Files != int64(len(files)) || st.Bytes != total {
				t.Errorf("stats count %d files of %d bytes, want %d of %d", st.Files, st.Bytes, len(files), total)
			}
			if refd := v.referencedObjects(); st.Blocks != int64(len(refd)) {
				t.Errorf("stats count %d blocks, the files reference %d", st.Blocks, len(refd))
			}
			v.checkNoLeaks()
		})
	}
}

// TestInlineTransitions: a small file lives inline; growing past the inline
// limit moves it to chunks; truncating it to zero lets it become inline
// again; its content is right at every step.
func TestInlineTransitions(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 1000})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	var model []byte
	layout := func() *meta.Data {
		t.Helper()
		d, err := v.m.ReadData(v.ctx, ino, 0, ^uint64(0))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	steps := []struct {
		name       string
		do         func()
		wantInline bool
	}{
		{"small write", func() { v.write(fh, 0, pattern(1, 500)); model = pattern(1, 500) }, true},
		{"grow to the limit", func() {
			v.write(fh, 500, pattern(2, 500))
			model = append(model, pattern(2, 500)...)
		}, true},
		{"one past the limit", func() { v.write(fh, 1000, []byte{7}); model = append(model, 7) }, false},
		{"overwrite inside while chunked", func() { v.write(fh, 10, pattern(3, 20)); copy(model[10:], pattern(3, 20)) }, false},
		{"truncate down below the limit", func() { v.truncate(ino, fh, 300); model = model[:300] }, false},
		{"write after truncate down", func() { v.write(fh, 290, pattern(4, 20)); model = append(model[:290], pattern(4, 20)...) }, false},
		{"truncate to zero", func() { v.truncate(ino, fh, 0); model = nil }, true},
		{"small write again", func() { v.write(fh, 0, pattern(5, 100)); model = pattern(5, 100) }, true},
		{"truncate up", func() { v.truncate(ino, fh, 900); model = append(model, make([]byte, 800)...) }, true},
		{"write in the hole", func() { v.write(fh, 500, pattern(6, 10)); copy(model[500:], pattern(6, 10)) }, true},
		{"truncate up past the limit", func() { v.truncate(ino, fh, 5000); model = append(model, make([]byte, 4100)...) }, true},
		{"write past the limit", func() { v.write(fh, 4000, pattern(7, 10)); copy(model[4000:], pattern(7, 10)) }, false},
	}
	for _, st := range steps {
		st.do()
		// Before the commit, reads see the buffer.
		if got := v.content(ino); !bytes.Equal(got, model) {
			t.Fatalf("%s (buffered): %s", st.name, firstDiff(got, model))
		}
		v.flush(fh)
		if got := v.content(ino); !bytes.Equal(got, model) {
			t.Fatalf("%s (committed): %s", st.name, firstDiff(got, model))
		}
		d := layout()
		inline := len(d.Chunks) == 0
		if inline != st.wantInline {
			t.Errorf("%s: inline %v (inline %d bytes, %d chunks), want inline %v", st.name, inline, len(d.Inline), len(d.Chunks), st.wantInline)
		}
		if !inline && len(d.Inline) > 0 {
			t.Errorf("%s: chunked file keeps %d inline bytes", st.name, len(d.Inline))
		}
	}
	v.release(fh)
	v.reopen(v.opts)
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Fatalf("after remount: %s", firstDiff(got, model))
	}
}

// TestInlineWriteWithLaterChunks: with a chunk size below the inline limit
// (which Format.Validate accepts), a file can be short enough for inline
// storage while data in chunk 1 and beyond still exists. A later small write
// must still win over that older data.
func TestInlineWriteWithLaterChunks(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 4096, inlineMax: 16 << 10})
	if ft := v.m.Format(); ft.Validate() != nil {
		t.Fatalf("format rejected: %v", ft.Validate())
	}
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	model := make([]byte, 5000)
	old := bytes.Repeat([]byte{'A'}, 70000)
	v.write(fh, 5000, old) // chunks 1.., chunk 0 stays a hole
	model = append(model, old...)
	v.flush(fh)
	v.truncate(ino, fh, 6000)
	model = model[:6000]
	v.write(fh, 5500, []byte("B"))
	model[5500] = 'B'
	v.flush(fh)
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Fatalf("content: %s", firstDiff(got, model))
	}
	v.release(fh)
}

// TestHugeOffsetSmallChunks: with 64 KiB chunks, offsets of 2^48 and more
// give chunk indexes beyond 32 bits. Data written there must read back there,
// and must not appear at the start of the file.
func TestHugeOffsetSmallChunks(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10})
	ino, fh := v.create(meta.RootIno, "sparse", syscall.O_RDWR)
	off := uint64(1)<<48 + 10
	v.write(fh, off, []byte("hello"))
	v.flush(fh)
	if got := v.read(fh, off, 5); string(got) != "hello" {
		t.Errorf("read at 2^48+10 = %q, want \"hello\"", got)
	}
	if got := v.read(fh, 0, 64); !bytes.Equal(got, make([]byte, 64)) {
		t.Errorf("bytes 0..64 of a file written only at 2^48 = %q, want zeros", got)
	}
	a, _ := v.f.GetAttr(v.ctx, ino)
	if a.Size != off+5 {
		t.Errorf("size %d, want %d", a.Size, off+5)
	}
	v.release(fh)
}

// TestAppend: O_APPEND writes go to the end of the file, whatever the
// offset and whatever other handles wrote (buffered or committed).
func TestAppend(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 16 << 10, inlineMax: 100})
	ino, rw := v.create(meta.RootIno, "log", syscall.O_RDWR)
	app := v.openFile(ino, syscall.O_WRONLY|syscall.O_APPEND)
	var model []byte
	steps := []struct {
		name  string
		fh    uint64
		off   uint64
		data  []byte
		flush bool
	}{
		{"append to empty", app, 12345, []byte("one "), false},
		{"append again buffered", app, 0, []byte("two "), false},
		{"rw write extends", rw, 8, pattern(1, 200), true},
		{"append after other handle's commit", app, 0, []byte("three "), true},
		{"rw write beyond EOF leaves a hole", rw, 20000, []byte("far"), false},
		{"append after other handle's buffer", app, 5, []byte("four"), false},
		{"big append across chunks", app, 0, pattern(2, 40000), true},
	}
	for _, st := range steps {
		v.write(st.fh, st.off, st.data)
		if st.fh == app {
			model = append(model, st.data...)
		} else {
			if end := int(st.off) + len(st.data); end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[st.off:], st.data)
		}
		if st.flush {
			v.flush(st.fh)
		}
		if got := v.content(ino); !bytes.Equal(got, model) {
			t.Fatalf("%s: %s", st.name, firstDiff(got, model))
		}
	}
	// After a truncation, O_APPEND writes go to the new end.
	v.truncate(ino, rw, 10)
	model = model[:10]
	v.write(app, 0, []byte("tail"))
	model = append(model, "tail"...)
	v.release(app)
	v.release(rw)
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Fatalf("after truncate: %s", firstDiff(got, model))
	}
}

// TestHandleModes: read-only handles refuse writes and write-only handles
// refuse reads; O_TRUNC empties; directories refuse writing opens.
func TestHandleModes(t *testing.T) {
	v := newVol(t, volConfig{})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.write(fh, 0, []byte("content"))
	v.release(fh)
	ro := v.openFile(ino, syscall.O_RDONLY)
	if _, err := v.f.Write(v.ctx, ro, 0, []byte("x")); err != syscall.EBADF {
		t.Errorf("write through O_RDONLY: %v, want EBADF", err)
	}
	wo := v.openFile(ino, syscall.O_WRONLY)
	if _, err := v.f.Read(v.ctx, wo, 0, make([]byte, 4)); err != syscall.EBADF {
		t.Errorf("read through O_WRONLY: %v, want EBADF", err)
	}
	v.release(wo)
	tr := v.openFile(ino, syscall.O_WRONLY|syscall.O_TRUNC)
	if a, _ := v.f.GetAttr(v.ctx, ino); a.Size != 0 {
		t.Errorf("size after O_TRUNC open: %d", a.Size)
	}
	v.release(tr)
	if got := v.read(ro, 0, 10); len(got) != 0 {
		t.Errorf("read after truncation: %q", got)
	}
	v.release(ro)
	if err := v.f.Release(v.ctx, ro); err != syscall.EBADF {
		t.Errorf("double release: %v, want EBADF", err)
	}
	d, err := v.f.Mkdir(v.ctx, &meta.Root, meta.RootIno, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.f.Open(v.ctx, &meta.Root, d.Ino, syscall.O_RDWR); err != syscall.EISDIR {
		t.Errorf("open dir O_RDWR: %v, want EISDIR", err)
	}
	// Create with O_EXCL on an existing name.
	if _, _, err := v.f.Create(v.ctx, &meta.Root, meta.RootIno, "f", 0o644, syscall.O_CREAT|syscall.O_EXCL|syscall.O_RDWR); err != syscall.EEXIST {
		t.Errorf("O_EXCL create of an existing name: %v, want EEXIST", err)
	}
	// Create without O_EXCL opens the existing file; with O_TRUNC empties it.
	v.release(v.openFile(ino, syscall.O_RDWR))
	fh2 := func() uint64 {
		_, fh, err := v.f.Create(v.ctx, &meta.Root, meta.RootIno, "f", 0o644, syscall.O_CREAT|syscall.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		return fh
	}()
	v.write(fh2, 0, []byte("again"))
	v.release(fh2)
	if got := v.content(ino); string(got) != "again" {
		t.Errorf("content after create of an existing file: %q", got)
	}
}
