package meta

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
)

// TestConcurrentNamespace runs random creates, removals and renames (with
// directories moving between each other) from several goroutines at once.
// Every transaction is serializable, so afterwards the tree must satisfy
// every invariant (link counts, parents, no cycles, paths) and the totals
// must match it.
func TestConcurrentNamespace(t *testing.T) {
	v := newVolume(t, nil)
	top := []uint64{RootIno, v.mkdir(RootIno, "a").Ino, v.mkdir(RootIno, "b").Ino, v.mkdir(RootIno, "c").Ino}
	names := []string{"x", "y", "z", "d1", "d2"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	unexpected := map[string]int{}
	succeeded := 0
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 11))
			dirs := append([]uint64(nil), top...)
			for range 300 {
				p := dirs[r.IntN(len(dirs))]
				n := names[r.IntN(len(names))]
				var err error
				switch r.IntN(7) {
				case 0:
					_, err = v.m.Mknod(v.ctx, &Root, p, n, NewNode{Mode: syscall.S_IFREG | 0o644})
				case 1:
					var a *Attr
					a, err = v.m.Mknod(v.ctx, &Root, p, n, NewNode{Mode: syscall.S_IFDIR | 0o755})
					if err == nil {
						dirs = append(dirs, a.Ino)
					}
				case 2:
					_, err = v.m.Unlink(v.ctx, &Root, p, n)
				case 3:
					_, err = v.m.Rmdir(v.ctx, &Root, p, n)
				default:
					q := dirs[r.IntN(len(dirs))]
					flags := []uint32{0, 0, RenameExchange, RenameNoReplace}[r.IntN(4)]
					_, err = v.m.Rename(v.ctx, &Root, p, n, q, names[r.IntN(len(names))], flags)
				}
				if err == nil {
					mu.Lock()
					succeeded++
					mu.Unlock()
				}
				switch err {
				case nil, syscall.ENOENT, syscall.EEXIST, syscall.ENOTEMPTY, syscall.ENOTDIR, syscall.EISDIR, syscall.EINVAL:
				default:
					mu.Lock()
					unexpected[fmt.Sprint(err)]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d of 1200 operations succeeded", succeeded)
	if succeeded < 200 {
		t.Errorf("only %d operations succeeded: the test exercises too little", succeeded)
	}
	for e, n := range unexpected {
		t.Errorf("%d operations failed with %s", n, e)
	}
	v.reapAll()
	c := v.checkTree()
	st := v.m.Stats()
	if st.Inodes != c.inodes || st.Dirs != c.dirs || st.Files != c.files {
		t.Errorf("stats %+v, tree has %+v", st, c)
	}
	fresh, err := Open(v.ctx, v.kv)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Stats() != st {
		t.Errorf("reopened stats %+v, in memory %+v", fresh.Stats(), st)
	}
}
