package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const piece = diskPieceSize

// testData returns n pseudo-random bytes determined by seed.
func testData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 42))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func keyOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// synthKey returns a valid key that is not the hash of anything in particular.
func synthKey(i int) string { return fmt.Sprintf("%064x", i) }

func openTestDisk(t testing.TB, dir string, maxBytes int64) *Disk {
	t.Helper()
	d, err := OpenDisk(dir, maxBytes, nil)
	if err != nil {
		t.Fatalf("OpenDisk: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// onDisk walks dir and returns the total size and number of entry files, and
// the names of any other files (the lock file aside).
func onDisk(t *testing.T, dir string) (total int64, entries int64, others []string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() || path == filepath.Join(dir, diskLockFile) {
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		name := de.Name()
		if _, kerr := parseDiskKey(name); kerr == nil && rel == filepath.Join(name[0:2], name[2:4], name) {
			total += info.Size()
			entries++
		} else {
			others = append(others, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total, entries, others
}

// checkConsistent fails unless the files on disk match the index exactly and
// fit in the limit.
func checkConsistent(t *testing.T, d *Disk) {
	t.Helper()
	st := d.Stats()
	if st.Bytes > d.maxBytes {
		t.Fatalf("Stats().Bytes = %d > max %d", st.Bytes, d.maxBytes)
	}
	total, n, others := onDisk(t, d.dir)
	if total != st.Bytes || n != st.Entries {
		t.Fatalf("on disk %d bytes in %d files, Stats says %d bytes in %d entries", total, n, st.Bytes, st.Entries)
	}
	if len(others) > 0 {
		t.Fatalf("unexpected files in cache dir: %v", others)
	}
}

func TestDiskLayoutSizes(t *testing.T) {
	for _, n := range []int64{0, 1, piece - 1, piece, piece + 1, 4 << 20, 4<<20 + 3, 1 << 30} {
		if got, ok := diskDataLen(diskFileSize(n)); !ok || got != n {
			t.Errorf("diskDataLen(diskFileSize(%d)) = %d, %v", n, got, ok)
		}
	}
	// Every file size either maps back to itself or is refused.
	valid := 0
	for size := int64(0); size < 3*(piece+4)+100; size++ {
		n, ok := diskDataLen(size)
		if !ok {
			continue
		}
		valid++
		if diskFileSize(n) != size {
			t.Fatalf("diskDataLen(%d) = %d, whose file size is %d", size, n, diskFileSize(n))
		}
	}
	want := 0
	for n := int64(0); diskFileSize(n) < 3*(piece+4)+100; n++ {
		want++
	}
	if valid != want {
		t.Fatalf("%d valid sizes, want %d", valid, want)
	}
	if _, ok := diskDataLen(diskHeaderSize + 3); ok {
		t.Fatal("size 27 accepted")
	}
}

func TestDiskRoundTrip(t *testing.T) {
	d := openTestDisk(t, t.TempDir(), 64<<20)
	for _, n := range []int{0, 1, piece - 1, piece, piece + 1, 3*piece + 17, 4 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := testData(uint64(n), n)
			key := keyOf(data)
			if err := d.Add(key, data); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(d.dir, key[:2], key[2:4], key)); err != nil {
				t.Fatalf("entry file not in fan-out layout: %v", err)
			}
			got, ok := d.Get(key)
			if !ok || !bytes.Equal(got, data) {
				t.Fatalf("Get: ok=%v, len %d, equal %v", ok, len(got), bytes.Equal(got, data))
			}
			ranges := []struct {
				name     string
				off, len int
			}{
				{"all", 0, n},
				{"first byte", 0, 1},
				{"last byte", n - 1, 1},
				{"middle 4K", n / 2, 4096},
				{"across 1st boundary", piece - 1, 2},
				{"three pieces", piece - 10, piece + 20},
				{"whole 2nd piece", piece, piece},
				{"2nd piece and a byte", piece, piece + 1},
				{"across 2nd boundary", 2*piece - 1, 2},
				{"past the end", n - 5, 10},
				{"at the end", n, 10},
				{"beyond the end", n + 100, 10},
				{"all and more", 0, n + 10},
				{"empty", 0, 0},
				{"negative offset", -1, 4},
			}
			for _, r := range ranges {
				if r.off < -1 || r.len < 0 {
					continue // not meaningful for this size
				}
				p := bytes.Repeat([]byte{0xee}, r.len)
				got, size, ok := d.ReadAt(key, p, int64(r.off))
				if r.off < 0 {
					if ok || got != 0 {
						t.Errorf("%s: ReadAt = %d, %v; want 0, false", r.name, got, ok)
					}
					continue
				}
				lo, hi := min(r.off, n), min(r.off+r.len, n)
				want := data[lo:hi]
				if !ok || got != len(want) || !bytes.Equal(p[:got], want) || size != int64(n) {
					t.Errorf("%s [%d,+%d): ReadAt = %d, size %d, %v; want %d, size %d, true (data equal %v)",
						r.name, r.off, r.len, got, size, ok, len(want), n, bytes.Equal(p[:got], want))
				}
				if tail := p[got:]; len(tail) > 0 && !bytes.Equal(tail, bytes.Repeat([]byte{0xee}, len(tail))) {
					t.Errorf("%s: ReadAt wrote past the bytes it returned", r.name)
				}
			}
			if st := d.Stats(); st.Corrupt != 0 {
				t.Fatalf("Corrupt = %d", st.Corrupt)
			}
		})
	}
	checkConsistent(t, d)
}

func TestDiskInvalidKeys(t *testing.T) {
	dir := t.TempDir()
	d := openTestDisk(t, dir, 1<<20)
	good := synthKey(7)
	for _, key := range []string{
		"",
		"abc",
		good[:63],
		good + "0",
		strings.ToUpper(keyOf([]byte("x"))),
		good[:63] + "g",
		"../../../../../../../../../../../../../../../../../../etc/passwd0",
		strings.Repeat(" ", 64),
		good[:62] + "é",
	} {
		if err := d.Add(key, []byte("data")); err == nil {
			t.Errorf("Add(%q) succeeded", key)
		}
		if _, ok := d.Get(key); ok {
			t.Errorf("Get(%q) hit", key)
		}
		if _, _, ok := d.ReadAt(key, make([]byte, 1), 0); ok {
			t.Errorf("ReadAt(%q) hit", key)
		}
		d.Remove(key)
		before := d.Stats().Dropped
		d.Offer(key, []byte("data"))
		if d.Stats().Dropped != before+1 {
			t.Errorf("Offer(%q) not counted as dropped", key)
		}
	}
	if st := d.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("invalid keys cached something: %+v", st)
	}
	checkConsistent(t, d)
}

func TestOpenDiskErrors(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	readOnly := filepath.Join(base, "ro")
	if err := os.Mkdir(readOnly, 0o500); err != nil {
		t.Fatal(err)
	}
	// A cache used before, whose temporary directory became read-only.
	roTmp := filepath.Join(base, "rotmp")
	d, err := OpenDisk(roTmp, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := os.Chmod(filepath.Join(roTmp, diskTmpDir), 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(roTmp, diskTmpDir), 0o700) })
	tests := []struct {
		name     string
		dir      string
		maxBytes int64
		want     string // in the error
		skip     bool
	}{
		{"zero size", filepath.Join(base, "a"), 0, "must be positive", false},
		{"negative size", filepath.Join(base, "a"), -1, "must be positive", false},
		{"no dir", "", 1 << 20, "no directory", false},
		{"dir is a file", file, 1 << 20, "not a directory", false},
		{"dir below a file", filepath.Join(file, "sub"), 1 << 20, "not a directory", false},
		{"read-only dir", readOnly, 1 << 20, "permission denied", os.Geteuid() == 0},
		{"read-only tmp", roTmp, 1 << 20, "not writable", os.Geteuid() == 0},
		{"proc", "/proc/objfs-disk-cache-test", 1 << 20, "disk cache", runtime.GOOS != "linux"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skip {
				t.Skip("not applicable here (root ignores permissions, or not Linux)")
			}
			d, err := OpenDisk(tt.dir, tt.maxBytes, nil)
			if err == nil {
				d.Close()
				t.Fatal("OpenDisk succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	t.Run("in use", func(t *testing.T) {
		dir := t.TempDir()
		d := openTestDisk(t, dir, 1<<20)
		if d2, err := OpenDisk(dir, 1<<20, nil); err == nil {
			d2.Close()
			t.Fatal("second OpenDisk of the same dir succeeded")
		} else if !strings.Contains(err.Error(), "in use") {
			t.Fatalf("error %q does not say in use", err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		d3, err := OpenDisk(dir, 1<<20, nil)
		if err != nil {
			t.Fatalf("reopen after Close: %v", err)
		}
		d3.Close()
	})
}

func TestDiskEviction(t *testing.T) {
	tests := []struct {
		name     string
		maxBytes int64
		sizes    []int // added in order
		want     []int // indexes of the entries left
	}{
		{"fits", 4 * diskFileSize(1000), []int{1000, 1000, 1000, 1000}, []int{0, 1, 2, 3}},
		{"evicts oldest", 4 * diskFileSize(1000), []int{1000, 1000, 1000, 1000, 1000}, []int{1, 2, 3, 4}},
		{"evicts several", 4 * diskFileSize(1000), []int{1000, 1000, 1000, 2500}, []int{2, 3}},
		{"evicts all but the new", 3 * diskFileSize(1000), []int{1000, 1000, 1000, 2500}, []int{3}},
		{"big blocks", 2*diskFileSize(piece+1) + 40, []int{piece + 1, piece + 1, piece + 1, 10}, []int{1, 2, 3}},
		{"oversized not cached", diskFileSize(1000), []int{1000, 1001, 500}, []int{2}},
		{"exactly the limit", diskFileSize(1000), []int{1000}, []int{0}},
		{"empty blocks", 3 * diskFileSize(0), []int{0, 0, 0, 0}, []int{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := openTestDisk(t, t.TempDir(), tt.maxBytes)
			keys := make([]string, len(tt.sizes))
			for i, n := range tt.sizes {
				keys[i] = synthKey(i)
				if err := d.Add(keys[i], testData(uint64(i), n)); err != nil {
					t.Fatal(err)
				}
				checkConsistent(t, d)
			}
			var got []int
			for i, k := range keys {
				if _, ok := d.Get(k); ok {
					got = append(got, i)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("entries left %v, want %v", got, tt.want)
			}
			st := d.Stats()
			if st.Entries != int64(len(tt.want)) {
				t.Fatalf("Entries = %d, want %d", st.Entries, len(tt.want))
			}
		})
	}
}

func TestDiskLRUOrder(t *testing.T) {
	touches := map[string]func(d *Disk, key string) bool{
		"Get":    func(d *Disk, key string) bool { _, ok := d.Get(key); return ok },
		"ReadAt": func(d *Disk, key string) bool { _, _, ok := d.ReadAt(key, make([]byte, 10), 5); return ok },
		"Add":    func(d *Disk, key string) bool { return d.Add(key, testData(0, 1000)) == nil },
	}
	for name, touch := range touches {
		t.Run(name, func(t *testing.T) {
			d := openTestDisk(t, t.TempDir(), 3*diskFileSize(1000))
			a, b, c, e := synthKey(1), synthKey(2), synthKey(3), synthKey(4)
			for _, k := range []string{a, b, c} {
				if err := d.Add(k, testData(0, 1000)); err != nil {
					t.Fatal(err)
				}
			}
			if !touch(d, a) { // b becomes the least recently used
				t.Fatal("touch failed")
			}
			if err := d.Add(e, testData(0, 1000)); err != nil {
				t.Fatal(err)
			}
			for k, want := range map[string]bool{a: true, b: false, c: true, e: true} {
				if _, ok := d.Get(k); ok != want {
					t.Errorf("Get(%s...) present = %v, want %v", k[60:], ok, want)
				}
			}
			if ev := d.Stats().Evictions; ev != 1 {
				t.Errorf("Evictions = %d, want 1", ev)
			}
			checkConsistent(t, d)
		})
	}
}

func TestDiskCorruption(t *testing.T) {
	n := 3*piece + 100 // four pieces, the last one short
	hl := int(diskHeaderLen(int64(n)))
	flip := func(off int) func(string) error {
		return func(path string) error {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, int64(off)); err != nil {
				return err
			}
			b[0] ^= 0x01
			_, err = f.WriteAt(b, int64(off))
			return err
		}
	}
	truncate := func(size int) func(string) error {
		return func(path string) error { return os.Truncate(path, int64(size)) }
	}
	fileSize := int(diskFileSize(int64(n)))
	tests := []struct {
		name   string
		damage func(path string) error
		// whether a ReadAt of the first 4 KiB, in piece 0, still succeeds
		firstPieceOK bool
	}{
		{"data byte in piece 0", flip(hl + 10), false},
		{"data byte in piece 1", flip(hl + piece + 7), true},
		{"data byte in last piece", flip(hl + 3*piece + 99), true},
		{"piece checksum", flip(diskHeaderSize + 4*2), false},
		{"magic", flip(0), false},
		{"version", flip(4), false},
		{"length field", flip(9), false},
		{"piece size field", flip(17), false},
		{"header checksum", flip(21), false},
		{"truncated by a byte", truncate(fileSize - 1), false},
		{"truncated into the header", truncate(10), false},
		{"emptied", truncate(0), false},
		{"extended", func(path string) error {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.Write([]byte{0})
			return err
		}, false},
	}
	reads := map[string]func(d *Disk, key string) bool{
		"Get":        func(d *Disk, key string) bool { _, ok := d.Get(key); return ok },
		"ReadAt all": func(d *Disk, key string) bool { _, _, ok := d.ReadAt(key, make([]byte, n), 0); return ok },
		// A partial first piece, two whole pieces, a partial last piece.
		"ReadAt span": func(d *Disk, key string) bool {
			_, _, ok := d.ReadAt(key, make([]byte, 2*piece+2), piece-1)
			return ok
		},
	}
	data := testData(99, n)
	key := keyOf(data)
	for _, tt := range tests {
		for rname, read := range reads {
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				d := openTestDisk(t, t.TempDir(), 16<<20)
				if err := d.Add(key, data); err != nil {
					t.Fatal(err)
				}
				path := d.path(key)
				if err := tt.damage(path); err != nil {
					t.Fatal(err)
				}
				if read(d, key) {
					t.Fatal("damaged entry read as a hit")
				}
				st := d.Stats()
				if st.Corrupt != 1 || st.Entries != 0 || st.Bytes != 0 {
					t.Fatalf("Stats = %+v, want Corrupt 1 and no entries", st)
				}
				if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("damaged file still there: %v", err)
				}
				checkConsistent(t, d)
				// The block can be cached again.
				if err := d.Add(key, data); err != nil {
					t.Fatal(err)
				}
				if got, ok := d.Get(key); !ok || !bytes.Equal(got, data) {
					t.Fatal("re-added block not readable")
				}
			})
		}
		t.Run(tt.name+"/first piece only", func(t *testing.T) {
			d := openTestDisk(t, t.TempDir(), 16<<20)
			if err := d.Add(key, data); err != nil {
				t.Fatal(err)
			}
			if err := tt.damage(d.path(key)); err != nil {
				t.Fatal(err)
			}
			p := make([]byte, 4096)
			got, _, ok := d.ReadAt(key, p, 100)
			if ok != tt.firstPieceOK {
				t.Fatalf("ReadAt of intact piece 0: ok = %v, want %v", ok, tt.firstPieceOK)
			}
			if ok && (got != len(p) || !bytes.Equal(p, data[100:100+len(p)])) {
				t.Fatal("ReadAt of intact piece 0 returned wrong data")
			}
			wantCorrupt := uint64(0)
			if !ok {
				wantCorrupt = 1
			}
			if st := d.Stats(); st.Corrupt != wantCorrupt {
				t.Fatalf("Corrupt = %d, want %d", st.Corrupt, wantCorrupt)
			}
		})
	}
}

func TestDiskFileRemovedOutside(t *testing.T) {
	d := openTestDisk(t, t.TempDir(), 1<<20)
	data := testData(1, 5000)
	key := keyOf(data)
	if err := d.Add(key, data); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d.path(key)); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := d.ReadAt(key, make([]byte, 10), 0); ok {
		t.Fatal("ReadAt of a deleted file hit")
	}
	st := d.Stats()
	if st.Entries != 0 || st.Bytes != 0 || st.Corrupt != 0 || st.Misses != 1 {
		t.Fatalf("Stats = %+v, want the entry forgotten, one miss, nothing corrupt", st)
	}
}

func TestDiskRemove(t *testing.T) {
	d := openTestDisk(t, t.TempDir(), 1<<20)
	a, b := testData(1, 3000), testData(2, 4000)
	for _, blk := range [][]byte{a, b} {
		if err := d.Add(keyOf(blk), blk); err != nil {
			t.Fatal(err)
		}
	}
	d.Remove(keyOf(a))
	d.Remove(keyOf(a))
	d.Remove(synthKey(12345))
	if _, ok := d.Get(keyOf(a)); ok {
		t.Fatal("removed entry still readable")
	}
	if got, ok := d.Get(keyOf(b)); !ok || !bytes.Equal(got, b) {
		t.Fatal("other entry lost")
	}
	if st := d.Stats(); st.Entries != 1 || st.Bytes != diskFileSize(4000) {
		t.Fatalf("Stats = %+v", st)
	}
	checkConsistent(t, d)
}

// failAfter fails with ENOSPC once it has written limit bytes.
type failAfter struct {
	w     io.Writer
	limit int
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) <= f.limit {
		f.limit -= len(p)
		return f.w.Write(p)
	}
	n, _ := f.w.Write(p[:f.limit])
	f.limit = 0
	return n, &fs.PathError{Op: "write", Path: "cache", Err: syscall.ENOSPC}
}

func TestDiskAddDiskFull(t *testing.T) {
	d := openTestDisk(t, t.TempDir(), 16<<20)
	old := testData(1, 70000)
	if err := d.Add(keyOf(old), old); err != nil {
		t.Fatal(err)
	}
	before := d.Stats()
	data := testData(2, 3*piece)
	key := keyOf(data)
	for _, limit := range []int{0, 10, int(diskHeaderLen(3 * piece)), 100000} {
		d.wrapWriter = func(w io.Writer) io.Writer { return &failAfter{w: w, limit: limit} }
		err := d.Add(key, data)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("limit %d: Add error = %v, want ENOSPC", limit, err)
		}
		if st := d.Stats(); st != before {
			t.Fatalf("limit %d: Stats changed: %+v -> %+v", limit, before, st)
		}
		if _, ok := d.Get(key); ok {
			t.Fatalf("limit %d: failed block readable", limit)
		}
		before = d.Stats() // the Get above counted a miss
		checkConsistent(t, d)
	}
	d.wrapWriter = nil
	if err := d.Add(key, data); err != nil {
		t.Fatal(err)
	}
	if got, ok := d.Get(key); !ok || !bytes.Equal(got, data) {
		t.Fatal("block not readable once the disk has room")
	}
}

func TestDiskRestart(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDisk(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	var blocks [][]byte
	for i := range 5 {
		blk := testData(uint64(i), 1000+i) // distinct sizes, so Bytes checks more
		blocks = append(blocks, blk)
		if err := d.Add(keyOf(blk), blk); err != nil {
			t.Fatal(err)
		}
		// Block i was last used i hours ago... reversed: block 0 is the oldest.
		mt := time.Now().Add(time.Duration(i-10) * time.Hour)
		if err := os.Chtimes(d.path(keyOf(blk)), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	want := d.Stats()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Debris of a crash: temporary files, a torn entry of impossible size,
	// and a foreign file that must be left alone.
	for _, name := range []string{"add-123", "add-456"} {
		if err := os.WriteFile(filepath.Join(dir, diskTmpDir, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	torn := synthKey(0xabcdef)
	tornPath := filepath.Join(dir, torn[:2], torn[2:4], torn)
	if err := os.MkdirAll(filepath.Dir(tornPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tornPath, []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, torn[:2], "README")
	if err := os.WriteFile(foreign, []byte("not ours"), 0o600); err != nil {
		t.Fatal(err)
	}

	d = openTestDisk(t, dir, 1<<20)
	st := d.Stats()
	if st.Bytes != want.Bytes || st.Entries != want.Entries || st.Corrupt != 1 {
		t.Fatalf("after reopen Stats = %+v, want Bytes %d, Entries %d, Corrupt 1", st, want.Bytes, want.Entries)
	}
	for i, blk := range blocks {
		if got, ok := d.Get(keyOf(blk)); !ok || !bytes.Equal(got, blk) {
			t.Fatalf("block %d not readable after reopen", i)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, diskTmpDir)); len(ents) != 0 {
		t.Fatalf("temporary files left: %d", len(ents))
	}
	if _, err := os.Stat(tornPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("torn entry not removed: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("foreign file touched: %v", err)
	}
	os.Remove(foreign)
	checkConsistent(t, d)
	// The Gets above refreshed every mtime (they were hours old), in block
	// order; put the original order back so the next check is about the
	// scan, not the clock's resolution.
	for i, blk := range blocks {
		mt := time.Now().Add(time.Duration(i-10) * time.Hour)
		if err := os.Chtimes(d.path(keyOf(blk)), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	// A lower limit evicts the oldest down to it.
	limit := diskFileSize(1003) + diskFileSize(1004)
	d = openTestDisk(t, dir, limit)
	st = d.Stats()
	if st.Entries != 2 || st.Bytes != limit || st.Evictions != 3 {
		t.Fatalf("after reopen with a lower limit Stats = %+v, want 2 entries, %d bytes, 3 evictions", st, limit)
	}
	for i, blk := range blocks {
		_, ok := d.Get(keyOf(blk))
		if want := i >= 3; ok != want {
			t.Errorf("block %d present = %v, want %v", i, ok, want)
		}
	}
	checkConsistent(t, d)
}

func TestDiskTouchMtime(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDisk(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := testData(3, 100)
	key := keyOf(data)
	if err := d.Add(key, data); err != nil {
		t.Fatal(err)
	}
	path := d.path(key)
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	d.Close()
	mtime := func() time.Time {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}

	d = openTestDisk(t, dir, 1<<20)
	// The entry was last touched two hours ago: a hit refreshes the mtime.
	if _, _, ok := d.ReadAt(key, make([]byte, 10), 0); !ok {
		t.Fatal("miss")
	}
	if m := mtime(); time.Since(m) > time.Minute {
		t.Fatalf("mtime not refreshed by a hit: %v", m)
	}
	// Within the minute, hits leave the file alone.
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Get(key); !ok {
		t.Fatal("miss")
	}
	if m := mtime(); m.Sub(old).Abs() > time.Second {
		t.Fatalf("mtime changed by a second hit within a minute: %v", m)
	}
}

func TestDiskClosed(t *testing.T) {
	d := openTestDisk(t, t.TempDir(), 1<<20)
	data := testData(1, 10)
	if err := d.Add(keyOf(data), data); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Add(synthKey(1), data); !errors.Is(err, ErrDiskClosed) {
		t.Fatalf("Add after Close: %v, want ErrDiskClosed", err)
	}
	if _, ok := d.Get(keyOf(data)); ok {
		t.Fatal("Get after Close hit")
	}
	d.Remove(keyOf(data)) // a no-op: the entry stays for the next open
	if _, err := os.Stat(d.path(keyOf(data))); err != nil {
		t.Fatalf("Close or Remove after Close deleted an entry: %v", err)
	}
	dropped := d.Stats().Dropped
	d.Offer(synthKey(2), data)
	if d.Stats().Dropped != dropped+1 {
		t.Fatal("Offer after Close not counted as dropped")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDiskOffer(t *testing.T) {
	d := openTestDisk(t, t.TempDir(), 256<<20)
	var blocks [][]byte
	for i := range 10 {
		blk := testData(uint64(i), 1000*i)
		blocks = append(blocks, blk)
		d.Offer(keyOf(blk), blk)
	}
	waitFor(t, "offered blocks", func() bool { return d.Stats().Entries == 10 })
	for i, blk := range blocks {
		if got, ok := d.Get(keyOf(blk)); !ok || !bytes.Equal(got, blk) {
			t.Fatalf("offered block %d not readable", i)
		}
	}
	// Offering a cached block again queues nothing.
	d.Offer(keyOf(blocks[3]), blocks[3])
	if q := d.queued.Load(); q != 0 {
		t.Fatalf("queued %d bytes for a cached block", q)
	}

	// A flood while the writer is stuck: exactly the queue bound is kept.
	const size = 1 << 20
	const flood = 100
	shared := testData(7, size)
	d.fileMu.Lock() // the writer blocks before renaming its first block
	for i := range flood {
		d.Offer(synthKey(1000+i), shared)
		if q := d.queued.Load(); q > diskOfferQueueBytes {
			d.fileMu.Unlock()
			t.Fatalf("queued %d bytes > bound %d", q, diskOfferQueueBytes)
		}
	}
	accepted := diskOfferQueueBytes / size
	st := d.Stats()
	q := d.queued.Load()
	d.fileMu.Unlock()
	if st.Dropped != uint64(flood-accepted) || q != int64(accepted*size) {
		t.Fatalf("flood of %d: Dropped %d, queued %d bytes; want %d dropped, %d bytes",
			flood, st.Dropped, q, flood-accepted, accepted*size)
	}
	waitFor(t, "queue to drain", func() bool { return d.pending.Load() == 0 })
	if st := d.Stats(); st.Entries != int64(10+accepted) {
		t.Fatalf("Entries = %d, want %d", st.Entries, 10+accepted)
	}
	checkConsistent(t, d)
}

func TestDiskCloseStopsWriter(t *testing.T) {
	base := runtime.NumGoroutine()
	d, err := OpenDisk(t.TempDir(), 64<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	shared := testData(1, 100000)
	d.fileMu.Lock()
	for i := range 5 {
		d.Offer(synthKey(i), shared)
	}
	closed := make(chan error)
	go func() { closed <- d.Close() }()
	time.Sleep(10 * time.Millisecond)
	d.fileMu.Unlock()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung")
	}
	select {
	case <-d.done:
	default:
		t.Fatal("writer goroutine still running after Close")
	}
	// Every offered block was either written before Close or dropped.
	_, written, _ := onDisk(t, d.dir)
	if st := d.Stats(); written+int64(st.Dropped) != 5 || d.queued.Load() != 0 || d.pending.Load() != 0 {
		t.Fatalf("%d written + %d dropped != 5 offered (queued %d)", written, st.Dropped, d.queued.Load())
	}
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= base })
}

func TestDiskConcurrent(t *testing.T) {
	var blocks [][]byte
	for i := range 24 {
		blocks = append(blocks, testData(uint64(i), []int{0, 100, piece - 1, piece + 1, 3*piece + 5}[i%5]+i))
	}
	budget := 4*diskFileSize(piece) + 1000 // a handful of blocks: constant eviction
	d := openTestDisk(t, t.TempDir(), budget)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 400 {
				blk := blocks[r.IntN(len(blocks))]
				key := keyOf(blk)
				switch op := r.IntN(10); op {
				case 0, 1:
					if err := d.Add(key, blk); err != nil {
						t.Error(err)
						return
					}
				case 2:
					d.Offer(key, blk)
				case 3:
					d.Remove(key)
				case 4:
					if got, ok := d.Get(key); ok && !bytes.Equal(got, blk) {
						t.Error("Get returned wrong data")
						return
					}
				default:
					off := r.IntN(len(blk) + 1)
					p := make([]byte, r.IntN(2*piece))
					if n, _, ok := d.ReadAt(key, p, int64(off)); ok {
						want := blk[off:min(off+len(p), len(blk))]
						if n != len(want) || !bytes.Equal(p[:n], want) {
							t.Error("ReadAt returned wrong data")
							return
						}
					}
				}
				if st := d.Stats(); st.Bytes > budget {
					t.Errorf("Bytes %d > budget %d", st.Bytes, budget)
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "queue to drain", func() bool { return d.pending.Load() == 0 })
	checkConsistent(t, d)
	st := d.Stats()
	if st.Corrupt != 0 {
		t.Fatalf("Corrupt = %d in a clean run", st.Corrupt)
	}
	if st.Hits == 0 || st.Evictions == 0 {
		t.Fatalf("test did not exercise hits and evictions: %+v", st)
	}
	for _, blk := range blocks {
		if got, ok := d.Get(keyOf(blk)); ok && !bytes.Equal(got, blk) {
			t.Fatal("wrong data at the end")
		}
	}
	t.Logf("%+v", st)
}

func BenchmarkDiskReadAt4K(b *testing.B) {
	const blockSize = 4 << 20
	const nBlocks = 16
	d := openTestDisk(b, b.TempDir(), 2*nBlocks*blockSize)
	keys := make([]string, nBlocks)
	for i := range keys {
		blk := testData(uint64(i), blockSize)
		keys[i] = keyOf(blk)
		if err := d.Add(keys[i], blk); err != nil {
			b.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, 4096)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if n, _, ok := d.ReadAt(keys[r.IntN(nBlocks)], p, r.Int64N(blockSize-int64(len(p)))); !ok || n != len(p) {
			b.Fatal("miss")
		}
	}
}

func BenchmarkDiskGet4M(b *testing.B) {
	const blockSize = 4 << 20
	d := openTestDisk(b, b.TempDir(), 64<<20)
	blk := testData(1, blockSize)
	key := keyOf(blk)
	if err := d.Add(key, blk); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(blockSize)
	for b.Loop() {
		if _, ok := d.Get(key); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkDiskAdd4M(b *testing.B) {
	const blockSize = 4 << 20
	d := openTestDisk(b, b.TempDir(), 64<<20) // evicts once full
	blk := testData(1, blockSize)
	b.SetBytes(blockSize)
	i := 0
	for b.Loop() {
		if err := d.Add(synthKey(i), blk); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestDiskSpaceCheck: a block the space check refuses is not written, nor
// cached, and counts as dropped; one it admits is written, and its booking
// ended once it is.
func TestDiskSpaceCheck(t *testing.T) {
	dir := t.TempDir()
	d := openTestDisk(t, dir, 1<<20)
	room := false
	var booked, done int
	d.SetSpaceCheck(func(n int64) (func(), error) {
		if !room {
			return nil, syscall.ENOSPC
		}
		booked++
		return func() { done++ }, nil
	})
	data := testData(1, 5000)
	if err := d.Add(keyOf(data), data); err != nil {
		t.Fatalf("Add refused by the space check: %v, want nil (not cached)", err)
	}
	if _, ok := d.Get(keyOf(data)); ok {
		t.Fatal("a block the space check refused was cached")
	}
	if total, n, _ := onDisk(t, dir); total != 0 || n != 0 {
		t.Fatalf("%d bytes in %d entries on disk after a refusal", total, n)
	}
	if st := d.Stats(); st.Dropped != 1 {
		t.Errorf("Dropped %d, want 1", st.Dropped)
	}
	room = true
	if err := d.Add(keyOf(data), data); err != nil {
		t.Fatal(err)
	}
	if got, ok := d.Get(keyOf(data)); !ok || !bytes.Equal(got, data) {
		t.Fatal("an admitted block was not cached")
	}
	if booked != 1 || done != 1 {
		t.Errorf("%d bookings, %d ended, want 1 and 1", booked, done)
	}
	checkConsistent(t, d)
}

// TestDiskShrink: Shrink evicts least recently used entries until it has
// removed what was asked, and reports what it removed.
func TestDiskShrink(t *testing.T) {
	dir := t.TempDir()
	d := openTestDisk(t, dir, 1<<20)
	var keys []string
	for i := range 8 {
		data := testData(uint64(i), 10000)
		if err := d.Add(keyOf(data), data); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, keyOf(data))
	}
	before, _, _ := onDisk(t, dir)
	freed := d.Shrink(15000) // two entries
	after, n, _ := onDisk(t, dir)
	if freed != before-after || n != 6 {
		t.Fatalf("Shrink(15000) reported %d bytes, removed %d, %d entries left", freed, before-after, n)
	}
	for i, k := range keys {
		if _, ok := d.Get(k); ok != (i >= 2) {
			t.Errorf("entry %d cached: %v after Shrink, want %v (oldest go first)", i, ok, i >= 2)
		}
	}
	if got := d.Shrink(1 << 30); got != after {
		t.Errorf("Shrink of more than the cache holds: %d bytes, want all %d", got, after)
	}
	checkConsistent(t, d)
}
