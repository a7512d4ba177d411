package fs

import "sort"

// extent is a run of buffered bytes at a file offset.
type extent struct {
	off  uint64
	data []byte
}

func (e extent) end() uint64 { return e.off + uint64(len(e.data)) }

// buffer holds a file's written-but-uncommitted bytes as sorted,
// non-overlapping extents. Newer writes replace older bytes.
type buffer struct {
	extents []extent
	bytes   int
}

// write copies data at off into the buffer.
func (b *buffer) write(off uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	end := off + uint64(len(data))
	// Fast path: appending to the last extent (sequential writes).
	if n := len(b.extents); n > 0 && b.extents[n-1].end() == off {
		b.extents[n-1].data = append(b.extents[n-1].data, data...)
		b.bytes += len(data)
		return
	}
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
	}
	copy(merged[off-start:], data)
	b.bytes += len(merged)
	b.extents[i] = extent{off: start, data: merged}
	b.extents = append(b.extents[:i+1], b.extents[j:]...)
}

// end is the offset just past the last buffered byte (0 if empty).
func (b *buffer) end() uint64 {
	if len(b.extents) == 0 {
		return 0
	}
	return b.extents[len(b.extents)-1].end()
}

// overlay copies buffered bytes that fall into [off, off+len(dst)) into dst.
func (b *buffer) overlay(off uint64, dst []byte) {
	end := off + uint64(len(dst))
	i := sort.Search(len(b.extents), func(i int) bool { return b.extents[i].end() > off })
	for ; i < len(b.extents) && b.extents[i].off < end; i++ {
		e := b.extents[i]
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
			continue
		}
		if e.end() > size {
			b.bytes -= int(e.end() - size)
			e.data = e.data[:size-e.off]
		}
		kept = append(kept, e)
	}
	b.extents = kept
}

func (b *buffer) reset() { b.extents, b.bytes = nil, 0 }
