package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/objfs/objfs/fs/meta"
)

// Open flags that matter here, as in open(2).
const (
	accMode = syscall.O_ACCMODE
)

// OpenKillSuidgid, or'ed into the flags of Open or Create, says that the
// opener lacks CAP_FSETID (FUSE's FUSE_OPEN_KILL_SUIDGID): an O_TRUNC then
// clears setuid and setgid as a write would. It is no open(2) flag (bit
// 31 is unused by Linux) and is not kept in the handle.
const OpenKillSuidgid = 1 << 31

func accessMask(flags uint32) uint32 {
	switch flags & accMode {
	case syscall.O_WRONLY:
		return meta.MayWrite
	case syscall.O_RDWR:
		return meta.MayRead | meta.MayWrite
	}
	return meta.MayRead
}

// Open opens inode ino and returns a handle.
func (f *FS) Open(ctx context.Context, c *Caller, ino uint64, flags uint32) (fh uint64, err error) {
	kill := flags&OpenKillSuidgid != 0
	flags &^= OpenKillSuidgid
	// Acquire first: from here on the inode cannot be reaped under us.
	in, err := f.acquire(ino)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = f.releaseInode(ctx, in)
		}
	}()
	// An open for writing learns what the writes will have to drop in
	// the same read, sparing the first write a read of its own.
	writing := flags&accMode != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
	epoch := f.privEpoch.Load()
	var a *Attr
	var privs meta.Privs
	if writing {
		a, privs, err = f.meta.GetAttrPrivs(ctx, ino)
	} else {
		a, err = f.meta.GetAttr(ctx, ino)
	}
	if err != nil {
		return 0, err
	}
	switch {
	case a.IsDir() && writing:
		return 0, syscall.EISDIR
	case a.Type() == syscall.S_IFLNK:
		return 0, syscall.ELOOP
	}
	mask := accessMask(flags)
	if flags&syscall.O_TRUNC != 0 {
		mask |= meta.MayWrite
	}
	if err := meta.Access(a, c, mask); err != nil {
		return 0, err
	}
	if writing && a.IsRegular() {
		f.knowPrivs(in, privs, epoch)
	}
	if flags&syscall.O_TRUNC != 0 && a.IsRegular() {
		if _, err := f.truncate(ctx, c, in, 0, true, kill); err != nil {
			return 0, err
		}
	}
	return f.newHandle(in, flags), nil
}

func (f *FS) newHandle(in *inode, flags uint32) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	fh := f.nextFh
	f.nextFh++
	f.handles[fh] = &handle{ino: in, flags: flags}
	return fh
}

// Create makes a regular file name in parent and opens it. With O_EXCL an
// existing name is EEXIST; without, the existing file is opened.
func (f *FS) Create(ctx context.Context, c *Caller, parent uint64, name string, mode, flags uint32) (*Attr, uint64, error) {
	epoch := f.privEpoch.Load()
	a, err := f.meta.Mknod(ctx, c, parent, name, meta.NewNode{Mode: syscall.S_IFREG | mode&0o7777})
	if err == syscall.EEXIST && flags&syscall.O_EXCL == 0 {
		if a, err = f.meta.Lookup(ctx, c, parent, name); err != nil {
			return nil, 0, err
		}
		fh, err := f.Open(ctx, c, a.Ino, flags&^syscall.O_CREAT)
		if err != nil {
			return nil, 0, err
		}
		a, err = f.GetAttr(ctx, a.Ino)
		return a, fh, err
	}
	if err != nil {
		return nil, 0, err
	}
	in, err := f.acquire(a.Ino)
	if err != nil {
		return nil, 0, err
	}
	// A new file has no capabilities; its mode is the one just created.
	f.knowPrivs(in, meta.Privs{Mode: a.Mode, Gid: a.Gid}, epoch)
	return a, f.newHandle(in, flags&^OpenKillSuidgid), nil
}

// Tmpfile creates and opens an unnamed file in parent (O_TMPFILE).
func (f *FS) Tmpfile(ctx context.Context, c *Caller, parent uint64, mode, flags uint32) (*Attr, uint64, error) {
	a, err := f.meta.Tmpfile(ctx, c, parent, mode, flags&syscall.O_EXCL == 0)
	if err != nil {
		return nil, 0, err
	}
	in, err := f.acquire(a.Ino)
	if err != nil {
		return nil, 0, err
	}
	f.mu.Lock()
	in.unlinked = true // reaped at its last release unless linked by then
	f.mu.Unlock()
	return a, f.newHandle(in, flags&^OpenKillSuidgid), nil
}

// Release closes a handle; the file's last close commits its buffered data.
func (f *FS) Release(ctx context.Context, fh uint64) error {
	f.mu.Lock()
	h := f.handles[fh]
	delete(f.handles, fh)
	f.mu.Unlock()
	if h == nil {
		return syscall.EBADF
	}
	return f.releaseInode(ctx, h.ino)
}

// Flush commits the file's buffered writes so every other opener sees them
// (called at each close of a descriptor).
func (f *FS) Flush(ctx context.Context, fh uint64) error {
	h, err := f.handle(fh)
	if err != nil {
		return err
	}
	h.ino.mu.Lock()
	defer h.ino.mu.Unlock()
	return f.flushLocked(ctx, h.ino)
}

// Fsync makes the file's data and metadata durable.
func (f *FS) Fsync(ctx context.Context, fh uint64) error {
	if fh != 0 {
		if err := f.Flush(ctx, fh); err != nil {
			return err
		}
	}
	return f.sync()
}

// FsyncInode commits and syncs inode ino whether or not a handle is given.
func (f *FS) FsyncInode(ctx context.Context, ino uint64) error {
	if in := f.lookupInode(ino); in != nil {
		in.mu.Lock()
		err := f.flushLocked(ctx, in)
		in.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return f.sync()
}

// Seek answers SEEK_DATA (hole false) and SEEK_HOLE (hole true) from off;
// see meta.Seek. Buffered writes are committed first, so they count as the
// data they are.
func (f *FS) Seek(ctx context.Context, ino, off uint64, hole bool) (uint64, error) {
	if in := f.lookupInode(ino); in != nil {
		in.mu.Lock()
		err := f.flushLocked(ctx, in)
		in.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
	return f.meta.Seek(ctx, ino, off, hole)
}

func (f *FS) sync() error {
	if err := f.meta.Sync(); err != nil {
		return fmt.Errorf("sync metadata: %w", err)
	}
	return nil
}

// Write buffers data at off (or at the end of file for O_APPEND handles),
// written by a writer with CAP_FSETID: see WriteAs.
func (f *FS) Write(ctx context.Context, fh uint64, off uint64, data []byte) (int, error) {
	n, _, err := f.WriteAs(ctx, fh, off, data, nil, false)
	return n, err
}

// WriteAs buffers data at off (or at the end of file for O_APPEND handles,
// unless fromCache) and drops the file's privileges as a write does on
// Linux: its capabilities (security.capability) whoever writes; its setuid
// and setgid bits when unprivileged is not nil, the writer lacking
// CAP_FSETID.
// unprivileged returns who writes, for the group check of a setgid file
// without group execute; it is called only for setuid or setgid files.
// The privileges go in their own transaction before the data is buffered,
// so every reader sees them gone when the write returns, and a crash can
// lose the data but never keep the bits with the data. dropped reports
// that something went, so that a front end can drop what it caches of the
// file's attributes.
//
// fromCache says that the kernel writes back pages of its cache (written
// through a shared mapping): they go at their own offsets, also when the
// handle the kernel sends them through (one the file was mapped with) was
// opened with O_APPEND.
func (f *FS) WriteAs(ctx context.Context, fh uint64, off uint64, data []byte, unprivileged func() *Caller, fromCache bool) (n int, dropped bool, err error) {
	h, err := f.handle(fh)
	if err != nil {
		return 0, false, err
	}
	if h.flags&accMode == syscall.O_RDONLY {
		return 0, false, syscall.EBADF
	}
	in := h.ino
	in.mu.Lock()
	defer in.mu.Unlock()
	if h.flags&syscall.O_APPEND != 0 && !fromCache {
		a, err := f.meta.GetAttr(ctx, in.ino)
		if err != nil {
			return 0, false, err
		}
		off = max(a.Size, in.buf.end())
	}
	if off+uint64(len(data)) > meta.MaxFileSize {
		return 0, false, syscall.EFBIG
	}
	if dropped, err = f.dropPrivsLocked(ctx, in, unprivileged); err != nil {
		return 0, false, err
	}
	f.buffer(in, off, data)
	// Back pressure: a file with a full buffer, or a writer while all
	// buffers together are over the limit, commits before returning.
	if in.buf.bytes >= f.opts.InodeDirty || f.dirty.Load() > f.opts.DirtyLimit {
		if err := f.flushLocked(ctx, in); err != nil {
			return 0, dropped, err
		}
	}
	return len(data), dropped, nil
}

// dropPrivsLocked drops what a write to in drops (see WriteAs) and reports
// whether anything went; the caller holds in.mu. Only the first write to a
// file, or the first after a change that may have set privileges again,
// reads metadata.
func (f *FS) dropPrivsLocked(ctx context.Context, in *inode, unprivileged func() *Caller) (bool, error) {
	epoch := f.privEpoch.Load()
	p, known := in.knownPrivs()
	if !known {
		var err error
		if p, err = f.meta.Privs(ctx, in.ino); err != nil {
			return false, err
		}
		f.knowPrivs(in, p, epoch)
	}
	var c *Caller
	if unprivileged != nil && p.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
		c = unprivileged()
	}
	if !p.Drops(c) {
		return false, nil
	}
	left, err := f.meta.DropPrivs(ctx, in.ino, c)
	if err != nil {
		return false, fmt.Errorf("drop privileges of inode %d before a write: %w", in.ino, err)
	}
	f.knowPrivs(in, left, epoch)
	return true, nil
}

// DropPrivs drops what a write to ino would (see WriteAs) without writing:
// for operations that change a file as a write does (fallocate). It
// reports whether anything went.
func (f *FS) DropPrivs(ctx context.Context, ino uint64, unprivileged func() *Caller) (bool, error) {
	in, err := f.acquire(ino)
	if err != nil {
		return false, err
	}
	defer func() { _ = f.releaseInode(ctx, in) }()
	in.mu.Lock()
	defer in.mu.Unlock()
	return f.dropPrivsLocked(ctx, in, unprivileged)
}

// buffer adds a write to in's buffer (the caller holds in.mu). Whole
// blocks the write completes start on their way to the store at once, so a
// sequential writer's data is hashed and staged while it keeps writing,
// and a commit only waits for what is left.
func (f *FS) buffer(in *inode, off uint64, data []byte) {
	before := in.buf.bytes
	in.buf.write(off, data)
	in.mtime = time.Now().UnixNano()
	f.dirty.Add(int64(in.buf.bytes - before))
	if f.earlyBlocks {
		for _, i := range in.buf.fullPieces() {
			e := &in.buf.extents[i]
			e.blk = f.putEarly(e.data)
		}
	}
}

// earlyBlock is a block stored ahead of the commit that will reference it.
type earlyBlock struct {
	done chan struct{} // closed when ref and err are set
	ref  meta.BlockRef
	err  error
}

// putEarly stores data (a whole block nobody modifies again) in the
// background. The block is held from the moment it is stored until the
// commit using it releases it, or until it is found stale.
func (f *FS) putEarly(data []byte) *earlyBlock {
	eb := &earlyBlock{done: make(chan struct{})}
	go func() {
		defer close(eb.done)
		f.earlySem <- struct{}{}
		defer func() { <-f.earlySem }()
		eb.ref, eb.err = f.blocks.put(f.bgCtx, data, true)
	}()
	return eb
}

// wait returns the early block's reference once it is stored.
func (eb *earlyBlock) wait() (meta.BlockRef, error) {
	<-eb.done
	return eb.ref, eb.err
}

// resetBuffer empties in's buffer after a commit (the caller holds in.mu)
// and recycles its arrays, once no early block still reads them.
func (f *FS) resetBuffer(in *inode) {
	f.dirty.Add(-int64(in.buf.bytes))
	f.dropStale(in)
	for _, e := range in.buf.extents {
		if e.blk != nil {
			<-e.blk.done
		}
	}
	in.buf.recycle()
	in.buf.reset()
}

// dropStale lets go of early blocks that no commit will use: each one's
// hold is released and its object queued for deletion (unless something
// else references the same content by then).
func (f *FS) dropStale(in *inode) {
	if len(in.buf.stale) == 0 {
		return
	}
	var ids []meta.BlockID
	for _, eb := range in.buf.stale {
		if ref, err := eb.wait(); err == nil {
			ids = append(ids, ref.ID)
		}
	}
	in.buf.stale = nil
	f.blocks.release(ids...)
	f.abandon(ids)
}

// forgetEarly turns every early block of in's buffer stale: after a failed
// commit, whose abandon queued them for deletion, they must be stored
// again before anything references them.
func (f *FS) forgetEarly(in *inode) {
	for i := range in.buf.extents {
		e := &in.buf.extents[i]
		if e.blk != nil {
			<-e.blk.done
			e.blk = nil
		}
	}
}

// Read reads into dest from off and returns the number of bytes read.
func (f *FS) Read(ctx context.Context, fh uint64, off uint64, dest []byte) (int, error) {
	h, err := f.readable(fh)
	if err != nil {
		return 0, err
	}
	h.ino.mu.Lock()
	defer h.ino.mu.Unlock()
	return f.readLocked(ctx, h.ino, off, dest)
}

// readable returns handle fh if it was opened for reading.
func (f *FS) readable(fh uint64) (*handle, error) {
	h, err := f.handle(fh)
	if err != nil {
		return nil, err
	}
	if h.flags&accMode == syscall.O_WRONLY {
		return nil, syscall.EBADF
	}
	return h, nil
}

// ReadView is Read for a caller that can send bytes from where they lie
// (the FUSE front end hands them to the kernel in one writev). When the
// bytes asked for lie in one block already at hand (read ahead, or in the
// memory cache) and nothing buffered covers them, it returns them there,
// without copying; otherwise it reads them into buf, as Read does, and
// returns that. Either way the caller must call release once it is done
// with data. A sequential reader's requests take the first path once
// read-ahead has started, which saves copying every byte once more on the
// way out.
func (f *FS) ReadView(ctx context.Context, fh uint64, off uint64, buf []byte) (data []byte, release func(), err error) {
	h, err := f.readable(fh)
	if err != nil {
		return nil, nil, err
	}
	h.ino.mu.Lock()
	defer h.ino.mu.Unlock()
	if len(buf) == 0 {
		return buf, noRelease, nil
	}
	d, err := f.readData(ctx, h.ino, off, uint64(len(buf)))
	if err != nil {
		return nil, nil, err
	}
	if data, release, err := f.view(ctx, h.ino, d, off, len(buf)); err != nil || data != nil {
		return data, release, err
	}
	n, err := f.readFrom(ctx, h.ino, d, off, buf)
	if err != nil {
		return nil, nil, err
	}
	return buf[:n], noRelease, nil
}

func noRelease() {}

// view returns the n bytes at off where they lie, when one block at hand
// holds them all and nothing buffered covers them (see ReadView); d is
// the file's data around them. It returns nil data for reads that run
// past the end of the file, into a hole, or across blocks, and for a
// block not at hand: readFrom serves those.
func (f *FS) view(ctx context.Context, in *inode, d *meta.Data, off uint64, n int) ([]byte, func(), error) {
	cs := uint64(f.format.ChunkSize)
	end := off + uint64(n)
	idx := off / cs
	size := max(d.Attr.Size, in.buf.end())
	if end < off || (end-1)/cs != idx || end > size || len(d.Inline) > 0 || in.buf.covers(off, end) {
		return nil, nil, nil
	}
	ss, ok := d.Chunks[idx]
	if !ok || needsCompaction(ss) {
		return nil, nil, nil
	}
	base := idx * cs
	segs := visible(ss, uint32(off-base), uint32(end-base))
	if len(segs) != 1 || segs[0].lo != uint32(off-base) || segs[0].hi != uint32(end-base) {
		return nil, nil, nil
	}
	sg := segs[0]
	spans := blocksOf(sg.s, sg.lo-sg.s.Pos, sg.hi-sg.s.Pos)
	if len(spans) != 1 {
		return nil, nil, nil
	}
	data, release, err := f.blocks.view(ctx, spans[0].ref, sg.lo-sg.s.Pos-spans[0].off, n)
	if err != nil || data == nil {
		return nil, nil, err
	}
	f.touchAtime(ctx, d.Attr)
	f.readAhead(ctx, in, off, end, size)
	return data, release, nil
}

func (f *FS) readLocked(ctx context.Context, in *inode, off uint64, dest []byte) (int, error) {
	if len(dest) == 0 {
		return 0, nil
	}
	d, err := f.readData(ctx, in, off, uint64(len(dest)))
	if err != nil {
		return 0, err
	}
	return f.readFrom(ctx, in, d, off, dest)
}

// readData reads the metadata of the chunks that hold [off, off+n), n > 0.
func (f *FS) readData(ctx context.Context, in *inode, off, n uint64) (*meta.Data, error) {
	cs := uint64(f.format.ChunkSize)
	return f.meta.ReadData(ctx, in.ino, off/cs, (off+n-1)/cs)
}

// readFrom fills dest with the file's bytes at off, as readLocked does,
// from d, which readData returned for them.
func (f *FS) readFrom(ctx context.Context, in *inode, d *meta.Data, off uint64, dest []byte) (int, error) {
	cs := uint64(f.format.ChunkSize)
	end := off + uint64(len(dest))
	size := max(d.Attr.Size, in.buf.end())
	if off >= size {
		return 0, nil
	}
	end = min(end, size)
	dest = dest[:end-off]
	if len(d.Inline) > 0 {
		clear(dest)
		if off < uint64(len(d.Inline)) {
			copy(dest, d.Inline[off:])
		}
	}
	// Chunk by chunk; what no slice covers (holes, a tail not yet
	// written) reads as zeros.
	for idx := off / cs; idx*cs < end; idx++ {
		base := idx * cs
		lo, hi := max(off, base), min(end, base+cs)
		ss, ok := d.Chunks[idx]
		if !ok {
			if len(d.Inline) == 0 {
				clear(dest[lo-off : hi-off])
			}
			continue
		}
		if needsCompaction(ss) {
			// Left fragmented (compaction cut short by an unmount or a
			// crash): every read of it decodes every slice.
			f.offerCompaction(in.ino, idx)
		}
		if err := f.readChunk(ctx, ss, uint32(lo-base), dest[lo-off:hi-off]); err != nil {
			return 0, err
		}
	}
	in.buf.overlay(off, dest)
	f.touchAtime(ctx, d.Attr)
	f.readAhead(ctx, in, off, end, size)
	return len(dest), nil
}

// readAhead starts fetching the blocks that follow [off, end) into the
// caches when in is being read sequentially, so that the reader finds them
// there instead of waiting for the store block after block. It never
// blocks the reader: when enough fetches are in flight it skips.
func (f *FS) readAhead(ctx context.Context, in *inode, off, end, size uint64) {
	sequential := off == in.readEnd
	in.readEnd = end
	window := uint64(max(f.opts.ReadAhead, 0))
	if !sequential || window == 0 {
		in.aheadTo = 0
		return
	}
	if in.aheadTo >= min(end+window/2, size) {
		return
	}
	from, to := max(end, in.aheadTo), min(end+window, size)
	if from >= to {
		return
	}
	in.aheadTo = to
	cs := uint64(f.format.ChunkSize)
	d, err := f.meta.ReadData(ctx, in.ino, from/cs, (to-1)/cs)
	if err != nil {
		return // only an optimisation
	}
	for idx, ss := range d.Chunks {
		base := uint64(idx) * cs
		lo, hi := max(from, base), min(to, base+cs)
		if lo >= hi {
			continue
		}
		for _, sg := range visible(ss, uint32(lo-base), uint32(hi-base)) {
			for _, sp := range blocksOf(sg.s, sg.lo-sg.s.Pos, sg.hi-sg.s.Pos) {
				ref := sp.ref
				if f.blocks.cached(ref) {
					continue
				}
				select {
				case f.aheadSem <- struct{}{}:
				default:
					in.aheadTo = 0 // not all requested: try again at the next read
					return
				}
				// The reader is at end: the part of the block before it
				// has been read already and will not be read from here.
				start := base + uint64(sg.s.Pos) + uint64(sp.off)
				fetch := f.blocks.prefetch(ref, int(min(end-min(end, start), uint64(ref.Size))))
				if fetch == nil {
					<-f.aheadSem
					continue
				}
				f.wg.Add(1) // Close waits for it after cancelling bgCtx
				go func() {
					defer f.wg.Done()
					defer func() { <-f.aheadSem }()
					fetch(f.bgCtx)
				}()
			}
		}
	}
}

// blockSpan is a block of a slice and where it starts in the slice.
type blockSpan struct {
	ref meta.BlockRef
	off uint32
}

// blocksOf returns the blocks of slice s that hold slice offsets [lo, hi).
func blocksOf(s *meta.Slice, lo, hi uint32) []blockSpan {
	var spans []blockSpan
	var bstart uint32
	for _, b := range s.Blocks {
		bend := bstart + b.Size
		if bend > lo && bstart < hi {
			spans = append(spans, blockSpan{ref: b, off: bstart})
		}
		bstart = bend
	}
	return spans
}

// segment is a visible run of a chunk served by one slice.
type segment struct {
	lo, hi uint32 // chunk offsets
	s      *meta.Slice
}

// visible resolves which slice serves each byte of [lo, hi): newer slices
// win. Bytes no slice covers, or a hole slice covers, are holes: they get
// no segment and read as zeros.
func visible(ss []meta.Slice, lo, hi uint32) []segment {
	type span struct{ lo, hi uint32 }
	// Two span lists take turns, so a chunk of many slices costs no
	// allocation per slice (this ran on every read: a third of the bytes
	// allocated during random I/O).
	open, next := make([]span, 1, 8), make([]span, 0, 8)
	open[0] = span{lo, hi}
	var out []segment
	for i := len(ss) - 1; i >= 0 && len(open) > 0; i-- {
		s := &ss[i]
		slo, shi := s.Pos, s.Pos+s.Len
		next = next[:0]
		for _, o := range open {
			a, b := max(o.lo, slo), min(o.hi, shi)
			if a >= b {
				next = append(next, o)
				continue
			}
			if !s.Hole() {
				out = append(out, segment{a, b, s})
			}
			if o.lo < a {
				next = append(next, span{o.lo, a})
			}
			if b < o.hi {
				next = append(next, span{b, o.hi})
			}
		}
		open, next = next, open
	}
	return out
}

// readChunk fills dest with the chunk's bytes starting at chunk offset pos;
// what no slice covers reads as zeros.
func (f *FS) readChunk(ctx context.Context, ss []meta.Slice, pos uint32, dest []byte) error {
	segs := visible(ss, pos, pos+uint32(len(dest)))
	covered := 0
	for _, sg := range segs {
		covered += int(sg.hi - sg.lo)
	}
	if covered < len(dest) {
		clear(dest)
	}
	for _, sg := range segs {
		if err := f.readSlice(ctx, sg.s, sg.lo-sg.s.Pos, dest[sg.lo-pos:sg.hi-pos]); err != nil {
			return err
		}
	}
	return nil
}

// compactRead fills dest as readChunk does, for compaction: every block is
// read once, whole (scratch holds one, a block at a time), however many of
// dest's pieces it serves, and nothing read is cached: the blocks are about
// to be replaced, and caching them would push out blocks readers want (a
// chunk's compaction reads up to 64 MiB).
func (f *FS) compactRead(ctx context.Context, ss []meta.Slice, pos uint32, dest, scratch []byte) error {
	type piece struct {
		ref  meta.BlockRef
		off  uint32 // in the block
		dest []byte
	}
	var pieces []piece
	covered := 0
	for _, sg := range visible(ss, pos, pos+uint32(len(dest))) {
		covered += int(sg.hi - sg.lo)
		lo, hi := sg.lo-sg.s.Pos, sg.hi-sg.s.Pos // in the slice
		d := dest[sg.lo-pos : sg.hi-pos]
		next := lo // first slice offset no piece serves yet
		for _, sp := range blocksOf(sg.s, lo, hi) {
			a, z := max(lo, sp.off), min(hi, sp.off+sp.ref.Size)
			pieces = append(pieces, piece{sp.ref, a - sp.off, d[a-lo : z-lo]})
			next = z
		}
		if next < hi {
			return fmt.Errorf("slice [%d,+%d) shorter than its length: %w", sg.s.Pos, sg.s.Len, syscall.EIO)
		}
	}
	if covered < len(dest) {
		clear(dest)
	}
	slices.SortFunc(pieces, func(a, b piece) int { return bytes.Compare(a.ref.ID[:], b.ref.ID[:]) })
	var data []byte
	for i, p := range pieces {
		if i == 0 || p.ref.ID != pieces[i-1].ref.ID {
			var err error
			if data, err = f.blocks.readWhole(ctx, p.ref, scratch); err != nil {
				return err
			}
		}
		if uint64(p.off)+uint64(len(p.dest)) > uint64(len(data)) || len(data) != int(p.ref.Size) {
			return f.blocks.badRef(p.ref, fmt.Sprintf("%d bytes, referenced as %d, read at [%d,+%d)", len(data), p.ref.Size, p.off, len(p.dest)))
		}
		copy(p.dest, data[p.off:])
	}
	return nil
}

// readSlice copies the slice's bytes from slice offset off into dest.
func (f *FS) readSlice(ctx context.Context, s *meta.Slice, off uint32, dest []byte) error {
	var bstart uint32
	for _, b := range s.Blocks {
		bend := bstart + b.Size
		if len(dest) == 0 {
			return nil
		}
		if off < bend {
			n := min(len(dest), int(bend-off))
			if err := f.blocks.readAt(ctx, b, off-bstart, dest[:n]); err != nil {
				return err
			}
			dest = dest[n:]
			off += uint32(n)
		}
		bstart = bend
	}
	if len(dest) > 0 {
		return fmt.Errorf("slice [%d,+%d) shorter than its length: %w", s.Pos, s.Len, syscall.EIO)
	}
	return nil
}

// flushLocked commits in's buffered writes: uploads blocks, then commits
// the slices that reference them in one transaction.
func (f *FS) flushLocked(ctx context.Context, in *inode) (err error) {
	if len(in.buf.extents) == 0 {
		return nil
	}
	defer func() {
		if err == nil {
			f.commits.Add(1) // after the commit: see Commits
		}
	}()
	// Every chunk that could hold data of a file small enough to be
	// inline: such a file may stay (or become) inline only if none exists.
	d, err := f.meta.ReadData(ctx, in.ino, 0, uint64(f.format.InlineMax)/uint64(f.format.ChunkSize))
	if err != nil {
		return err
	}
	end := max(d.Attr.Size, in.buf.end())
	w := meta.WriteIn{End: end, Mtime: in.mtime}
	inlineKey := d.Inline != nil
	if end <= uint64(f.format.InlineMax) && len(d.Chunks) == 0 {
		content := make([]byte, end)
		copy(content, d.Inline)
		in.buf.overlay(0, content)
		w.Inline = content
		if _, err := f.meta.Write(ctx, in.ino, w); err != nil {
			return err
		}
		in.buf.dropBlocks()
		f.resetBuffer(in)
		return nil
	}
	extents := in.buf.extents
	if inlineKey {
		// The file outgrows metadata: its inline bytes become its oldest slice.
		w.DropInline = true
		if len(d.Inline) > 0 {
			extents = append([]extent{{off: 0, data: d.Inline}}, extents...)
		}
	}
	var rewritten []meta.ChunkWrite
	var rheld []meta.BlockID
	if !inlineKey {
		extents, rewritten, rheld, err = f.rewriteDense(ctx, in.ino, extents)
		if err != nil {
			f.abandon(rheld)
			f.blocks.release(rheld...)
			return err
		}
	}
	chunks, held, err := f.upload(ctx, extents, true)
	held = append(held, rheld...)
	defer f.blocks.release(held...)
	if err != nil {
		f.abandon(held)
		f.forgetEarly(in)
		return err
	}
	w.Chunks = append(chunks, rewritten...)
	if _, err := f.meta.Write(ctx, in.ino, w); err != nil {
		f.abandon(held)
		f.forgetEarly(in)
		return err
	}
	f.resetBuffer(in)
	for _, cw := range chunks {
		f.queueCompaction(ctx, in.ino, cw.Index)
	}
	return nil
}

// rewriteDense commits the chunks that the extents (a buffer about to be
// committed) would leave needing compaction, at once: each such chunk is
// rewritten with the extents over its content (see rewrite), rather than
// committed as one small slice per extent and compacted afterwards. A
// random writer's 64 MiB buffer is thousands of extents: they became as
// many blocks, each a file in the store (each staged, uploaded and fsynced,
// then deleted after the compaction), and slice lists of thousands that
// every commit rewrote until the compaction caught up. It returns the
// extents left to commit as slices, the rewritten chunks, and the held
// block ids. Chunks that extents being stored early touch are left alone.
func (f *FS) rewriteDense(ctx context.Context, ino uint64, extents []extent) ([]extent, []meta.ChunkWrite, []meta.BlockID, error) {
	cs := uint64(f.format.ChunkSize)
	counts := map[uint64]int{}
	early := map[uint64]bool{}
	for _, e := range extents {
		for idx := e.off / cs; idx*cs < e.end(); idx++ {
			counts[idx]++
			early[idx] = early[idx] || e.blk != nil
		}
	}
	var dense []uint64
	for idx, n := range counts {
		if n >= compactAt && !early[idx] {
			dense = append(dense, idx)
		}
	}
	if len(dense) == 0 {
		return extents, nil, nil, nil
	}
	slices.Sort(dense)
	d, err := f.meta.ReadData(ctx, ino, dense[0], dense[len(dense)-1])
	if err != nil {
		return nil, nil, nil, err
	}
	var (
		cws  []meta.ChunkWrite
		held []meta.BlockID
		done = map[uint64]bool{}
	)
	for _, idx := range dense {
		top := clipExtents(extents, idx*cs, (idx+1)*cs)
		ss := d.Chunks[idx]
		after := slices.Clone(ss)
		for _, e := range top {
			after = append(after, meta.Slice{Pos: uint32(e.off - idx*cs), Len: uint32(len(e.data))})
		}
		if !needsCompaction(after) {
			continue
		}
		repl, h, err := f.rewrite(ctx, idx, ss, top)
		held = append(held, h...)
		if err != nil {
			return nil, nil, held, err
		}
		cws = append(cws, meta.ChunkWrite{Index: idx, Slices: repl})
		done[idx] = true
	}
	if len(done) == 0 {
		return extents, nil, held, nil
	}
	var rest []extent
	for _, e := range extents {
		first, last := e.off/cs, (e.end()-1)/cs
		rewritten := false
		for idx := first; idx <= last; idx++ {
			rewritten = rewritten || done[idx]
		}
		if !rewritten {
			rest = append(rest, e) // as it was, early block and all
			continue
		}
		for idx := first; idx <= last; idx++ {
			if !done[idx] {
				rest = append(rest, clipExtents([]extent{e}, idx*cs, (idx+1)*cs)...)
			}
		}
	}
	return rest, cws, held, nil
}

// clipExtents returns the parts of es inside [lo, hi); an extent cut keeps
// no early block (that names its whole bytes).
func clipExtents(es []extent, lo, hi uint64) []extent {
	var out []extent
	for _, e := range es {
		a, b := max(e.off, lo), min(e.end(), hi)
		if a >= b {
			continue
		}
		if a == e.off && b == e.end() {
			out = append(out, e)
			continue
		}
		out = append(out, extent{off: a, data: e.data[a-e.off : b-e.off : b-e.off]})
	}
	return out
}

// upload cuts extents into chunk slices and blocks and stores the blocks in
// parallel. Extents that touch within a chunk become one slice (a
// sequential write buffered as block-sized extents is one slice per chunk).
// It returns the held block ids, to release after the commit. With cached,
// blocks cut from a caller's buffer go to the memory cache as a copy (a
// commit's data is likely read again soon); compaction's do not.
func (f *FS) upload(ctx context.Context, extents []extent, cached bool) ([]meta.ChunkWrite, []meta.BlockID, error) {
	cs := uint64(f.format.ChunkSize)
	bs := f.format.BlockSize
	type job struct {
		data       []byte
		owned      bool        // data is a whole recycled array of a write buffer: never cached
		early      *earlyBlock // data is already being stored
		ci, si, bi int         // where its reference goes: chunks[ci].Slices[si].Blocks[bi]
	}
	var jobs []job
	var chunks []meta.ChunkWrite
	index := map[uint64]int{}
	for _, e := range extents {
		for off := e.off; off < e.end(); {
			idx := off / cs
			pos := off % cs
			n := min(e.end()-off, cs-pos)
			data := e.data[off-e.off : off-e.off+n]
			ci, ok := index[idx]
			if !ok {
				ci = len(chunks)
				index[idx] = ci
				chunks = append(chunks, meta.ChunkWrite{Index: idx})
			}
			ss := chunks[ci].Slices
			if k := len(ss) - 1; k >= 0 && uint64(ss[k].Pos+ss[k].Len) == pos {
				ss[k].Len += uint32(n) // touches the previous extent: same slice
			} else {
				chunks[ci].Slices = append(ss, meta.Slice{Pos: uint32(pos), Len: uint32(n)})
			}
			si := len(chunks[ci].Slices) - 1
			s := &chunks[ci].Slices[si]
			for i := 0; i < len(data); i += bs {
				blk := data[i:min(i+bs, len(data))]
				owned := len(blk) == len(e.data) && cap(e.data) == len(e.data)
				j := job{data: blk, owned: owned, ci: ci, si: si, bi: len(s.Blocks)}
				if owned {
					j.early = e.blk
				}
				jobs = append(jobs, j)
				s.Blocks = append(s.Blocks, meta.BlockRef{})
			}
			off += n
		}
	}
	// In flight: up to Uploaders blocks' worth of bytes. Weighing by bytes
	// rather than counting blocks lets a commit of many small blocks (a
	// random writer's) share each staging fsync among hundreds of them.
	limit := int64(f.opts.Uploaders) * int64(bs)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		held  []meta.BlockID
		sem   = semaphore.NewWeighted(limit)
	)
	for _, j := range jobs {
		if j.early != nil {
			ref, err := j.early.wait()
			if err == nil {
				mu.Lock()
				chunks[j.ci].Slices[j.si].Blocks[j.bi] = ref
				held = append(held, ref.ID)
				mu.Unlock()
				continue
			}
			// Stored in vain: store it again below, with this commit's
			// context and error reporting.
		}
		weight := min(int64(len(j.data))+4096, limit) // 4 KiB for the per-block overhead
		if err := sem.Acquire(ctx, weight); err != nil {
			mu.Lock()
			if first == nil {
				first = fmt.Errorf("store blocks: %w", err)
			}
			mu.Unlock()
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sem.Release(weight)
			ref, err := f.blocks.put(ctx, j.data, j.owned || !cached)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			chunks[j.ci].Slices[j.si].Blocks[j.bi] = ref
			held = append(held, ref.ID)
		}()
	}
	wg.Wait()
	return chunks, held, first
}

// When a chunk is compacted: rewritten as one slice per run of data, in
// fresh blocks. Each small commit (a random writer's fsync) adds a slice,
// and every commit and read of the chunk decodes the whole list, so the
// list must stay short; but a compaction rewrites every byte of the chunk,
// up to 64 MiB, so compacting every few small writes multiplies what they
// cost. With a fixed 24 slices, 24 fsync'd 4 KiB writes into a written
// chunk rewrote 64 MiB, 680 times what they wrote (measured: 72-112 such
// writes a second, 375-580 with no compaction at all).
const (
	// compactAt: chunks with fewer slices newer than their compacted
	// prefix (see needsCompaction) are never compacted.
	compactAt = 24
	// compactAlways: chunks with this many are, whatever it costs: a
	// list of 512 small slices is about 23 KiB, and 4 KiB writes spread
	// over a whole 64 MiB chunk are rewritten 32 times over. (30 s of
	// fsync'd 4 KiB random writes on a 256 MiB file: 64 a second with
	// the old 24 slices; 125, 120-178 and 153 with 256, 512 and 1024.)
	compactAlways = 512
	// compactGain: in between, a chunk is compacted once its newer slices
	// hold at least 1/compactGain of the bytes the rewrite writes.
	compactGain = 8
)

// needsCompaction says whether compacting the chunk of slices ss is worth
// its cost (see compactAt), in one pass over the list: reads ask it too.
// What a compaction leaves is a run of disjoint slices in ascending order
// (it joins touching ones), so the longest such prefix counts as compacted
// and the slices after it as newer. A chunk whose slices are all disjoint
// (a sparse file's runs) is never rewritten: that would gain nothing.
func needsCompaction(ss []meta.Slice) bool {
	k := 1
	for k < len(ss) && ss[k].Pos > ss[k-1].Pos+ss[k-1].Len {
		k++
	}
	var total, newBytes, holes uint64
	for i, s := range ss {
		total += uint64(s.Len)
		if i >= k {
			newBytes += uint64(s.Len)
			if s.Hole() {
				holes += uint64(s.Len)
			}
		}
	}
	newer := len(ss) - k
	switch {
	case holes > 0 && holes*compactGain >= total:
		// Hole slices hide blocks that only a rewrite lets go (a punch
		// in the middle of a slice releases none of its blocks): holes
		// worth an eighth of what the rewrite writes start it at once.
		return true
	case newer < compactAt:
		return false
	case newer >= compactAlways:
		return true
	}
	return newBytes*compactGain >= total
}

// compactJob names a chunk to compact.
type compactJob struct{ ino, idx uint64 }

// queueCompaction has chunk idx of ino compacted in the background, so a
// commit (and the fsync waiting for it) does not pay for rewriting the
// chunk. When the queue is full, the caller compacts it itself: metadata
// must not grow without bound because compaction fell behind.
func (f *FS) queueCompaction(ctx context.Context, ino, idx uint64) {
	j := compactJob{ino, idx}
	f.compactMu.Lock()
	queued := f.compactSet[j] || f.tryQueueLocked(j)
	f.compactMu.Unlock()
	if queued {
		return
	}
	if err := f.maybeCompact(ctx, ino, idx); err != nil {
		f.log.Warn("compact chunk", "ino", ino, "chunk", idx, "err", err)
	}
}

// offerCompaction queues chunk idx of ino for background compaction if the
// queue has room; a reader must not wait for it, and will offer it again.
func (f *FS) offerCompaction(ino, idx uint64) {
	j := compactJob{ino, idx}
	f.compactMu.Lock()
	defer f.compactMu.Unlock()
	if !f.compactSet[j] {
		f.tryQueueLocked(j)
	}
}

// tryQueueLocked queues j unless the queue is full; the caller holds
// compactMu and has checked that j is not queued already.
func (f *FS) tryQueueLocked(j compactJob) bool {
	select {
	case f.compactQ <- j:
		f.compactSet[j] = true
		f.compactPending.Add(1)
		return true
	default:
		return false
	}
}

// compactor is the background worker of queueCompaction.
func (f *FS) compactor(ctx context.Context) {
	defer f.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-f.compactQ:
			f.compactMu.Lock()
			delete(f.compactSet, j)
			f.compactMu.Unlock()
			if err := f.maybeCompact(ctx, j.ino, j.idx); err != nil && ctx.Err() == nil && !errors.Is(err, syscall.ENOENT) {
				f.log.Warn("compact chunk", "ino", j.ino, "chunk", j.idx, "err", err)
			}
			f.compactPending.Add(-1)
		}
	}
}

// maybeCompact rewrites chunk idx of ino as fresh blocks when
// needsCompaction says so. It works on a snapshot of the chunk and swaps
// the result in only if nothing but appended writes changed the chunk
// meanwhile (meta.ReplaceChunk), so it needs no lock on the file.
func (f *FS) maybeCompact(ctx context.Context, ino, idx uint64) error {
	d, err := f.meta.ReadData(ctx, ino, idx, idx)
	if err != nil {
		return err
	}
	old := d.Chunks[idx]
	if !needsCompaction(old) {
		return nil
	}
	repl, held, err := f.rewrite(ctx, idx, old, nil)
	defer f.blocks.release(held...)
	if err != nil {
		f.abandon(held)
		return err
	}
	done, err := f.meta.ReplaceChunk(ctx, ino, idx, old, repl)
	if err != nil || !done {
		f.abandon(held)
	}
	return err
}

// rewrite stores chunk idx's content, as its slices ss show it with the
// extents top (sorted, disjoint, within the chunk) written over them, as
// fresh blocks: one slice per run of data, holes left holes. It returns the
// slices and the held block ids (to release after the commit, and to
// abandon if there is none).
func (f *FS) rewrite(ctx context.Context, idx uint64, ss []meta.Slice, top []extent) ([]meta.Slice, []meta.BlockID, error) {
	cs := uint32(f.format.ChunkSize)
	base := idx * uint64(cs)
	type span struct{ lo, hi uint32 }
	var runs []span
	for _, sg := range visible(ss, 0, cs) {
		runs = append(runs, span{sg.lo, sg.hi})
	}
	for _, e := range top {
		runs = append(runs, span{uint32(e.off - base), uint32(e.end() - base)})
	}
	// Merge overlapping and adjacent ranges into runs of data.
	slices.SortFunc(runs, func(a, b span) int { return int(a.lo) - int(b.lo) })
	merged := runs[:0]
	for _, r := range runs {
		if n := len(merged); n > 0 && r.lo <= merged[n-1].hi {
			merged[n-1].hi = max(merged[n-1].hi, r.hi)
		} else {
			merged = append(merged, r)
		}
	}
	// Each run is read and stored a window of a few blocks at a time, in
	// one reused buffer, and the windows' slices are joined back into one
	// slice per run: rewriting a 64 MiB chunk then holds 16 MiB, not the
	// whole chunk (a whole-chunk buffer set the mount's peak memory during
	// random writes).
	window := uint32(compactWindow * f.format.BlockSize)
	w := min(window, cs)
	buf := make([]byte, int(w)+f.format.BlockSize) // the window, then one block for compactRead
	buf, scratch := buf[:w:w], buf[w:]
	var repl []meta.Slice
	var held []meta.BlockID
	for _, r := range merged {
		for lo := r.lo; lo < r.hi; lo += window {
			data := buf[:min(window, r.hi-lo)]
			if err := f.compactRead(ctx, ss, lo, data, scratch); err != nil {
				return nil, held, err
			}
			overlay(top, base+uint64(lo), data)
			chunks, h, err := f.upload(ctx, []extent{{off: base + uint64(lo), data: data}}, false)
			held = append(held, h...)
			if err != nil {
				return nil, held, err
			}
			for _, s := range chunks[0].Slices {
				repl = joinSlice(repl, s)
			}
		}
	}
	return repl, held, nil
}

// compactWindow is how many blocks of a chunk compaction reads and stores
// at a time.
const compactWindow = 4

// joinSlice appends s to ss, extending the last slice when s starts where
// it ends (a slice's blocks may have any sizes, as upload makes them for
// touching extents).
func joinSlice(ss []meta.Slice, s meta.Slice) []meta.Slice {
	if n := len(ss); n > 0 && ss[n-1].Pos+ss[n-1].Len == s.Pos {
		ss[n-1].Len += s.Len
		ss[n-1].Blocks = append(ss[n-1].Blocks, s.Blocks...)
		return ss
	}
	return append(ss, s)
}

// abandon queues blocks uploaded for a commit that did not happen, so their
// objects are freed unless something else references the same content.
func (f *FS) abandon(ids []meta.BlockID) {
	if err := f.meta.QueueUnreferenced(context.Background(), ids); err != nil {
		f.log.Warn("queue abandoned blocks; gc will find them", "blocks", len(ids), "err", err)
	}
}

// truncate sets the size of the file in (which the caller holds a
// reference on), committing buffered writes first. Like every truncation
// it drops the file's capabilities, and with kill its setuid and setgid.
func (f *FS) truncate(ctx context.Context, c *Caller, in *inode, size uint64, openForWrite, kill bool) (*Attr, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := f.flushLocked(ctx, in); err != nil {
		return nil, err
	}
	a, err := f.meta.SetAttr(ctx, c, in.ino, meta.SetAttrIn{Valid: meta.SetSize, Size: size, OpenForWrite: openForWrite, KillSuidgid: kill})
	if err == nil {
		f.forgetPrivs(in.ino)
	}
	return a, err
}

// statelessInode prepares a handle-less operation (NFS) on regular file
// ino: it acquires the inode (release it with releaseInode) and checks
// that c may access it with mask, as meta.AccessByHandle decides.
func (f *FS) statelessInode(ctx context.Context, c *Caller, ino uint64, mask uint32) (*inode, error) {
	in, err := f.acquire(ino)
	if err != nil {
		return nil, err
	}
	a, err := f.meta.GetAttr(ctx, ino)
	if err == nil {
		switch {
		case a.IsDir():
			err = syscall.EISDIR
		case !a.IsRegular():
			err = syscall.EINVAL
		default:
			err = meta.AccessByHandle(a, c, mask)
		}
	}
	if err != nil {
		_ = f.releaseInode(ctx, in)
		return nil, err
	}
	return in, nil
}

// ReadInode reads without an open handle (NFS). Permission is checked here.
func (f *FS) ReadInode(ctx context.Context, c *Caller, ino uint64, off uint64, dest []byte) (int, error) {
	in, err := f.statelessInode(ctx, c, ino, meta.MayRead)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.releaseInode(ctx, in) }()
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.readEnd == 0 {
		// A new in-memory inode: continue the stream an earlier READ of
		// this file left, if any.
		if p, ok := f.streams.Get(ino); ok {
			in.readEnd, in.aheadTo = p.readEnd, p.aheadTo
		}
	}
	return f.readLocked(ctx, in, off, dest)
}

// WriteInode writes without an open handle (NFS) and commits before it
// returns, so the data is visible to everyone; with stable it is also durable.
// It drops privileges as WriteAs does, c lacking CAP_FSETID unless it is
// root: see NFSUnprivileged.
func (f *FS) WriteInode(ctx context.Context, c *Caller, ino uint64, off uint64, data []byte, stable bool) (int, error) {
	if off+uint64(len(data)) > meta.MaxFileSize {
		return 0, syscall.EFBIG
	}
	in, err := f.statelessInode(ctx, c, ino, meta.MayWrite)
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.releaseInode(ctx, in) }()
	in.mu.Lock()
	defer in.mu.Unlock()
	if _, err := f.dropPrivsLocked(ctx, in, NFSUnprivileged(c)); err != nil {
		return 0, err
	}
	f.buffer(in, off, data)
	if err := f.flushLocked(ctx, in); err != nil {
		return 0, err
	}
	if stable {
		if err := f.sync(); err != nil {
			return 0, err
		}
	}
	return len(data), nil
}

// NFSUnprivileged tells WriteAs whether an NFS caller c (its credentials
// after squashing) lacks CAP_FSETID: nil for root, c for everyone else.
// That is what Linux's knfsd does, which writes through the VFS with
// CAP_FSETID dropped for every fsuid but 0; with the default root
// squashing, no NFS writer keeps setuid or setgid bits.
func NFSUnprivileged(c *Caller) func() *Caller {
	if c.Uid == 0 {
		return nil
	}
	return func() *Caller { return c }
}
