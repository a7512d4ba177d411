package fs

import (
	"context"
	"syscall"

	"github.com/objfs/objfs/fs/meta"
)

// maxCopyData bounds what one CopyFileRange copies by reading and writing;
// copy_file_range(2) may copy less than asked, and callers ask again.
const maxCopyData = 64 << 20

// CopyFileRange copies n bytes at offIn of the file open as fhIn to offOut
// of the file open as fhOut, as copy_file_range(2), and returns how many
// it copied: fewer near the end of the source, or when one call has done
// enough (callers ask again for the rest). Whole chunks at chunk-aligned
// offsets share the source's blocks (meta.ShareRange): no data moves and
// no space is used. The rest is read and written as write(2) would, its
// data buffered in the destination like any write. The destination loses
// what a write drops (see WriteAs: unprivileged is as there), and dropped
// says whether anything went.
func (f *FS) CopyFileRange(ctx context.Context, fhIn, offIn, fhOut, offOut, n uint64, unprivileged func() *Caller) (copied uint64, dropped bool, err error) {
	copied, dropped, err = f.copyFileRange(ctx, fhIn, offIn, fhOut, offOut, n, unprivileged)
	if copied > 0 {
		err = nil // a short copy, as a short write, reports what it did
	}
	return copied, dropped, err
}

func (f *FS) copyFileRange(ctx context.Context, fhIn, offIn, fhOut, offOut, n uint64, unprivileged func() *Caller) (done uint64, dropped bool, err error) {
	hin, err := f.handle(fhIn)
	if err != nil {
		return 0, false, err
	}
	hout, err := f.handle(fhOut)
	if err != nil {
		return 0, false, err
	}
	if hin.flags&accMode == syscall.O_WRONLY || hout.flags&accMode == syscall.O_RDONLY || hout.flags&syscall.O_APPEND != 0 {
		return 0, false, syscall.EBADF
	}
	// A handle open for writing is a regular file's: directories open
	// read-only.
	src, dst := hin.ino, hout.ino
	if offIn+n < offIn || offOut+n < offOut {
		return 0, false, syscall.EINVAL
	}
	if src == dst && offIn < offOut+n && offOut < offIn+n {
		return 0, false, syscall.EINVAL
	}
	defer lockPair(src, dst)()
	a, err := f.meta.GetAttr(ctx, src.ino)
	if err != nil {
		return 0, false, err
	}
	if !a.IsRegular() {
		return 0, false, syscall.EINVAL
	}
	size := max(a.Size, src.buf.end())
	if offIn >= size || n == 0 {
		return 0, false, nil
	}
	n = min(n, size-offIn)
	if offOut+n > meta.MaxFileSize {
		return 0, false, syscall.EFBIG
	}
	if dropped, err = f.dropPrivsLocked(ctx, dst, unprivileged); err != nil {
		return 0, false, err
	}
	cs := uint64(f.format.ChunkSize)
	if offIn%cs == 0 && offOut%cs == 0 && (n >= cs || offIn+n == size) {
		// Blocks can be shared. Sharing reads, and replaces, committed
		// data: commit what both files have buffered first. (Copying
		// data needs no commit: reads see the source's buffer, and the
		// data joins the destination's.)
		for _, in := range []*inode{src, dst} {
			if err := f.flushLocked(ctx, in); err != nil {
				return 0, dropped, err
			}
		}
		for done < n {
			k, err := f.meta.ShareRange(ctx, src.ino, offIn+done, dst.ino, offOut+done, n-done)
			if err != nil {
				return done, dropped, err
			}
			if k == 0 {
				break
			}
			done += k
		}
		if done == n {
			return done, dropped, nil
		}
	}
	buf := make([]byte, min(n-done, 1<<20))
	for limit := done + maxCopyData; done < n && done < limit; {
		r, err := f.readLocked(ctx, src, offIn+done, buf[:min(n-done, uint64(len(buf)))])
		if err != nil || r == 0 {
			return done, dropped, err
		}
		f.buffer(dst, offOut+done, buf[:r])
		done += uint64(r)
		if dst.buf.bytes >= f.opts.InodeDirty || f.dirty.Load() > f.opts.DirtyLimit {
			if err := f.flushLocked(ctx, dst); err != nil {
				return done, dropped, err
			}
		}
	}
	return done, dropped, nil
}

// lockPair locks the data mutexes of a and b (once if they are the same
// file), lower inode number first so that two copies between the same
// files in opposite directions cannot deadlock, and returns the unlock.
func lockPair(a, b *inode) func() {
	if a == b {
		a.mu.Lock()
		return a.mu.Unlock
	}
	if a.ino > b.ino {
		a, b = b, a
	}
	a.mu.Lock()
	b.mu.Lock()
	return func() { b.mu.Unlock(); a.mu.Unlock() }
}
