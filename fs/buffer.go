package fs

import (
	"sort"
	"sync"
)

// extent is a run of buffered bytes at a file offset.
type extent struct {
	off  uint64
	data []byte
	// blk, when set, is the block this extent (one whole aligned block)
	// is being or has been stored as, ahead of the commit.
	blk *earlyBlock
}

func (e extent) end() uint64 { return e.off + uint64(len(e.data)) }

// buffer holds a file's written-but-uncommitted bytes as sorted,
// non-overlapping extents. Newer writes replace older bytes.
type buffer struct {
	extents []extent
	bytes   int
	// stale holds early blocks whose extent was overwritten or cut
	// before a commit used them: their holds must be released and their
	// objects queued for deletion.
	stale []*earlyBlock
	// piece (the block size) bounds extents that grow by appending: such
	// an extent never crosses a multiple of piece, so a long sequential
	// write is held in block-sized arrays that are filled in place, never
	// copied whole as they grow, and each becomes one block as it is.
	piece uint64
	// pool recycles piece-sized arrays: touching fresh memory costs a
	// page fault per 4 KiB, which made sequential writes several times
	// slower than copying into memory used before.
	pool *sync.Pool
}

// newPiecePool returns a pool of arrays of size bytes.
func newPiecePool(size int) *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, size); return &b }}
}

// newPiece returns an empty slice with capacity piece, from the pool.
func (b *buffer) newPiece() []byte {
	if b.pool == nil {
		return make([]byte, 0, b.piece)
	}
	return (*b.pool.Get().(*[]byte))[:0]
}

// recycle returns the arrays of whole-piece extents to the pool. The
// caller guarantees nothing references them any more.
func (b *buffer) recycle() {
	if b.pool == nil {
		return
	}
	for i := range b.extents {
		if d := b.extents[i].data; uint64(cap(d)) == b.piece {
			d = d[:cap(d)]
			b.pool.Put(&d)
		}
	}
}

// bigWrite is the write size from which a new extent is allocated up to
// the next piece boundary at once: sequential writers fill it in place.
const bigWrite = 64 << 10

// write copies data at off into the buffer.
func (b *buffer) write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	if b.piece > 0 && off >= b.end() {
		b.append(off, data)
		return
	}
	end := off + uint64(len(data))
	// Extents that overlap or touch [off, end) merge with the new data.
	i := sort.Search(len(b.extents), func(i int) bool { return b.extents[i].end() >= off })
	j := i
	for j < len(b.extents) && b.extents[j].off <= end {
		j++
	}
	if i == j {
		e := extent{off: off, data: append([]byte(nil), data...)}
		b.extents = append(b.extents, extent{})
		copy(b.extents[i+1:], b.extents[i:])
		b.extents[i] = e
		b.bytes += len(data)
		return
	}
	start := min(off, b.extents[i].off)
	last := max(end, b.extents[j-1].end())
	merged := make([]byte, last-start)
	for _, e := range b.extents[i:j] {
		copy(merged[e.off-start:], e.data)
		b.bytes -= len(e.data)
		b.dropBlock(e)
	}
	copy(merged[off-start:], data)
	b.bytes += len(merged)
	b.extents[i] = extent{off: start, data: merged}
	b.extents = append(b.extents[:i+1], b.extents[j:]...)
}

// append adds data at off, at or past the end of the buffer, in extents
// that stop at piece boundaries.
func (b *buffer) append(off uint64, data []byte) {
	for len(data) > 0 {
		room := b.piece - off%b.piece // bytes to the next boundary
		k := min(uint64(len(data)), room)
		n := len(b.extents)
		if n > 0 && b.extents[n-1].end() == off && off%b.piece != 0 {
			e := &b.extents[n-1]
			if uint64(cap(e.data)-len(e.data)) < k {
				// Double, but never past the boundary; a big write
				// goes straight to it.
				want := uint64(len(e.data)) + k
				c := max(2*uint64(cap(e.data)), want)
				if k >= bigWrite {
					c = uint64(len(e.data)) + room
				}
				grown := make([]byte, len(e.data), min(c, uint64(len(e.data))+room))
				copy(grown, e.data)
				e.data = grown
			}
			e.data = append(e.data, data[:k]...)
		} else {
			var buf []byte
			switch {
			case k >= bigWrite && room == b.piece:
				buf = append(b.newPiece(), data[:k]...)
			case k >= bigWrite:
				buf = append(make([]byte, 0, room), data[:k]...)
			default:
				buf = append([]byte(nil), data[:k]...)
			}
			b.extents = append(b.extents, extent{off: off, data: buf})
		}
		b.bytes += int(k)
		data = data[k:]
		off += k
	}
}

// end is the offset just past the last buffered byte (0 if empty).
func (b *buffer) end() uint64 {
	if len(b.extents) == 0 {
		return 0
	}
	return b.extents[len(b.extents)-1].end()
}

// covers reports whether any buffered byte falls in [off, end).
func (b *buffer) covers(off, end uint64) bool {
	es := b.extents
	i := sort.Search(len(es), func(i int) bool { return es[i].end() > off })
	return i < len(es) && es[i].off < end
}

// overlay copies buffered bytes that fall into [off, off+len(dst)) into dst.
func (b *buffer) overlay(off uint64, dst []byte) { overlay(b.extents, off, dst) }

// overlay copies the bytes of es (sorted, disjoint) that fall in
// [off, off+len(dst)) over dst.
func overlay(es []extent, off uint64, dst []byte) {
	end := off + uint64(len(dst))
	i := sort.Search(len(es), func(i int) bool { return es[i].end() > off })
	for ; i < len(es) && es[i].off < end; i++ {
		e := es[i]
		lo, hi := max(e.off, off), min(e.end(), end)
		copy(dst[lo-off:hi-off], e.data[lo-e.off:hi-e.off])
	}
}

// truncate drops buffered bytes at or beyond size.
func (b *buffer) truncate(size uint64) {
	kept := b.extents[:0]
	for _, e := range b.extents {
		if e.off >= size {
			b.bytes -= len(e.data)
			b.dropBlock(e)
			continue
		}
		if e.end() > size {
			b.dropBlock(e)
			e.blk = nil
			b.bytes -= int(e.end() - size)
			// Capped, so that a later append copies instead of writing
			// over bytes a cached block may share.
			e.data = e.data[: size-e.off : size-e.off]
		}
		kept = append(kept, e)
	}
	b.extents = kept
}

// reset empties the buffer after a commit. Early blocks of its extents
// were used by the commit; stale ones stay for the caller to clean up.
func (b *buffer) reset() { b.extents, b.bytes = nil, 0 }

// dropBlocks makes every early block stale (a commit that does not use
// them, such as one storing the file inline).
func (b *buffer) dropBlocks() {
	for i := range b.extents {
		b.dropBlock(b.extents[i])
		b.extents[i].blk = nil
	}
}

// dropBlock notes that e's early block will not be used.
func (b *buffer) dropBlock(e extent) {
	if e.blk != nil {
		b.stale = append(b.stale, e.blk)
	}
}

// fullPieces returns the indexes of extents among the last few of the
// buffer (where appends complete them) that are whole, aligned pieces
// without an early block yet.
func (b *buffer) fullPieces() []int {
	var idx []int
	for i := len(b.extents) - 1; i >= 0 && i >= len(b.extents)-4; i-- {
		e := &b.extents[i]
		if e.blk != nil || uint64(len(e.data)) != b.piece || e.off%b.piece != 0 || cap(e.data) != len(e.data) {
			if e.blk != nil {
				break // everything before was handled when it filled
			}
			continue
		}
		idx = append(idx, i)
	}
	return idx
}
