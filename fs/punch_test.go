package fs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// TestPunchAgainstModel runs random writes (buffered and committed, some
// fragmenting a chunk until it is compacted), punches, zeroed ranges that
// may grow the file, and truncations on one file of small blocks and
// chunks, and compares every byte and every SEEK_HOLE/SEEK_DATA answer
// with a byte model after each step. At the end the store holds exactly
// the blocks still referenced: what a punch hid is deleted, nothing else.
func TestPunchAgainstModel(t *testing.T) {
	const (
		bs    = 4 << 10
		chunk = 64 << 10
	)
	for seed := range uint64(12) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			v := newVol(t, volConfig{blockSize: bs, chunkSize: chunk})
			ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
			r := rand.New(rand.NewPCG(seed, 3))
			var model []byte
			// What each byte is: written (data since), punched (a hole
			// since, made while the file was not inline), or unknown.
			var state []byte
			const maxSize = 5 * chunk
			for step := range 60 {
				var what string
				switch k := r.IntN(10); {
				case k < 5: // a write, committed at once or left buffered
					off := r.IntN(maxSize)
					n := 1 + r.IntN(3*bs)
					p := pattern(uint64(seed*1000+uint64(step)), n)
					v.write(fh, uint64(off), p)
					if off+n > len(model) {
						model = append(model, make([]byte, off+n-len(model))...)
						state = append(state, make([]byte, off+n-len(state))...)
					}
					copy(model[off:], p)
					for i := off; i < off+n; i++ {
						state[i] = written
					}
					if r.IntN(2) == 0 {
						v.flush(fh)
					}
					what = fmt.Sprintf("write [%d,+%d)", off, n)
				case k < 8: // punch or zero a range
					off := r.IntN(maxSize)
					n := 1 + r.IntN(chunk+bs)
					keep := r.IntN(3) > 0
					if err := v.f.Punch(v.ctx, ino, uint64(off), uint64(n), keep); err != nil {
						t.Fatalf("step %d: punch [%d,+%d) keep %v: %v", step, off, n, keep, err)
					}
					if !keep && off+n > len(model) {
						model = append(model, make([]byte, off+n-len(model))...)
						state = append(state, make([]byte, off+n-len(state))...)
					}
					now := byte(punched)
					if v.inline(ino) {
						now = unknown // zeros of inline content: data once the file outgrows it
					}
					for i := off; i < min(off+n, len(model)); i++ {
						model[i], state[i] = 0, now
					}
					what = fmt.Sprintf("punch [%d,+%d) keep %v", off, n, keep)
				case k < 9: // truncate
					size := r.IntN(maxSize)
					v.truncate(ino, fh, uint64(size))
					if size < len(model) {
						model, state = model[:size], state[:size]
					} else {
						model = append(model, make([]byte, size-len(model))...)
						state = append(state, make([]byte, size-len(state))...)
					}
					what = fmt.Sprintf("truncate to %d", size)
				default: // compact every chunk that wants it
					for idx := range uint64(maxSize/chunk + 2) {
						if err := v.f.maybeCompact(v.ctx, ino, idx); err != nil {
							t.Fatalf("step %d: compact chunk %d: %v", step, idx, err)
						}
					}
					what = "compaction"
				}
				if got := v.content(ino); !bytes.Equal(got, model) {
					t.Fatalf("step %d, after %s: %d bytes read, %d in the model, %d differ", step, what, len(got), len(model), diffBytes(got, model))
				}
				checkSeeks(t, v, ino, state, r, what)
				checkBlocks(t, v, ino, state, what)
				if step%20 == 19 {
					v.fsck() // which recounts every file's allocated bytes
				}
			}
			v.release(fh)
			v.checkNoLeaks()
			v.waitStoreMatchesReferences(10 * time.Second)
		})
	}
}

const (
	unknown = iota
	written
	punched
)

// checkBlocks checks st_blocks against state: at least every byte written
// since its last punch, at most the size less what was punched (unless
// the file is inline: then its whole content counts).
func checkBlocks(t *testing.T, v *testVol, ino uint64, state []byte, what string) {
	t.Helper()
	a, err := v.f.GetAttr(v.ctx, ino)
	if err != nil {
		t.Fatal(err)
	}
	var data, holes uint64
	for _, s := range state {
		switch s {
		case written:
			data++
		case punched:
			holes++
		}
	}
	lo, hi := (data+511)/512, (a.Size+511)/512
	if !v.inline(ino) {
		hi = (a.Size - holes + 511) / 512
	}
	if b := a.Blocks(); b < lo || b > hi {
		t.Fatalf("after %s: st_blocks %d (alloc %d, size %d), want %d to %d: %d bytes written, %d punched", what, b, a.Alloc, a.Size, lo, hi, data, holes)
	}
}

// inline reports whether file ino keeps its bytes in its metadata.
func (v *testVol) inline(ino uint64) bool {
	v.t.Helper()
	d, err := v.m.ReadData(v.ctx, ino, 0, 0)
	if err != nil {
		v.t.Fatal(err)
	}
	return d.Inline != nil
}

// checkSeeks checks SEEK_HOLE and SEEK_DATA from a few offsets against
// state: no byte written since its last punch may lie in a reported hole,
// and no byte punched since its last write (while the file was not
// inline) may be reported as data. Other bytes (zeros a truncation or a
// write past the end left, inline content) may be either: an inline file
// is all data, and so is its content once it outgrows the metadata.
func checkSeeks(t *testing.T, v *testVol, ino uint64, state []byte, r *rand.Rand, what string) {
	t.Helper()
	size := uint64(len(state))
	for range 8 {
		if size == 0 {
			break
		}
		off := uint64(r.Int64N(int64(size)))
		h, err := v.f.Seek(v.ctx, ino, off, true)
		if err != nil || h < off || h > size {
			t.Fatalf("after %s: SEEK_HOLE from %d = %d, %v (size %d)", what, off, h, err, size)
		}
		for i := off; i < h; i++ {
			if state[i] == punched {
				t.Fatalf("after %s: SEEK_HOLE from %d = %d, past %d, which was punched", what, off, h, i)
			}
		}
		if h < size && state[h] == written {
			t.Fatalf("after %s: SEEK_HOLE from %d = %d, where data was written", what, off, h)
		}
		d, err := v.f.Seek(v.ctx, ino, off, false)
		if errors.Is(err, syscall.ENXIO) {
			d = size
		} else if err != nil || d < off || d >= size {
			t.Fatalf("after %s: SEEK_DATA from %d = %d, %v (size %d)", what, off, d, err, size)
		}
		for i := off; i < d; i++ {
			if state[i] == written {
				t.Fatalf("after %s: SEEK_DATA from %d = %d (or none), past %d, where data was written", what, off, d, i)
			}
		}
		if d < size && state[d] == punched {
			t.Fatalf("after %s: SEEK_DATA from %d = %d, which was punched", what, off, d)
		}
	}
}

func diffBytes(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// TestPunchReleasesBlocks: punching the middle half out of a file written
// in one go (one slice of 64 blocks) gives back the blocks the hole hides:
// the punch alone releases none (no slice lies wholly inside the hole),
// so it has the chunk compacted, which rewrites the data left and drops
// the old blocks. Afterwards the store holds about half the bytes.
func TestPunchReleasesBlocks(t *testing.T) {
	const bs = 64 << 10
	v := newVol(t, volConfig{blockSize: bs})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	model := pattern(9, 4<<20)
	v.write(fh, 0, model)
	v.flush(fh)
	v.release(fh)
	if err := v.f.Punch(v.ctx, ino, 1<<20, 2<<20, true); err != nil {
		t.Fatal(err)
	}
	clear(model[1<<20 : 3<<20])
	v.waitCompactions()
	v.waitStoreMatchesReferences(10 * time.Second)
	store := v.store.(*memStore)
	store.mu.Lock()
	var stored int
	for _, data := range store.objs {
		stored += len(data)
	}
	store.mu.Unlock()
	if stored > 2<<20+2*bs {
		t.Errorf("after punching 2 MiB out of 4 MiB the store holds %d bytes, want about 2 MiB", stored)
	}
	if got := v.content(ino); !bytes.Equal(got, model) {
		t.Errorf("content differs from the model in %d bytes", diffBytes(got, model))
	}
	v.fsck()
}
