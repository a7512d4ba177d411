package meta

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// randomFlags returns, for each mapping of a file named *ext in dir, whether
// the kernel has it marked for random access ("rr" in smaps' VmFlags).
func randomFlags(t *testing.T, dir, ext string) map[string]bool {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	out := map[string]bool{}
	var cur string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// A mapping's first line, "start-end perms offset dev inode [path]",
		// is followed by "Key: value" lines.
		if fields := strings.Fields(line); len(fields) >= 5 && !strings.HasSuffix(fields[0], ":") {
			cur = ""
			if p := fields[len(fields)-1]; len(fields) > 5 && filepath.Dir(p) == dir && filepath.Ext(p) == ext {
				cur = p
				out[cur] = false
			}
			continue
		}
		if cur != "" && strings.HasPrefix(line, "VmFlags:") {
			out[cur] = strings.Contains(line+" ", " rr ")
		}
	}
	return out
}

// TestBadgerLogsAdvisedRandom: a database opened for writing gets its value
// log and memtable log mappings marked for random access (so that msync
// writes back pages, not large folios), and a mapping of a like-named file
// elsewhere is left alone.
func TestBadgerLogsAdvisedRandom(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "meta")
	other := filepath.Join(dir, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	// A foreign shared mapping whose name looks like a value log.
	foreign, err := os.Create(filepath.Join(other, "000001.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	if err := foreign.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(foreign.Fd()), 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unix.Munmap(mem) }()

	kv, err := OpenBadger(db, false)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = kv.Close() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		vlogs, mems := randomFlags(t, db, ".vlog"), randomFlags(t, db, ".mem")
		advised := len(vlogs) > 0 && len(mems) > 0
		for _, rr := range vlogs {
			advised = advised && rr
		}
		for _, rr := range mems {
			advised = advised && rr
		}
		if advised {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Badger's logs not advised for random access after 5 s: value logs %v, memtable logs %v", vlogs, mems)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for p, rr := range randomFlags(t, other, ".vlog") {
		if rr {
			t.Errorf("%s, outside the database, was advised", p)
		}
	}
	// Close stops the adviser, and closing again is harmless.
	if err := kv.Close(); err != nil {
		t.Fatal(err)
	}
	_ = kv.Close()
}
