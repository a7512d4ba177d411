package nfs

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// TestLinkSymlinkMknod checks the procedures go-nfs gets wrong: LINK (its
// arguments), MKNOD of devices, and SYMLINK.
func TestLinkSymlinkMknod(t *testing.T) {
	addr, _ := newTestServer(t, Options{Squash: SquashNone})
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()

	_, file := w.create(root, "file", createGuarded)
	if st := w.write(file, 0, []byte("linked"), fileSync); st != nfsOK {
		t.Fatalf("write: %d", st)
	}
	_, dir := w.mkdir(root, "d")
	if st, r := w.nfs(15, args(file, dir, "hard")); st != nfsOK {
		t.Fatalf("link: %d", st)
	} else if a, ok := skipPostOp(r); !ok || a.nlink != 2 {
		t.Errorf("link: post-op nlink %d, want 2", a.nlink)
	}
	st, hard := w.lookup(dir, "hard")
	if st != nfsOK || !bytes.Equal(hard, file) {
		t.Fatalf("lookup of the link: %d, handle %x, want %x", st, hard, file)
	}

	if st, _ := w.nfs(10, args(root, "sym", noSattr, "d/hard")); st != nfsOK {
		t.Fatalf("symlink: %d", st)
	}
	_, sym := w.lookup(root, "sym")
	st, r := w.nfs(5, args(sym))
	if st != nfsOK {
		t.Fatalf("readlink: %d", st)
	}
	skipPostOp(r)
	if got := string(r.opaque(maxPath)); got != "d/hard" {
		t.Errorf("readlink: %q", got)
	}
	// A symlink's mode stays 0777, as with knfsd; its owner does change.
	_, before := w.getattr(sym)
	if st, _ := w.nfs(2, args(sym, sattrMode(0o600), false)); st != nfsOK {
		t.Errorf("setattr of a symlink's mode: %d, want OK", st)
	}
	chown := &xdrWriter{}
	chown.bool(true)
	chown.u32(0o600)
	chown.bool(true)
	chown.u32(123)
	chown.b = append(chown.b, make([]byte, 16)...)
	if st, _ := w.nfs(2, args(sym, raw(chown.b), false)); st != nfsOK {
		t.Errorf("setattr of a symlink's mode and owner: %d, want OK", st)
	}
	if _, a := w.getattr(sym); a.mode != 0o777 || a.uid != 123 {
		t.Errorf("symlink after setattr: mode %o uid %d, want 777 and 123", a.mode, a.uid)
	} else if before.mode != 0o777 {
		t.Errorf("new symlink: mode %o", before.mode)
	}

	devices := []struct {
		name         string
		typ          uint32
		major, minor uint32
	}{
		{"fifo", nf3Fifo, 0, 0},
		{"sock", nf3Sock, 0, 0},
		{"chr", nf3Chr, 1, 3},
		{"blk", nf3Blk, 259, 70000},
	}
	for _, d := range devices {
		t.Run(d.name, func(t *testing.T) {
			a := args(root, d.name, d.typ, sattrMode(0o640))
			if d.typ == nf3Chr || d.typ == nf3Blk {
				a = args(root, d.name, d.typ, sattrMode(0o640), d.major, d.minor)
			}
			st, r := w.nfs(11, a)
			_, fh := w.createdHandle(st, r)
			if st != nfsOK {
				t.Fatalf("mknod: %d", st)
			}
			_, at := w.getattr(fh)
			if at.typ != d.typ || at.mode != 0o640 || at.major != d.major || at.minor != d.minor {
				t.Errorf("attributes %+v, want type %d mode 640 rdev %d,%d", at, d.typ, d.major, d.minor)
			}
		})
	}
}

// TestSetattr covers size, mode, owner, times and the ctime guard.
func TestSetattr(t *testing.T) {
	addr, _ := newTestServer(t, Options{Squash: SquashNone})
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()
	_, fh := w.create(root, "f", createGuarded)
	w.write(fh, 0, bytes.Repeat([]byte("a"), 10000), fileSync)

	set := func(s *xdrWriter, guard ...uint32) uint32 {
		t.Helper()
		a := args(fh, raw(s.b), len(guard) > 0)
		for _, g := range guard {
			a.u32(g)
		}
		st, _ := w.nfs(2, a)
		return st
	}
	sattr := func(mode, uid, gid *uint32, size *uint64, atime, mtime uint32, at, mt [2]uint32) *xdrWriter {
		s := &xdrWriter{}
		for _, v := range []*uint32{mode, uid, gid} {
			s.bool(v != nil)
			if v != nil {
				s.u32(*v)
			}
		}
		s.bool(size != nil)
		if size != nil {
			s.u64(*size)
		}
		s.u32(atime)
		if atime == timeClient {
			s.u32(at[0])
			s.u32(at[1])
		}
		s.u32(mtime)
		if mtime == timeClient {
			s.u32(mt[0])
			s.u32(mt[1])
		}
		return s
	}
	u32 := func(v uint32) *uint32 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	var zero [2]uint32

	if st := set(sattr(nil, nil, nil, u64(3), 0, 0, zero, zero)); st != nfsOK {
		t.Fatalf("truncate: %d", st)
	}
	if _, a := w.getattr(fh); a.size != 3 {
		t.Errorf("size %d after truncate", a.size)
	}
	if _, data, eof := w.read(fh, 0, 100); string(data) != "aaa" || !eof {
		t.Errorf("read after truncate: %q eof=%v", data, eof)
	}
	if st := set(sattr(u32(0o4711), u32(42), u32(43), nil, timeClient, timeClient, [2]uint32{1000, 5}, [2]uint32{2000, 7})); st != nfsOK {
		t.Fatalf("chmod/chown/utimes: %d", st)
	}
	// The chown drops the setuid bit from the mode given with it, as
	// knfsd does (nfsd_sanitize_attrs) and chmod then chown would.
	_, a := w.getattr(fh)
	if a.mode != 0o711 || a.uid != 42 || a.gid != 43 || a.atime != [2]uint32{1000, 5} || a.mtime != [2]uint32{2000, 7} {
		t.Errorf("attributes %+v", a)
	}
	for _, tc := range []struct {
		mode, gid *uint32
		want      uint32
	}{
		{u32(0o4711), nil, 0o4711},     // chmod alone keeps what it sets
		{u32(0o6750), u32(43), 0o750},  // with a chgrp: setgid with group execute goes too
		{u32(0o6740), u32(43), 0o2740}, // setgid without group execute is mandatory locking: kept
		{u32(0o4755), u32(43), 0o755},  // even to the same group
	} {
		if st := set(sattr(tc.mode, nil, tc.gid, nil, 0, 0, zero, zero)); st != nfsOK {
			t.Fatalf("setattr mode %o gid %v: %d", *tc.mode, tc.gid, st)
		}
		if _, got := w.getattr(fh); got.mode != tc.want {
			t.Errorf("setattr mode %o, gid given %v: mode %o, want %o", *tc.mode, tc.gid != nil, got.mode, tc.want)
		}
	}
	_, a = w.getattr(fh)
	if st := set(sattr(u32(0o600), nil, nil, nil, 0, 0, zero, zero), a.ctime[0], a.ctime[1]); st != nfsOK {
		t.Errorf("guarded setattr with the current ctime: %d", st)
	}
	if st := set(sattr(u32(0o644), nil, nil, nil, 0, 0, zero, zero), a.ctime[0], a.ctime[1]); st != errNotSync {
		t.Errorf("guarded setattr with an old ctime: %d, want NOT_SYNC", st)
	}
	if st := set(sattr(nil, nil, nil, nil, timeServer, timeServer, zero, zero)); st != nfsOK {
		t.Errorf("times to server time: %d", st)
	}
	if _, a := w.getattr(fh); a.mtime[0] < 1_600_000_000 {
		t.Errorf("mtime %v after SET_TO_SERVER_TIME", a.mtime)
	}
}

// TestWriteCommitFsinfo checks unstable writes + COMMIT, FSSTAT and FSINFO.
func TestWriteCommitFsinfo(t *testing.T) {
	addr, _ := newTestServer(t, Options{Squash: SquashNone})
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()
	_, fh := w.create(root, "f", createGuarded)
	st, r := w.nfs(7, args(fh, uint64(5), uint32(5), uint32(unstable), "hello"))
	if st != nfsOK {
		t.Fatalf("write: %d", st)
	}
	skipWcc(r)
	if n, committed := r.u32(), r.u32(); n != 5 || committed != unstable {
		t.Errorf("write: count %d committed %d", n, committed)
	}
	verf := r.fixed(8)
	st, r = w.nfs(21, args(fh, uint64(0), uint32(0)))
	if st != nfsOK {
		t.Fatalf("commit: %d", st)
	}
	skipWcc(r)
	if got := r.fixed(8); !bytes.Equal(got, verf) {
		t.Errorf("commit verifier %x, write verifier %x", got, verf)
	}
	if _, data, _ := w.read(fh, 0, 100); !bytes.Equal(data, []byte("\x00\x00\x00\x00\x00hello")) {
		t.Errorf("read %q", data)
	}

	st, r = w.nfs(19, args(root))
	if st != nfsOK {
		t.Fatalf("fsinfo: %d", st)
	}
	skipPostOp(r)
	rtmax, rtpref, _, wtmax := r.u32(), r.u32(), r.u32(), r.u32()
	r.u32()
	r.u32()
	dtpref := r.u32()
	maxSize := r.u64()
	if rtmax != maxData || rtpref != maxData || wtmax != maxData || dtpref == 0 || maxSize != meta.MaxFileSize {
		t.Errorf("fsinfo: rtmax %d rtpref %d wtmax %d dtpref %d maxfilesize %d", rtmax, rtpref, wtmax, dtpref, maxSize)
	}
	st, r = w.nfs(18, args(root))
	if st != nfsOK {
		t.Fatalf("fsstat: %d", st)
	}
	skipPostOp(r)
	tbytes, fbytes, abytes, tfiles, ffiles := r.u64(), r.u64(), r.u64(), r.u64(), r.u64()
	if tbytes == 0 || fbytes > tbytes || abytes > tbytes || tfiles == 0 || ffiles >= tfiles {
		t.Errorf("fsstat: total %d free %d avail %d files %d free files %d", tbytes, fbytes, abytes, tfiles, ffiles)
	}
}

// readdirPage lists one page and returns names, the last cookie and eof.
func (w *wireClient) readdirPage(dir []byte, cookie uint64, plus bool) ([]string, uint64, bool) {
	w.t.Helper()
	var st uint32
	var r *xdrReader
	if plus {
		st, r = w.nfs(17, args(dir, cookie, uint64(0), uint32(8192), uint32(32768)))
	} else {
		st, r = w.nfs(16, args(dir, cookie, uint64(0), uint32(8192)))
	}
	if st != nfsOK {
		w.t.Fatalf("readdir: status %d", st)
	}
	skipPostOp(r)
	r.u64()
	var names []string
	for r.bool() {
		r.u64()
		names = append(names, string(r.opaque(maxName)))
		cookie = r.u64()
		if plus {
			skipPostOp(r)
			if r.bool() {
				r.opaque(64)
			}
		}
	}
	eof := r.bool()
	if r.err != nil {
		w.t.Fatalf("readdir reply: %v", r.err)
	}
	return names, cookie, eof
}

// TestReaddirStableCookies lists a large directory in pages while other
// entries are created and removed, and checks that every entry present
// throughout is listed exactly once.
func TestReaddirStableCookies(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 5_000
	}
	addr, f := newTestServer(t, Options{Squash: SquashNone})
	ctx := context.Background()
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()
	_, dirFH := w.mkdir(root, "big")
	ino, _, _ := decodeHandle(dirFH)
	// Entries are created in process: the test is about listing.
	var wg sync.WaitGroup
	workers := 4
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += workers {
				if _, err := f.Mknod(ctx, &meta.Root, ino, fmt.Sprintf("e%06d", i), meta.NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	for _, plus := range []bool{false, true} {
		t.Run(fmt.Sprintf("plus=%v", plus), func(t *testing.T) {
			stop := make(chan struct{})
			var churned atomic.Int64
			var cw sync.WaitGroup
			cw.Add(1)
			go func() {
				defer cw.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("churn%v-%d", plus, i)
					if _, err := f.Mknod(ctx, &meta.Root, ino, name, meta.NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
						t.Error(err)
						return
					}
					if i%2 == 0 {
						_ = f.Unlink(ctx, &meta.Root, ino, name)
					}
					churned.Add(1)
				}
			}()
			seen := map[string]int{}
			cookie, pages := uint64(0), 0
			for {
				names, next, eof := w.readdirPage(dirFH, cookie, plus)
				pages++
				for _, nm := range names {
					seen[nm]++
				}
				cookie = next
				if eof {
					break
				}
			}
			close(stop)
			cw.Wait()
			for i := range n {
				if c := seen[fmt.Sprintf("e%06d", i)]; c != 1 {
					t.Fatalf("entry e%06d listed %d times", i, c)
				}
			}
			for nm, c := range seen {
				if c != 1 {
					t.Fatalf("%s listed %d times", nm, c)
				}
			}
			if seen["."] != 1 || seen[".."] != 1 {
				t.Errorf(". and .. listed %d and %d times", seen["."], seen[".."])
			}
			t.Logf("%d entries in %d pages while %d others were created", n, pages, churned.Load())
			if pages < 2 {
				t.Errorf("listing took %d page(s): paging not exercised", pages)
			}
		})
	}
}

// TestCreateModes checks UNCHECKED (O_CREAT: truncates, keeps the mode),
// GUARDED and EXCLUSIVE (a retransmission with the same verifier succeeds,
// another verifier is EXIST).
func TestCreateModes(t *testing.T) {
	addr, _ := newTestServer(t, Options{Squash: SquashNone})
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()
	_, fh := w.create(root, "f", createGuarded)
	w.write(fh, 0, []byte("data"), fileSync)

	truncate := &xdrWriter{}
	for range 3 {
		truncate.bool(false)
	}
	truncate.bool(true)
	truncate.u64(0)
	truncate.u32(0)
	truncate.u32(0)
	st, r := w.nfs(8, args(root, "f", createUnchecked, raw(truncate.b)))
	if _, again := w.createdHandle(st, r); st != nfsOK || !bytes.Equal(again, fh) {
		t.Fatalf("unchecked create over a file: status %d", st)
	}
	if _, a := w.getattr(fh); a.size != 0 || a.mode != 0o644 {
		t.Errorf("after unchecked create: size %d mode %o", a.size, a.mode)
	}

	verf := raw([]byte("verifier"))
	st, r = w.nfs(8, args(root, "x", createExclusive, verf))
	_, first := w.createdHandle(st, r)
	if st != nfsOK {
		t.Fatalf("exclusive create: %d", st)
	}
	st, r = w.nfs(8, args(root, "x", createExclusive, verf))
	if _, again := w.createdHandle(st, r); st != nfsOK || !bytes.Equal(again, first) {
		t.Errorf("retransmitted exclusive create: status %d", st)
	}
	if st, _ := w.nfs(8, args(root, "x", createExclusive, raw([]byte("otherone")))); st != errExist {
		t.Errorf("exclusive create with another verifier: %d, want EXIST", st)
	}
}

// TestUnstableWritesVisible checks that UNSTABLE writes, buffered by the
// server, are seen at once by another client (READ and GETATTR), and that
// COMMIT and the idle closer commit them.
func TestUnstableWritesVisible(t *testing.T) {
	v := newTestVolume(t)
	f, _ := v.open(t)
	s, err := newServer(f, Options{Squash: SquashNone, Logger: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := startServer(t, f, Options{Squash: SquashNone})
	writer, reader := dialWire(t, addr), dialWire(t, addr)
	writer.uid, writer.gid, reader.uid, reader.gid = 0, 0, 0, 0
	root := writer.mountRoot()
	_, fh := writer.create(root, "f", createGuarded)
	chunk := bytes.Repeat([]byte("u"), 64<<10)
	for i := range 8 {
		if st := writer.write(fh, uint64(i*len(chunk)), chunk, unstable); st != nfsOK {
			t.Fatalf("unstable write %d: %d", i, st)
		}
		if _, a := reader.getattr(fh); a.size != uint64((i+1)*len(chunk)) {
			t.Fatalf("after write %d another client sees size %d", i, a.size)
		}
		if _, data, _ := reader.read(fh, uint64(i*len(chunk)), uint32(len(chunk))); !bytes.Equal(data, chunk) {
			t.Fatalf("after write %d another client reads %d bytes that differ", i, len(data))
		}
	}
	if st, _ := writer.nfs(21, args(fh, uint64(0), uint32(0))); st != nfsOK {
		t.Fatalf("commit: %d", st)
	}

	// The idle closer commits and forgets buffered files (here driven
	// directly on a second server value over the same volume).
	ctx := context.Background()
	a, err := f.Lookup(ctx, &meta.Root, meta.RootIno, "f")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.writeUnstable(ctx, &meta.Root, a, 0, []byte("idle")); !ok || err != nil {
		t.Fatalf("writeUnstable: %v %v", ok, err)
	}
	s.closeIdle(ctx, true)
	if n := len(s.unstable.files); n != 0 {
		t.Errorf("%d files still open after closeIdle", n)
	}
	buf := make([]byte, 4)
	if _, err := f.ReadInode(ctx, &meta.Root, a.Ino, 0, buf); err != nil || string(buf) != "idle" {
		t.Errorf("read %q, %v after the idle commit", buf, err)
	}
}

// sattrSize sets only the size.
func sattrSize(size uint64) raw {
	s := &xdrWriter{}
	for range 3 {
		s.bool(false)
	}
	s.bool(true)
	s.u64(size)
	s.u32(0)
	s.u32(0)
	return raw(s.b)
}

// TestByHandleAccess checks the permission rule of requests by file handle
// (see meta.AccessByHandle), as a client sends them for a descriptor it
// opened: the owner reads, writes and truncates whatever the mode says (a
// file created 0444 and written through the descriptor that created it,
// as git does, or one chmodded to 0 while open), a program with only
// execute permission for others is read by them, and everyone else is
// refused as before.
func TestByHandleAccess(t *testing.T) {
	addr, _ := newTestServer(t, Options{Squash: SquashNone})
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()
	st, r := w.nfs(9, args(root, "home", sattrMode(0o777)))
	_, home := w.createdHandle(st, r)
	if st != nfsOK {
		t.Fatalf("mkdir: %d", st)
	}
	const owner, other = 1000, 1001
	as := func(uid uint32) { w.uid, w.gid = uid, uid }
	create := func(name string, mode uint32) []byte {
		t.Helper()
		st, r := w.nfs(8, args(home, name, createGuarded, sattrMode(mode)))
		_, fh := w.createdHandle(st, r)
		if st != nfsOK {
			t.Fatalf("create %s: %d", name, st)
		}
		return fh
	}
	setattr := func(fh []byte, sa raw) uint32 {
		st, _ := w.nfs(2, args(fh, sa, false))
		return st
	}
	commit := func(fh []byte) uint32 {
		st, _ := w.nfs(21, args(fh, uint64(0), uint32(0)))
		return st
	}

	as(owner)
	ro := create("ro", 0o444)
	prog := create("prog", 0o711)
	secret := create("secret", 0o600)
	unchecked := func(name string) uint32 {
		st, _ := w.nfs(8, args(home, name, createUnchecked, sattrSize(0)))
		return st
	}
	steps := []struct {
		name string
		uid  uint32
		do   func() uint32
		want uint32
	}{
		{"owner writes 0444 (FILE_SYNC)", owner, func() uint32 { return w.write(ro, 0, []byte("git object"), fileSync) }, nfsOK},
		{"owner writes 0444 (UNSTABLE)", owner, func() uint32 { return w.write(ro, 10, []byte("!"), unstable) }, nfsOK},
		{"owner commits 0444", owner, func() uint32 { return commit(ro) }, nfsOK},
		{"others may not write 0444", other, func() uint32 { return w.write(ro, 0, []byte("x"), fileSync) }, errAcces},
		{"nor unstably", other, func() uint32 { return w.write(ro, 0, []byte("x"), unstable) }, errAcces},
		{"nor truncate it", other, func() uint32 { return setattr(ro, sattrSize(1)) }, errAcces},
		{"nor by an unchecked create", other, func() uint32 { return unchecked("ro") }, errAcces},
		{"owner chmods to 0", owner, func() uint32 { return setattr(ro, sattrMode(0)) }, nfsOK},
		{"owner still writes", owner, func() uint32 { return w.write(ro, 0, []byte("G"), fileSync) }, nfsOK},
		{"owner still reads", owner, func() uint32 { st, _, _ := w.read(ro, 0, 100); return st }, nfsOK},
		{"owner truncates (ftruncate after fchmod 0)", owner, func() uint32 { return setattr(ro, sattrSize(7)) }, nfsOK},
		{"others may not read mode 0", other, func() uint32 { st, _, _ := w.read(ro, 0, 100); return st }, errAcces},
		{"nor 0600", other, func() uint32 { st, _, _ := w.read(secret, 0, 100); return st }, errAcces},
		{"nor read 0600 at its end", other, func() uint32 { st, _, _ := w.read(secret, 0, 0); return st }, errAcces},
		{"owner writes the program", owner, func() uint32 { return w.write(prog, 0, []byte("#!prog"), fileSync) }, nfsOK},
		{"others read a 0711 program", other, func() uint32 { st, _, _ := w.read(prog, 0, 100); return st }, nfsOK},
		{"but may not write it", other, func() uint32 { return w.write(prog, 0, []byte("x"), fileSync) }, errAcces},
		{"owner truncates by an unchecked create (O_TRUNC)", owner, func() uint32 { return unchecked("prog") }, nfsOK},
	}
	for _, s := range steps {
		as(s.uid)
		if got := s.do(); got != s.want {
			t.Errorf("%s: status %d, want %d", s.name, got, s.want)
		}
	}
	as(0)
	if _, data, _ := w.read(ro, 0, 100); string(data) != "Git obj" {
		t.Errorf("0444 file holds %q, want %q", data, "Git obj")
	}
	if _, a := w.getattr(ro); a.mode != 0 || a.uid != owner {
		t.Errorf("0444 file: mode %o uid %d, want 0 and %d", a.mode, a.uid, owner)
	}
	if _, a := w.getattr(prog); a.size != 0 {
		t.Errorf("program: size %d after the unchecked create, want 0", a.size)
	}
}
