package integration

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fallocCase is one fallocate(2) call and what it must leave.
type fallocCase struct {
	what        string
	mode        uint32
	off, length int64
	errno       error // nil: succeeds
}

// applyFalloc runs the cases on fd one after the other, keeping model (the
// file's expected bytes) in step, and checks the size after each.
func applyFalloc(t *testing.T, fd int, model []byte, cases []fallocCase) []byte {
	t.Helper()
	for _, tc := range cases {
		err := unix.Fallocate(fd, tc.mode, tc.off, tc.length)
		if (tc.errno == nil && err != nil) || (tc.errno != nil && !errors.Is(err, tc.errno)) {
			t.Errorf("fallocate %s: %v, want %v", tc.what, err, tc.errno)
		}
		if err == nil {
			end := tc.off + tc.length
			if tc.mode&unix.FALLOC_FL_KEEP_SIZE == 0 && end > int64(len(model)) {
				model = append(model, make([]byte, end-int64(len(model)))...)
			}
			if tc.mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) != 0 && tc.off < int64(len(model)) {
				clear(model[tc.off:min(end, int64(len(model)))])
			}
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != int64(len(model)) {
			t.Errorf("after fallocate %s: size %d, want %d", tc.what, st.Size, len(model))
		}
	}
	return model
}

func checkContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes differ from the model (%d bytes read, %d expected)", filepath.Base(path), countDiff(got, want), len(got), len(want))
	}
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestFallocate: fallocate(2) on the mount. Mode 0 extends a file with
// bytes that read as zeros and never shortens one; FALLOC_FL_KEEP_SIZE
// keeps the size; FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE make a
// range read as zeros, in a small (inline) file and in a file of blocks,
// where the range becomes a hole that SEEK_HOLE finds and whose blocks are
// released; what objfs does not do (collapsing a range) is EOPNOTSUPP with
// the data untouched. Everything reads back the same after a remount, and
// fsck is clean.
func TestFallocate(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	const (
		keep  = unix.FALLOC_FL_KEEP_SIZE
		punch = unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE
		zero  = unix.FALLOC_FL_ZERO_RANGE
	)
	files := []struct {
		name  string
		data  []byte
		cases []fallocCase
	}{
		{"small", randomBytes(6000, 1), []fallocCase{
			{"inside the file", 0, 0, 4096, nil},
			{"past the end", 0, 4096, 8192, nil},
			{"ending before the end", 0, 100, 10, nil},
			{"keep size past the end", keep, 0, 1 << 20, nil},
			{"punch", punch, 1000, 2000, nil},
			{"zero range past the end", zero, 12000, 1000, nil},
			{"zero range, size kept", zero | keep, 12500, 4000, nil},
			{"collapse range", unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096, unix.EOPNOTSUPP},
			{"punch without keep size", unix.FALLOC_FL_PUNCH_HOLE, 0, 4096, unix.EOPNOTSUPP},
		}},
		{"large", randomBytes(9<<20, 2), []fallocCase{
			{"punch a whole MiB", punch, 1 << 20, 1 << 20, nil},
			{"punch across a block boundary", punch, 4<<20 - 5000, 10000, nil},
			{"punch an unaligned piece", punch, 7<<20 + 3, 12345, nil},
			{"punch past the end", punch, 8 << 20, 4 << 20, nil},
			{"zero range growing the file", zero, 9<<20 - 100, 1 << 20, nil},
			{"punch it all", punch, 0, 20 << 20, nil},
		}},
	}
	models := map[string][]byte{}
	for _, file := range files {
		p := filepath.Join(v.mnt, file.name)
		if err := os.WriteFile(p, file.data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		model := append([]byte(nil), file.data...)
		if file.name == "large" {
			// One step at a time: where the first punch left a hole.
			model = applyFalloc(t, int(f.Fd()), model, file.cases[:1])
			if hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE); err != nil || hole != 1<<20 {
				t.Errorf("SEEK_HOLE from 0 after punching [1 MiB, 2 MiB): %d, %v", hole, err)
			}
			if data, err := unix.Seek(int(f.Fd()), 1<<20, unix.SEEK_DATA); err != nil || data != 2<<20 {
				t.Errorf("SEEK_DATA from 1 MiB after punching [1 MiB, 2 MiB): %d, %v", data, err)
			}
			checkContent(t, p, model)
			file.cases = file.cases[1:]
		}
		models[file.name] = applyFalloc(t, int(f.Fd()), model, file.cases)
		if file.name == "large" {
			if data, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA); !errors.Is(err, unix.ENXIO) {
				t.Errorf("SEEK_DATA in a file punched whole: %d, %v; want ENXIO", data, err)
			}
		}
		f.Close()
		checkContent(t, p, models[file.name])
	}
	v.unmount(t)
	// The large file was punched whole and the small one is inline: no
	// block is referenced any more.
	if out := v.fsck(t); !strings.Contains(out, " 0 blocks checked") {
		t.Errorf("fsck after punching every block out:\n%s", out)
	}
	v.mount(t)
	for name, model := range models {
		checkContent(t, filepath.Join(v.mnt, name), model)
	}
}

// TestPunchNeedsFormat4: a volume of format 3, which has no hole slices,
// refuses to punch a file of blocks with EOPNOTSUPP and keeps its data;
// after objfs upgrade the same punch works.
func TestPunchNeedsFormat4(t *testing.T) {
	v := newVolumeWith(t, "--format-version", "3")
	v.mount(t)
	p := filepath.Join(v.mnt, "f")
	data := randomBytes(3<<20, 3)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 8192)
	f.Close()
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("punch on a format 3 volume: %v, want EOPNOTSUPP", err)
	}
	checkContent(t, p, data)
	v.unmount(t)
	v.run(t, "upgrade", v.dir)
	v.mount(t)
	f, err = os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 4096, 8192); err != nil {
		t.Errorf("punch after upgrade: %v", err)
	}
	clear(data[4096 : 4096+8192])
	checkContent(t, p, data)
}

func countDiff(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// TestSparseAllocation: st_blocks counts what a file stores, not its size
// (format 4), so du, cp --sparse=auto and tar --sparse see sparse and
// punched files as such: 2 MiB written into a 101 MiB file is 4,096
// blocks, 3,072 after punching 512 KiB of it; cp keeps the copy sparse;
// tar --sparse archives little more than the data; a file only extended
// by truncate stores nothing. (Before, st_blocks was the size, and tar
// archived all 101 MiB.)
func TestSparseAllocation(t *testing.T) {
	for _, tool := range []string{"cp", "tar", "du"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	v := newVolume(t)
	v.mount(t)
	p := func(name string) string { return filepath.Join(v.mnt, name) }
	blocks := func(name string) int64 {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(p(name), &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks
	}
	f, err := os.Create(p("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(1<<20, 4)
	for _, off := range []int64{0, 100 << 20} {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if b := blocks("sparse"); b != 4096 {
		t.Errorf("2 MiB written into a 101 MiB file: st_blocks %d, want 4096", b)
	}
	if out, err := exec.Command("du", "-k", p("sparse")).Output(); err != nil || !strings.HasPrefix(string(out), "2048\t") {
		t.Errorf("du -k: %q, %v; want 2048", out, err)
	}
	f, err = os.OpenFile(p("sparse"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 512<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b := blocks("sparse"); b != 3072 {
		t.Errorf("after punching 512 KiB: st_blocks %d, want 3072", b)
	}
	if out, err := exec.Command("cp", "--sparse=auto", p("sparse"), p("copy")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if b := blocks("copy"); b > 3072 {
		t.Errorf("cp --sparse=auto of a file of 3072 blocks made one of %d", b)
	}
	archive := filepath.Join(t.TempDir(), "a.tar")
	if out, err := exec.Command("tar", "--sparse", "-cf", archive, "-C", v.mnt, "sparse").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if st, err := os.Stat(archive); err != nil || st.Size() > 4<<20 {
		t.Errorf("tar --sparse of 1.5 MiB of data in a 101 MiB file: %v bytes (%v), want under 4 MiB", st.Size(), err)
	}
	if err := os.Truncate(p("sparse"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("small"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("extended"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p("extended"), 10<<20); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{"sparse": 0, "small": 1, "extended": 0} {
		if b := blocks(name); b != want {
			t.Errorf("%s: st_blocks %d, want %d", name, b, want)
		}
	}
	v.unmount(t)
	v.fsck(t)
}
