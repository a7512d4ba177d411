package meta

import (
	"context"
	"encoding/binary"
	"fmt"
)

// forEachBlockBatch is how many block records ForEachBlock reads per
// snapshot; it bounds memory and how long one read transaction stays open.
var forEachBlockBatch = 1024 // a variable so tests can cross batch boundaries cheaply

// ForEachBlock calls fn for every referenced block (its id, size and
// reference count), in id order, until fn returns an error, which is
// returned as is. Records are read in batches, each in its own snapshot, and
// fn runs outside any transaction: it may be slow (scrub reads every copy)
// without holding a snapshot open. Blocks added or freed meanwhile may or
// may not be seen; every block referenced for the whole walk is.
func (m *Meta) ForEachBlock(ctx context.Context, fn func(id BlockID, size uint32, refs uint64) error) error {
	type rec struct {
		id   BlockID
		size uint32
		refs uint64
	}
	batch := make([]rec, 0, forEachBlockBatch)
	var start []byte // nil: from the first record
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch = batch[:0]
		err := m.kv.View(ctx, func(t Txn) error {
			batch = batch[:0] // View may run fn again
			return t.Scan(key1(pRefcount), start, func(k, v []byte) (bool, error) {
				if len(k) != 33 || len(v) != 12 {
					return false, corrupt("block refcount", k)
				}
				var r rec
				copy(r.id[:], k[1:])
				r.refs = binary.LittleEndian.Uint64(v)
				r.size = binary.LittleEndian.Uint32(v[8:])
				batch = append(batch, r)
				return len(batch) < forEachBlockBatch, nil
			})
		})
		if err != nil {
			return fmt.Errorf("read block records: %w", err)
		}
		for _, r := range batch {
			if err := fn(r.id, r.size, r.refs); err != nil {
				return err
			}
		}
		if len(batch) < forEachBlockBatch {
			return nil
		}
		// Resume just after the last id: the key with a zero byte appended
		// is the smallest key greater than it.
		last := batch[len(batch)-1].id
		start = append(keyBlock(pRefcount, last), 0)
	}
}
