package meta

import (
	"bufio"
	"fmt"
	"io"
	"os"
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

// rescanInterval is how often the memory map is read even when no new log
// file appeared (Badger may map a file again, say after truncating a full
// value log). Otherwise it is read only after Badger made a log file: the
// map has a line for every mapping, and Badger maps every table (some
// 5,000-10,000 for the metadata of a billion files; about 1.5 us each to
// read), and the kernel holds the process's mmap lock while it writes it.
const rescanInterval = time.Minute

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
	files := newLogFiles(dir)
	a.done.Add(1)
	go func() {
		defer a.done.Done()
		t := time.NewTicker(adviseInterval)
		defer t.Stop()
		var scanned time.Time
		again := false
		for {
			// A new file's mapping follows its creation at once, but
			// the next tick looks again in case it came just after.
			grew := files.grew()
			if grew || again || time.Since(scanned) >= rescanInterval {
				adviseLogs(dir)
				scanned = time.Now()
			}
			again = grew
			select {
			case <-a.stop:
				return
			case <-t.C:
			}
		}
	}()
	return a
}

// logFiles follows the newest memtable log and value log of a Badger
// directory. Badger numbers each kind in sequence ("00007.mem",
// "000003.vlog"), so a new one is found by looking for the next number,
// without listing a directory that holds every table.
type logFiles struct {
	dir       string
	mem, vlog int // highest number seen of each kind
}

const maxLogBurst = 64 // new files of one kind grew looks for per call

// newLogFiles lists dir once for the highest numbers there now.
func newLogFiles(dir string) *logFiles {
	l := &logFiles{dir: dir}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		for _, k := range l.kinds() {
			if n, ok := k.number(e.Name()); ok {
				*k.last = max(*k.last, n)
			}
		}
	}
	return l
}

type logKind struct {
	last   *int
	width  int
	suffix string
}

func (l *logFiles) kinds() []logKind {
	return []logKind{{&l.mem, 5, ".mem"}, {&l.vlog, 6, ".vlog"}}
}

// number parses a file name of this kind.
func (k logKind) number(name string) (int, bool) {
	digits, ok := strings.CutSuffix(name, k.suffix)
	if !ok || digits == "" {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	return n, err == nil && n >= 0
}

// grew reports whether Badger has made log files since the last call (or
// since newLogFiles), and moves past them.
func (l *logFiles) grew() bool {
	grew := false
	for _, k := range l.kinds() {
		for range maxLogBurst {
			name := fmt.Sprintf("%0*d%s", k.width, *k.last+1, k.suffix)
			if _, err := os.Lstat(filepath.Join(l.dir, name)); err != nil {
				break
			}
			*k.last++
			grew = true
		}
	}
	return grew
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
