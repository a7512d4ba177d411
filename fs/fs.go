// Package fs is objfs's POSIX layer: inodes, directories, open files, write
// buffers and the data path from files to chunks, slices and blocks. Both
// front ends (FUSE and NFS) call this one API; it reaches metadata through
// fs/meta and blocks through the cache and an object store.
package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/objfs/objfs/cache"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// Attr and Caller are the metadata layer's types, used unchanged here.
type (
	Attr   = meta.Attr
	Caller = meta.Caller
)

// Options tune a mounted volume.
type Options struct {
	MemCacheBytes int64 // in-memory block cache
	// DiskCache, if not nil, keeps blocks read from the store on local
	// disk; the caller opens and closes it.
	DiskCache   *cache.Disk
	InodeDirty  int           // buffered bytes per file before it is committed
	DirtyLimit  int64         // buffered bytes of all files: writers beyond it commit first (back pressure)
	DirtyExpire time.Duration // buffered writes idle this long are committed in the background
	Uploaders   int           // parallel block uploads per commit, and parallel deletes of unreferenced blocks
	ReadAhead   int           // bytes fetched ahead of a sequential reader (default 16 MiB); negative: none
	DeleteGrace time.Duration // how long an unreferenced block waits before its object is deleted
	MetaGCEvery time.Duration // how often the metadata database's dead space is reclaimed (default 5 minutes)
	// Capacity reports the space of the backing store for statfs.
	Capacity func() (total, free uint64, err error)
	Logger   *slog.Logger
	// ReadAheadBypassesDiskCache keeps blocks fetched for read-ahead out
	// of the disk cache, for stores as near as the cache (local
	// directories): a stream copied there would only be written twice
	// (cold 1 GiB reads, three each: 208-334 MB/s using 3.3-4.4 s of CPU
	// when copied, 240-652 MB/s and 2.0-3.8 s when not). Blocks
	// fetched for other reads still go there: it serves a 4 KiB read
	// without reading and hashing the whole block.
	ReadAheadBypassesDiskCache bool
}

func (o *Options) defaults() {
	if o.MemCacheBytes == 0 {
		o.MemCacheBytes = 64 << 20
	}
	if o.InodeDirty <= 0 {
		o.InodeDirty = 64 << 20
	}
	if o.DirtyLimit <= 0 {
		o.DirtyLimit = 128 << 20
	}
	if o.DirtyExpire <= 0 {
		o.DirtyExpire = 5 * time.Second
	}
	if o.Uploaders <= 0 {
		o.Uploaders = 8
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = 16 << 20
	}
	if o.DeleteGrace == 0 {
		o.DeleteGrace = 10 * time.Second
	}
	if o.MetaGCEvery <= 0 {
		o.MetaGCEvery = 5 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// FS is a mounted volume.
type FS struct {
	meta   *meta.Meta
	blocks *blocks
	opts   Options
	log    *slog.Logger
	format meta.Format

	mu      sync.Mutex
	inodes  map[uint64]*inode  // inodes with open handles or buffered data
	reaping map[uint64]bool    // orphans being freed: they cannot be opened
	handles map[uint64]*handle // open files and directories
	nextFh  uint64

	dirty atomic.Int64 // bytes buffered in all inodes

	// streams keeps the read-ahead state of recently read files whose
	// in-memory inode is gone: an NFS client reads without opening, each
	// READ acquiring and releasing the inode, so without it every READ
	// would look like the start of a new reader and get no read-ahead.
	streams *lru.Cache[uint64, streamPos]

	// privEpoch counts the changes that may set privileges again
	// (forgetPrivs). What was read of an inode's privileges is kept only
	// if no such change happened since the read began (see knowPrivs).
	privEpoch atomic.Uint64

	// commits counts commits of buffered writes (see Commits).
	commits atomic.Uint64

	// earlyBlocks: whole blocks are stored as soon as a write completes
	// them (possible when chunks are made of whole blocks), at most
	// Uploaders at a time (earlySem), under bgCtx.
	earlyBlocks bool
	earlySem    chan struct{}
	aheadSem    chan struct{} // read-ahead fetches in flight

	// Chunks waiting for background compaction (see queueCompaction).
	compactMu      sync.Mutex
	compactSet     map[compactJob]bool
	compactQ       chan compactJob
	compactPending atomic.Int64

	atimes lazyAtimes // access times recorded by reads, not committed yet
	pieces *sync.Pool // block-sized arrays of write buffers

	// The reaper's work: inodes that lost their last link (reap), and a
	// request to reap every orphan the metadata lists (reapScan), made at
	// start and whenever reap was full.
	reap     chan uint64
	reapScan chan struct{}
	reaped   atomic.Uint64 // orphans freed

	bgCtx  context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// inode is the in-memory state of a file that is open or being written.
type inode struct {
	ino  uint64
	refs int // handles plus in-flight stateless operations

	mu    sync.Mutex // serializes data operations on the file
	buf   buffer
	mtime int64 // time of the last buffered write

	// Read-ahead state (under mu): where the last read ended, and how far
	// blocks have been requested ahead of a sequential reader.
	readEnd, aheadTo uint64

	// What a write must drop (setuid/setgid, file capabilities), known
	// from the create or open of the file or read by its first write, so
	// that writes to a file with nothing to drop cost no metadata read.
	// Everything that can set them again forgets it (forgetPrivs). Under
	// privMu, not mu: a chmod must not wait for a commit in progress.
	privMu     sync.Mutex
	privs      meta.Privs
	privsKnown bool

	// unlinked (under FS.mu) says the file may have lost its last link
	// while open: the reaper found it open, or it was made unnamed
	// (O_TMPFILE). Its last release then looks at its link count and
	// queues it for reaping again; other files skip that metadata read.
	unlinked bool
}

// streamPos is the read-ahead state of an inode (see inode.readEnd).
type streamPos struct{ readEnd, aheadTo uint64 }

// maxStreams bounds FS.streams: sequential readers remembered between
// stateless reads.
const maxStreams = 1024

// handle is an open file or directory.
type handle struct {
	ino   *inode
	flags uint32
}

// New serves the volume m whose blocks live in store. It first finishes
// truncations a crash cut short; orphan inodes the last run left are
// reaped in the background.
func New(ctx context.Context, m *meta.Meta, store objstore.Store, opts Options) (*FS, error) {
	opts.defaults()
	format := m.Format()
	f := &FS{
		meta:     m,
		blocks:   newBlocks(store, format.HashBlock, cache.NewMemory(opts.MemCacheBytes), opts.DiskCache, opts.Logger),
		opts:     opts,
		log:      opts.Logger,
		format:   format,
		inodes:   map[uint64]*inode{},
		reaping:  map[uint64]bool{},
		handles:  map[uint64]*handle{},
		nextFh:   1,
		reap:     make(chan uint64, reapQueue),
		reapScan: make(chan struct{}, 1),
		streams:  newStreams(),
	}
	f.blocks.aheadToDisk = !opts.ReadAheadBypassesDiskCache
	f.blocks.deleters = opts.Uploaders
	// Room for four streams' windows of blocks read ahead: more streams
	// than that push each other's blocks out (they are then read as
	// random reads are) rather than growing memory.
	bs := max(int(format.BlockSize), 1)
	f.blocks.ahead = newAhead(max(4*opts.ReadAhead/bs, 8), bs)
	f.earlyBlocks = f.format.BlockSize > 0 && f.format.ChunkSize%f.format.BlockSize == 0
	f.earlySem = make(chan struct{}, opts.Uploaders)
	f.pieces = newPiecePool(f.format.BlockSize)
	f.aheadSem = make(chan struct{}, 4)
	f.compactSet = map[compactJob]bool{}
	f.compactQ = make(chan compactJob, 256)
	f.bgCtx, f.cancel = context.WithCancel(context.Background())
	truncated, err := m.Truncations(ctx)
	if err != nil {
		f.cancel()
		return nil, fmt.Errorf("list unfinished truncations: %w", err)
	}
	for _, ino := range truncated {
		if err := m.FinishTruncate(ctx, ino); err != nil {
			f.cancel()
			return nil, err
		}
	}
	if len(truncated) > 0 {
		f.log.Info("finished truncations cut short before the last shutdown", "count", len(truncated))
	}
	f.reapScan <- struct{}{} // what the last run left
	f.wg.Add(4)
	go f.background(f.bgCtx)
	go f.collector(f.bgCtx)
	go f.reaper(f.bgCtx)
	go f.compactor(f.bgCtx)
	return f, nil
}

// Close commits every buffered write, stops background work and leaves the
// volume consistent. It does not close the metadata store or object store.
func (f *FS) Close(ctx context.Context) error {
	f.mu.Lock()
	inodes := make([]*inode, 0, len(f.inodes))
	for _, in := range f.inodes {
		inodes = append(inodes, in)
	}
	f.mu.Unlock()
	var errs []error
	for _, in := range inodes {
		in.mu.Lock()
		errs = append(errs, f.commitOrDropLocked(ctx, in))
		in.mu.Unlock()
	}
	f.cancel()
	f.wg.Wait()
	f.reapQueued(ctx)
	f.commitAtimes(ctx)
	errs = append(errs, f.meta.FoldStats(ctx), f.meta.Sync())
	return errors.Join(errs...)
}

// background commits access times and idle buffers, retries failed
// commits and folds statistics: short jobs, kept apart from the long ones
// of collector and reaper so that buffered data never waits on them.
func (f *FS) background(ctx context.Context) {
	defer f.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			f.commitAtimes(ctx)
			f.retryDirty(ctx)
			f.commitIdle(ctx)
			if f.meta.PendingDeltas() > 1000 {
				if err := f.meta.FoldStats(ctx); err != nil && ctx.Err() == nil {
					f.log.Warn("fold statistics", "err", err)
				}
			}
		}
	}
}

// collector frees unreferenced blocks and reclaims the metadata database's
// dead space; either can take long (many deletes from a slow store, a
// value log rewritten).
func (f *FS) collector(ctx context.Context) {
	defer f.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastDelete, lastMetaGC := time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(lastDelete) >= min(f.opts.DeleteGrace, 5*time.Second) {
			lastDelete = time.Now()
			if err := f.blocks.deletePending(ctx, f.meta, f.opts.DeleteGrace); err != nil && ctx.Err() == nil {
				f.log.Warn("free unreferenced blocks", "err", err)
			}
		}
		if time.Since(lastMetaGC) >= f.opts.MetaGCEvery {
			lastMetaGC = time.Now()
			// Deleted and overwritten values leave dead bytes in the
			// database's value log; without this it only grows.
			if n, err := f.meta.CollectGarbage(ctx); err != nil && ctx.Err() == nil {
				f.log.Warn("reclaim metadata space", "err", err)
			} else if n > 0 {
				f.log.Info("reclaimed metadata space", "files rewritten", n)
			}
		}
	}
}

// acquire returns the in-memory state of ino, creating it; releaseInode
// drops it. An inode being reaped cannot be acquired (ENOENT); one that is
// acquired is never reaped.
func (f *FS) acquire(ino uint64) (*inode, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reaping[ino] {
		return nil, syscall.ENOENT
	}
	in := f.inodes[ino]
	if in == nil {
		in = &inode{ino: ino, buf: buffer{piece: uint64(f.format.BlockSize), pool: f.pieces}}
		f.inodes[ino] = in
	}
	in.refs++
	return in, nil
}

// releaseInode drops one reference; the last one commits buffered data.
// The inode stays in the table while it commits, so a concurrent open
// finds the same state; if the commit fails the inode stays, dirty, and the
// background retries it: a failed close never silently drops data.
func (f *FS) releaseInode(ctx context.Context, in *inode) error {
	f.mu.Lock()
	in.refs--
	last := in.refs == 0
	f.mu.Unlock()
	if !last {
		return nil
	}
	return f.retire(ctx, in)
}

// retire commits an unreferenced inode's buffer and drops it from the table
// if nobody acquired it meanwhile.
func (f *FS) retire(ctx context.Context, in *inode) error {
	in.mu.Lock()
	err := f.commitOrDropLocked(ctx, in)
	pos := streamPos{in.readEnd, in.aheadTo}
	in.mu.Unlock()
	f.mu.Lock()
	gone := err == nil && in.refs == 0 && f.inodes[in.ino] == in
	if gone {
		delete(f.inodes, in.ino)
	}
	unlinked := in.unlinked
	f.mu.Unlock()
	if gone {
		if pos.readEnd != 0 {
			f.streams.Add(in.ino, pos)
		}
		// A file unlinked while open was left by the reaper (see
		// reapIfClosed); one unlinked after that found it gone from
		// the table and is reaped without this.
		if unlinked {
			if a, aerr := f.meta.GetAttr(ctx, in.ino); aerr == nil && a.Nlink == 0 {
				f.orphaned(a)
			}
		}
	}
	return err
}

// commitOrDropLocked commits in's buffer, or drops it if the file is gone
// for good: nobody can read that data again, committing it would only
// write blocks for the reaper to delete, and a commit that keeps failing
// (a full disk) would hold the file, and the space its blocks take, for
// ever. in.mu is held.
func (f *FS) commitOrDropLocked(ctx context.Context, in *inode) error {
	if len(in.buf.extents) > 0 && f.goneForGood(ctx, in) {
		in.buf.dropBlocks()
		f.resetBuffer(in)
		return nil
	}
	return f.flushLocked(ctx, in)
}

// goneForGood reports whether in, which nobody holds, has no name left:
// it lost its last link while open (or was made with O_TMPFILE) and was
// not linked again. No handle can reach it any more, so its buffered data
// can never be read.
func (f *FS) goneForGood(ctx context.Context, in *inode) bool {
	f.mu.Lock()
	unlinked := in.unlinked && in.refs == 0
	f.mu.Unlock()
	if !unlinked {
		return false
	}
	a, err := f.meta.GetAttr(ctx, in.ino)
	return err == nil && a.Nlink == 0
}

// commitIdle commits buffers nobody wrote to for DirtyExpire, so data
// does not sit in memory indefinitely in files kept open. An inode busy
// with other work is left for the next round.
func (f *FS) commitIdle(ctx context.Context) {
	cutoff := time.Now().Add(-f.opts.DirtyExpire).UnixNano()
	f.mu.Lock()
	var idle []*inode
	for _, in := range f.inodes {
		idle = append(idle, in)
	}
	f.mu.Unlock()
	for _, in := range idle {
		if !in.mu.TryLock() {
			continue
		}
		if in.buf.bytes > 0 && in.mtime < cutoff {
			if err := f.flushLocked(ctx, in); err != nil && ctx.Err() == nil {
				f.log.Warn("background commit of buffered writes failed; will retry", "ino", in.ino, "err", err)
			}
		}
		in.mu.Unlock()
	}
}

// retryDirty commits inodes whose last commit failed.
func (f *FS) retryDirty(ctx context.Context) {
	f.mu.Lock()
	var idle []*inode
	for _, in := range f.inodes {
		if in.refs == 0 {
			idle = append(idle, in)
		}
	}
	f.mu.Unlock()
	for _, in := range idle {
		if err := f.retire(ctx, in); err != nil && ctx.Err() == nil {
			f.log.Warn("commit of a closed file failed; will retry", "ino", in.ino, "err", err)
		}
	}
}

// forgetPrivs drops what is known of ino's privileges, after a change
// that may have set them again (chmod, chown, truncate, setxattr of
// security.capability) has committed.
func (f *FS) forgetPrivs(ino uint64) {
	f.privEpoch.Add(1)
	if in := f.lookupInode(ino); in != nil {
		in.privMu.Lock()
		in.privsKnown = false
		in.privMu.Unlock()
	}
}

// knowPrivs records p as in's privileges, read from metadata in a read that
// began at privEpoch epoch, unless something may have changed them since.
func (f *FS) knowPrivs(in *inode, p meta.Privs, epoch uint64) {
	in.privMu.Lock()
	defer in.privMu.Unlock()
	if f.privEpoch.Load() == epoch {
		in.privs, in.privsKnown = p, true
	}
}

// knownPrivs returns in's privileges if they are known.
func (in *inode) knownPrivs() (meta.Privs, bool) {
	in.privMu.Lock()
	defer in.privMu.Unlock()
	return in.privs, in.privsKnown
}

// lookupInode returns the in-memory state of ino if it has one.
func (f *FS) lookupInode(ino uint64) *inode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inodes[ino]
}

func (f *FS) handle(fh uint64) (*handle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.handles[fh]
	if h == nil {
		return nil, syscall.EBADF
	}
	return h, nil
}

// Meta returns the metadata layer (for tools and status).
func (f *FS) Meta() *meta.Meta { return f.meta }

// DirtyBytes reports the bytes buffered in all files, not yet committed.
func (f *FS) DirtyBytes() int64 { return f.dirty.Load() }

// DiskCacheStats reports the disk block cache (zero without one).
func (f *FS) DiskCacheStats() cache.DiskStats {
	if f.blocks.disk == nil {
		return cache.DiskStats{}
	}
	return f.blocks.disk.Stats()
}

// FreedStats counts what the background gave back since the volume was
// opened: orphan inodes reaped, unreferenced blocks deleted from the store,
// and deletes that failed (each block queued again for a later pass).
type FreedStats struct {
	Reaped, BlocksDeleted, DeleteErrors uint64
}

// FreedStats reports the reaper's and the block deleter's progress.
func (f *FS) FreedStats() FreedStats {
	return FreedStats{
		Reaped:        f.reaped.Load(),
		BlocksDeleted: f.blocks.deleted.Load(),
		DeleteErrors:  f.blocks.deleteErrors.Load(),
	}
}

// ReadAheadStats counts the blocks fetched ahead of sequential readers.
func (f *FS) ReadAheadStats() ReadAheadStats { return f.blocks.ahead.Stats() }

// CacheStats reports the in-memory block cache: hits, misses, bytes held.
func (f *FS) CacheStats() (hits, misses uint64, bytes int64) {
	hits, misses = f.blocks.cache.Stats()
	return hits, misses, f.blocks.cache.Bytes()
}

func newStreams() *lru.Cache[uint64, streamPos] {
	c, _ := lru.New[uint64, streamPos](maxStreams) // fails only for a size below 1
	return c
}
