package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/objfs/objfs/cache"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// blocks moves immutable blocks between memory and the object store,
// verifying every read, and keeps uploads and deletions of one block from
// crossing: a block named by its content can be re-uploaded by a writer
// while the deleter frees an earlier copy of the same content.
type blocks struct {
	store objstore.Store
	hash  func([]byte) meta.BlockID // the volume's block hash
	cache *cache.Memory
	disk  *cache.Disk // nil: no disk cache
	log   *slog.Logger
	// aheadToDisk says whether blocks fetched for read-ahead are copied to
	// the disk cache; see Options.ReadAheadBypassesDiskCache.
	aheadToDisk bool
	ahead       *ahead // blocks fetched for sequential readers

	fetchMu  sync.Mutex
	fetching map[meta.BlockID]*fetchCall // store reads in flight, shared by their readers

	mu       sync.Mutex
	cond     *sync.Cond
	inflight map[meta.BlockID]int  // uploads whose references are not committed yet
	deleting map[meta.BlockID]bool // objects being deleted right now
	deleters int                   // store deletes in flight at most (Options.Uploaders)

	deleted, deleteErrors atomic.Uint64 // objects deleted, deletes failed (and queued again)
}

func newBlocks(store objstore.Store, hash func([]byte) meta.BlockID, c *cache.Memory, disk *cache.Disk, log *slog.Logger) *blocks {
	b := &blocks{store: store, hash: hash, cache: c, disk: disk, log: log,
		fetching: map[meta.BlockID]*fetchCall{},
		inflight: map[meta.BlockID]int{}, deleting: map[meta.BlockID]bool{}}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// hold marks ids as about to be referenced, waiting out a deletion of the
// same content in progress. Every hold must be matched by release once the
// references are committed (or abandoned).
func (b *blocks) hold(ids ...meta.BlockID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		for b.deleting[id] {
			b.cond.Wait()
		}
		b.inflight[id]++
	}
}

func (b *blocks) release(ids ...meta.BlockID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		if b.inflight[id]--; b.inflight[id] <= 0 {
			delete(b.inflight, id)
		}
	}
}

// put stores data as a block and returns its reference. The caller must
// hold the id (put does) and release it after committing. Unless uncached,
// a copy of data goes to the memory cache; the caller's data is never kept
// (it may be a whole recycled array of a write buffer).
func (b *blocks) put(ctx context.Context, data []byte, uncached bool) (meta.BlockRef, error) {
	ref := meta.BlockRef{ID: b.hash(data), Size: uint32(len(data))}
	b.hold(ref.ID)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = b.store.Put(ctx, ref.ID.ObjectKey(), data); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	if err != nil {
		b.release(ref.ID)
		return ref, fmt.Errorf("store block %s: %w", ref.ID, err)
	}
	// A copy: data may be a window of a write buffer, and caching the
	// window would keep the whole buffer alive, uncounted by the cache.
	if !uncached {
		b.cache.Add(ref.ID.String(), bytes.Clone(data))
	}
	return ref, nil
}

// errCorruptBlock is returned when no stored copy of a block matches its hash.
var errCorruptBlock = errors.New("block content does not match its hash")

// readAt copies the block's bytes from off into dest (which must fit in
// the block): from the blocks read ahead or the memory cache (view), else
// the disk cache (only the range, checked piece by piece), else the whole
// block from the store.
func (b *blocks) readAt(ctx context.Context, ref meta.BlockRef, off uint32, dest []byte) error {
	data, release, err := b.view(ctx, ref, off, len(dest))
	if err != nil {
		return err
	}
	if data != nil {
		copy(dest, data)
		release()
		return nil
	}
	key := ref.ID.String()
	if b.disk != nil {
		n, size, ok := b.disk.ReadAt(key, dest, int64(off))
		switch {
		case ok && size != int64(ref.Size):
			return b.badRef(ref, fmt.Sprintf("%d bytes, referenced as %d", size, ref.Size))
		case ok && n == len(dest):
			return nil
		}
	}
	// Both caches were just asked: straight to the store.
	data, err = b.load(ctx, ref, false, true)
	if err != nil {
		return err
	}
	copy(dest, data[off:])
	return nil
}

// view returns bytes [off, off+n) of the block where they already lie,
// verified, without copying them: in a block read ahead (release must then
// be called once the caller is done with them, so that its buffer can be
// recycled) or in the memory cache (whose blocks are never modified;
// release does nothing). data is nil when the block is in neither: readAt
// goes on to the disk cache and the store.
func (b *blocks) view(ctx context.Context, ref meta.BlockRef, off uint32, n int) (data []byte, release func(), err error) {
	end := uint64(off) + uint64(n)
	if end > uint64(ref.Size) {
		return nil, nil, b.badRef(ref, fmt.Sprintf("read of [%d,+%d) past its %d referenced bytes", off, n, ref.Size))
	}
	// Blocks read ahead first: a stream's reads are not memory cache
	// misses.
	if a := b.ahead.acquire(ref.ID); a != nil {
		data, err := a.wait(ctx)
		if err == nil && len(data) == int(ref.Size) {
			var once sync.Once
			return data[off:end:end], func() { once.Do(func() { b.ahead.release(a, n) }) }, nil
		}
		b.ahead.release(a, -1)
	}
	if data, ok := b.cache.Get(ref.ID.String()); ok {
		if len(data) != int(ref.Size) {
			return nil, nil, b.badRef(ref, fmt.Sprintf("%d bytes, referenced as %d", len(data), ref.Size))
		}
		return data[off:end:end], noRelease, nil
	}
	return nil, nil, nil
}

// readWhole returns the block's verified content for a reader that will
// not read it again (compaction, which replaces it): from the memory cache
// when there, else from the disk cache or the store into scratch (or a
// fresh slice, if the block does not fit), with nothing cached on the way.
// The result must not be modified, and is overwritten by the next use of
// scratch.
func (b *blocks) readWhole(ctx context.Context, ref meta.BlockRef, scratch []byte) ([]byte, error) {
	key := ref.ID.String()
	if data, ok := b.cache.Get(key); ok {
		if len(data) != int(ref.Size) {
			return nil, b.badRef(ref, fmt.Sprintf("%d bytes, referenced as %d", len(data), ref.Size))
		}
		return data, nil
	}
	if int(ref.Size) > cap(scratch) {
		scratch = nil
	} else {
		scratch = scratch[:ref.Size]
	}
	if b.disk != nil && scratch != nil {
		n, size, ok := b.disk.ReadAt(key, scratch, 0)
		switch {
		case ok && size != int64(ref.Size):
			return nil, b.badRef(ref, fmt.Sprintf("%d bytes, referenced as %d", size, ref.Size))
		case ok && n == len(scratch):
			return scratch, nil
		}
	}
	return b.fetchStore(ctx, ref, scratch)
}

// badRef is the error of a read whose block reference does not fit the
// block (a damaged slice list: the content named by the hash has another
// size than the reference says). The block itself may be fine, and other
// references to it read it.
func (b *blocks) badRef(ref meta.BlockRef, what string) error {
	b.log.Error("block reference does not fit the block", "block", ref.ID.ObjectKey(), "problem", what)
	return fmt.Errorf("read block %s: %w: %s", ref.ID, syscall.EIO, what)
}

// cached reports whether a read of ref would be served without waiting
// for a new fetch: from the memory cache or from the blocks read ahead.
func (b *blocks) cached(ref meta.BlockRef) bool {
	return b.cache.Contains(ref.ID.String()) || b.ahead.contains(ref.ID)
}

// fetchCall is one store read that concurrent readers of the same block
// (a reader and the read-ahead, say) share.
type fetchCall struct {
	done chan struct{}
	data []byte
	err  error
}

// get returns a block's verified content. The slice must not be modified.
func (b *blocks) get(ctx context.Context, ref meta.BlockRef) ([]byte, error) {
	if data, ok := b.cache.Get(ref.ID.String()); ok {
		if len(data) != int(ref.Size) {
			return nil, b.badRef(ref, fmt.Sprintf("%d bytes, referenced as %d", len(data), ref.Size))
		}
		return data, nil
	}
	return b.load(ctx, ref, true, true)
}

// prefetch registers a fetch of a block for a sequential reader about to
// need it and returns the fetch, to run in the background; nil when the
// block is cached or coming already. The reader has read the first done
// bytes of the block already (it is inside it). Registering before
// returning lets the reader's next read find the block coming instead of
// fetching it too. The block goes to the blocks read ahead (see ahead),
// not the memory cache. With aheadToDisk it is also copied to the disk
// cache, which keeps the slice for a while: such a block gets a fresh
// one, not a recycled buffer.
func (b *blocks) prefetch(ref meta.BlockRef, done int) func(context.Context) {
	if b.cache.Contains(ref.ID.String()) {
		return nil
	}
	toDisk := b.disk != nil && b.aheadToDisk
	a := b.ahead.start(ref.ID, done, !toDisk)
	if a == nil {
		return nil
	}
	return func(ctx context.Context) {
		data, err := b.fetchInto(ctx, ref, a.buf, true, toDisk)
		b.ahead.finish(a, data, err)
	}
}

// load fetches a block the memory cache does not have, sharing the fetch
// with concurrent readers of the same block; tryDisk says whether the disk
// cache is still worth asking, toDisk whether a block read from the store
// is offered to it.
func (b *blocks) load(ctx context.Context, ref meta.BlockRef, tryDisk, toDisk bool) ([]byte, error) {
	b.fetchMu.Lock()
	c := b.fetching[ref.ID]
	if c == nil {
		c = &fetchCall{done: make(chan struct{})}
		b.fetching[ref.ID] = c
		b.fetchMu.Unlock()
		c.data, c.err = b.fetch(ctx, ref, tryDisk, toDisk)
		b.fetchMu.Lock()
		delete(b.fetching, ref.ID)
		b.fetchMu.Unlock()
		close(c.done)
		return c.data, c.err
	}
	b.fetchMu.Unlock()
	select {
	case <-c.done:
		if c.err != nil && ctx.Err() == nil {
			// The other reader's failure may be its own cancellation.
			return b.fetch(ctx, ref, tryDisk, toDisk)
		}
		return c.data, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("read block %s: %w", ref.ID, ctx.Err())
	}
}

// fetch is fetchInto a fresh slice, cached in memory.
func (b *blocks) fetch(ctx context.Context, ref meta.BlockRef, tryDisk, toDisk bool) ([]byte, error) {
	data, err := b.fetchInto(ctx, ref, nil, tryDisk, toDisk)
	if err != nil {
		return nil, err
	}
	b.cache.Add(ref.ID.String(), data)
	return data, nil
}

// fetchInto reads a block from the disk cache (checked piece by piece,
// cheaper than rehashing) when tryDisk, or else from the store, into buf
// where the store can (see fetchStore); with toDisk a block read from the
// store is offered to the disk cache (written in the background: the
// slice must not be reused).
func (b *blocks) fetchInto(ctx context.Context, ref meta.BlockRef, buf []byte, tryDisk, toDisk bool) ([]byte, error) {
	key := ref.ID.String()
	if tryDisk && b.disk != nil {
		if data, ok := b.disk.Get(key); ok && len(data) == int(ref.Size) {
			return data, nil
		}
	}
	data, err := b.fetchStore(ctx, ref, buf)
	if err == nil && toDisk && b.disk != nil {
		b.disk.Offer(key, data)
	}
	return data, err
}

// fetchStore reads a block from the store, into buf when the store can
// (objstore.GetInto), and verifies it against its hash, unless the store
// just did (a replicated store checks each copy it reads; hashing again
// would cost as much), retrying a failed or damaged read twice.
func (b *blocks) fetchStore(ctx context.Context, ref meta.BlockRef, buf []byte) ([]byte, error) {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var data []byte
		var verified bool
		data, verified, err = objstore.GetVerified(ctx, b.store, ref.ID.ObjectKey(), buf)
		if err == nil {
			if len(data) == int(ref.Size) && (verified || b.hash(data) == ref.ID) {
				return data, nil
			}
			err = errCorruptBlock
			b.log.Error("corrupt block", "block", ref.ID.ObjectKey(), "size", len(data), "want_size", ref.Size)
		} else if errors.Is(err, objstore.ErrNotFound) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 50 * time.Millisecond)
	}
	b.log.Error("read block failed", "block", ref.ID.ObjectKey(), "err", err)
	return nil, fmt.Errorf("read block %s: %w: %w", ref.ID, syscall.EIO, err)
}

// deletePending frees the objects of blocks whose reference count dropped
// to zero at least grace ago, going once through the deletion queue in
// batches; blocks it skips (held by an upload in flight) are seen again
// by the next round.
func (b *blocks) deletePending(ctx context.Context, m *meta.Meta, grace time.Duration) error {
	const batch = 64
	cutoff := time.Now().Add(-grace)
	var after *meta.BlockID
	for {
		ids, err := m.PendingBlocks(ctx, cutoff, after, batch)
		if err != nil {
			return err
		}
		if err := b.deleteBatch(ctx, m, ids); err != nil {
			return err
		}
		if len(ids) < batch || ctx.Err() != nil {
			return ctx.Err()
		}
		after = &ids[len(ids)-1]
	}
}

// deleteBatch deletes the objects of those of ids that are still
// unreferenced, claiming them in one transaction. Each stays marked as
// being deleted, so that no writer commits a new reference to it, until
// its object is gone; a block an upload in flight holds is skipped.
func (b *blocks) deleteBatch(ctx context.Context, m *meta.Meta, ids []meta.BlockID) error {
	var claim []meta.BlockID
	b.mu.Lock()
	for _, id := range ids {
		if b.inflight[id] > 0 || b.deleting[id] {
			continue // a writer is about to reference it again, or it is being deleted
		}
		b.deleting[id] = true
		claim = append(claim, id)
	}
	b.mu.Unlock()
	done := func(ids ...meta.BlockID) {
		b.mu.Lock()
		for _, id := range ids {
			delete(b.deleting, id)
		}
		b.cond.Broadcast()
		b.mu.Unlock()
	}
	deletable, err := m.ClaimBlocks(ctx, claim)
	if err != nil {
		done(claim...)
		return err
	}
	// A store's delete is a request of tens of milliseconds to a remote
	// store: one at a time, a mass deletion would fall behind for good.
	var (
		wg     sync.WaitGroup
		sem    = make(chan struct{}, max(b.deleters, 1))
		failMu sync.Mutex
		failed []meta.BlockID
	)
	for i, id := range claim {
		if !deletable[i] {
			done(id)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() {
				<-sem
				wg.Done()
			}()
			b.cache.Remove(id.String())
			if b.disk != nil {
				b.disk.Remove(id.String())
			}
			// A crash here leaves an unreferenced object, which gc removes.
			if err := b.store.Delete(ctx, id.ObjectKey()); err != nil {
				if ctx.Err() == nil {
					b.log.Warn("delete block; will try again", "block", id.ObjectKey(), "err", err)
				}
				failMu.Lock()
				failed = append(failed, id)
				failMu.Unlock()
				return // still claimed: queued again below
			}
			b.deleted.Add(1)
			done(id)
		}()
	}
	wg.Wait()
	if len(failed) == 0 {
		return nil
	}
	b.deleteErrors.Add(uint64(len(failed)))
	// Queued again, still unreferenced (no reference can have been
	// committed while they were claimed), for a later pass: left out, the
	// objects would stay in the store until gc. Also when ctx was
	// cancelled, which is how Close stops a pass.
	err = m.QueueUnreferenced(context.WithoutCancel(ctx), failed)
	done(failed...)
	if err != nil {
		return fmt.Errorf("queue %d blocks again after failed deletes: %w", len(failed), err)
	}
	return nil
}
