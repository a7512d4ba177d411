package staging

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// diskAdmit is an Admit like the volume's space guard for a log alone on
// a disk of limit bytes: it refuses a Put that would take the log's
// segment files, with the Puts let through and not yet done, past limit.
type diskAdmit struct {
	t        *testing.T
	dir      string
	limit    int64
	mu       sync.Mutex
	inflight int64
	peak     int64 // the most the segments held at an admission
}

func (d *diskAdmit) usage() int64 {
	var n int64
	for _, name := range segFiles(d.t, d.dir) {
		if st, err := os.Stat(name); err == nil {
			n += st.Size()
		}
	}
	return n
}

func (d *diskAdmit) admit(n int64) (func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	used := d.usage()
	d.peak = max(d.peak, used)
	if used+d.inflight+n > d.limit {
		return nil, fmt.Errorf("%d of %d bytes used: %w", used+d.inflight, d.limit, syscall.ENOSPC)
	}
	d.inflight += n
	return func() {
		d.mu.Lock()
		d.inflight -= n
		d.mu.Unlock()
	}, nil
}

// TestSpaceWaitForUploads: with SpaceWait, a Put refused for space waits
// for uploads to free the log's disk instead of failing, even though all
// of it went to one segment (deleted whole, so the log closes it); the
// log never holds more than the disk; everything Put is readable and
// uploaded; Release gives back what is uploaded.
func TestSpaceWaitForUploads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := &diskAdmit{t: t, dir: dir, limit: 1 << 20}
	be := newBackend(t)
	s := open(t, dir, be, Options{Paused: true, Admit: d.admit, SpaceWait: 5 * time.Second})
	const n, size = 30, 100_000
	done := make(chan error, 1)
	go func() {
		for i := range n {
			key, data := obj(i, size)
			if err := s.Put(ctx, key, data); err != nil {
				done <- fmt.Errorf("put %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().SpaceWaits == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no Put waited for space with uploads paused and the disk full")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("the Puts ended (%v) while the disk was full and uploads paused", err)
	case <-time.After(200 * time.Millisecond):
	}
	s.Resume()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Puts still waiting after uploads resumed")
	}
	st := s.Stats()
	if st.SpaceWaits == 0 || st.SpaceRefused != 0 {
		t.Errorf("SpaceWaits %d, SpaceRefused %d: want waits and no refusal", st.SpaceWaits, st.SpaceRefused)
	}
	// Done records are not admitted: allow a little for them.
	if d.peak > d.limit+16<<10 {
		t.Errorf("the log took %d bytes of a %d-byte disk", d.peak, d.limit)
	}
	for i := range n {
		key, data := obj(i, size)
		if got, err := s.Get(ctx, key); err != nil || string(got) != string(data) {
			t.Fatalf("object %d: %v", i, err)
		}
	}
	drain(t, s)
	for i := range n {
		if key, _ := obj(i, size); be.count(key) != 1 {
			t.Fatalf("object %d uploaded %d times", i, be.count(key))
		}
	}
	// Everything is uploaded: Release leaves one small segment.
	before := d.usage()
	freed := s.Release(0)
	if after := d.usage(); freed <= 0 || after >= before || after > 64<<10 || len(segFiles(t, dir)) != 1 {
		t.Errorf("Release freed %d bytes: segments held %d bytes before, %d after, in %d files", freed, before, after, len(segFiles(t, dir)))
	}
	if key, data := obj(100, size); s.Put(ctx, key, data) != nil {
		t.Error("Put after Release failed")
	}
}

// TestSpaceWaitGivesUp: a Put waiting for space fails with ENOSPC once no
// upload has finished for SpaceWait, the next one at once, and at once
// when nothing of the log's is left to free; the log takes Puts again once uploads free room.
func TestSpaceWaitGivesUp(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := &diskAdmit{t: t, dir: dir, limit: 1 << 20}
	const wait = 300 * time.Millisecond
	s := open(t, dir, newBackend(t), Options{Paused: true, Admit: d.admit, SpaceWait: wait})
	var start time.Time
	var err error
	for i := 0; err == nil; i++ {
		if i > 20 {
			t.Fatal("1 MiB disk never filled")
		}
		key, data := obj(i, 100_000)
		start = time.Now()
		err = s.Put(ctx, key, data)
	}
	if took := time.Since(start); !errors.Is(err, syscall.ENOSPC) || took < wait || took > 10*wait {
		t.Fatalf("Put on a full disk with uploads paused: %v after %v, want ENOSPC after about %v", err, took, wait)
	}
	// The stall is the log's: the next Put does not wait it out again
	// (a commit stores its blocks one after another).
	start = time.Now()
	if key, data := obj(40, 100_000); !errors.Is(s.Put(ctx, key, data), syscall.ENOSPC) || time.Since(start) > wait/2 {
		t.Fatalf("a second Put with uploads still stalled: want ENOSPC at once, took %v", time.Since(start))
	}
	if st := s.Stats(); st.SpaceWaits != 2 || st.SpaceRefused != 2 {
		t.Errorf("SpaceWaits %d, SpaceRefused %d, want 2 and 2", st.SpaceWaits, st.SpaceRefused)
	}
	s.Resume()
	if key, data := obj(50, 100_000); s.Put(ctx, key, data) != nil {
		t.Fatal("Put once uploads resumed failed")
	}

	// A disk another program filled: nothing the log holds would help.
	dir2 := t.TempDir()
	full := func(int64) (func(), error) { return nil, fmt.Errorf("filled by someone else: %w", syscall.ENOSPC) }
	s2 := open(t, dir2, newBackend(t), Options{Admit: full, SpaceWait: time.Minute})
	start = time.Now()
	if key, data := obj(1, 1000); !errors.Is(s2.Put(ctx, key, data), syscall.ENOSPC) || time.Since(start) > 5*time.Second {
		t.Fatalf("Put with nothing staged to free: want ENOSPC at once, waited %v", time.Since(start))
	}
	// Another error is not waited on.
	other := func(int64) (func(), error) { return nil, errors.New("disk on fire") }
	s3 := open(t, t.TempDir(), newBackend(t), Options{Admit: other, SpaceWait: time.Minute})
	if key, data := obj(1, 1000); s3.Put(ctx, key, data) == nil || s3.Stats().SpaceWaits != 0 {
		t.Fatal("a refusal other than ENOSPC was waited on")
	}
}

// TestNewSegmentRefused: a segment the log cannot create (a file system
// out of inodes) fails the Put that needed it, not the log: once there is
// room the next Put goes through, and what was staged before is intact.
func TestNewSegmentRefused(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m,nr_inodes=16"); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	ctx := context.Background()
	logDir := filepath.Join(dir, "log")
	s, err := Open(logDir, newBackend(t), Options{Paused: true, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var fillers []string
	for i := 0; ; i++ {
		name := filepath.Join(dir, fmt.Sprintf("filler%d", i))
		if err := os.WriteFile(name, nil, 0o644); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
		fillers = append(fillers, name)
	}
	var acked []int
	for i := 0; ; i++ {
		if i > 10 {
			t.Fatal("the log never needed a new segment")
		}
		key, data := obj(i, 30_000)
		err := s.Put(ctx, key, data)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("put %d needing a segment on a file system out of inodes: %v, want ENOSPC", i, err)
			}
			break
		}
		acked = append(acked, i)
	}
	if err := os.Remove(fillers[0]); err != nil {
		t.Fatal(err)
	}
	key, data := obj(99, 30_000)
	if err := s.Put(ctx, key, data); err != nil {
		t.Fatalf("put once an inode was freed: %v", err)
	}
	for _, i := range append(acked, 99) {
		key, data := obj(i, 30_000)
		if got, err := s.Get(ctx, key); err != nil || string(got) != string(data) {
			t.Fatalf("object %d: %v", i, err)
		}
	}
}

// TestReleaseAfterClose: a space guard may still ask a closed log for
// room (the metadata closes after it); it gets nothing, and no panic.
func TestReleaseAfterClose(t *testing.T) {
	s, err := Open(t.TempDir(), newBackend(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, data := obj(1, 100_000)
	if err := s.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if freed := s.Release(1 << 20); freed != 0 {
		t.Fatalf("Release after Close freed %d bytes", freed)
	}
}
