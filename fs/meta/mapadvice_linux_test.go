package meta

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
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

// TestBadgerNewLogsAdvised: a memtable log Badger makes after opening
// (the adviser no longer reads the memory map every second, only once it
// sees a new log file) is advised too.
func TestBadgerNewLogsAdvised(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := openBadger(dir, false, func(o badger.Options) badger.Options { return o.WithMemTableSize(1 << 20) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = kv.Close() }()
	first := randomFlags(t, dir, ".mem")
	val := make([]byte, 500)
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		mems := randomFlags(t, dir, ".mem")
		fresh, advised := 0, true
		for p, rr := range mems {
			if _, ok := first[p]; !ok {
				fresh++
				advised = advised && rr
			}
		}
		if fresh > 0 && advised {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("memtable logs made after opening not all advised after 10 s: at first %v, now %v", first, mems)
		}
		if fresh == 0 {
			// Fill the memtable until Badger makes a new one.
			err := kv.Update(ctx, func(t Txn) error {
				for j := range 200 {
					if err := t.Set(fmt.Appendf(nil, "k%d-%d", i, j), val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			continue
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkAdviseLogs: one read of the memory map by the adviser, in a
// process with 10,000 more mappings (what a large database's tables add:
// Badger maps every table).
func BenchmarkAdviseLogs(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "f"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		b.Fatal(err)
	}
	for range 10000 {
		m, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = unix.Munmap(m) }()
	}
	dir := b.TempDir()
	for b.Loop() {
		adviseLogs(dir)
	}
}
