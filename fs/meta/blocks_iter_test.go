package meta

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestForEachBlock checks that the batched walk sees every block record once,
// in id order, with its size and reference count, whatever the batch size.
func TestForEachBlock(t *testing.T) {
	tests := []struct {
		name   string
		batch  int
		blocks int
	}{
		{"empty", 4, 0},
		{"one batch", 1024, 10},
		{"batch of one", 1, 5},
		{"exact multiple", 4, 8},
		{"partial last batch", 3, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			old := forEachBlockBatch
			forEachBlockBatch = tc.batch
			t.Cleanup(func() { forEachBlockBatch = old })
			v := newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 64 << 10 })
			want := map[BlockID]uint32{}
			f := v.mkfile(RootIno, "f")
			for i := 0; i < tc.blocks; i++ {
				b := fakeBlock(i, uint32(100+i))
				// One slice per chunk keeps every write within its chunk.
				v.writeSlice(f.Ino, uint64(i)*64<<10, b)
				want[b.ID] = b.Size
			}
			if tc.blocks > 0 {
				// A second reference to block 0 must show in its count.
				g := v.mkfile(RootIno, "g")
				v.writeSlice(g.Ino, 0, fakeBlock(0, 100))
			}
			var prev *BlockID
			seen := 0
			err := v.m.ForEachBlock(v.ctx, func(id BlockID, size uint32, refs uint64) error {
				if prev != nil && bytes.Compare(prev[:], id[:]) >= 0 {
					t.Errorf("block %s after %s: not in id order", id, prev)
				}
				prev = &id
				seen++
				ws, ok := want[id]
				switch {
				case !ok:
					t.Errorf("unexpected block %s", id)
				case size != ws:
					t.Errorf("block %s: size %d, want %d", id, size, ws)
				}
				wantRefs := uint64(1)
				if id == fakeBlock(0, 100).ID {
					wantRefs = 2
				}
				if refs != wantRefs {
					t.Errorf("block %s: refs %d, want %d", id, refs, wantRefs)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("ForEachBlock: %v", err)
			}
			if seen != tc.blocks {
				t.Errorf("saw %d blocks, want %d", seen, tc.blocks)
			}
		})
	}
}

// TestForEachBlockStops checks that an error from fn and a cancelled
// context both end the walk.
func TestForEachBlockStops(t *testing.T) {
	old := forEachBlockBatch
	forEachBlockBatch = 2
	t.Cleanup(func() { forEachBlockBatch = old })
	v := newVolume(t, func(f *Format) { f.BlockSize = 4096; f.ChunkSize = 64 << 10 })
	f := v.mkfile(RootIno, "f")
	for i := 0; i < 6; i++ {
		v.writeSlice(f.Ino, uint64(i)*64<<10, fakeBlock(i, 10))
	}
	stop := errors.New("stop")
	calls := 0
	err := v.m.ForEachBlock(v.ctx, func(BlockID, uint32, uint64) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 3 {
		t.Errorf("fn error: ForEachBlock = %v after %d calls, want stop after 3", err, calls)
	}
	ctx, cancel := context.WithCancel(v.ctx)
	calls = 0
	err = v.m.ForEachBlock(ctx, func(BlockID, uint32, uint64) error {
		calls++
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) || calls > 2 {
		t.Errorf("cancelled: ForEachBlock = %v after %d calls, want Canceled within one batch", err, calls)
	}
}
