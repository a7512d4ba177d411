// Package space keeps the file system under a volume's metadata from
// filling up.
//
// Badger writes its logs and tables through memory-mapped files that it
// extends sparsely, so once that file system is full, a store to a page it
// cannot back kills the process with SIGBUS (seen: a mount died in the
// middle of a create on a full disk). objfs therefore never lets its own
// writes take the last of that space. A Guard answers ENOSPC to what would
// leave less than a reserve free (new data, new files, extended
// attributes), and lets what frees or moves space (deletions, renames,
// uploads of staged blocks) go on down to a quarter of the reserve; the
// rest is Badger's own, for its flushes and compactions.
package space

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// refresh is how long a measurement of the free space is trusted; in
// between, the writes the guard let through are taken off it.
const refresh = 100 * time.Millisecond

// Default reserve: 512 MiB (Badger's memtable logs are 64 MiB each, its
// flushes write tables of that order), but at most a quarter of a small
// file system.
const defaultReserve = 512 << 20

// DefaultReserve is the reserve for a file system of total bytes.
func DefaultReserve(total uint64) uint64 {
	return min(defaultReserve, total/4)
}

// Guard watches the free space of the file system holding one directory.
type Guard struct {
	dir     string
	dev     uint64
	reserve uint64
	log     *slog.Logger
	statfs  func(path string, st *unix.Statfs_t) error // tests replace it

	mu       sync.Mutex
	reclaim  []func(n int64) int64 // see AddReclaim
	free     uint64                // bytes available at the last measurement
	checked  time.Time             // when
	inflight uint64                // bytes of writes let through and not yet done
	since    uint64                // bytes of writes done since the last measurement
	short    bool                  // refusing writes, and it was logged
	refused  uint64                // refusals since New
}

// New returns a guard for the file system holding dir, keeping reserve
// bytes free; reserve 0 means DefaultReserve.
func New(dir string, reserve uint64, log *slog.Logger) (*Guard, error) {
	return newGuard(dir, reserve, log, unix.Statfs)
}

func newGuard(dir string, reserve uint64, log *slog.Logger, statfs func(string, *unix.Statfs_t) error) (*Guard, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("free space of %s: %w", dir, err)
	}
	g := &Guard{dir: dir, dev: st.Dev, log: log, statfs: statfs}
	var fs unix.Statfs_t
	if err := statfs(dir, &fs); err != nil {
		return nil, fmt.Errorf("free space of %s: %w", dir, err)
	}
	if reserve == 0 {
		reserve = DefaultReserve(fs.Blocks * uint64(fs.Bsize))
	}
	g.reserve = reserve
	g.free, g.checked = fs.Bavail*uint64(fs.Bsize), time.Now()
	return g, nil
}

// AddReclaim makes the guard ask reclaim for room (at least n bytes; it
// returns what it freed) before it refuses anything, after the reclaimers
// added before it: a staging log gives back segments already uploaded, a
// disk cache on the same file system gives back its space to data, rather
// than data getting ENOSPC while the cache holds gigabytes.
func (g *Guard) AddReclaim(reclaim func(n int64) int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reclaim = append(g.reclaim, reclaim)
}

// Reserve is the number of bytes the guard keeps free.
func (g *Guard) Reserve() uint64 { return g.reserve }

// Shares reports whether path lives on the guarded file system, so that
// writing there uses the space the guard keeps. A path not made yet is
// where its nearest existing parent is.
func (g *Guard) Shares(path string) bool {
	var st unix.Stat_t
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if err := unix.Stat(p, &st); err == nil {
			return st.Dev == g.dev
		}
		if p == filepath.Dir(p) {
			return false
		}
	}
}

// Free reports the bytes available on the guarded file system, as last
// measured (measuring again if that is older than refresh).
func (g *Guard) Free() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.measureLocked(time.Now(), false)
	return g.free
}

// Refused counts the writes and changes refused since the guard was made.
func (g *Guard) Refused() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.refused
}

// Write lets a write of n bytes through when at least the reserve stays
// free after it and after every write let through and not yet done; else
// it returns an error wrapping ENOSPC. Call done once the write is made
// (or has failed).
func (g *Guard) Write(n int64) (done func(), err error) {
	return g.allow(n, rule{keep: g.reserve, reclaim: true, count: true})
}

// WriteIfRoom is Write for what may just be left undone (a block for the
// disk cache): it never asks the reclaimer for room.
func (g *Guard) WriteIfRoom(n int64) (done func(), err error) {
	return g.allow(n, rule{keep: g.reserve, count: true})
}

// Freeing is Write for what frees or moves space (deletions, renames,
// uploads of staged blocks): it goes on until a quarter of the reserve is
// left.
func (g *Guard) Freeing(n int64) (done func(), err error) {
	return g.allow(n, rule{keep: g.reserve / 4, reclaim: true, count: true})
}

// Staged is Write for data that leaves this file system again: a staging
// log in front of stores elsewhere, whose writers wait for uploads to free
// space rather than fail. It stops at half the reserve more, so that the
// log never takes the room that new files and the metadata's own writes
// need, which nothing takes away again. Its refusals are not counted, nor
// logged as such: the log waits and says so.
func (g *Guard) Staged(n int64) (done func(), err error) {
	return g.allow(n, rule{keep: g.reserve + g.reserve/2, reclaim: true})
}

// Check is Write or Freeing of nothing: whether a small change (a
// metadata transaction) may be made.
func (g *Guard) Check(freeing bool) error {
	r := rule{keep: g.reserve, reclaim: true, count: true}
	if freeing {
		r.keep = g.reserve / 4
	}
	_, err := g.allow(0, r)
	return err
}

// rule is what allow lets through.
type rule struct {
	keep    uint64 // bytes that must stay free after the write
	reclaim bool   // ask the reclaimer for room before refusing
	count   bool   // a refusal counts, and the guard logs when it begins
}

func (g *Guard) allow(n int64, r rule) (func(), error) {
	size, keep := uint64(max(n, 0)), r.keep
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.measureLocked(now, false)
	if g.availLocked() < size+keep {
		// A deletion may just have made room: look again before refusing.
		g.measureLocked(now, true)
	}
	if avail := g.availLocked(); avail < size+keep && r.reclaim && len(g.reclaim) > 0 {
		// Ask for an eighth of the reserve more than is missing, so
		// that the next writes need not ask again.
		want, sources := int64(size+keep-avail+g.reserve/8), g.reclaim[:len(g.reclaim):len(g.reclaim)]
		g.mu.Unlock()
		var freed int64
		for _, give := range sources {
			if freed >= want {
				break
			}
			freed += give(want - freed)
		}
		g.mu.Lock()
		if freed > 0 {
			g.measureLocked(time.Now(), true)
		}
	}
	if avail := g.availLocked(); avail < size+keep {
		if !r.count {
			return nil, g.noSpace(avail, size, keep)
		}
		if !g.short {
			g.short = true
			g.log.Warn("the file system under the volume's metadata is nearly full: refusing new data and files (ENOSPC) until space is freed",
				"dir", g.dir, "free", avail, "reserve", g.reserve)
		}
		g.refused++
		return nil, g.noSpace(avail, size, keep)
	}
	if g.short && g.availLocked() >= size+g.reserve+g.reserve/8 {
		// Only once clearly above the reserve: small changes that
		// still fit must not make the log flap.
		g.short = false
		g.log.Info("free space above the reserve again: new data and files accepted", "dir", g.dir, "free", g.availLocked())
	}
	if size == 0 {
		return func() {}, nil
	}
	g.inflight += size
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			// Until the next measurement, which sees it, a finished
			// write still counts.
			g.inflight -= size
			g.since += size
		})
	}, nil
}

// noSpace is the error for a write of size refused with avail bytes
// free, keep of which must stay free.
func (g *Guard) noSpace(avail, size, keep uint64) error {
	if size == 0 {
		return fmt.Errorf("%d bytes free on the file system of %s, less than the %d kept free there for the metadata (reserve %d): %w",
			avail, g.dir, keep, g.reserve, syscall.ENOSPC)
	}
	return fmt.Errorf("%d bytes free on the file system of %s, too few for %d more and the %d kept free there for the metadata (reserve %d): %w",
		avail, g.dir, size, keep, g.reserve, syscall.ENOSPC)
}

// availLocked is the space left for new writes: what the last measurement
// found, less the writes it cannot have seen.
func (g *Guard) availLocked() uint64 {
	used := g.inflight + g.since
	return g.free - min(g.free, used)
}

// measureLocked measures the free space again if the last measurement is
// older than refresh, or always with force. A failed statfs keeps the old
// figure.
func (g *Guard) measureLocked(now time.Time, force bool) {
	if !force && now.Sub(g.checked) < refresh {
		return
	}
	var st unix.Statfs_t
	if err := g.statfs(g.dir, &st); err != nil {
		g.log.Debug("statfs", "dir", g.dir, "err", err)
		return
	}
	g.free, g.checked, g.since = st.Bavail*uint64(st.Bsize), now, 0
}
