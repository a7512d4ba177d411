package fs

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// lazyAtimes holds atime updates that reads asked for (by the relatime
// rule) and that are not committed yet. The background worker commits them
// in batches, one transaction per batch, so a read does not wait for a
// metadata transaction of its own; attributes served by objfs show a
// pending atime at once. A crash loses at most the last second of atime
// updates, as with Linux's lazytime.
type lazyAtimes struct {
	mu      sync.Mutex
	pending map[uint64]int64
}

// atimeBatch bounds the inodes of one commit transaction; atimeBacklog is
// how many pending updates make a reader commit them itself.
const (
	atimeBatch   = 512
	atimeBacklog = 8 * atimeBatch
)

// touchAtime records a read of a (the committed attributes) now, if
// relatime asks for it.
func (f *FS) touchAtime(ctx context.Context, a *Attr) {
	now := time.Now().UnixNano()
	f.atimes.mu.Lock()
	if t, ok := f.atimes.pending[a.Ino]; ok {
		a.Atime = max(a.Atime, t)
	}
	if !meta.NeedsAtime(a, now) {
		f.atimes.mu.Unlock()
		return
	}
	if f.atimes.pending == nil {
		f.atimes.pending = map[uint64]int64{}
	}
	f.atimes.pending[a.Ino] = now
	backlog := len(f.atimes.pending) >= atimeBacklog
	f.atimes.mu.Unlock()
	if backlog {
		f.commitAtimes(ctx)
	}
}

// withAtime shows a pending atime in a.
func (f *FS) withAtime(a *Attr) {
	f.atimes.mu.Lock()
	defer f.atimes.mu.Unlock()
	if t, ok := f.atimes.pending[a.Ino]; ok {
		a.Atime = max(a.Atime, t)
	}
}

// dropAtime forgets a pending atime of ino: an explicit atime (utimens)
// replaces it.
func (f *FS) dropAtime(ino uint64) {
	f.atimes.mu.Lock()
	defer f.atimes.mu.Unlock()
	delete(f.atimes.pending, ino)
}

// commitAtimes commits the pending atimes. A failure is logged and the
// updates are kept for the next round (unless newer ones arrived): atime
// is worth a retry, not an error to some reader.
func (f *FS) commitAtimes(ctx context.Context) {
	f.atimes.mu.Lock()
	all := f.atimes.pending
	f.atimes.pending = nil
	f.atimes.mu.Unlock()
	batch := make(map[uint64]int64, min(len(all), atimeBatch))
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if err := f.meta.SetAtimes(ctx, batch); err != nil {
			f.log.Warn("commit access times; will retry", "inodes", len(batch), "err", err)
			f.atimes.mu.Lock()
			if f.atimes.pending == nil {
				f.atimes.pending = map[uint64]int64{}
			}
			for ino, t := range batch {
				f.atimes.pending[ino] = max(f.atimes.pending[ino], t)
			}
			f.atimes.mu.Unlock()
		}
		clear(batch)
	}
	for ino, t := range all {
		batch[ino] = t
		if len(batch) == atimeBatch {
			flush()
		}
	}
	flush()
}

// pendingAtimes returns a copy of the pending updates (tests).
func (f *FS) pendingAtimes() map[uint64]int64 {
	f.atimes.mu.Lock()
	defer f.atimes.mu.Unlock()
	return maps.Clone(f.atimes.pending)
}
