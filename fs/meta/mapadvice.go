package meta

import (
	"bufio"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Badger writes its value log and the write-ahead logs of its memtables
// through shared memory mappings, and Sync is an msync of them. On kernels
// whose page cache uses large folios (Linux 6.x on ext4 and XFS), a fault in
// a mapping with the default read-around can bring in a folio of up to
// 2 MiB, and msync writes back whole dirty folios: a commit of a few KiB
// followed by fsync() then writes megabytes. Measured on this project's
// machine (random 4 KiB writes each followed by fsync, 10 s): 9.7-15.5 GB
// written without the advice below, 0.8-1.1 GB with it.
//
// Badger gives no hook on its mappings, so a goroutine finds them in the
// process's memory map and marks them MADV_RANDOM, which makes later
// faults bring in single pages. The advice only ever changes read-around,
// so applying it to a range that Badger has just unmapped and something
// else has mapped is harmless; that is why nothing stronger (such as
// MADV_DONTNEED) is ever applied this way.

// adviseInterval is how often new mappings are looked for: Badger maps a
// new memtable log every 32 MiB of metadata written and a new value log
// file every 256 MiB, and until it is advised a new mapping may still get
// large folios.
const adviseInterval = time.Second

// adviser marks Badger's log mappings for random access until stopped.
type adviser struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     sync.WaitGroup
}

// startAdviser starts advising the logs of the database in dir (a no-op
// on systems without madvise).
func startAdviser(dir string) *adviser {
	a := &adviser{stop: make(chan struct{})}
	if !canAdvise {
		return a
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	// The memory map names files by their resolved path.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	a.done.Add(1)
	go func() {
		defer a.done.Done()
		t := time.NewTicker(adviseInterval)
		defer t.Stop()
		for {
			adviseLogs(dir)
			select {
			case <-a.stop:
				return
			case <-t.C:
			}
		}
	}()
	return a
}

// close stops the goroutine and waits for it; closing again does nothing.
func (a *adviser) close() {
	a.stopOnce.Do(func() { close(a.stop) })
	a.done.Wait()
}

// mapping is one line of /proc/self/maps that adviseLogs acts on.
type mapping struct {
	start, end uintptr
	path       string
}

// logMappings returns the shared mappings, listed in maps (the format of
// /proc/PID/maps), of Badger log files (*.vlog, *.mem) directly in dir.
func logMappings(maps io.Reader, dir string) []mapping {
	var out []mapping
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// start-end perms offset dev inode      path
		f := strings.SplitN(sc.Text(), " ", 6)
		if len(f) < 6 || len(f[1]) != 4 || f[1][3] != 's' {
			continue
		}
		path := strings.TrimLeft(f[5], " ")
		if filepath.Dir(path) != dir {
			continue
		}
		if ext := filepath.Ext(path); ext != ".vlog" && ext != ".mem" {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, mapping{start: uintptr(start), end: uintptr(end), path: path})
	}
	return out
}
