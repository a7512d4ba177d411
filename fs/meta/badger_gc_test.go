package meta

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// vlogBytes sums the sizes of the value log files in dir.
func vlogBytes(t *testing.T, dir string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// TestCollectGarbage: values deleted from the database leave the value log
// once it is collected, and the values still live survive the rewrite.
func TestCollectGarbage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// Small value log files, and a compaction out of level 0 as soon as
	// it holds two tables.
	tweak := func(o badger.Options) badger.Options {
		return o.WithValueLogFileSize(1 << 20).WithNumLevelZeroTables(1)
	}
	reopen := func(kv *Badger) *Badger {
		t.Helper()
		if kv != nil {
			if err := kv.Close(); err != nil { // the memtable becomes a level 0 table
				t.Fatal(err)
			}
		}
		kv, err := openBadger(dir, false, tweak)
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	kv := reopen(nil)
	defer func() { _ = kv.Close() }()
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 8<<10) } // above the value threshold
	key := func(i int) []byte { return fmt.Appendf(nil, "k%05d", i) }
	const n, live = 600, 50
	for batch := 0; batch < n; batch += 50 {
		if err := kv.Update(ctx, func(t Txn) error {
			for i := batch; i < batch+50; i++ {
				if err := t.Set(key(i), value(i)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for batch := live; batch < n; batch += 50 {
		if err := kv.Update(ctx, func(t Txn) error {
			for i := batch; i < min(batch+50, n); i++ {
				if err := t.Delete(key(i)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Compaction is what tells the value log which of its bytes are dead:
	// two level 0 tables (the writes, the deletions), then compact them.
	kv = reopen(kv)
	if err := kv.Update(ctx, func(t Txn) error { return t.Set([]byte("second table"), nil) }); err != nil {
		t.Fatal(err)
	}
	kv = reopen(kv)
	if err := kv.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	before := vlogBytes(t, dir)
	rewritten, err := kv.CollectGarbage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := vlogBytes(t, dir)
	t.Logf("value log %d -> %d bytes, %d files rewritten", before, after, rewritten)
	if rewritten == 0 || after >= before {
		t.Errorf("value log %d -> %d bytes, %d files rewritten: nothing reclaimed", before, after, rewritten)
	}
	if err := kv.View(ctx, func(t Txn) error {
		for i := range n {
			v, err := t.Get(key(i))
			switch {
			case i < live && (err != nil || !bytes.Equal(v, value(i))):
				return fmt.Errorf("live key %d after collection: %v", i, err)
			case i >= live && err != ErrKeyNotFound:
				return fmt.Errorf("deleted key %d after collection: %v", i, err)
			}
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
