package space

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeDisk is a file system whose free space the test sets.
type fakeDisk struct {
	free, total uint64
	calls       int
}

func (d *fakeDisk) statfs(_ string, st *unix.Statfs_t) error {
	d.calls++
	st.Bsize, st.Bavail, st.Blocks = 1, d.free, d.total
	return nil
}

func newTestGuard(t *testing.T, d *fakeDisk, reserve uint64) *Guard {
	t.Helper()
	g, err := newGuard(t.TempDir(), reserve, slog.New(slog.NewTextHandler(io.Discard, nil)), d.statfs)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }

// TestGuardKeepsReserve follows one guard through a sequence: writes
// pass while the reserve stays free after them and after every write
// still in flight; a finished write counts until the next measurement;
// deletions and moves go on down to a quarter of the reserve.
func TestGuardKeepsReserve(t *testing.T) {
	d := &fakeDisk{free: 1000, total: 10000}
	g := newTestGuard(t, d, 400)
	type step struct {
		name    string
		do      func() error
		noSpace bool
	}
	var dones []func()
	write := func(n int64) func() error {
		return func() error {
			done, err := g.Write(n)
			if err == nil {
				dones = append(dones, done)
			}
			return err
		}
	}
	freeing := func(n int64) func() error {
		return func() error {
			done, err := g.Freeing(n)
			if err == nil {
				dones = append(dones, done)
			}
			return err
		}
	}
	finishAll := func() error {
		for _, done := range dones {
			done()
			done() // twice: counted once
		}
		dones = nil
		return nil
	}
	diskSays := func(free uint64) func() error {
		return func() error { d.free = free; return nil }
	}
	for _, s := range []step{
		{"300 of 1000 free, reserve 400", write(300), false},
		{"300 more in flight", write(300), false},
		{"one byte more would eat the reserve", write(1), true},
		{"a metadata change still fits", func() error { return g.Check(false) }, false},
		{"an upload may go down to a quarter", freeing(300), false},
		{"not below it", freeing(1), true},
		{"no metadata change now", func() error { return g.Check(false) }, true},
		{"but a deletion", func() error { return g.Check(true) }, false},
		{"the disk shows the 900 bytes written", diskSays(100), false},
		{"they are done", finishAll, false},
		{"and still count until the next measurement", func() error {
			if a := g.availLocked(); a != 100 {
				return fmt.Errorf("avail %d, want 100", a)
			}
			return nil
		}, false},
		{"a refusal measures again", write(1), true},
		{"a deletion frees 800", diskSays(900), false},
		{"a refusal measures again, so room is seen at once", write(500), false},
		{"and counted", write(1), true},
	} {
		err := s.do()
		if err != nil && !isNoSpace(err) {
			t.Fatalf("%s: %v, want nil or ENOSPC", s.name, err)
		}
		if isNoSpace(err) != s.noSpace {
			t.Fatalf("%s: err %v, want ENOSPC: %v", s.name, err, s.noSpace)
		}
	}
}

// TestGuardMeasuresAtMostEveryRefresh: writes that fit are let through on
// the last measurement, which is taken again only after refresh.
func TestGuardMeasuresAtMostEveryRefresh(t *testing.T) {
	d := &fakeDisk{free: 1 << 30, total: 1 << 40}
	g := newTestGuard(t, d, 1<<20)
	calls := d.calls
	for range 1000 {
		done, err := g.Write(4096)
		if err != nil {
			t.Fatal(err)
		}
		done()
	}
	if n := d.calls - calls; n > 2 {
		t.Errorf("%d statfs calls for 1000 writes in a burst", n)
	}
	g.checked = time.Now().Add(-2 * refresh)
	if err := g.Check(false); err != nil {
		t.Fatal(err)
	}
	if g.since != 0 {
		t.Errorf("a new measurement kept %d bytes of finished writes", g.since)
	}
}

func TestDefaultReserve(t *testing.T) {
	for _, tc := range []struct{ total, want uint64 }{
		{1 << 40, 512 << 20},
		{2 << 30, 512 << 20},
		{1 << 30, 256 << 20},
		{100 << 20, 25 << 20},
	} {
		if got := DefaultReserve(tc.total); got != tc.want {
			t.Errorf("DefaultReserve(%d) = %d, want %d", tc.total, got, tc.want)
		}
	}
	d := &fakeDisk{free: 50 << 20, total: 100 << 20}
	if g := newTestGuard(t, d, 0); g.Reserve() != 25<<20 {
		t.Errorf("reserve 0 gave %d, want the default %d", g.Reserve(), 25<<20)
	}
}

func TestGuardShares(t *testing.T) {
	d := &fakeDisk{free: 1 << 30, total: 1 << 40}
	g := newTestGuard(t, d, 1)
	if !g.Shares(g.dir) || !g.Shares(filepath.Join(g.dir, "not", "made", "yet")) {
		t.Error("the guarded directory, or a path under it not made yet, is not on its file system")
	}
	if g.Shares("/proc/self") {
		t.Error("/proc is on the guarded file system")
	}
}

// TestGuardReclaims: before refusing, the guard asks the reclaimer (a disk
// cache) for what is missing and more, measures again, and lets the write
// through if that made room; WriteIfRoom (the cache's own writes) never
// asks.
func TestGuardReclaims(t *testing.T) {
	d := &fakeDisk{free: 1000, total: 10000}
	g := newTestGuard(t, d, 400)
	var asked []int64
	cache := int64(700)
	g.AddReclaim(func(n int64) int64 {
		asked = append(asked, n)
		give := min(n, cache)
		cache -= give
		d.free += uint64(give)
		return give
	})
	if _, err := g.WriteIfRoom(700); !isNoSpace(err) || len(asked) != 0 {
		t.Fatalf("WriteIfRoom past the reserve: %v, reclaimer asked %v", err, asked)
	}
	if _, err := g.Write(700); err != nil {
		t.Fatalf("Write with a cache to reclaim: %v", err)
	}
	// 1000 free, 700+400 needed: 100 missing, and an eighth of the reserve.
	if len(asked) != 1 || asked[0] != 150 {
		t.Fatalf("reclaimer asked %v, want [150]", asked)
	}
	if _, err := g.Write(1000); !isNoSpace(err) {
		t.Fatalf("Write beyond what the cache holds: %v, want ENOSPC", err)
	}
}

// TestGuardReclaimsInOrder: the reclaimers are asked in the order they
// were added, each for what the ones before it did not free, and none
// once enough is free.
func TestGuardReclaimsInOrder(t *testing.T) {
	d := &fakeDisk{free: 1000, total: 10000}
	g := newTestGuard(t, d, 400)
	var asked []string
	source := func(name string, holds int64) func(int64) int64 {
		return func(n int64) int64 {
			asked = append(asked, fmt.Sprintf("%s:%d", name, n))
			give := min(n, holds)
			holds -= give
			d.free += uint64(give)
			return give
		}
	}
	g.AddReclaim(source("log", 50))
	g.AddReclaim(source("cache", 1000))
	g.AddReclaim(source("never", 1000))
	if _, err := g.Write(700); err != nil {
		t.Fatalf("Write with room to reclaim: %v", err)
	}
	// 150 wanted (100 missing and an eighth of the reserve): the log
	// gives its 50, the cache the other 100.
	if want := "log:150 cache:100"; strings.Join(asked, " ") != want {
		t.Fatalf("reclaimers asked %v, want %s", asked, want)
	}
}

// TestGuardStaged: a staging log in front of stores elsewhere stops at
// half the reserve more than other writes, so new files still find room
// while it waits for uploads; its refusals are not counted as the
// guard's (the log counts its own).
func TestGuardStaged(t *testing.T) {
	d := &fakeDisk{free: 2000, total: 10000}
	g := newTestGuard(t, d, 400)
	if _, err := g.Staged(1401); !isNoSpace(err) {
		t.Fatalf("Staged leaving 599 (reserve 400 and half of it: 600): %v, want ENOSPC", err)
	}
	if g.Refused() != 0 {
		t.Errorf("a Staged refusal counted: Refused = %d", g.Refused())
	}
	if _, err := g.Staged(1400); err != nil {
		t.Fatalf("Staged leaving 600: %v", err)
	}
	if _, err := g.Write(200); err != nil {
		t.Fatalf("Write where the log stopped: %v", err)
	}
	if _, err := g.Write(1); !isNoSpace(err) || g.Refused() != 1 {
		t.Fatalf("Write into the reserve: %v, Refused = %d", err, g.Refused())
	}
}
