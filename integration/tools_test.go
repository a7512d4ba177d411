package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// These tests drive the offline tools (fsck, gc, dump, load) against
// volumes written through real FUSE mounts.

// fsck runs `objfs fsck` on the unmounted volume and fails the test unless
// it reports no errors. It returns the output.
func (v *volume) fsck(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runObjfs(2*time.Minute, append(append([]string{"fsck"}, args...), v.dir)...)
	if err != nil || !strings.Contains(out, "; 0 errors") {
		t.Fatalf("objfs fsck %v %s: %v\n%s", args, v.dir, err, out)
	}
	return out
}

func (v *volume) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runObjfs(2*time.Minute, args...)
	if err != nil {
		t.Fatalf("objfs %v: %v\n%s", args, err, out)
	}
	return out
}

// storedObjects counts the block objects in the volume's local store.
func (v *volume) storedObjects(t testing.TB) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(v.dir, "store", "blocks"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && len(d.Name()) == 64 {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("count stored objects: %v", err)
	}
	return n
}

var statusBlocks = regexp.MustCompile(`(?m)^blocks:\s+(\d+)`)

// referencedBlocks is the block count `objfs status` reports.
func (v *volume) referencedBlocks(t testing.TB) int {
	t.Helper()
	out := v.run(t, "status", v.dir)
	m := statusBlocks.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no block count in objfs status:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// nodeState is what a tree walk records of one name.
type nodeState struct {
	Mode        fs.FileMode
	Ino, Nlink  uint64
	Uid, Gid    uint32
	Size, Mtime int64
	Content     string // sha256 of a file, target of a symlink
	Xattrs      string
}

func snapshotTree(t testing.TB, root string) map[string]nodeState {
	t.Helper()
	out := map[string]nodeState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n := nodeState{Mode: info.Mode(), Ino: st.Ino, Nlink: uint64(st.Nlink), Uid: st.Uid, Gid: st.Gid,
			Size: st.Size, Mtime: st.Mtim.Nano()}
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			n.Content = hex.EncodeToString(sum[:])
		case info.Mode()&fs.ModeSymlink != 0:
			n.Content, err = os.Readlink(p)
			if err != nil {
				return err
			}
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			n.Xattrs = xattrs(t, p)
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func xattrs(t testing.TB, p string) string {
	buf := make([]byte, 64<<10)
	n, err := syscall.Listxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		if name == "" {
			continue
		}
		m, err := syscall.Getxattr(p, name, buf)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		fmt.Fprintf(&b, "%s=%x;", name, buf[:m])
	}
	return b.String()
}

// populate writes a tree with files of several sizes (inline, one block,
// several blocks), directories, symlinks, hard links and xattrs.
func populate(t testing.TB, mnt string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 7))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(mnt, "a/b/c"), 0o755))
	must(os.Mkdir(filepath.Join(mnt, "empty"), 0o700))
	for i, size := range []int{0, 1, 200, 16 << 10, 20000, 1 << 20, 4 << 20, 4<<20 + 1, 9 << 20} {
		must(os.WriteFile(filepath.Join(mnt, "a", fmt.Sprintf("f%d", i)), data(size), 0o644))
	}
	must(os.WriteFile(filepath.Join(mnt, "a/b/c/deep"), data(70000), 0o600))
	// The same content twice: one stored block, two references.
	same := data(100000)
	must(os.WriteFile(filepath.Join(mnt, "dup1"), same, 0o644))
	must(os.WriteFile(filepath.Join(mnt, "dup2"), same, 0o644))
	must(os.Symlink("a/f3", filepath.Join(mnt, "link")))
	must(os.Symlink("/nowhere/"+strings.Repeat("x", 300), filepath.Join(mnt, "a/b/dangling")))
	must(os.Link(filepath.Join(mnt, "a/f5"), filepath.Join(mnt, "a/b/hard")))
	must(os.Link(filepath.Join(mnt, "a/f5"), filepath.Join(mnt, "hard2")))
	must(syscall.Setxattr(filepath.Join(mnt, "a/f2"), "user.color", []byte("blue"), 0))
	must(syscall.Setxattr(filepath.Join(mnt, "a/b"), "user.big", data(3000), 0))
	must(os.Chmod(filepath.Join(mnt, "a/f1"), 0o4755))
	must(os.Chtimes(filepath.Join(mnt, "a/f4"), time.Unix(1e9, 5), time.Unix(1e9, 123456789)))
}

func diffTrees(a, b map[string]nodeState) []string {
	var diffs []string
	for p, x := range a {
		if y, ok := b[p]; !ok {
			diffs = append(diffs, p+": missing")
		} else if x != y {
			diffs = append(diffs, fmt.Sprintf("%s: %+v, want %+v", p, y, x))
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			diffs = append(diffs, p+": unexpected")
		}
	}
	sort.Strings(diffs)
	return diffs
}

// TestToolsDumpLoad checks fsck on a populated volume, then dump, loss of
// the metadata directory, load: the tree is identical.
func TestToolsDumpLoad(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	populate(t, v.mnt)
	before := snapshotTree(t, v.mnt)
	v.unmount(t)
	v.fsck(t)
	v.fsck(t, "--verify")

	dump := filepath.Join(v.base, "meta.objfsdump")
	v.run(t, "dump", v.dir, dump)
	// A dump of a mounted volume is refused clearly.
	v.mount(t)
	if out, err := runObjfs(time.Minute, "dump", v.dir, dump+"2"); err == nil || !strings.Contains(out, "in use") {
		t.Errorf("dump of a mounted volume: %v\n%s", err, out)
	}
	v.unmount(t)

	// Loading into a volume that has metadata is refused.
	if out, err := runObjfs(time.Minute, "load", dump, v.dir); err == nil || !strings.Contains(out, "already holds metadata") {
		t.Errorf("load over live metadata: %v\n%s", err, out)
	}
	// A truncated dump is refused before anything is written.
	raw, err := os.ReadFile(dump)
	if err != nil {
		t.Fatal(err)
	}
	trunc := filepath.Join(v.base, "trunc.objfsdump")
	if err := os.WriteFile(trunc, raw[:len(raw)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}

	if err := os.RemoveAll(filepath.Join(v.dir, "meta")); err != nil {
		t.Fatal(err)
	}
	if out, err := runObjfs(time.Minute, "load", trunc, v.dir); err == nil || !strings.Contains(out, "truncated") {
		t.Errorf("load of a truncated dump: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(v.dir, "meta")); err == nil {
		t.Errorf("a refused load created %s/meta", v.dir)
	}
	v.run(t, "load", dump, v.dir)
	v.fsck(t, "--verify")
	v.mount(t)
	after := snapshotTree(t, v.mnt)
	v.unmount(t)
	if d := diffTrees(before, after); len(d) > 0 {
		t.Errorf("tree differs after dump, loss of metadata and load:\n  %s", strings.Join(d, "\n  "))
	}
}

// TestToolsGC deletes files and checks that gc frees exactly the objects
// nothing references, honouring the grace period.
func TestToolsGC(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	populate(t, v.mnt)
	v.unmount(t)
	objects := v.storedObjects(t)
	if refs := v.referencedBlocks(t); refs != objects {
		t.Fatalf("after populating: %d objects stored, %d referenced", objects, refs)
	}

	// An object that an upload left without a commit.
	stray := bytes.Repeat([]byte("stray"), 1000)
	sum := sha256.Sum256(stray)
	h := hex.EncodeToString(sum[:])
	strayPath := filepath.Join(v.dir, "store", "blocks", h[0:2], h[2:4], h)
	if err := os.MkdirAll(filepath.Dir(strayPath), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(strayPath, stray, 0o600); err != nil {
		t.Fatal(err)
	}

	v.mount(t)
	for _, p := range []string{"a/f6", "a/f7", "a/f8", "dup1", "a/b/c/deep"} {
		if err := os.Remove(filepath.Join(v.mnt, p)); err != nil {
			t.Fatal(err)
		}
	}
	v.unmount(t)
	refs := v.referencedBlocks(t)
	// Runs of block references left by an fsck killed before its end go.
	stale := filepath.Join(v.dir, "objfs-fsck-refs-123")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, "run-000001"), make([]byte, 60), 0o600); err != nil {
		t.Fatal(err)
	}
	v.fsck(t)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("fsck left the runs of an earlier fsck: %v", err)
	}

	out := v.run(t, "gc", "--dry-run", "--grace", "0", v.dir)
	t.Logf("gc --dry-run: %s", strings.TrimSpace(out))
	if n := v.storedObjects(t); n < refs+1 {
		t.Fatalf("dry run deleted objects: %d left, %d referenced", n, refs)
	}
	// The first sighting starts the grace period: the stray survives.
	out = v.run(t, "gc", v.dir)
	t.Logf("gc: %s", strings.TrimSpace(out))
	if _, err := os.Stat(strayPath); err != nil {
		t.Fatalf("gc deleted an object seen unreferenced for the first time: %v", err)
	}
	out = v.run(t, "gc", "--grace", "0", v.dir)
	t.Logf("gc --grace 0: %s", strings.TrimSpace(out))
	if !regexp.MustCompile(`metadata value log: [0-9]+ files rewritten`).MatchString(out) {
		t.Errorf("gc did not report reclaiming the metadata value log: %s", out)
	}
	if _, err := os.Stat(strayPath); err == nil {
		t.Errorf("gc --grace 0 kept the unreferenced stray object")
	}
	if n := v.storedObjects(t); n != refs {
		t.Errorf("after gc: %d objects stored, %d referenced", n, refs)
	}
	v.fsck(t, "--verify")
	// Again: nothing to do.
	out = v.run(t, "gc", "--grace", "0", v.dir)
	if !strings.Contains(out, "deleted 0 unreferenced") {
		t.Errorf("second gc did something: %s", out)
	}

	// A referenced block lost from the store: fsck names it, --repair
	// cannot bring it back, and both exit non-zero.
	var lost string
	_ = filepath.WalkDir(filepath.Join(v.dir, "store", "blocks"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && lost == "" {
			lost = p
		}
		return err
	})
	if err := os.Remove(lost); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"fsck", v.dir}, {"fsck", "--repair", v.dir}} {
		out, err := runObjfs(time.Minute, args...)
		if err == nil || !strings.Contains(out, filepath.Base(lost)+" ") || !strings.Contains(out, "missing from the store") {
			t.Errorf("objfs %v after losing a block: %v\n%s", args, err, out)
		}
	}
}

// TestToolsKillLoop kills the mount with SIGKILL again and again under a
// mixed load; fsck must find no error after any kill, and at the end gc
// removes the orphaned objects and nothing referenced. OBJFS_KILL_ROUNDS
// sets the number of kills (default 20).
func TestToolsKillLoop(t *testing.T) {
	requirePrereqs(t)
	rounds := envCount(t, "OBJFS_KILL_ROUNDS", 20)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d kills", seed, rounds)
	rng := rand.New(rand.NewPCG(seed, 1))
	v := newVolume(t)
	acks := &ackSet{want: map[string][]string{}}
	start := time.Now()
	for round := range rounds {
		v.mount(t)
		dir := fmt.Sprintf("r%d", round)
		if err := os.Mkdir(filepath.Join(v.mnt, dir), 0o755); err != nil {
			t.Fatalf("round %d: mkdir: %v", round, err)
		}
		if err := fsyncPath(v.mnt); err != nil {
			t.Fatalf("round %d: fsync: %v", round, err)
		}
		w := &crashWriter{mnt: v.mnt, dir: dir, acks: acks, done: make(chan struct{}),
			rng: rand.New(rand.NewPCG(seed, uint64(round)+1))}
		go w.run()
		churn := &churner{mnt: v.mnt, dir: filepath.Join(v.mnt, dir, "churn"), rng: rand.New(rand.NewPCG(seed, uint64(round)+1000))}
		churn.start()
		time.Sleep(150*time.Millisecond + time.Duration(rng.Int64N(int64(500*time.Millisecond))))
		w.killed.Store(true)
		churn.stop.Store(true)
		v.kill9(t)
		<-w.done
		churn.wg.Wait()
		if w.preKillErr != nil {
			t.Errorf("round %d: writer failed before the kill: %v", round, w.preKillErr)
		}
		out := v.fsck(t)
		if round%5 == 0 {
			t.Logf("round %d: fsck: %s", round, lastLine(out))
		}
	}
	t.Logf("%d kills in %v", rounds, time.Since(start).Round(time.Millisecond))

	// A clean mount reaps the orphans; then gc removes every object left
	// unreferenced by the crashes.
	v.mount(t)
	if errs := acks.verify(v.mnt); len(errs) > 0 {
		t.Fatalf("after %d kills, acknowledged data is wrong:\n  %s", rounds, strings.Join(errs, "\n  "))
	}
	v.unmount(t)
	before := v.storedObjects(t)
	out := v.run(t, "gc", "--grace", "0", v.dir)
	t.Logf("gc: %s (%d objects before)", strings.TrimSpace(out), before)
	if n, refs := v.storedObjects(t), v.referencedBlocks(t); n != refs {
		t.Errorf("after gc: %d objects stored, %d referenced", n, refs)
	}
	v.fsck(t, "--verify")
	v.mount(t)
	if errs := acks.verify(v.mnt); len(errs) > 0 {
		t.Fatalf("after gc, acknowledged data is wrong:\n  %s", strings.Join(errs, "\n  "))
	}
	v.unmount(t)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// churner overwrites, truncates, links, renames and unlinks files (some
// while open) so that crashes land in every kind of transaction. Its
// errors are ignored: the mount dies under it.
type churner struct {
	mnt, dir string
	rng      *rand.Rand
	stop     atomic.Bool
	wg       sync.WaitGroup
}

func (c *churner) start() {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		_ = os.Mkdir(c.dir, 0o755)
		buf := make([]byte, 300<<10)
		for i := 0; !c.stop.Load(); i++ {
			name := filepath.Join(c.dir, fmt.Sprintf("c%d", c.rng.IntN(8)))
			n := c.rng.IntN(len(buf))
			for j := 0; j < n; j += 4096 {
				buf[j] = byte(c.rng.Uint32())
			}
			switch c.rng.IntN(6) {
			case 0, 1:
				_ = os.WriteFile(name, buf[:n], 0o644)
			case 2:
				_ = os.Truncate(name, int64(c.rng.IntN(100000)))
			case 3:
				_ = os.Link(name, filepath.Join(c.dir, fmt.Sprintf("l%d", i)))
				_ = os.Rename(name, filepath.Join(c.dir, fmt.Sprintf("c%d", c.rng.IntN(8))))
			case 4:
				// Unlinked while open: an orphan until closed.
				if f, err := os.OpenFile(name, os.O_RDWR, 0); err == nil {
					_ = os.Remove(name)
					_, _ = f.WriteAt(buf[:n], 0)
					time.Sleep(time.Millisecond)
					f.Close()
				}
			default:
				entries, _ := os.ReadDir(c.dir)
				for _, e := range entries {
					if strings.HasPrefix(e.Name(), "l") && c.rng.IntN(2) == 0 {
						_ = os.Remove(filepath.Join(c.dir, e.Name()))
					}
				}
			}
		}
	}()
}
