package fs

import (
	"context"
	"fmt"
	"sync"

	"github.com/objfs/objfs/fs/meta"
)

// ahead holds the blocks fetched for sequential readers before they ask,
// in buffers it recycles. They stay out of the memory cache on purpose: a
// file streamed once would push the hot blocks out of it, and each of its
// blocks would need a fresh allocation (in a cold 1 GiB read, faulting in
// fresh 4 MiB buffers cost about as much CPU as reading them).
//
// A block leaves once reads have copied as many bytes as it holds, less
// those its stream had read before the block was fetched (the stream has
// moved past it; counting bytes rather than watching for a read of its
// end, because the kernel's concurrent READs are served in any order),
// when its fetch fails, or, when all places are taken, the oldest
// that nobody is reading leaves for a new one (a stream that stopped
// early). A buffer returns to the free list only once its block has left
// and its last reader is done copying, so no reader ever sees a buffer
// refilled under it. Every field is guarded by mu.
type ahead struct {
	mu      sync.Mutex
	max     int // blocks held at most
	bufSize int // size of a recycled buffer (the volume's block size)
	blocks  map[meta.BlockID]*aheadBlock
	order   []*aheadBlock // blocks in the order they were started, oldest first
	free    [][]byte      // recycled buffers, at most max
	stats   ReadAheadStats
}

// ReadAheadStats counts the blocks fetched ahead of sequential readers.
type ReadAheadStats struct {
	Hits    uint64 // block reads served from them
	Unread  uint64 // blocks that left before their stream read them all (wasted fetches)
	Buffers uint64 // buffers allocated (the rest were recycled)
	Bytes   int64  // bytes of the blocks held now
}

// aheadBlock is one block fetched ahead: in flight until done is closed,
// then data (or err) is set and never changes.
type aheadBlock struct {
	id   meta.BlockID
	done chan struct{}
	buf  []byte // recycled buffer the fetch may read into; nil: none
	data []byte // the verified block: within buf, or a slice of its own
	err  error

	refs    int  // readers between acquire and release
	read    int  // bytes copied out by readers so far, or read before start
	left    bool // no longer in blocks: recycle buf after the last reader
	settled bool // done was closed
}

func newAhead(maxBlocks, bufSize int) *ahead {
	return &ahead{max: max(maxBlocks, 1), bufSize: bufSize, blocks: map[meta.BlockID]*aheadBlock{}}
}

// start registers a fetch of block id and returns it, with a recycled
// buffer when withBuf is set; done bytes of it were read before. It returns nil when id is already held or
// every place is taken by a block still in flight or being read.
func (a *ahead) start(id meta.BlockID, done int, withBuf bool) *aheadBlock {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.blocks[id]; ok {
		return nil
	}
	if len(a.blocks) >= a.max && !a.evictOldestLocked() {
		return nil
	}
	b := &aheadBlock{id: id, done: make(chan struct{}), read: done}
	if withBuf {
		if n := len(a.free); n > 0 {
			b.buf, a.free = a.free[n-1], a.free[:n-1]
		} else {
			b.buf = make([]byte, a.bufSize)
			a.stats.Buffers++
		}
	}
	a.blocks[id] = b
	a.order = append(a.order, b)
	return b
}

// evictOldestLocked removes the oldest block that is settled and unread.
func (a *ahead) evictOldestLocked() bool {
	for _, b := range a.order {
		if b.settled && b.refs == 0 {
			a.removeLocked(b)
			return true
		}
	}
	return false
}

// finish publishes the outcome of b's fetch. A failed block leaves at once:
// a reader that finds it gone fetches the block itself.
func (a *ahead) finish(b *aheadBlock, data []byte, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b.data, b.err, b.settled = data, err, true
	close(b.done)
	if !b.left {
		a.stats.Bytes += int64(len(data))
	}
	if err != nil {
		a.removeLocked(b)
	}
	a.recycleLocked(b) // dropped while in flight
}

// acquire returns block id if it is held, counted as read until release.
func (a *ahead) acquire(id meta.BlockID) *aheadBlock {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.blocks[id]
	if b != nil {
		b.refs++
	}
	return b
}

// wait returns b's content once its fetch is done.
func (b *aheadBlock) wait(ctx context.Context) ([]byte, error) {
	select {
	case <-b.done:
		return b.data, b.err
	case <-ctx.Done():
		return nil, fmt.Errorf("read block %s: %w", b.id, ctx.Err())
	}
}

// release ends a read of b begun by acquire that copied n bytes out of
// it; n < 0 says that the reader found b unusable, which then leaves.
func (a *ahead) release(b *aheadBlock, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b.refs--
	if n < 0 {
		a.removeLocked(b)
		a.recycleLocked(b)
		return
	}
	a.stats.Hits++
	b.read += n
	if b.read >= len(b.data) {
		a.removeLocked(b)
	}
	a.recycleLocked(b)
}

// drop lets every block leave (fetches in flight finish unseen) and frees
// the recycled buffers.
func (a *ahead) drop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.order) > 0 {
		a.removeLocked(a.order[0])
	}
	a.free = nil
}

// Stats returns the counters.
func (a *ahead) Stats() ReadAheadStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// contains reports whether block id is held and fetched.
func (a *ahead) contains(id meta.BlockID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.blocks[id]
	return ok && b.settled
}

// removeLocked takes b out of the held blocks, recycling its buffer if it
// is settled and unread (else the last release or finish does).
func (a *ahead) removeLocked(b *aheadBlock) {
	if b.left {
		return
	}
	b.left = true
	if b.settled {
		a.stats.Bytes -= int64(len(b.data))
	}
	if b.err == nil && b.read < len(b.data) {
		a.stats.Unread++
	}
	if a.blocks[b.id] == b {
		delete(a.blocks, b.id)
	}
	for i, o := range a.order {
		if o == b {
			a.order = append(a.order[:i], a.order[i+1:]...)
			break
		}
	}
	a.recycleLocked(b)
}

func (a *ahead) recycleLocked(b *aheadBlock) {
	if !b.left || !b.settled || b.refs > 0 || b.buf == nil {
		return
	}
	if len(a.free) < a.max {
		a.free = append(a.free, b.buf)
	}
	b.buf, b.data = nil, nil
}
