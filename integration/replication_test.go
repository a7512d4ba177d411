package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReplicatedStoreLossAndScrub formats a volume over three stores (three
// copies, write quorum two), writes through the mount, loses one store's
// contents while unmounted, and checks that scrub restores every copy and
// that the files read back identical.
func TestReplicatedStoreLossAndScrub(t *testing.T) {
	requirePrereqs(t)
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v := &volume{base: base, dir: filepath.Join(base, "vol"), mnt: filepath.Join(base, "mnt")}
	if err := os.Mkdir(v.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	stores := []string{filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "c")}
	args := []string{"format", "--block-size", "65536", "--replicas", "3", "--write-quorum", "2"}
	for _, s := range stores {
		args = append(args, "--store", "file://"+s)
	}
	if out, err := runObjfs(time.Minute, append(args, v.dir)...); err != nil {
		t.Fatalf("objfs format: %v\n%s", err, out)
	}

	v.mount(t)
	want := map[string][]byte{}
	r := rand.New(rand.NewPCG(42, 0))
	for i, size := range []int{100, 70_000, 300_000, 1 << 20} {
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		name := fmt.Sprintf("file%d", i)
		if err := os.WriteFile(filepath.Join(v.mnt, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = data
	}
	// scrub needs the volume to itself, and says so.
	out, err := runObjfs(time.Minute, "scrub", v.dir)
	if err == nil || !strings.Contains(out, "in use") {
		t.Errorf("scrub of a mounted volume: %v, output:\n%s\nwant a failure saying the volume is in use", err, out)
	}
	v.unmount(t)

	// Lose everything in store b, keeping the (now empty) directory.
	entries, err := os.ReadDir(stores[1])
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 {
		t.Fatal("store b is empty before the test removed anything")
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(stores[1], e.Name())); err != nil {
			t.Fatal(err)
		}
	}

	out, err = runObjfs(5*time.Minute, "scrub", v.dir)
	if err != nil {
		t.Fatalf("scrub: %v\n%s", err, out)
	}
	counts := scrubCounts(t, out)
	if counts["blocks"] == 0 || counts["restored"] != counts["blocks"] || counts["unrecoverable"] != 0 {
		t.Fatalf("scrub after losing a store: %v\n%s", counts, out)
	}
	out, err = runObjfs(5*time.Minute, "scrub", v.dir)
	if err != nil {
		t.Fatalf("second scrub: %v\n%s", err, out)
	}
	if c := scrubCounts(t, out); c["restored"] != 0 || c["copies ok"] != 3*counts["blocks"] {
		t.Errorf("second scrub should find every copy in place: %v\n%s", c, out)
	}
	if out, err := runObjfs(5*time.Minute, "fsck", "--verify", v.dir); err != nil {
		t.Errorf("fsck --verify after scrub: %v\n%s", err, out)
	}

	v.mount(t)
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(v.mnt, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s after scrub: %d bytes, %v; want %d identical bytes", name, len(got), err, len(data))
		}
	}
	v.unmount(t)
}

// scrubCounts parses the "name: N" lines objfs scrub prints.
func scrubCounts(t *testing.T, out string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		name, val, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(val, "%d", &n); err == nil {
			counts[name] = n
		}
	}
	return counts
}
