package meta

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"syscall"
	"time"
)

// MaxFileSize is the largest file size objfs accepts.
const MaxFileSize = 1 << 50

// chunk reads chunk idx of file a: its slices, oldest first, of which the
// last tail came from its tail record.
func (x *tx) chunk(a *Attr, idx uint64) (ss []Slice, tail int, err error) {
	if ss, err = x.chunkRecord(keyChunk(a.Ino, idx)); err != nil || a.Flags&FlagTails == 0 {
		return ss, 0, err
	}
	t, err := x.chunkRecord(keyChunkTail(a.Ino, idx))
	return append(ss, t...), len(t), err
}

// chunkRecord reads and decodes one slice list record; nil if there is none.
func (x *tx) chunkRecord(k []byte) ([]Slice, error) {
	v, err := x.t.Get(k)
	if errors.Is(err, ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read slice list %x: %w", k, err)
	}
	return decodeSlices(k, v)
}

// putChunk writes the slices ss as chunk idx of ino, whole, into its main
// record, deleting the chunk when ss is empty; before is what the chunk
// covered (allocated(a, slices as read), taken before they were changed in
// place), and hadTail says whether it had a tail record, which goes. The
// first chunk a file gets clears its FlagNoChunks.
func (x *tx) putChunk(ino uint64, idx uint64, before uint64, ss []Slice, hadTail bool) error {
	if hadTail {
		if err := x.del(keyChunkTail(ino, idx)); err != nil {
			return err
		}
	}
	a, err := x.inode(ino)
	if err != nil {
		return err
	}
	x.realloc(a, before, ss)
	if len(ss) == 0 {
		return x.del(keyChunk(ino, idx))
	}
	if a.hasNo(FlagNoChunks) {
		a.Flags &^= FlagNoChunks
		x.touch(a)
	}
	return x.set(keyChunk(ino, idx), encodeSlices(ss))
}

// allocated returns the bytes the slices ss of a chunk of a cover, for
// Alloc; 0 when a does not keep Alloc (nothing to compute).
func allocated(a *Attr, ss []Slice) uint64 {
	if a.Flags&FlagAlloc == 0 {
		return 0
	}
	return covered(ss)
}

// realloc changes a's Alloc for a chunk that covered before bytes and now
// holds the slices ss (see Attr.Alloc).
func (x *tx) realloc(a *Attr, before uint64, ss []Slice) {
	if a.Flags&FlagAlloc == 0 {
		return
	}
	if after := covered(ss); before != after {
		a.Alloc = a.Alloc - before + after
		x.touch(a)
	}
}

// allocOf counts what regular file a stores, as Alloc should say: its
// inline content, or what its chunks cover (main records and, if it has
// them, tails, as reads see them).
func (x *tx) allocOf(a *Attr) (uint64, error) {
	v, err := x.t.Get(keyIno(pInline, a.Ino))
	switch {
	case err == nil:
		return uint64(len(v)), nil
	case !errors.Is(err, ErrKeyNotFound):
		return 0, err
	case a.hasNo(FlagNoChunks):
		return 0, nil
	}
	var n uint64
	err = x.scanChunks(a.Ino, 0, a.Flags&FlagTails != 0, func(_ uint64, ss []Slice, _ int) (bool, error) {
		n += covered(ss)
		return true, nil
	})
	return n, err
}

// covered returns how many bytes of a chunk the slices ss hold data for.
func covered(ss []Slice) uint64 {
	var n uint64
	for _, iv := range coverage(ss) {
		n += iv.hi - iv.lo
	}
	return n
}

// tailMax bounds a chunk's tail record (one commit's slices longer than
// this go to the main record at once): below Badger's value threshold it
// stays in the LSM tree, and about 20 one-block slices fit, so a chunk
// written in small commits has its main record rewritten once every 20
// commits instead of at each.
const tailMax = valueThreshold - 24

// addSlices commits the new slices add to chunk idx of ino, whose slices
// are ss, the last tail of them from its tail record (as chunk returns
// them). Each new slice takes its block references, and the older slices
// it covers whole are released at once (nothing of them can be read any
// more). The new slices go to the tail record, unless the chunk has no
// main record yet, the tail would grow past tailMax, or one of them covers
// a slice of the main record: then the tail is folded into the main
// record, so no tail slice ever hides a main record's slice whole.
func (x *tx) addSlices(a *Attr, idx uint64, ss []Slice, tail int, add []Slice) error {
	before := allocated(a, ss) // dropShadowed changes ss in place
	n := len(ss) - tail
	main, newer := ss[:n:n], slices.Clone(ss[n:])
	shadows := false
	for _, s := range add {
		if err := x.refSlice(s, 1); err != nil {
			return err
		}
		var err error
		if newer, err = x.dropShadowed(newer, s); err != nil {
			return err
		}
		newer = appendSlice(newer, s)
		last := newer[len(newer)-1] // s, or a slice s extended
		shadows = shadows || slices.ContainsFunc(main, func(o Slice) bool { return covers(last, o) })
	}
	if len(main) > 0 && x.m.tails() && !shadows && encodedSize(newer) <= tailMax {
		if a.Flags&FlagTails == 0 {
			a.Flags |= FlagTails
			x.touch(a)
		}
		x.realloc(a, before, append(main, newer...))
		return x.set(keyChunkTail(a.Ino, idx), encodeSlices(newer))
	}
	for _, s := range newer {
		var err error
		if main, err = x.dropShadowed(main, s); err != nil {
			return err
		}
		main = appendSlice(main, s)
	}
	return x.putChunk(a.Ino, idx, before, main, tail > 0)
}

// ref adds n (+1 or -1) references to block b. A block whose count reaches
// zero is queued for deletion; one that gains a reference leaves the queue.
func (x *tx) ref(b BlockRef, n int64) error {
	k := keyBlock(pRefcount, b.ID)
	v, err := x.t.Get(k)
	var refs int64
	switch {
	case errors.Is(err, ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("read refcount of block %s: %w", b.ID, err)
	case len(v) != 12:
		return corrupt("block refcount", k)
	default:
		refs = int64(binary.LittleEndian.Uint64(v))
	}
	after := refs + n
	switch {
	case after < 0:
		return fmt.Errorf("%w: block %s refcount would drop below zero", errCorrupt, b.ID)
	case after == 0:
		x.addDelta(Stats{Blocks: -1, BlockBytes: -int64(b.Size)})
		if err := x.del(k); err != nil {
			return err
		}
		return x.set(keyBlock(pPending, b.ID), u64bytes(uint64(x.now)))
	}
	if refs == 0 {
		x.addDelta(Stats{Blocks: 1, BlockBytes: int64(b.Size)})
		if err := x.del(keyBlock(pPending, b.ID)); err != nil {
			return err
		}
	}
	val := binary.LittleEndian.AppendUint64(make([]byte, 0, 12), uint64(after))
	return x.set(k, binary.LittleEndian.AppendUint32(val, b.Size))
}

func (x *tx) refSlice(s Slice, n int64) error {
	for _, b := range s.Blocks {
		if err := x.ref(b, n); err != nil {
			return err
		}
	}
	return nil
}

// refSlices is refSlice for every slice of ss.
func (x *tx) refSlices(ss []Slice, n int64) error {
	for _, s := range ss {
		if err := x.refSlice(s, n); err != nil {
			return err
		}
	}
	return nil
}

// trimSlice cuts s to end at chunk offset end, releasing blocks it no longer
// needs. It reports false if nothing of s remains.
func (x *tx) trimSlice(s *Slice, end uint32) (bool, error) {
	if s.Pos >= end {
		return false, x.refSlice(*s, -1)
	}
	if s.Pos+s.Len <= end {
		return true, nil
	}
	s.Len = end - s.Pos
	var off uint32
	keep := 0
	for keep < len(s.Blocks) && off < s.Len {
		off += s.Blocks[keep].Size
		keep++
	}
	for _, b := range s.Blocks[keep:] {
		if err := x.ref(b, -1); err != nil {
			return false, err
		}
	}
	s.Blocks = s.Blocks[:keep]
	return true, nil
}

// truncate drops the data of a beyond size. The chunk the new end falls in
// is trimmed here; the chunks wholly beyond it are released here too as far
// as one transaction allows (see releaseChunks). If some are left, a
// truncation record stays behind: those chunks are dead (no read reaches
// past the size) but still hold their blocks until FinishTruncate releases
// them, and until then nothing may write to the file or extend it, or the
// stale bytes would show (Write and SetAttr check; see errTruncating).
func (x *tx) truncate(a *Attr, size uint64) error {
	if size >= a.Size {
		return nil
	}
	if v, err := x.t.Get(keyIno(pInline, a.Ino)); err == nil {
		if uint64(len(v)) > size {
			if err := x.set(keyIno(pInline, a.Ino), v[:size]); err != nil {
				return err
			}
			if a.Flags&FlagAlloc != 0 {
				a.Alloc -= min(a.Alloc, uint64(len(v))-size)
				x.touch(a)
			}
		}
	} else if !errors.Is(err, ErrKeyNotFound) {
		return err
	}
	cs := uint64(x.m.format.ChunkSize)
	budget := reapBlocks
	if end := uint32(size % cs); end != 0 {
		n, err := x.trimChunk(a, size/cs, end)
		if err != nil {
			return err
		}
		budget -= n
	}
	if budget > 0 {
		done, err := x.releaseChunks(a.Ino, (size+cs-1)/cs, budget)
		if err != nil || done {
			return err
		}
	}
	return x.markTruncating(a)
}

// markTruncating records that a's truncation is still releasing chunks:
// the flag for writers of the file, the U record for the next start. The
// caller writes a.
func (x *tx) markTruncating(a *Attr) error {
	a.Flags |= FlagTruncating
	return x.set(keyIno(pTruncate, a.Ino), u64bytes(uint64(x.now)))
}

// trimChunk cuts chunk idx of file a to end at chunk offset end and returns
// how many block references it released.
func (x *tx) trimChunk(a *Attr, idx uint64, end uint32) (int, error) {
	ss, tail, err := x.chunk(a, idx)
	if err != nil || len(ss) == 0 {
		return 0, err
	}
	released := 0
	before := allocated(a, ss)
	kept := ss[:0]
	for _, s := range ss {
		released += len(s.Blocks)
		keep, err := x.trimSlice(&s, end)
		if err != nil {
			return 0, err
		}
		if keep {
			released -= len(s.Blocks)
			kept = append(kept, s)
		}
	}
	return released, x.putChunk(a.Ino, idx, before, kept, tail > 0)
}

// errTruncating: the file still has dead chunks beyond its end from a
// truncation that did not fit in one transaction. Write and SetAttr return
// it from inside their transaction; their callers finish the truncation and
// try again.
var errTruncating = errors.New("an earlier truncation is still releasing chunks")

// truncating returns errTruncating if a's truncation is still releasing
// chunks.
func truncating(a *Attr) error {
	if a.Flags&FlagTruncating != 0 {
		return errTruncating
	}
	return nil
}

// updateFile is update for a change that may write to regular file ino or
// extend it: when fn meets an unfinished truncation (errTruncating), the
// truncation is finished and fn runs again.
func (m *Meta) updateFile(ctx context.Context, ino uint64, fn func(x *tx) error) error {
	for {
		err := m.update(ctx, fn)
		if !errors.Is(err, errTruncating) {
			return err
		}
		if err := m.FinishTruncate(ctx, ino); err != nil {
			return err
		}
	}
}

// Truncations lists the inodes whose truncation is still releasing chunks
// (left by a crash, or by a truncating call that was cancelled).
func (m *Meta) Truncations(ctx context.Context) ([]uint64, error) {
	return m.inodesListed(ctx, pTruncate, 0, 0)
}

// inodesListed returns the inodes named by the records of prefix p, keyed
// by inode alone (orphans, truncations), in ascending order: those after
// inode after, at most limit of them (all when limit is 0).
func (m *Meta) inodesListed(ctx context.Context, p byte, after uint64, limit int) ([]uint64, error) {
	var out []uint64
	if after == math.MaxUint64 {
		return nil, nil
	}
	err := m.kv.View(ctx, func(t Txn) error {
		return t.Scan(key1(p), keyIno(p, after+1), func(k, v []byte) (bool, error) {
			if len(k) == 9 {
				out = append(out, binary.BigEndian.Uint64(k[1:]))
			}
			return limit == 0 || len(out) < limit, nil
		})
	})
	return out, err
}

// FinishTruncate releases the chunks of ino that lie wholly beyond its
// size, in bounded transactions, then drops its truncation flag and
// record. It is idempotent and resumes after a crash; an inode with
// neither is left alone.
func (m *Meta) FinishTruncate(ctx context.Context, ino uint64) error {
	ctx = freeing(ctx)
	cs := uint64(m.format.ChunkSize)
	for {
		finished := false
		err := m.update(ctx, func(x *tx) error {
			finished = false
			a, err := x.inode(ino)
			if errors.Is(err, syscall.ENOENT) {
				finished = true
				return x.del(keyIno(pTruncate, ino))
			}
			if err != nil {
				return err
			}
			if truncating(a) == nil {
				// Finished by someone else, or a record without the
				// flag (fsck reports it): the chunks past the end are
				// released either way, as garbage.
				if _, err := x.t.Get(keyIno(pTruncate, ino)); errors.Is(err, ErrKeyNotFound) {
					finished = true
					return nil
				} else if err != nil {
					return err
				}
			}
			done, err := x.releaseChunks(ino, (a.Size+cs-1)/cs, reapBlocks)
			if err != nil || !done {
				return err
			}
			finished = true
			a.Flags &^= FlagTruncating
			x.touch(a)
			return x.del(keyIno(pTruncate, ino))
		})
		if err != nil {
			return fmt.Errorf("finish truncating inode %d: %w", ino, err)
		}
		if finished {
			return nil
		}
	}
}

func (x *tx) setSize(a *Attr, size uint64) error {
	if err := x.truncate(a, size); err != nil {
		return err
	}
	x.addDelta(Stats{Bytes: int64(size) - int64(a.Size)})
	a.Size = size
	return nil
}

// SetAttr field selectors.
const (
	SetMode = 1 << iota
	SetUid
	SetGid
	SetSize
	SetAtime
	SetMtime
	SetAtimeNow
	SetMtimeNow
	SetCtime
)

// SetAttrIn is a change of attributes.
type SetAttrIn struct {
	Valid               uint32
	Mode, Uid, Gid      uint32
	Size                uint64
	Atime, Mtime, Ctime int64
	// OpenForWrite: the size change comes through a file opened for
	// writing, so write permission was checked at open.
	OpenForWrite bool
	// ByHandle: the size change comes by file handle without an open
	// (NFS), so it is checked as AccessByHandle checks a write.
	ByHandle bool
	// KillSuidgid: the caller of a size change lacks CAP_FSETID (FUSE's
	// FATTR_KILL_SUIDGID), so the truncation clears setuid and setgid as
	// a write would. (A chown needs no flag: it always clears them.)
	KillSuidgid bool
	// GrowOnly: the size change only ever extends the file (fallocate),
	// decided in the transaction; a file already that long is left as
	// it is, even if it grew since the caller last looked.
	GrowOnly bool
	// Chown: the change is a chown(2) even if it names no ids. Linux's
	// chown(path, -1, -1) of a non-directory still clears setuid, setgid
	// (as a write would) and file capabilities; through FUSE it arrives as
	// a SETATTR naming no attribute at all.
	Chown bool
}

// SetAttr changes an inode's attributes in one transaction. The caller must
// have flushed any buffered writes before a size change.
//
// A truncation that releases more blocks than one transaction holds
// commits the new size first, then releases the rest in further
// transactions before SetAttr returns. If those are cut short (ctx ends,
// the process dies) the size change stands, and the next write to the
// file, or the next start, finishes the release.
func (m *Meta) SetAttr(ctx context.Context, c *Caller, ino uint64, in SetAttrIn) (*Attr, error) {
	ctx = freeing(ctx)
	var out *Attr
	unfinished := false
	err := m.updateFile(ctx, ino, func(x *tx) error {
		unfinished = false
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		owner := c.Uid == 0 || c.Uid == a.Uid
		if in.Valid&SetSize != 0 && !(in.GrowOnly && in.Size <= a.Size) {
			switch {
			case a.IsDir():
				return syscall.EISDIR
			case !a.IsRegular():
				return syscall.EINVAL
			case in.Size > MaxFileSize:
				return syscall.EFBIG
			}
			check := Access
			if in.ByHandle {
				check = AccessByHandle
			}
			if !in.OpenForWrite {
				if err := check(a, c, MayWrite); err != nil {
					return err
				}
			}
			if err := truncating(a); err != nil {
				return err
			}
			if err := x.setSize(a, in.Size); err != nil {
				return err
			}
			unfinished = truncating(a) != nil
			a.Mtime = x.now
			// As truncate(2) on Linux: file capabilities go whoever
			// truncates, setuid and setgid when the caller lacks CAP_FSETID.
			if _, err := x.dropCaps(a); err != nil {
				return err
			}
			if in.KillSuidgid {
				a.Mode = killSuidgid(a.Mode, func() bool { return c.inGroup(a.Gid) })
			}
		}
		ids := in.Valid&(SetUid|SetGid) != 0
		if ids || in.Chown {
			newUid, newGid := a.Uid, a.Gid
			if in.Valid&SetUid != 0 {
				newUid = in.Uid
			}
			if in.Valid&SetGid != 0 {
				newGid = in.Gid
			}
			if c.Uid != 0 && ids {
				if newUid != a.Uid || c.Uid != a.Uid {
					return syscall.EPERM
				}
				if newGid != a.Gid && !c.inGroup(newGid) {
					return syscall.EPERM
				}
			}
			if !a.IsDir() {
				// As chown(2) on Linux, whatever the ids and whoever
				// asks: setuid goes, setgid as after a write (root
				// standing for CAP_FSETID), and the file capabilities.
				// (Linux's knfsd does the same.) A chown naming no ids
				// may be made by anyone, but a mode it changes needs
				// the owner, as chmod.
				mode := killSuidgid(a.Mode, func() bool { return c.Uid == 0 || c.inGroup(a.Gid) })
				if mode != a.Mode && !owner {
					// Only a chown naming no ids gets here from
					// someone other than the owner (see above).
					// Through FUSE this is also what the kernel sends
					// before an unprivileged write (file_remove_privs,
					// which anyone who may write the file may do), and
					// the two look the same. Refusing it would refuse
					// the write; the write drops the bits itself
					// (WRITE_KILL_SUIDGID). So it changes nothing,
					// where ext4 refuses such a chown with EPERM.
					cp := *a
					out = &cp
					return nil
				}
				a.Mode = mode
				if _, err := x.dropCaps(a); err != nil {
					return err
				}
			}
			a.Uid, a.Gid = newUid, newGid
		}
		if in.Valid&SetMode != 0 {
			if !owner {
				return syscall.EPERM
			}
			mode := in.Mode & 0o7777
			if mode&syscall.S_ISGID != 0 && c.Uid != 0 && !a.IsDir() && !c.inGroup(a.Gid) {
				mode &^= syscall.S_ISGID
			}
			a.Mode = a.Type() | mode
		}
		for _, t := range []struct {
			set, now uint32
			field    *int64
			value    int64
		}{{SetAtime, SetAtimeNow, &a.Atime, in.Atime}, {SetMtime, SetMtimeNow, &a.Mtime, in.Mtime}} {
			switch {
			case in.Valid&t.now != 0:
				if !owner {
					if err := Access(a, c, MayWrite); err != nil {
						return err
					}
				}
				*t.field = x.now
			case in.Valid&t.set != 0:
				if !owner {
					return syscall.EPERM
				}
				*t.field = t.value
			}
		}
		a.Ctime = x.now
		if in.Valid&SetCtime != 0 {
			a.Ctime = in.Ctime
		}
		x.touch(a)
		cp := *a
		out = &cp
		return nil
	})
	if err == nil && unfinished {
		// The size change is committed; what is left only frees space.
		_ = m.FinishTruncate(ctx, ino)
	}
	return out, err
}

// Data is a consistent view of part of a file's layout.
type Data struct {
	Attr   *Attr
	Inline []byte // inline content (may be shorter than Size: the rest reads as zeros)
	Chunks map[uint64][]Slice
}

// pointReads: ReadData reads ranges of fewer chunks than this key by key.
const pointReads = 4

// ReadData reads the attributes, inline data and the slice lists of chunks
// first..last of ino from one snapshot.
func (m *Meta) ReadData(ctx context.Context, ino uint64, first, last uint64) (*Data, error) {
	d := &Data{Chunks: map[uint64][]Slice{}}
	err := m.view(ctx, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		if !a.IsRegular() {
			if a.IsDir() {
				return syscall.EISDIR
			}
			return syscall.EINVAL
		}
		d.Attr = a
		if v, err := x.t.Get(keyIno(pInline, ino)); err == nil {
			d.Inline = v
		} else if !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		if last-first < pointReads {
			// A few chunks (every small file, most reads): point reads
			// cost a fraction of an iterator, which Badger builds over
			// every memtable and level.
			for idx := first; ; idx++ {
				ss, _, err := x.chunk(a, idx)
				if err != nil {
					return err
				}
				if ss != nil {
					d.Chunks[idx] = ss
				}
				if idx == last {
					return nil
				}
			}
		}
		return x.scanChunks(ino, first, a.Flags&FlagTails != 0, func(idx uint64, ss []Slice, _ int) (bool, error) {
			if idx > last {
				return false, nil
			}
			d.Chunks[idx] = ss
			return true, nil
		})
	})
	return d, err
}

// scanChunks calls fn with the slices of each chunk of ino from index from
// on, in order, as chunk returns them, until fn returns false; tails says
// whether to include tail records (as chunk does for a file marked as
// having them). The slices are fn's to keep.
func (x *tx) scanChunks(ino, from uint64, tails bool, fn func(idx uint64, ss []Slice, tail int) (bool, error)) error {
	var (
		cur  uint64
		ss   []Slice
		tail int
		have bool
	)
	err := x.t.Scan(keyIno(pSlices, ino), keyChunk(ino, from), func(k, v []byte) (bool, error) {
		isTail, ok := chunkKeyTail(k)
		if !ok || isTail && !x.m.tails() {
			return false, corrupt("slice list key", k)
		}
		if isTail && !tails {
			return true, nil
		}
		rec, err := decodeSlices(k, v)
		if err != nil {
			return false, err
		}
		idx := binary.BigEndian.Uint64(k[9:])
		if have && idx == cur {
			ss, tail = append(ss, rec...), len(rec)
			return true, nil
		}
		if have {
			if more, err := fn(cur, ss, tail); !more || err != nil {
				have = false
				return false, err
			}
		}
		cur, ss, tail, have = idx, rec, 0, true
		if isTail {
			tail = len(rec)
		}
		return true, nil
	})
	if err != nil || !have {
		return err
	}
	_, err = fn(cur, ss, tail)
	return err
}

// ChunkWrite is new slices for one chunk.
type ChunkWrite struct {
	Index  uint64
	Slices []Slice
}

// WriteIn is one commit of buffered writes.
type WriteIn struct {
	Chunks     []ChunkWrite
	End        uint64 // the file is at least this long afterwards
	Mtime      int64  // time of the last write
	DropInline bool   // the inline content was rewritten into Chunks
	// Inline, when not nil, replaces the inline content entirely; used
	// instead of Chunks for files that stay small.
	Inline []byte
}

// Write commits buffered writes: slices, their block references and the
// file's new size and times, in one transaction. Blocks must already be
// durable in the object store.
func (m *Meta) Write(ctx context.Context, ino uint64, in WriteIn) (*Attr, error) {
	if in.End > MaxFileSize {
		return nil, syscall.EFBIG
	}
	var out *Attr
	err := m.updateFile(ctx, ino, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		if !a.IsRegular() {
			return syscall.EINVAL
		}
		if err := truncating(a); err != nil {
			return err
		}
		if in.Inline != nil {
			if err := x.set(keyIno(pInline, ino), in.Inline); err != nil {
				return err
			}
			if a.Flags&FlagAlloc != 0 {
				// A file stays inline only while it has no chunk.
				a.Alloc = uint64(len(in.Inline))
				x.touch(a)
			}
		} else if in.DropInline {
			if a.Flags&FlagAlloc != 0 {
				v, err := x.t.Get(keyIno(pInline, ino))
				if err != nil && !errors.Is(err, ErrKeyNotFound) {
					return err
				}
				a.Alloc -= min(a.Alloc, uint64(len(v)))
				x.touch(a)
			}
			if err := x.del(keyIno(pInline, ino)); err != nil {
				return err
			}
		}
		cs := uint32(m.format.ChunkSize)
		for _, cw := range in.Chunks {
			for _, s := range cw.Slices {
				if s.Len == 0 || uint64(s.Pos)+uint64(s.Len) > uint64(cs) {
					return fmt.Errorf("slice [%d,+%d) outside chunk", s.Pos, s.Len)
				}
				if s.Hole() && !m.format.HoleSlices() {
					return fmt.Errorf("hole slice on a volume of format version %d (holes need 4): %w", m.format.Version, syscall.EOPNOTSUPP)
				}
			}
			ss, tail, err := x.chunk(a, cw.Index)
			if err != nil {
				return err
			}
			if err := x.addSlices(a, cw.Index, ss, tail, cw.Slices); err != nil {
				return err
			}
		}
		if in.End > a.Size {
			x.addDelta(Stats{Bytes: int64(in.End - a.Size)})
			a.Size = in.End
		}
		a.Mtime, a.Ctime = in.Mtime, max(in.Mtime, a.Ctime)
		x.touch(a)
		cp := *a
		out = &cp
		return nil
	})
	return out, err
}

// dropShadowed releases the slices of ss that s covers entirely: nothing of
// them can be read any more.
func (x *tx) dropShadowed(ss []Slice, s Slice) ([]Slice, error) {
	kept := ss[:0]
	for _, old := range ss {
		if old.Pos >= s.Pos && old.Pos+old.Len <= s.Pos+s.Len {
			if err := x.refSlice(old, -1); err != nil {
				return nil, err
			}
			continue
		}
		kept = append(kept, old)
	}
	return kept, nil
}

// appendSlice adds s as the newest slice, merging it into the newest
// existing one when s continues it exactly: the merged slice covers the same
// bytes with the same precedence, and sequential writes keep one slice.
func appendSlice(ss []Slice, s Slice) []Slice {
	if n := len(ss); n > 0 {
		last := &ss[n-1]
		var total uint32
		for _, b := range last.Blocks {
			total += b.Size
		}
		switch {
		case last.Pos+last.Len != s.Pos || last.Hole() != s.Hole():
		case s.Hole():
			// Two holes, one after the other, are one hole.
			last.Len += s.Len
			return ss
		case total == last.Len && len(last.Blocks)+len(s.Blocks) <= 1<<14:
			last.Len += s.Len
			last.Blocks = append(last.Blocks, s.Blocks...)
			return ss
		}
	}
	return append(ss, s)
}

// ReplaceChunk swaps the slices old of a chunk (read earlier) for repl, an
// equivalent compacted list (the same bytes wherever old had data), and
// reports whether it did. Writes committed since old was read are kept: a
// write only appends slices, dropping the ones a new slice covers whole, so
// the chunk is then what is left of old, in order, followed by newer slices,
// and it becomes repl followed by those. Any other change (a truncation cut
// a slice, a copy replaced the chunk) leaves the chunk alone: false. Without
// this, a file written in small commits faster than its chunk could be
// compacted (fsync'd random writes) was never compacted at all, and every
// commit rewrote an ever longer slice list.
func (m *Meta) ReplaceChunk(ctx context.Context, ino uint64, idx uint64, old, repl []Slice) (bool, error) {
	done := false
	err := m.update(ctx, func(x *tx) error {
		done = false
		a, err := x.inode(ino)
		if errors.Is(err, syscall.ENOENT) {
			return nil // freed meanwhile: nothing to replace
		}
		if err != nil {
			return err
		}
		cur, tail, err := x.chunk(a, idx)
		if err != nil {
			return err
		}
		kept, newer, ok := sinceRead(old, cur)
		if !ok {
			return nil
		}
		// A compacted slice that a newer one covers whole would never be
		// read (a commit rewrote the chunk meanwhile): it is left out, and
		// a reference taken and dropped queues its blocks for deletion
		// unless something else references them.
		shown := make([]Slice, 0, len(repl)+len(newer))
		for _, r := range repl {
			if !slices.ContainsFunc(newer, func(n Slice) bool { return covers(n, r) }) {
				shown = append(shown, r)
				continue
			}
			if err := x.refSlice(r, 1); err != nil {
				return err
			}
			if err := x.refSlice(r, -1); err != nil {
				return err
			}
		}
		if err := x.refSlices(shown, 1); err != nil {
			return err
		}
		if err := x.refSlices(kept, -1); err != nil {
			return err
		}
		done = true
		return x.putChunk(ino, idx, allocated(a, cur), append(shown, newer...), tail > 0)
	})
	return done, err
}

// sinceRead splits cur, a chunk's slice list now, into the slices of old
// (the list as read earlier) still in it and the newer ones after them. It
// reports false unless cur is such a prefix of old's slices, in old's order,
// followed by newer slices, and every slice of old missing from it lies
// wholly inside one newer slice. Then each byte that no newer slice covers
// is served by the same slice as in old: the slices above it in old are
// either still there or inside a newer slice, which would cover the byte.
func sinceRead(old, cur []Slice) (kept, newer []Slice, ok bool) {
	present := make([]bool, len(old))
	i, j := 0, 0
	for ; i < len(cur); i++ {
		k := j
		for k < len(old) && !sameSlice(old[k], cur[i]) {
			k++
		}
		if k == len(old) {
			break
		}
		present[k] = true
		j = k + 1
	}
	kept, newer = cur[:i], cur[i:]
	for k, o := range old {
		if present[k] {
			continue
		}
		if !slices.ContainsFunc(newer, func(n Slice) bool { return covers(n, o) }) {
			return nil, nil, false
		}
	}
	return kept, newer, true
}

// covers reports whether slice n covers every byte of slice o.
func covers(n, o Slice) bool { return n.Pos <= o.Pos && o.Pos+o.Len <= n.Pos+n.Len }

// sameSlice reports whether a and b are the same slice: the same bytes at
// the same place from the same blocks.
func sameSlice(a, b Slice) bool {
	return a.Pos == b.Pos && a.Len == b.Len && slices.Equal(a.Blocks, b.Blocks)
}

// Orphans lists inodes whose last link is gone.
func (m *Meta) Orphans(ctx context.Context) ([]uint64, error) {
	return m.inodesListed(ctx, pOrphan, 0, 0)
}

// OrphansAfter lists at most limit orphans numbered above after, in
// ascending order: a page of the orphan list, which may be long (a mass
// deletion while the volume was closing, say).
func (m *Meta) OrphansAfter(ctx context.Context, after uint64, limit int) ([]uint64, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("list orphans: limit %d, want > 0", limit)
	}
	return m.inodesListed(ctx, pOrphan, after, limit)
}

// reapBatch bounds the chunks, reapBlocks the block references, released
// per transaction when reaping. Each reference costs two writes (the count
// and the deletion queue); Badger refuses a transaction of more than about
// 50,000. A single slice holding more is still released whole, alone in its
// transaction: the write that committed it fitted in one.
const (
	reapBatch  = 64
	reapBlocks = 8192
)

// Reap frees an orphan inode: its chunks (in bounded transactions, each
// consistent), then the inode itself. The caller guarantees nothing has it
// open. Reap is idempotent and resumes after a crash.
func (m *Meta) Reap(ctx context.Context, ino uint64) error {
	ctx = freeing(ctx)
	for {
		finished := false
		err := m.update(ctx, func(x *tx) error {
			finished = false
			a, err := x.inode(ino)
			if errors.Is(err, syscall.ENOENT) {
				finished = true
				return x.del(keyIno(pOrphan, ino))
			}
			if err != nil {
				return err
			}
			if a.Nlink > 0 {
				finished = true
				return x.del(keyIno(pOrphan, ino))
			}
			finished, err = x.reapStep(a, true)
			return err
		})
		if err != nil {
			return fmt.Errorf("reap inode %d: %w", ino, err)
		}
		if finished {
			return nil
		}
	}
}

// releaseChunks releases the slices of ino's chunks from index from on and
// deletes the chunks it empties: up to reapBatch chunks or about budget
// (at most reapBlocks) block references. It reports whether no such chunk
// is left.
func (x *tx) releaseChunks(ino, from uint64, budget int) (bool, error) {
	// The scan hands over each chunk's slices; the deletions come after
	// it, not under its iterator.
	type chunk struct {
		idx  uint64
		ss   []Slice
		tail int
	}
	var chunks []chunk
	blocks, more := 0, false
	// Tails whatever the inode's flag says: all of it goes.
	err := x.scanChunks(ino, from, true, func(idx uint64, ss []Slice, tail int) (bool, error) {
		if len(chunks) == reapBatch || blocks >= budget {
			more = true
			return false, nil
		}
		chunks = append(chunks, chunk{idx, ss, tail})
		for _, s := range ss {
			blocks += len(s.Blocks)
		}
		return true, nil
	})
	if err != nil {
		return false, err
	}
	a, err := x.inode(ino)
	if err != nil {
		return false, err
	}
	full := budget
	for _, c := range chunks {
		n := 0 // slices of c released
		for _, s := range c.ss {
			if len(s.Blocks) > budget && budget < full {
				break // for the next transaction
			}
			if err := x.refSlice(s, -1); err != nil {
				return false, err
			}
			budget -= len(s.Blocks)
			n++
		}
		if err := x.putChunk(ino, c.idx, allocated(a, c.ss), c.ss[n:], c.tail > 0); err != nil {
			return false, err
		}
		if n < len(c.ss) {
			return false, nil
		}
	}
	return !more, nil
}

// reapStep frees part of inode a, which has no links left, in x: up to
// reapBatch chunks or about reapBlocks block references and, once none
// are left, its extended attributes, inline data, records and the inode
// itself. It reports whether the inode is gone. orphan says whether a may
// have an orphan record to delete (an unlink freeing the file at once
// wrote none). The flags spare the look for chunks and attributes a file
// never had.
func (x *tx) reapStep(a *Attr, orphan bool) (bool, error) {
	ino := a.Ino
	if !a.hasNo(FlagNoChunks) {
		if done, err := x.releaseChunks(ino, 0, reapBlocks); err != nil || !done {
			return false, err
		}
	}
	dels := [][]byte{keyIno(pInline, ino)}
	if orphan {
		dels = append(dels, keyIno(pOrphan, ino))
	}
	if truncating(a) != nil {
		dels = append(dels, keyIno(pTruncate, ino))
	}
	if !a.hasNo(FlagNoXattrs) {
		err := x.t.Scan(keyIno(pXattr, ino), nil, func(k, v []byte) (bool, error) {
			dels = append(dels, append([]byte(nil), k...))
			return true, nil
		})
		if err != nil {
			return false, err
		}
	}
	for _, k := range dels {
		if err := x.del(k); err != nil {
			return false, err
		}
	}
	d := Stats{Inodes: -1}
	switch {
	case a.IsDir():
		d.Dirs = -1
	case a.IsRegular():
		d.Files, d.Bytes = -1, -int64(a.Size)
	}
	x.addDelta(d)
	x.forget(ino)
	return true, nil
}

// PendingBlocks returns up to limit blocks whose reference count reached
// zero before cutoff, in block order, after the block after when it is not
// nil (so that a caller going through the queue batch by batch does not
// step again over the entries it has just claimed).
//
// The queue is keyed by block, not by time, so finding what is due means
// reading all of it. After a large delete the mount asks every second
// while nothing is due yet (the grace period), so a scan of the whole
// queue that finds nothing due remembers when the oldest queued block was
// queued (or the scan began, if that is earlier): until cutoff reaches
// that time nothing can be due (blocks queued later are younger), and no
// scan is made. A clock stepped back, or a block queued by a transaction
// that commits during a scan, can only make a deletion later, never
// earlier.
func (m *Meta) PendingBlocks(ctx context.Context, cutoff time.Time, after *BlockID, limit int) ([]BlockID, error) {
	c := cutoff.UnixNano()
	if after == nil {
		m.pendingMu.Lock()
		notBefore := m.pendingNotBefore
		m.pendingMu.Unlock()
		if c < notBefore {
			return nil, nil
		}
	}
	var start []byte
	if after != nil {
		start = append(keyBlock(pPending, *after), 0)
	}
	var out []BlockID
	// Blocks queued after the scan are queued after it starts.
	oldest := time.Now().UnixNano() // of the blocks not due
	err := m.kv.View(ctx, func(t Txn) error {
		return t.Scan(key1(pPending), start, func(k, v []byte) (bool, error) {
			if len(k) != 33 {
				return true, nil
			}
			if at := int64(u64(v)); at <= c {
				var id BlockID
				copy(id[:], k[1:])
				out = append(out, id)
			} else {
				oldest = min(oldest, at)
			}
			return len(out) < limit, nil
		})
	})
	if err == nil && after == nil && len(out) == 0 {
		m.pendingMu.Lock()
		m.pendingNotBefore = oldest
		m.pendingMu.Unlock()
	}
	return out, err
}

// ClaimBlock removes block id from the deletion queue. It reports true if
// the block is unreferenced, so its object may be deleted now; the caller
// must keep new references to id from being committed until it has.
func (m *Meta) ClaimBlock(ctx context.Context, id BlockID) (bool, error) {
	ok, err := m.ClaimBlocks(ctx, []BlockID{id})
	return err == nil && ok[0], err
}

// ClaimBlocks is ClaimBlock for several blocks in one transaction;
// deletable[i] is ClaimBlock's answer for ids[i].
func (m *Meta) ClaimBlocks(ctx context.Context, ids []BlockID) (deletable []bool, err error) {
	ctx = freeing(ctx)
	deletable = make([]bool, len(ids))
	if len(ids) == 0 {
		return deletable, nil
	}
	err = m.update(ctx, func(x *tx) error {
		clear(deletable)
		for i, id := range ids {
			if _, err := x.t.Get(keyBlock(pPending, id)); errors.Is(err, ErrKeyNotFound) {
				continue
			} else if err != nil {
				return err
			}
			if err := x.del(keyBlock(pPending, id)); err != nil {
				return err
			}
			_, err := x.t.Get(keyBlock(pRefcount, id))
			if errors.Is(err, ErrKeyNotFound) {
				deletable[i] = true
				continue
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return deletable, err
}

// QueueUnreferenced queues for deletion those of ids that no slice
// references: blocks uploaded for a commit that then failed.
func (m *Meta) QueueUnreferenced(ctx context.Context, ids []BlockID) error {
	ctx = freeing(ctx)
	if len(ids) == 0 {
		return nil
	}
	return m.update(ctx, func(x *tx) error {
		for _, id := range ids {
			if _, err := x.t.Get(keyBlock(pRefcount, id)); err == nil {
				continue
			} else if !errors.Is(err, ErrKeyNotFound) {
				return err
			}
			if err := x.set(keyBlock(pPending, id), u64bytes(uint64(x.now))); err != nil {
				return err
			}
		}
		return nil
	})
}

// ShareRange makes bytes [dstOff, dstOff+n) of file dst hold what bytes
// [srcOff, srcOff+n) of file src hold by sharing src's blocks (a reference
// more each) instead of copying their data: copy_file_range without
// moving data. It works a whole chunk at a time, so both offsets must lie
// on chunk boundaries; a last chunk the range covers only in part is
// shared only if neither file holds anything in it beyond the range (the
// range runs to src's end, and dst is no longer than the range's end).
// What dst had in the chunks it shares is released. Files with inline data
// are left alone. dst grows to hold the range, and its mtime and ctime
// change.
//
// It shares what fits in one transaction (reapBatch chunks, about
// reapBlocks block references) and returns how many bytes, from the start
// of the range, it shared: 0 when it cannot share the first chunk, and the
// caller copies the data instead.
func (m *Meta) ShareRange(ctx context.Context, src, srcOff, dst, dstOff, n uint64) (shared uint64, err error) {
	cs := uint64(m.format.ChunkSize)
	if n == 0 || srcOff%cs != 0 || dstOff%cs != 0 {
		return 0, nil
	}
	if srcOff+n > MaxFileSize || dstOff+n > MaxFileSize {
		return 0, syscall.EFBIG
	}
	if src == dst && srcOff < dstOff+n && dstOff < srcOff+n {
		return 0, syscall.EINVAL
	}
	err = m.updateFile(ctx, dst, func(x *tx) error {
		shared = 0
		s, err := x.inode(src)
		if err != nil {
			return err
		}
		d, err := x.inode(dst)
		if err != nil {
			return err
		}
		if !s.IsRegular() || !d.IsRegular() {
			return syscall.EINVAL
		}
		if err := truncating(d); err != nil {
			return err
		}
		if srcOff >= s.Size {
			return nil
		}
		n := min(n, s.Size-srcOff)
		for _, ino := range []uint64{src, dst} {
			if _, err := x.t.Get(keyIno(pInline, ino)); err == nil {
				return nil
			} else if !errors.Is(err, ErrKeyNotFound) {
				return err
			}
		}
		refs := 0
		for i := uint64(0); i < reapBatch && i*cs < n; i++ {
			part := min(cs, n-i*cs)
			if part < cs && (srcOff+n < s.Size || d.Size > dstOff+n) {
				break // the chunk holds more than the range in one file
			}
			from, _, err := x.chunk(s, srcOff/cs+i)
			if err != nil {
				return err
			}
			to, tail, err := x.chunk(d, dstOff/cs+i)
			if err != nil {
				return err
			}
			for _, ss := range [][]Slice{from, to} {
				for _, sl := range ss {
					refs += len(sl.Blocks)
				}
			}
			if refs > reapBlocks {
				break // the next call, or (one chunk of too many blocks) a copy
			}
			if err := x.refSlices(from, 1); err != nil {
				return err
			}
			if err := x.refSlices(to, -1); err != nil {
				return err
			}
			if err := x.putChunk(dst, dstOff/cs+i, allocated(d, to), from, tail > 0); err != nil {
				return err
			}
			shared += part
		}
		if shared == 0 {
			return nil
		}
		if end := dstOff + shared; end > d.Size {
			x.addDelta(Stats{Bytes: int64(end - d.Size)})
			d.Size = end
		}
		x.touchTimes(d)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return shared, nil
}
