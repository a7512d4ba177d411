package main

import (
	"context"
	"testing"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// countingStore counts List calls.
type countingStore struct {
	objstore.Store
	lists int
}

func (s *countingStore) List(ctx context.Context, prefix string, fn func(string, int64) error) error {
	s.lists++
	return s.Store.List(ctx, prefix, fn)
}

// TestStoreSizes checks fsck's listing of block objects: right sizes and
// absences, in ascending order one List per key range, out of order a List
// again, at either range depth.
func TestStoreSizes(t *testing.T) {
	ctx := context.Background()
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Blocks in three ranges of depth 1 ("blocks/01/", "blocks/02/"),
	// two of them sharing "blocks/01/aa/".
	id := func(b ...byte) meta.BlockID { var i meta.BlockID; copy(i[:], b); return i }
	stored := map[meta.BlockID]int{
		id(0x01, 0xaa, 1): 10,
		id(0x01, 0xaa, 2): 20,
		id(0x01, 0xbb, 1): 30,
		id(0x02, 0x00, 1): 40,
	}
	for i, n := range stored {
		if err := dir.Put(ctx, i.ObjectKey(), make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	absent := id(0x01, 0xaa, 3)
	for _, tc := range []struct {
		depth     int
		asks      []meta.BlockID
		wantLists int
	}{
		{1, []meta.BlockID{id(0x01, 0xaa, 1), id(0x01, 0xaa, 2), absent, id(0x01, 0xbb, 1), id(0x02, 0x00, 1)}, 2},
		{2, []meta.BlockID{id(0x01, 0xaa, 1), id(0x01, 0xaa, 2), absent, id(0x01, 0xbb, 1), id(0x02, 0x00, 1)}, 3},
		{1, []meta.BlockID{id(0x02, 0x00, 1), id(0x01, 0xaa, 1), id(0x02, 0x00, 1)}, 3}, // out of order
	} {
		cs := &countingStore{Store: dir}
		blocks := int64(1)
		if tc.depth == 2 {
			blocks = fineListing + 1
		}
		l := newStoreSizes(cs, blocks)
		for _, i := range tc.asks {
			n, ok, err := l.size(ctx, i.ObjectKey())
			want, wantOK := stored[i]
			if err != nil || ok != wantOK || n != int64(want) {
				t.Errorf("depth %d: size(%s) = %d, %v, %v; want %d, %v", tc.depth, i, n, ok, err, want, wantOK)
			}
		}
		if cs.lists != tc.wantLists {
			t.Errorf("depth %d, asks %d: %d lists, want %d", tc.depth, len(tc.asks), cs.lists, tc.wantLists)
		}
	}
}
