package fs

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// punchChunks is how many chunks one transaction of a punch changes at
// most: each may release a chunk's worth of block references (16 for 64
// MiB chunks of 4 MiB blocks, far more for a fragmented chunk), and a
// Badger transaction has a size limit.
const punchChunks = 64

// Punch makes [off, off+length) of file ino read as zeros and releases
// the blocks only that range held, as fallocate's FALLOC_FL_PUNCH_HOLE
// (keepSize true) and FALLOC_FL_ZERO_RANGE do. Without keepSize the file
// grows to off+length if it is shorter. Buffered writes are committed
// first, so the hole lands over them. A chunk file gets a hole slice over
// the range in each chunk that has data there (format 4 on; older
// volumes: EOPNOTSUPP); an inline file has the range zeroed in place.
// A range of more than punchChunks chunks takes several transactions,
// each leaving the file consistent: a crash between them leaves part of
// the range punched, as on a local file system.
func (f *FS) Punch(ctx context.Context, ino, off, length uint64, keepSize bool) error {
	end := off + length
	switch {
	case length == 0:
		return syscall.EINVAL
	case end < off || end > meta.MaxFileSize:
		return syscall.EFBIG
	}
	in, err := f.acquire(ino)
	if err != nil {
		return err
	}
	defer func() { _ = f.releaseInode(ctx, in) }()
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := f.flushLocked(ctx, in); err != nil {
		return err
	}
	cs := uint64(f.format.ChunkSize)
	d, err := f.meta.ReadData(ctx, ino, 0, 0)
	if err != nil {
		return err
	}
	if !d.Attr.IsRegular() {
		return syscall.EINVAL
	}
	size := d.Attr.Size
	w := meta.WriteIn{End: size, Mtime: time.Now().UnixNano()}
	if !keepSize {
		w.End = max(size, end)
	}
	data := min(end, size) // past the end there is nothing to punch
	if d.Inline != nil {
		if off < uint64(len(d.Inline)) {
			w.Inline = append([]byte(nil), d.Inline...)
			clear(w.Inline[off:min(data, uint64(len(w.Inline)))])
		}
		_, err := f.meta.Write(ctx, ino, w)
		return err
	}
	if off < data && !f.format.HoleSlices() {
		return fmt.Errorf("punch a hole in a volume of format version %d (holes need 4; objfs upgrade raises it): %w", f.format.Version, syscall.EOPNOTSUPP)
	}
	wrote := false // the size and times, with the first batch of holes
	for first := off / cs; off < data && first*cs < data; first += punchChunks {
		last := min((data-1)/cs, first+punchChunks-1)
		d, err := f.meta.ReadData(ctx, ino, first, last)
		if err != nil {
			return err
		}
		var cws []meta.ChunkWrite
		for idx := first; idx <= last; idx++ {
			if _, ok := d.Chunks[idx]; !ok {
				continue // no record: all hole already
			}
			base := idx * cs
			lo, hi := max(off, base), min(data, base+cs)
			cws = append(cws, meta.ChunkWrite{Index: idx, Slices: []meta.Slice{{Pos: uint32(lo - base), Len: uint32(hi - lo)}}})
		}
		if len(cws) == 0 {
			continue
		}
		batch := w
		batch.Chunks = cws
		if _, err := f.meta.Write(ctx, ino, batch); err != nil {
			return err
		}
		wrote = true
		for _, cw := range cws {
			f.queueCompaction(ctx, ino, cw.Index) // see needsCompaction
		}
	}
	if wrote {
		return nil
	}
	// No chunk needed a hole: the size and times alone.
	_, err = f.meta.Write(ctx, ino, w)
	return err
}
