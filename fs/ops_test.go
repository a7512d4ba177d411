package fs

import (
	"bytes"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// TestUtimesAfterBufferedWrite: times set explicitly after a write (cp -p
// calls futimens on the open descriptor before close) must survive the
// commit of the buffered data.
func TestUtimesAfterBufferedWrite(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		flush bool // flush before the utimes
	}{
		{"inline, buffered", 100, false},
		{"chunked, buffered", 100000, false},
		{"chunked, committed first", 100000, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10})
			ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
			v.write(fh, 0, pattern(1, tc.size))
			if tc.flush {
				v.flush(fh)
			}
			const atime, mtime = int64(1_000_000_000_000_000_000), int64(1_100_000_000_000_000_000)
			in := meta.SetAttrIn{Valid: meta.SetAtime | meta.SetMtime, Atime: atime, Mtime: mtime}
			if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, in, fh); err != nil {
				t.Fatal(err)
			}
			check := func(when string) {
				t.Helper()
				a, err := v.f.GetAttr(v.ctx, ino)
				if err != nil {
					t.Fatal(err)
				}
				if a.Mtime != mtime || a.Atime != atime {
					t.Errorf("%s: atime %d mtime %d, want %d %d (set explicitly after the write)", when, a.Atime, a.Mtime, atime, mtime)
				}
				if a.Size != uint64(tc.size) {
					t.Errorf("%s: size %d, want %d", when, a.Size, tc.size)
				}
			}
			check("before close")
			v.flush(fh)
			v.release(fh)
			check("after close")
			v.reopen(v.opts)
			check("after remount")
		})
	}
}

// TestWriteTimes: a write moves mtime and ctime forward (visible before the
// commit), a read does not.
func TestWriteTimes(t *testing.T) {
	v := newVol(t, volConfig{})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	a0, _ := v.f.GetAttr(v.ctx, ino)
	time.Sleep(2 * time.Millisecond)
	v.write(fh, 0, []byte("x"))
	a1, _ := v.f.GetAttr(v.ctx, ino)
	if a1.Mtime <= a0.Mtime || a1.Ctime <= a0.Ctime {
		t.Errorf("buffered write: mtime %d->%d ctime %d->%d, want both later", a0.Mtime, a1.Mtime, a0.Ctime, a1.Ctime)
	}
	v.release(fh)
	a2, _ := v.f.GetAttr(v.ctx, ino)
	if a2.Mtime != a1.Mtime {
		t.Errorf("commit changed mtime %d -> %d", a1.Mtime, a2.Mtime)
	}
	_ = v.content(ino)
	a3, _ := v.f.GetAttr(v.ctx, ino)
	if a3.Mtime != a2.Mtime || a3.Ctime != a2.Ctime {
		t.Errorf("a read changed mtime/ctime")
	}

	// After times set in the future (touch -d), a write sets mtime to
	// the time of the write at once, as the commit will: a buffered
	// write must not show the old time until it is committed.
	future := time.Now().Add(24 * time.Hour).UnixNano()
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMtime, Mtime: future}, 0); err != nil {
		t.Fatal(err)
	}
	fh = v.openFile(ino, syscall.O_RDWR)
	before := time.Now().UnixNano()
	v.write(fh, 1, []byte("y"))
	a4, _ := v.f.GetAttr(v.ctx, ino)
	if a4.Mtime < before || a4.Mtime >= future {
		t.Errorf("buffered write after mtime was set in the future: mtime %d, want the write's time (after %d, before %d)", a4.Mtime, before, future)
	}
	v.release(fh)
	if a5, _ := v.f.GetAttr(v.ctx, ino); a5.Mtime != a4.Mtime {
		t.Errorf("the commit changed mtime %d -> %d", a4.Mtime, a5.Mtime)
	}
}

// TestHandlelessIO covers the NFS entry points: permissions are checked on
// every call, writes are visible at once, and type errors are clear.
func TestHandlelessIO(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10, inlineMax: 100})
	alice := meta.Caller{Uid: 1000, Gid: 1000}
	bob := meta.Caller{Uid: 1001, Gid: 1001}
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, meta.RootIno, meta.SetAttrIn{Valid: meta.SetMode, Mode: 0o777}, 0); err != nil {
		t.Fatal(err)
	}
	a, fh, err := v.f.Create(v.ctx, &alice, meta.RootIno, "f", 0o640, syscall.O_CREAT|syscall.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	v.release(fh)
	d, err := v.f.Mkdir(v.ctx, &alice, meta.RootIno, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	l, err := v.f.Symlink(v.ctx, &alice, meta.RootIno, "l", "f")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		write bool
		c     meta.Caller
		ino   uint64
		off   uint64
		data  []byte
		want  syscall.Errno
	}{
		{"owner writes", true, alice, a.Ino, 0, []byte("hello"), 0},
		{"owner writes beyond the inline limit", true, alice, a.Ino, 200, pattern(1, 5000), 0},
		{"other cannot write", true, bob, a.Ino, 0, []byte("x"), syscall.EACCES},
		{"other cannot read", false, bob, a.Ino, 0, make([]byte, 5), syscall.EACCES},
		{"owner reads", false, alice, a.Ino, 0, []byte("hello"), 0},
		{"write to a directory", true, meta.Root, d.Ino, 0, []byte("x"), syscall.EISDIR},
		{"read a directory", false, meta.Root, d.Ino, 0, make([]byte, 1), syscall.EISDIR},
		{"write to a symlink", true, meta.Root, l.Ino, 0, []byte("x"), syscall.EINVAL},
		{"write beyond the maximum size", true, meta.Root, a.Ino, meta.MaxFileSize - 1, []byte("xy"), syscall.EFBIG},
		{"missing inode", false, meta.Root, 999999, 0, make([]byte, 1), syscall.ENOENT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.write {
				_, err = v.f.WriteInode(v.ctx, &tc.c, tc.ino, tc.off, tc.data, false)
				if err == nil {
					// Committed at once: the layout has it without any flush.
					d, _ := v.m.ReadData(v.ctx, tc.ino, 0, ^uint64(0))
					if d.Attr.Size < tc.off+uint64(len(tc.data)) {
						t.Errorf("handle-less write not committed: size %d", d.Attr.Size)
					}
				}
			} else {
				buf := make([]byte, len(tc.data))
				var n int
				n, err = v.f.ReadInode(v.ctx, &tc.c, tc.ino, tc.off, buf)
				if err == nil && !bytes.Equal(buf[:n], tc.data) {
					t.Errorf("read %q, want %q", buf[:n], tc.data)
				}
			}
			if tc.want == 0 && err != nil || tc.want != 0 && err != tc.want {
				t.Errorf("error %v, want %v", err, tc.want)
			}
		})
	}
	want := append([]byte("hello"), make([]byte, 195)...)
	want = append(want, pattern(1, 5000)...)
	if got := v.content(a.Ino); !bytes.Equal(got, want) {
		t.Errorf("content: %s", firstDiff(got, want))
	}
}

// TestOpenPermissions: open checks the access mode against the file's bits.
func TestOpenPermissions(t *testing.T) {
	v := newVol(t, volConfig{})
	alice := meta.Caller{Uid: 1000, Gid: 1000}
	bob := meta.Caller{Uid: 1001, Gid: 1000} // alice's group
	eve := meta.Caller{Uid: 1002, Gid: 1002}
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, meta.RootIno, meta.SetAttrIn{Valid: meta.SetMode, Mode: 0o777}, 0); err != nil {
		t.Fatal(err)
	}
	a, fh, err := v.f.Create(v.ctx, &alice, meta.RootIno, "f", 0o640, syscall.O_CREAT|syscall.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	v.write(fh, 0, []byte("secret"))
	v.release(fh)
	tests := []struct {
		name  string
		c     meta.Caller
		flags uint32
		want  syscall.Errno
	}{
		{"owner read-write", alice, syscall.O_RDWR, 0},
		{"group read", bob, syscall.O_RDONLY, 0},
		{"group write", bob, syscall.O_WRONLY, syscall.EACCES},
		{"group truncate", bob, syscall.O_RDONLY | syscall.O_TRUNC, syscall.EACCES},
		{"other read", eve, syscall.O_RDONLY, syscall.EACCES},
		{"root anything", meta.Root, syscall.O_RDWR, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fh, err := v.f.Open(v.ctx, &tc.c, a.Ino, tc.flags)
			if tc.want == 0 && err != nil || tc.want != 0 && err != tc.want {
				t.Errorf("open: %v, want %v", err, tc.want)
			}
			if err == nil {
				v.release(fh)
			}
		})
	}
	if got := v.content(a.Ino); string(got) != "secret" {
		t.Errorf("content changed by refused opens: %q", got)
	}
	// statfs counts inodes exactly.
	st, err := v.f.StatFs(v.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if used := st.Files - st.FilesFree; used != 2 {
		t.Errorf("statfs: %d inodes used, want 2", used)
	}
}

// TestReadUpdatesAtimeLikeRelatime: a read after a change moves atime; a
// second read moves it no more (one metadata write per change, as relatime).
func TestReadUpdatesAtimeLikeRelatime(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.write(fh, 0, []byte("hello"))
	v.flush(fh)
	old := time.Now().Add(-time.Hour).UnixNano()
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetAtime | meta.SetMtime, Atime: old, Mtime: old}, 0); err != nil {
		t.Fatal(err)
	}
	// ctime (now) is newer than atime: the read must update atime.
	v.read(fh, 0, 5)
	a1, _ := v.f.GetAttr(v.ctx, ino)
	if a1.Atime <= a1.Ctime {
		t.Fatalf("after a read: atime %d not after ctime %d", a1.Atime, a1.Ctime)
	}
	v.read(fh, 0, 5)
	a2, _ := v.f.GetAttr(v.ctx, ino)
	if a2.Atime != a1.Atime {
		t.Errorf("a second read moved atime from %d to %d; relatime updates once per change", a1.Atime, a2.Atime)
	}
	if a2.Mtime != old {
		t.Errorf("reads changed mtime to %d", a2.Mtime)
	}
	v.release(fh)
}

// TestAtimeIsCommittedLazily: a read's atime update is served at once but
// committed by the background (one transaction per batch), an explicit
// atime set afterwards wins over it, and a clean close commits what is
// pending.
func TestAtimeIsCommittedLazily(t *testing.T) {
	v := newVol(t, volConfig{blockSize: 4096, chunkSize: 64 << 10})
	ino, fh := v.create(meta.RootIno, "f", syscall.O_RDWR)
	v.write(fh, 0, []byte("hello"))
	v.flush(fh)
	v.read(fh, 0, 5)
	served, err := v.f.GetAttr(v.ctx, ino)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.f.pendingAtimes()[ino]; !ok {
		t.Fatal("the read's atime update was committed in the read itself")
	}
	if served.Atime <= served.Mtime {
		t.Fatalf("served atime %d not after mtime %d", served.Atime, served.Mtime)
	}
	v.f.commitAtimes(v.ctx)
	stored, err := v.m.GetAttr(v.ctx, ino)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Atime != served.Atime || len(v.f.pendingAtimes()) != 0 {
		t.Fatalf("committed atime %d, served %d, %d still pending", stored.Atime, served.Atime, len(v.f.pendingAtimes()))
	}

	// A read, then an explicit (older) atime: the explicit one stays.
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMtime, Mtime: time.Now().UnixNano()}, 0); err != nil {
		t.Fatal(err)
	}
	v.read(fh, 0, 5)
	const explicit = int64(1_000_000_000)
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetAtime, Atime: explicit}, 0); err != nil {
		t.Fatal(err)
	}
	v.f.commitAtimes(v.ctx)
	if a, _ := v.f.GetAttr(v.ctx, ino); a.Atime != explicit {
		t.Fatalf("atime %d after utimens(%d) following a read", a.Atime, explicit)
	}

	// Pending at close: committed, and there after a remount.
	if _, err := v.f.SetAttr(v.ctx, &meta.Root, ino, meta.SetAttrIn{Valid: meta.SetMtime, Mtime: time.Now().UnixNano()}, 0); err != nil {
		t.Fatal(err)
	}
	v.read(fh, 0, 5)
	want, _ := v.f.GetAttr(v.ctx, ino)
	v.release(fh)
	v.reopen(v.opts)
	if a, _ := v.f.GetAttr(v.ctx, ino); a.Atime != want.Atime {
		t.Fatalf("atime after remount %d, want %d", a.Atime, want.Atime)
	}
}
