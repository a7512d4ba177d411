package fs

import (
	"context"
	"time"
)

// An inode that loses its last link while something has it open, a
// directory removed, a file too large to free in its unlink's own
// transaction: each becomes an orphan, recorded in the metadata, and is
// freed by the reaper once nothing has it open. Unlinks hand the reaper
// their orphans through a bounded queue; when a burst of them (rm -rf of
// a large tree, a mass deletion over NFS) fills it, the overflow is not
// lost but left to the orphan list, which the reaper then walks a page at
// a time. It walks it at start too, for what the last run left.
const (
	reapQueue = 1024 // orphans queued by unlinks
	reapPage  = 256  // orphans read from the metadata at a time
	// reapDrainMax bounds how long Close frees queued orphans.
	reapDrainMax = 10 * time.Second
)

// reaper frees orphans: those queued by unlinks and releases, and every one
// the metadata lists when asked to (reapScan).
func (f *FS) reaper(ctx context.Context) {
	defer f.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case ino := <-f.reap:
			if f.reapIfClosed(ctx, ino) == reapFailed && ctx.Err() != nil {
				f.orphaned(&Attr{Ino: ino}) // cut short by Close: for reapQueued
			}
		case <-f.reapScan:
			f.reapListed(ctx)
		}
	}
}

// reapQueued frees the orphans still queued once the reaper has stopped,
// so that a clean close leaves no orphan that nothing has open, except
// what an overflow left to the orphan list and what is left after
// reapDrainMax (the next start frees those). The queue holds at most
// reapQueue of them; the limit is for a few huge files, whose blocks
// take many transactions to release.
func (f *FS) reapQueued(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, reapDrainMax)
	defer cancel()
	for ctx.Err() == nil {
		select {
		case ino := <-f.reap:
			f.reapIfClosed(ctx, ino)
		default:
			return
		}
	}
}

// orphaned queues an inode that lost its last link for reaping.
func (f *FS) orphaned(a *Attr) {
	if a == nil || a.Nlink > 0 {
		return
	}
	if a.IsRegular() {
		f.mu.Lock()
		if in := f.inodes[a.Ino]; in != nil {
			// Open: its last release queues it again, and drops
			// what it still buffers (see goneForGood) instead of
			// committing it.
			in.unlinked = true
		}
		f.mu.Unlock()
	}
	select {
	case f.reap <- a.Ino:
	default:
		// The orphan record is there: the reaper finds it in the list.
		f.scanOrphans()
	}
}

// scanOrphans asks the reaper to walk the orphan list (again, if it is
// walking it now: an orphan recorded behind its position would be missed).
func (f *FS) scanOrphans() {
	select {
	case f.reapScan <- struct{}{}:
	default: // already asked
	}
}

// reapListed reaps every orphan the metadata lists that nothing has open,
// in ascending inode order, a page at a time.
func (f *FS) reapListed(ctx context.Context) {
	var after uint64
	reaped, open := 0, 0
	for ctx.Err() == nil {
		page, err := f.meta.OrphansAfter(ctx, after, reapPage)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Warn("list orphan inodes; will try again at the next overflow or start", "err", err)
			}
			return
		}
		for _, ino := range page {
			switch f.reapIfClosed(ctx, ino) {
			case reapDone:
				reaped++
			case reapOpen:
				open++
			}
		}
		if len(page) < reapPage {
			break
		}
		after = page[len(page)-1]
	}
	if reaped > 0 || open > 0 {
		f.log.Info("reaped orphan inodes listed in the metadata", "reaped", reaped, "still open", open)
	}
}

// reapOutcome is what reapIfClosed did.
type reapOutcome int

const (
	reapDone   reapOutcome = iota // freed (or already gone)
	reapOpen                      // left for its last release
	reapFailed                    // an error, logged; the orphan record stays
)

// reapIfClosed frees orphan ino unless something has it open; then its last
// release queues it again.
func (f *FS) reapIfClosed(ctx context.Context, ino uint64) reapOutcome {
	f.mu.Lock()
	if in, open := f.inodes[ino]; open {
		in.unlinked = true // the last release queues it again
		f.mu.Unlock()
		return reapOpen
	}
	f.reaping[ino] = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.reaping, ino)
		f.mu.Unlock()
	}()
	if err := f.meta.Reap(ctx, ino); err != nil {
		if ctx.Err() == nil {
			f.log.Warn("reap unlinked inode", "ino", ino, "err", err)
		}
		return reapFailed
	}
	f.reaped.Add(1)
	return reapDone
}
