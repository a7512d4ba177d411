package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/objfs/objfs/integration/difftest"
)

// TestCrossPipeline runs the pipeline objfs exists for across both front
// ends of one mount process at once: producers write tmp/ID and rename it
// to inbox/ID, consumers claim items by renaming inbox/ID to claimed/ID
// and read them, half of each through the FUSE mount and half over NFS.
// Observers on both front ends meanwhile ask where each item is. An item
// only moves forward (tmp, inbox, claimed), so an observer that asks in
// that order must find it somewhere, and one that asks in the opposite
// order must never find it twice: a stale kernel cache (a name the mount
// still shows after an NFS rename moved it, or one it does not show yet)
// breaks one or the other. Whatever is opened under inbox/ or claimed/
// must read whole.
func TestCrossPipeline(t *testing.T) {
	v := newVolume(t)
	addr := freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")
	for _, d := range []string{"tmp", "inbox", "claimed"} {
		if err := os.Mkdir(filepath.Join(v.mnt, d), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	const producers, consumers, perProducer = 4, 4, 150
	total := producers * perProducer

	// Each goroutine on the NFS side has a connection of its own, with
	// the handles of the three directories.
	type nfsSide struct {
		c                   *wireNFS
		tmp, inbox, claimed []byte
	}
	dialSide := func() *nfsSide {
		c, root := dialWireRoot(t, v, addr)
		s := &nfsSide{c: c}
		for _, d := range []struct {
			name string
			fh   *[]byte
		}{{"tmp", &s.tmp}, {"inbox", &s.inbox}, {"claimed", &s.claimed}} {
			var err error
			if *d.fh, _, err = c.lookup(root, d.name); err != nil {
				t.Fatalf("NFS LOOKUP %s: %v", d.name, err)
			}
		}
		return s
	}
	dir := func(s *nfsSide, stage int) []byte { return [][]byte{s.tmp, s.inbox, s.claimed}[stage] }
	stages := []string{"tmp", "inbox", "claimed"}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	defer v.stallWatchdog(t, "cross pipeline", 2*time.Minute)()
	var failures atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
		cancel()
	}
	var (
		created   = make([]atomic.Bool, total) // tmp/ID exists (or has moved on)
		claims    = make([]atomic.Int32, total)
		nClaimed  atomic.Int64
		observed  atomic.Int64
		wg, obsWG sync.WaitGroup
	)

	// Odd-numbered producers and consumers work over NFS.
	sideOf := func(i int) (s *nfsSide, viaNFS bool) {
		if i%2 == 0 {
			return nil, false
		}
		return dialSide(), true
	}
	for p := range producers {
		s, viaNFS := sideOf(p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perProducer {
				if ctx.Err() != nil {
					return
				}
				id := p*perProducer + i
				name := strconv.Itoa(id)
				data := difftest.PipelineItem(id)
				if viaNFS {
					if err := nfsProduce(s.c, s.tmp, s.inbox, name, data, i%2 == 0, &created[id]); err != nil {
						fail("NFS producer %d, item %d: %v", p, id, err)
						return
					}
					continue
				}
				tmp := filepath.Join(v.mnt, "tmp", name)
				f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
				if err == nil {
					created[id].Store(true)
					_, err = f.Write(data)
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
				if err == nil {
					err = os.Rename(tmp, filepath.Join(v.mnt, "inbox", name))
				}
				if err != nil {
					fail("FUSE producer %d, item %d: %v", p, id, err)
					return
				}
			}
		}()
	}

	claimed := func(id int, c int, via string) {
		if n := claims[id].Add(1); n > 1 {
			fail("item %d claimed %d times (the last by %s consumer %d)", id, n, via, c)
		}
		nClaimed.Add(1)
	}
	for c := range consumers {
		s, viaNFS := sideOf(c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for nClaimed.Load() < int64(total) && ctx.Err() == nil {
				var names []string
				if viaNFS {
					ents, err := s.c.readdirplus(s.inbox)
					if err != nil {
						fail("NFS consumer %d: READDIRPLUS inbox: %v", c, err)
						return
					}
					for _, e := range ents {
						names = append(names, e.Name)
					}
				} else {
					var err error
					if names, err = readNames(filepath.Join(v.mnt, "inbox")); err != nil {
						fail("FUSE consumer %d: readdir inbox: %v", c, err)
						return
					}
				}
				if len(names) == 0 {
					time.Sleep(time.Millisecond)
				}
				for _, name := range names {
					id, err := strconv.Atoi(name)
					if err != nil || id < 0 || id >= total {
						fail("consumer %d: unexpected entry inbox/%q", c, name)
						return
					}
					var got []byte
					if viaNFS {
						err = s.c.rename(s.inbox, name, s.claimed, name)
						if err == nil {
							claimed(id, c, "NFS")
							var fh []byte
							if fh, _, err = s.c.lookup(s.claimed, name); err == nil {
								got, err = s.c.readAll(fh)
							}
						}
					} else {
						// RENAME_NOREPLACE: a plain rename(2) may succeed
						// without renaming (see the README's Limits).
						dst := filepath.Join(v.mnt, "claimed", name)
						err = unix.Renameat2(unix.AT_FDCWD, filepath.Join(v.mnt, "inbox", name), unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
						if err == nil {
							claimed(id, c, "FUSE")
							got, err = os.ReadFile(dst)
						}
					}
					if (errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrExist)) && got == nil {
						continue // another consumer won it
					}
					if err != nil {
						fail("consumer %d (NFS %v), item %d: %v", c, viaNFS, id, err)
						return
					}
					if !bytes.Equal(got, difftest.PipelineItem(id)) {
						fail("consumer %d (NFS %v): claimed/%d: %s", c, viaNFS, id, describeDiff(got, difftest.PipelineItem(id)))
						return
					}
				}
			}
		}()
	}

	// where asks one front end whether an item is at stage st; an item
	// found under inbox/ or claimed/ is also read, and must be whole.
	type where func(id, st int) (bool, error)
	fuseWhere := func(id, st int) (bool, error) {
		p := filepath.Join(v.mnt, stages[st], strconv.Itoa(id))
		if st == 0 {
			_, err := os.Lstat(p)
			if errors.Is(err, os.ErrNotExist) {
				return false, nil
			}
			return err == nil, err
		}
		got, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err == nil && !bytes.Equal(got, difftest.PipelineItem(id)) {
			err = fmt.Errorf("%s: %s", p, describeDiff(got, difftest.PipelineItem(id)))
		}
		return err == nil, err
	}
	for o := range 2 {
		var look where = fuseWhere
		side := "FUSE"
		if o == 1 {
			side = "NFS"
			s := dialSide()
			look = func(id, st int) (bool, error) {
				fh, _, err := s.c.lookup(dir(s, st), strconv.Itoa(id))
				if errors.Is(err, os.ErrNotExist) {
					return false, nil
				}
				if err == nil && st > 0 {
					var got []byte
					// A consumer may move or the test may not yet have
					// claimed it; a handle read stays valid either way.
					if got, err = s.c.readAll(fh); err == nil && !bytes.Equal(got, difftest.PipelineItem(id)) {
						err = fmt.Errorf("%s/%d: %s", stages[st], id, describeDiff(got, difftest.PipelineItem(id)))
					}
				}
				return err == nil, err
			}
		}
		obsWG.Add(1)
		go func() {
			defer obsWG.Done()
			for round := 0; ctx.Err() == nil; round++ {
				for id := range total {
					if ctx.Err() != nil || !created[id].Load() {
						continue
					}
					// Forward: once created it is somewhere.
					found := false
					for st := range stages {
						ok, err := look(id, st)
						if err != nil {
							fail("%s observer: item %d at %s: %v", side, id, stages[st], err)
							return
						}
						if ok {
							found = true
							break
						}
					}
					if !found {
						fail("%s observer: item %d is nowhere (asked tmp, inbox, claimed in that order)", side, id)
						return
					}
					// Backward: never in two places.
					var at []string
					for st := len(stages) - 1; st >= 0; st-- {
						ok, err := look(id, st)
						if err != nil {
							fail("%s observer: item %d at %s: %v", side, id, stages[st], err)
							return
						}
						if ok {
							at = append(at, stages[st])
						}
					}
					if len(at) > 1 {
						fail("%s observer: item %d is in two places: %v (asked claimed, inbox, tmp in that order)", side, id, at)
						return
					}
					observed.Add(1)
				}
				if nClaimed.Load() == int64(total) {
					return
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	obsWG.Wait()
	if t.Failed() {
		t.Logf("objfs log: %s", v.proc.logTail())
		return
	}
	t.Logf("%d items, %d observations", total, observed.Load())
	if observed.Load() < int64(total) {
		t.Errorf("the observers made %d observations of %d items: too few to mean anything", observed.Load(), total)
	}
	// What is stored agrees on both sides: tmp and inbox empty, every
	// item once in claimed/.
	s := dialSide()
	for st, name := range stages {
		fuseNames, err := readNames(filepath.Join(v.mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		ents, err := s.c.readdirplus(dir(s, st))
		if err != nil {
			t.Fatal(err)
		}
		var nfsNames []string
		for _, e := range ents {
			nfsNames = append(nfsNames, e.Name)
		}
		slices.Sort(nfsNames)
		want := 0
		if name == "claimed" {
			want = total
		}
		if len(fuseNames) != want || !slices.Equal(fuseNames, nfsNames) {
			t.Errorf("%s/: FUSE lists %d entries, NFS %d; want %d on both", name, len(fuseNames), len(nfsNames), want)
		}
	}
}

// nfsProduce creates tmp/name (GUARDED), writes data (FILE_SYNC, or
// UNSTABLE and COMMIT) and renames it to inbox/name, as an NFS client's
// open, write, close and rename do.
func nfsProduce(c *wireNFS, tmp, inbox []byte, name string, data []byte, unstable bool, created *atomic.Bool) error {
	fh, err := c.create(tmp, name, createGuarded, 0o644)
	if err != nil {
		return fmt.Errorf("CREATE tmp/%s: %w", name, err)
	}
	created.Store(true)
	how := uint32(stableFileSync)
	if unstable {
		how = stableUnstable
	}
	for done := 0; done < len(data); {
		n, _, _, err := c.write(fh, int64(done), data[done:min(len(data), done+64<<10)], how)
		if err != nil {
			return fmt.Errorf("WRITE tmp/%s at %d: %w", name, done, err)
		}
		done += n
	}
	if unstable {
		if _, err := c.commit(fh); err != nil {
			return fmt.Errorf("COMMIT tmp/%s: %w", name, err)
		}
	}
	if err := c.rename(tmp, name, inbox, name); err != nil {
		return fmt.Errorf("RENAME tmp/%s: %w", name, err)
	}
	return nil
}
