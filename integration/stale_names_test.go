package integration

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestNFSRenameLeavesNoStaleName: while FUSE callers keep looking up both
// names of a file, an NFS client moves it back and forth between two
// directories. Once an NFS RENAME has been answered, the mount must not
// show the file under the name it left, however the kernel's lookups
// raced with the rename.
func TestNFSRenameLeavesNoStaleName(t *testing.T) {
	v := newVolume(t)
	addr := freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")
	dirs := []string{"a", "b"}
	for _, d := range dirs {
		if err := os.Mkdir(filepath.Join(v.mnt, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(v.mnt, "a", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, root := dialWireRoot(t, v, addr)
	var fh [2][]byte
	var err error
	for i, d := range dirs {
		if fh[i], _, err = c.lookup(root, d); err != nil {
			t.Fatal(err)
		}
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := filepath.Join(v.mnt, dirs[g%2], "f")
			for !stop.Load() {
				os.Lstat(p)
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()
	stale := 0
	rounds := envCount(t, "OBJFS_STALE_ROUNDS", 1000)
	for i := range rounds {
		from, to := i%2, 1-i%2
		if err := c.rename(fh[from], "f", fh[to], "f"); err != nil {
			t.Fatalf("round %d: NFS RENAME %s/f -> %s/f: %v", i, dirs[from], dirs[to], err)
		}
		if _, err := os.Lstat(filepath.Join(v.mnt, dirs[from], "f")); !errors.Is(err, os.ErrNotExist) {
			stale++
			if stale <= 5 {
				_, err2 := os.Lstat(filepath.Join(v.mnt, dirs[from], "f"))
				time.Sleep(100 * time.Millisecond)
				_, err3 := os.Lstat(filepath.Join(v.mnt, dirs[from], "f"))
				t.Errorf("round %d: after NFS moved %s/f to %s/f, FUSE lstat of the old name: %v (again: %v; 100 ms later: %v), want ENOENT", i, dirs[from], dirs[to], err, err2, err3)
			}
		}
		if _, err := os.Lstat(filepath.Join(v.mnt, dirs[to], "f")); err != nil {
			t.Errorf("round %d: after NFS moved %s/f to %s/f, FUSE lstat of the new name: %v", i, dirs[from], dirs[to], err)
		}
	}
	if stale > 0 {
		t.Errorf("%d of %d renames left the old name visible through FUSE", stale, rounds)
	}
}
