package meta

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// TestBlockRefs counts random references to a few hundred blocks with
// tiny limits, so that they spill to many runs that are merged again,
// and compares with a map: every block once, in ID order, with its count;
// a block referenced with two sizes is reported; the runs are removed.
func TestBlockRefs(t *testing.T) {
	for _, tc := range []struct {
		name           string
		limit, maxRuns int
	}{
		{"in memory", 1 << 20, 256},
		{"runs", 16, 1000},
		{"runs merged", 16, 3},
		{"tiny runs, merged", 4, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var conflicts []BlockID
			r := newBlockRefs(dir, func(first, other refEntry) {
				if first.id != other.id {
					t.Errorf("conflict between %s and %s", first.id, other.id)
				}
				conflicts = append(conflicts, other.id)
			})
			r.limit, r.maxRuns = tc.limit, tc.maxRuns
			rng := rand.New(rand.NewPCG(1, 2))
			want := map[BlockID]int64{}
			b7 := fakeBlock(7, 4096)
			want[b7.ID]++
			if err := r.add(b7.ID, b7.Size, 7, 0); err != nil {
				t.Fatal(err)
			}
			for range 5000 {
				n := rng.IntN(300)
				b := fakeBlock(n, 4096)
				size := b.Size
				if n == 7 && len(want) > 100 {
					size = 1000 // block 7 also referenced with another size
				}
				want[b.ID]++
				if err := r.add(b.ID, size, uint64(n), 0); err != nil {
					t.Fatal(err)
				}
			}
			var got []refEntry
			if err := r.each(func(e refEntry) error { got = append(got, e); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Errorf("%d blocks, want %d", len(got), len(want))
			}
			if !slices.IsSortedFunc(got, func(a, b refEntry) int { return bytes.Compare(a.id[:], b.id[:]) }) {
				t.Error("blocks not in ID order")
			}
			for _, e := range got {
				if e.refs != want[e.id] {
					t.Errorf("block %s: %d references, want %d", e.id, e.refs, want[e.id])
				}
			}
			if len(conflicts) == 0 || slices.ContainsFunc(conflicts, func(id BlockID) bool { return id != b7.ID }) {
				t.Errorf("conflicts reported for %v, want only block 7 (%s)", conflicts, b7.ID)
			}
			spilled := r.tmp != ""
			if spilled != (tc.limit < 5000) {
				t.Errorf("spilled to files: %v", spilled)
			}
			r.close()
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("left in the temporary directory: %v", left)
			}
		})
	}
}

// TestCheckWithSpilledReferences: Check finds the same problems and
// counts when its references spill to runs of a few entries as when they
// fit in memory.
func TestCheckWithSpilledReferences(t *testing.T) {
	v := newVolume(t, nil)
	for i := range 40 {
		f := v.mkfile(RootIno, string(rune('a'+i%26))+string(rune('a'+i/26)))
		blocks := []BlockRef{fakeBlock(i, 65536), fakeBlock(i+1, 65536), fakeBlock(1000, 65536)}
		v.writeSlice(f.Ino, 0, blocks...)
	}
	// Damage: one count too high, one record missing, one record of a
	// block nothing references.
	v.raw(func(t Txn) error {
		if err := t.Set(keyBlock(pRefcount, fakeBlock(5, 65536).ID), refValue(9, 65536)); err != nil {
			return err
		}
		if err := t.Delete(keyBlock(pRefcount, fakeBlock(20, 65536).ID)); err != nil {
			return err
		}
		return t.Set(keyBlock(pRefcount, fakeBlock(777, 65536).ID), refValue(1, 65536))
	})
	var asked [2][]BlockID
	check := func(i int) *CheckResult {
		r, err := v.m.Check(v.ctx, CheckOptions{TempDir: t.TempDir(), Block: func(_ context.Context, id BlockID, _ uint32) error {
			asked[i] = append(asked[i], id)
			return nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	mem := check(0)
	defer func(l, m int) { refsInMemory, refsMaxRuns = l, m }(refsInMemory, refsMaxRuns)
	refsInMemory, refsMaxRuns = 4, 3
	spilled := check(1)
	if problems(mem) != problems(spilled) || mem.Counted != spilled.Counted || mem.Blocks != spilled.Blocks {
		t.Errorf("in memory:\n%s%+v\nspilled:\n%s%+v", problems(mem), mem.Counted, problems(spilled), spilled.Counted)
	}
	if mem.Errors() != 3 || mem.Blocks != 42 {
		t.Errorf("%d errors, %d blocks checked:\n%s", mem.Errors(), mem.Blocks, problems(mem))
	}
	for i, ids := range asked {
		if !slices.IsSortedFunc(ids, func(a, b BlockID) int { return bytes.Compare(a[:], b[:]) }) || len(ids) != 42 {
			t.Errorf("run %d asked the store about %d blocks, not in ID order", i, len(ids))
		}
	}
}
