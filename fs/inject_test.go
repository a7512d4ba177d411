package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/faulty"
)

// injector numbers the steps an operation takes, metadata transactions
// and object store calls alike in the order they happen, and fails one.
type injector struct {
	mu     sync.Mutex
	on     bool
	step   int
	failAt int // 0: count only
	failed string
}

func (in *injector) hit(what string) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.on {
		return nil
	}
	in.step++
	if in.step == in.failAt {
		in.failed = what
		return fmt.Errorf("injected fault at step %d (%s)", in.step, what)
	}
	return nil
}

func (in *injector) arm(failAt int) {
	in.mu.Lock()
	in.on, in.step, in.failAt, in.failed = true, 0, failAt, ""
	in.mu.Unlock()
}

func (in *injector) disarm() (steps int, failed string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.on = false
	return in.step, in.failed
}

type faultKV struct {
	meta.KV
	inj *injector
}

func (k *faultKV) Update(ctx context.Context, fn func(meta.Txn) error) error {
	if err := k.inj.hit("metadata transaction"); err != nil {
		return err
	}
	return k.KV.Update(ctx, fn)
}

func (k *faultKV) View(ctx context.Context, fn func(meta.Txn) error) error {
	if err := k.inj.hit("metadata read"); err != nil {
		return err
	}
	return k.KV.View(ctx, fn)
}

func (k *faultKV) Sync() error {
	if err := k.inj.hit("metadata sync"); err != nil {
		return err
	}
	return k.KV.Sync()
}

type faultStore struct {
	objstore.Store
	inj *injector
}

func (s *faultStore) Put(ctx context.Context, key string, data []byte) error {
	if err := s.inj.hit("store put"); err != nil {
		return err
	}
	return s.Store.Put(ctx, key, data)
}

func (s *faultStore) Get(ctx context.Context, key string) ([]byte, error) {
	if err := s.inj.hit("store get"); err != nil {
		return nil, err
	}
	return s.Store.Get(ctx, key)
}

func (s *faultStore) Delete(ctx context.Context, key string) error {
	if err := s.inj.hit("store delete"); err != nil {
		return err
	}
	return s.Store.Delete(ctx, key)
}

// newInjectedVol is a volume whose metadata and store go through inj.
// Reopening it (v.reopen) mounts it again without the metadata wrapper.
func newInjectedVol(t *testing.T, inj *injector) *testVol {
	t.Helper()
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 1024,
		opts: Options{DeleteGrace: time.Hour, MemCacheBytes: -1}})
	v.close()
	v.store = &faultStore{Store: v.store, inj: inj}
	kv, err := meta.OpenBadger(v.metaDir, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := meta.Open(v.ctx, &faultKV{KV: kv, inj: inj})
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(v.ctx, m, v.store, v.opts)
	if err != nil {
		t.Fatal(err)
	}
	v.kv, v.m, v.f, v.closed = kv, m, f, false
	return v
}

// lookupPath resolves a slash-free name chain from the root.
func (v *testVol) lookupPath(names ...string) (*Attr, error) {
	ino := uint64(meta.RootIno)
	var a *Attr
	for _, n := range names {
		var err error
		if a, err = v.f.Lookup(v.ctx, &meta.Root, ino, n); err != nil {
			return nil, err
		}
		ino = a.Ino
	}
	return a, nil
}

// checkTree walks the whole tree and checks every entry's inode exists and
// every link count equals the names (and subdirectories) that refer to it.
func (v *testVol) checkTree() {
	v.t.Helper()
	names := map[uint64]int{}
	subdirs := map[uint64]int{}
	attrs := map[uint64]*Attr{}
	var walk func(dir uint64)
	walk = func(dir uint64) {
		var ents []meta.Dirent
		if err := v.f.ReadDir(v.ctx, &meta.Root, dir, 0, func(e meta.Dirent) bool { ents = append(ents, e); return true }); err != nil {
			v.t.Fatalf("readdir %d: %v", dir, err)
		}
		for _, e := range ents {
			a, err := v.f.GetAttr(v.ctx, e.Ino)
			if err != nil {
				v.t.Fatalf("entry %q in %d names inode %d: %v", e.Name, dir, e.Ino, err)
			}
			if a.Type() != e.Type {
				v.t.Errorf("entry %q: type %o, inode says %o", e.Name, e.Type, a.Type())
			}
			attrs[e.Ino] = a
			names[e.Ino]++
			if a.IsDir() {
				subdirs[dir]++
				walk(e.Ino)
			}
		}
	}
	walk(meta.RootIno)
	for ino, a := range attrs {
		want := uint32(names[ino])
		if a.IsDir() {
			want = 2 + uint32(subdirs[ino])
		}
		if a.Nlink != want {
			v.t.Errorf("inode %d: nlink %d, %d expected from the tree", ino, a.Nlink, want)
		}
	}
	if orphans, err := v.m.Orphans(v.ctx); err != nil || len(orphans) > 0 {
		v.t.Errorf("orphans left after a remount: %v %v", orphans, err)
	}
	v.fsck()
}

// fsck runs the metadata checker, with every referenced block fetched and
// verified through the store, and fails on any error it reports.
func (v *testVol) fsck() {
	v.t.Helper()
	format := v.m.Format()
	r, err := v.m.Check(v.ctx, meta.CheckOptions{Block: func(ctx context.Context, id meta.BlockID, size uint32) error {
		data, err := v.store.Get(ctx, id.ObjectKey())
		if err != nil {
			return err
		}
		if len(data) != int(size) || format.HashBlock(data) != id {
			return fmt.Errorf("stored block %s has wrong content", id)
		}
		return nil
	}})
	if err != nil {
		v.t.Fatalf("fsck: %v", err)
	}
	for _, p := range r.Problems {
		if p.Severity == meta.Error {
			v.t.Errorf("fsck: inode %d %s: %s", p.Ino, p.Path, p.Msg)
		}
	}
}

// TestFaultAtEveryStep runs each multi-step operation once to count its
// steps (metadata reads, transactions, syncs, object store calls), then
// once per step with that step failing. After each run the volume is
// remounted: the operation happened entirely or not at all, what was
// fsynced before is intact, the tree and link counts are consistent, fsck
// (meta.Check, every block verified) finds no error, and the store holds
// exactly the referenced blocks.
func TestFaultAtEveryStep(t *testing.T) {
	keepData := pattern(7, 9000)
	type op struct {
		name  string
		setup func(v *testVol)
		run   func(v *testVol) error
		// check verifies the operation's effect is all or nothing.
		check func(v *testVol)
	}
	mkfile := func(v *testVol, parent uint64, name string, data []byte) uint64 {
		ino, fh := v.create(parent, name, syscall.O_RDWR)
		v.write(fh, 0, data)
		if err := v.f.Fsync(v.ctx, fh); err != nil {
			v.t.Fatal(err)
		}
		v.release(fh)
		return ino
	}
	mkdir := func(v *testVol, name string) uint64 {
		a, err := v.f.Mkdir(v.ctx, &meta.Root, meta.RootIno, name, 0o755)
		if err != nil {
			v.t.Fatal(err)
		}
		return a.Ino
	}
	oldW, newW := pattern(1, 10000), pattern(1, 10000)
	copy(newW[5000:], pattern(2, 20000))
	newW = append(newW[:5000], pattern(2, 20000)...)
	ops := []op{
		{
			name:  "write",
			setup: func(v *testVol) { mkfile(v, meta.RootIno, "w", oldW) },
			run: func(v *testVol) error {
				a, err := v.lookupPath("w")
				if err != nil {
					return err
				}
				fh, err := v.f.Open(v.ctx, &meta.Root, a.Ino, syscall.O_RDWR)
				if err != nil {
					return err
				}
				if _, err := v.f.Write(v.ctx, fh, 5000, pattern(2, 20000)); err != nil {
					_ = v.f.Release(v.ctx, fh)
					return err
				}
				err = v.f.Fsync(v.ctx, fh)
				if rerr := v.f.Release(v.ctx, fh); err == nil {
					err = rerr
				}
				return err
			},
			check: func(v *testVol) {
				a, err := v.lookupPath("w")
				if err != nil {
					v.t.Fatal(err)
				}
				if got := v.content(a.Ino); !bytes.Equal(got, oldW) && !bytes.Equal(got, newW) {
					v.t.Errorf("w is neither the old nor the new content (%d bytes)", len(got))
				}
			},
		},
		{
			name: "rename",
			setup: func(v *testVol) {
				mkfile(v, meta.RootIno, "a", pattern(3, 6000))
				mkfile(v, mkdir(v, "d"), "b", pattern(4, 7000))
			},
			run: func(v *testVol) error {
				d, err := v.lookupPath("d")
				if err != nil {
					return err
				}
				return v.f.Rename(v.ctx, &meta.Root, meta.RootIno, "a", d.Ino, "b", 0)
			},
			check: func(v *testVol) {
				a, aerr := v.lookupPath("a")
				b, berr := v.lookupPath("d", "b")
				switch {
				case aerr == nil && berr == nil:
					if !bytes.Equal(v.content(a.Ino), pattern(3, 6000)) || !bytes.Equal(v.content(b.Ino), pattern(4, 7000)) {
						v.t.Errorf("rename did not happen, but contents changed")
					}
				case aerr == syscall.ENOENT && berr == nil:
					if !bytes.Equal(v.content(b.Ino), pattern(3, 6000)) {
						v.t.Errorf("rename happened, but d/b is not a's content")
					}
				default:
					v.t.Errorf("after rename: a: %v, d/b: %v: seen in both places or none", aerr, berr)
				}
			},
		},
		{
			name:  "unlink",
			setup: func(v *testVol) { mkfile(v, meta.RootIno, "u", pattern(5, 12000)) },
			run:   func(v *testVol) error { return v.f.Unlink(v.ctx, &meta.Root, meta.RootIno, "u") },
			check: func(v *testVol) {
				if a, err := v.lookupPath("u"); err == nil && !bytes.Equal(v.content(a.Ino), pattern(5, 12000)) {
					v.t.Errorf("u survived the unlink with other content")
				} else if err != nil && err != syscall.ENOENT {
					v.t.Errorf("lookup u: %v", err)
				}
			},
		},
		{
			name:  "truncate",
			setup: func(v *testVol) { mkfile(v, meta.RootIno, "t", pattern(6, 12288)) },
			run: func(v *testVol) error {
				a, err := v.lookupPath("t")
				if err != nil {
					return err
				}
				_, err = v.f.SetAttr(v.ctx, &meta.Root, a.Ino, meta.SetAttrIn{Valid: meta.SetSize, Size: 5000}, 0)
				return err
			},
			check: func(v *testVol) {
				a, err := v.lookupPath("t")
				if err != nil {
					v.t.Fatal(err)
				}
				got := v.content(a.Ino)
				if !bytes.Equal(got, pattern(6, 12288)) && !bytes.Equal(got, pattern(6, 12288)[:5000]) {
					v.t.Errorf("t is %d bytes, neither before nor after the truncate", len(got))
				}
			},
		},
		{
			name: "link",
			setup: func(v *testVol) {
				mkfile(v, meta.RootIno, "l", pattern(8, 3000))
				mkdir(v, "d")
			},
			run: func(v *testVol) error {
				l, err := v.lookupPath("l")
				if err != nil {
					return err
				}
				d, err := v.lookupPath("d")
				if err != nil {
					return err
				}
				_, err = v.f.Link(v.ctx, &meta.Root, l.Ino, d.Ino, "l2")
				return err
			},
			check: func(v *testVol) {
				l, err := v.lookupPath("l")
				if err != nil {
					v.t.Fatal(err)
				}
				l2, err2 := v.lookupPath("d", "l2")
				switch {
				case err2 == nil && (l2.Ino != l.Ino || l.Nlink != 2):
					v.t.Errorf("after link: d/l2 is inode %d (l is %d), nlink %d", l2.Ino, l.Ino, l.Nlink)
				case err2 == syscall.ENOENT && l.Nlink != 1:
					v.t.Errorf("link did not happen, yet nlink is %d", l.Nlink)
				}
			},
		},
	}
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			// Count the steps.
			inj := &injector{}
			v := newInjectedVol(t, inj)
			mkfile(v, meta.RootIno, "keep", keepData)
			o.setup(v)
			inj.arm(0)
			if err := o.run(v); err != nil {
				t.Fatalf("%s without faults: %v", o.name, err)
			}
			time.Sleep(50 * time.Millisecond) // let background work after the operation count too
			steps, _ := inj.disarm()
			if steps < 1 {
				t.Fatalf("%s took no steps", o.name)
			}
			t.Logf("%s: %d steps", o.name, steps)
			for i := 1; i <= steps; i++ {
				inj := &injector{}
				v := newInjectedVol(t, inj)
				mkfile(v, meta.RootIno, "keep", keepData)
				o.setup(v)
				inj.arm(i)
				err := o.run(v)
				time.Sleep(50 * time.Millisecond)
				_, failed := inj.disarm()
				v.reopen(Options{DeleteGrace: time.Millisecond, MemCacheBytes: -1})
				t.Run(fmt.Sprintf("step %d %s", i, failed), func(t *testing.T) {
					v.t = t
					_ = err // failing or not are both fine; what remains must be whole
					keep, kerr := v.lookupPath("keep")
					if kerr != nil || !bytes.Equal(v.content(keep.Ino), keepData) {
						t.Errorf("a file fsynced before the fault changed or vanished: %v", kerr)
					}
					o.check(v)
					v.checkTree()
					v.waitStoreMatchesReferences(5 * time.Second)
				})
			}
		})
	}
}

// TestStoreErrorRate: with 10% of object store calls failing, a workload
// of writes and reads completes through retries or gets clean errors, and
// every file whose fsync succeeded reads back exactly as written, then and
// after a remount; a read never returns wrong bytes.
func TestStoreErrorRate(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 512, opts: Options{MemCacheBytes: -1}})
	fstore := faulty.New(v.store, 42)
	v.reopenWithStore(fstore)
	fstore.SetErrorRate(faulty.OpPut, 0.1)
	fstore.SetErrorRate(faulty.OpGet, 0.1)
	rng := rand.New(rand.NewPCG(7, 7))
	acked := map[string][]byte{}
	var failedWrites, failedReads int
	for i := 0; i < 150; i++ {
		name := fmt.Sprintf("f%d", i)
		data := pattern(uint64(i), rng.IntN(40000))
		a, fh, err := v.f.Create(v.ctx, &meta.Root, meta.RootIno, name, 0o644, syscall.O_RDWR|syscall.O_CREAT)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		_, err = v.f.Write(v.ctx, fh, 0, data)
		if err == nil {
			err = v.f.Fsync(v.ctx, fh)
		}
		if err != nil {
			if !errors.Is(err, syscall.EIO) && !errors.Is(err, faulty.ErrInjected) {
				t.Errorf("write %s failed with %v, want a store error", name, err)
			}
			failedWrites++
		} else {
			acked[name] = data
		}
		_ = v.f.Release(v.ctx, fh)
		// Read back some files right away, through the failing store.
		if want, ok := acked[name]; ok && i%3 == 0 {
			buf := make([]byte, len(want)+10)
			rfh, err := v.f.Open(v.ctx, &meta.Root, a.Ino, syscall.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			n, err := v.f.Read(v.ctx, rfh, 0, buf)
			switch {
			case err != nil && !errors.Is(err, syscall.EIO):
				t.Errorf("read %s: %v, want success or EIO", name, err)
			case err != nil:
				failedReads++
			case !bytes.Equal(buf[:n], want):
				t.Errorf("read %s: wrong bytes (%d read, %d written)", name, n, len(want))
			}
			_ = v.f.Release(v.ctx, rfh)
		}
	}
	t.Logf("%d files acknowledged, %d writes and %d reads failed cleanly", len(acked), failedWrites, failedReads)
	if len(acked) < 100 {
		t.Errorf("only %d of 150 writes succeeded: retries should absorb most 10%% faults", len(acked))
	}
	fstore.SetErrorRate(faulty.OpPut, 0)
	fstore.SetErrorRate(faulty.OpGet, 0)
	v.reopen(Options{MemCacheBytes: -1, DeleteGrace: time.Millisecond})
	for name, want := range acked {
		a, err := v.lookupPath(name)
		if err != nil {
			t.Fatalf("acknowledged %s: %v", name, err)
		}
		if got := v.content(a.Ino); !bytes.Equal(got, want) {
			t.Errorf("acknowledged %s after remount: %s", name, firstDiff(got, want))
		}
	}
	v.checkTree()
	v.waitStoreMatchesReferences(5 * time.Second)
}

// reopenWithStore remounts the volume over another store (a wrapper of the
// one it has).
func (v *testVol) reopenWithStore(s objstore.Store) {
	v.t.Helper()
	v.close()
	v.store = s
	v.open()
}
