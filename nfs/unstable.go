package nfs

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"syscall"
	"time"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
)

// UNSTABLE writes go into the POSIX layer's per-file write buffer through
// an open handle the server keeps for the file, instead of being committed
// one RPC at a time: buffered data is already visible to every reader of
// the volume (NFS and FUSE), COMMIT makes it durable, and an idle file is
// committed and closed after unstableIdle. Should committing buffered data
// ever fail outside a COMMIT, the write verifier changes, which tells every
// client to send its uncommitted writes again (RFC 1813 section 3.3.7).
const (
	unstableIdle     = 2 * time.Second
	maxUnstableFiles = 256 // beyond this, UNSTABLE writes are committed at once
)

type openFile struct {
	fh    uint64
	users int       // requests using fh now
	last  time.Time // end of the last use
}

type unstableFiles struct {
	mu    sync.Mutex
	files map[uint64]*openFile // by inode
}

// verifier returns the current write verifier.
func (s *server) verifier() []byte {
	return binary.BigEndian.AppendUint64(nil, s.verf.Load())
}

// writeUnstable buffers data at off in inode a, which the caller c may
// write, dropping privileges as a write by c does (see fs.NFSUnprivileged).
// ok is false when no buffer could be used; the caller then commits at once.
func (s *server) writeUnstable(ctx context.Context, c *meta.Caller, a *meta.Attr, off uint64, data []byte) (ok bool, err error) {
	of, err := s.acquireOpen(ctx, a.Ino)
	if of == nil {
		return false, err
	}
	defer s.releaseOpen(of)
	_, _, err = s.f.WriteAs(ctx, of.fh, off, data, fs.NFSUnprivileged(c), false)
	return true, err
}

// acquireOpen returns the open file of ino for one use, opening it if
// needed; nil (with a nil error) when the table is full.
func (s *server) acquireOpen(ctx context.Context, ino uint64) (*openFile, error) {
	s.unstable.mu.Lock()
	defer s.unstable.mu.Unlock()
	if of := s.unstable.files[ino]; of != nil {
		of.users++
		return of, nil
	}
	if len(s.unstable.files) >= maxUnstableFiles {
		return nil, nil
	}
	// Permission was checked for this request's caller; the handle is
	// only a buffer shared by every writer of the file.
	fh, err := s.f.Open(ctx, &meta.Root, ino, syscall.O_WRONLY)
	if err != nil {
		return nil, err
	}
	of := &openFile{fh: fh, users: 1}
	s.unstable.files[ino] = of
	return of, nil
}

func (s *server) releaseOpen(of *openFile) {
	s.unstable.mu.Lock()
	defer s.unstable.mu.Unlock()
	of.users--
	of.last = time.Now()
}

// commitOpen makes inode ino's buffered writes durable, if it has any.
// found is false when the server holds no buffer for it.
func (s *server) commitOpen(ctx context.Context, ino uint64) (found bool, err error) {
	s.unstable.mu.Lock()
	of := s.unstable.files[ino]
	if of != nil {
		of.users++
	}
	s.unstable.mu.Unlock()
	if of == nil {
		return false, nil
	}
	defer s.releaseOpen(of)
	return true, s.f.Fsync(ctx, of.fh)
}

// closeIdle commits and closes open files unused for unstableIdle (all of
// them with all set), changing the verifier if a commit fails.
func (s *server) closeIdle(ctx context.Context, all bool) {
	s.unstable.mu.Lock()
	var idle []*openFile
	for ino, of := range s.unstable.files {
		if of.users == 0 && (all || time.Since(of.last) >= unstableIdle) {
			idle = append(idle, of)
			delete(s.unstable.files, ino)
		}
	}
	s.unstable.mu.Unlock()
	for _, of := range idle {
		// A file removed meanwhile has nothing left to commit: EBADF
		// or ENOENT are not a loss.
		if err := s.f.Release(ctx, of.fh); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.EBADF) {
			s.log.Error("nfs: committing buffered unstable writes failed; clients will resend them", "err", err)
			s.verf.Add(1)
		}
	}
}

// closeIdleLoop runs closeIdle until ctx ends, then closes every file.
func (s *server) closeIdleLoop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(unstableIdle / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Shutdown: commit what is buffered with a fresh context.
			s.closeIdle(context.WithoutCancel(ctx), true)
			return
		case <-t.C:
			s.closeIdle(ctx, false)
		}
	}
}
