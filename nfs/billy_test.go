package nfs

import (
	"context"
	"errors"
	"io"
	"os"
	"sort"
	"syscall"
	"testing"
	"time"

	gonfs "github.com/willscott/go-nfs"

	"github.com/objfs/objfs/fs/meta"
)

// TestBillyAdapter exercises the go-billy view of fs.FS that go-nfs works
// through: files, directories, links, attributes and error values.
func TestBillyAdapter(t *testing.T) {
	f, _ := newTestVolume(t).open(t)
	b := &billyFS{ctx: context.Background(), f: f, c: &meta.Root}

	if err := b.MkdirAll("a/b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := b.Create("a/b/file")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Seek(6, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("WORLD")); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	r, err := b.Open("a/b/file")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "hello WORLD" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := b.Symlink("b/file", "a/sym"); err != nil {
		t.Fatal(err)
	}
	if target, err := b.Readlink("a/sym"); err != nil || target != "b/file" {
		t.Errorf("readlink %q, %v", target, err)
	}
	if fi, err := b.Stat("a/sym"); err != nil || fi.Size() != 11 || fi.Mode().IsDir() {
		t.Errorf("stat through symlink: %v, %v", fi, err)
	}
	if fi, err := b.Lstat("a/sym"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("lstat of symlink: %v, %v", fi, err)
	}
	if err := b.Link("a/b/file", "a/hard"); err != nil {
		t.Fatal(err)
	}
	if err := b.Mkfifo("a/fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Mknod("a/chr", 0o600, 1, 3); err != nil {
		t.Fatal(err)
	}
	if fi, _ := b.Lstat("a/chr"); fi == nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("mknod: %v", fi)
	}
	if err := b.Chmod("a/hard", 0o600|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(1_000_000_000, 5)
	if err := b.Chtimes("a/hard", mt, mt); err != nil {
		t.Fatal(err)
	}
	fi, err := b.Stat("a/b/file")
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSetuid == 0 || !fi.ModTime().Equal(mt) {
		t.Errorf("after chmod/chtimes through the link: %v %v %v", fi.Mode(), fi.ModTime(), err)
	}
	if err := b.Rename("a/b/file", "a/c-file"); err != nil {
		t.Fatal(err)
	}
	ents, err := b.ReadDir("a")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	want := []string{"b", "c-file", "chr", "fifo", "hard", "sym"}
	if len(names) != len(want) {
		t.Fatalf("readdir %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("readdir %v, want %v", names, want)
		}
	}

	errs := []struct {
		name  string
		err   error
		errno syscall.Errno
	}{
		{"open missing", openErr(b.Open("nope")), syscall.ENOENT},
		{"create in a file", openErr(b.Create("a/hard/x")), syscall.ENOTDIR},
		{"exclusive create of existing", openErr(b.OpenFile("a/hard", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)), syscall.EEXIST},
		{"open a directory for writing", openErr(b.OpenFile("a", os.O_WRONLY, 0)), syscall.EISDIR},
		{"remove a non-empty directory", b.Remove("a"), syscall.ENOTEMPTY},
		{"readlink of a file", readlinkErr(b.Readlink("a/hard")), syscall.EINVAL},
		{"mkdirall through a file", b.MkdirAll("a/hard/x", 0o755), syscall.ENOTDIR},
	}
	for _, tc := range errs {
		if !errors.Is(tc.err, tc.errno) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.errno)
		}
	}
	if _, err := b.Open("nope"); !os.IsNotExist(err) {
		t.Errorf("os.IsNotExist(%v) is false", err)
	}

	ro := &billyFS{ctx: context.Background(), f: f, c: &meta.Root, ro: true}
	if _, err := ro.Create("x"); !errors.Is(err, syscall.EROFS) {
		t.Errorf("create on a read-only view: %v", err)
	}
	if err := ro.Remove("a/hard"); !errors.Is(err, syscall.EROFS) {
		t.Errorf("remove on a read-only view: %v", err)
	}
}

func openErr(_ any, err error) error        { return err }
func readlinkErr(_ string, err error) error { return err }

// TestHandlerHandles checks go-nfs's handle conversions: a handle resolves
// to the file's current path after a rename, a stale or malformed one is an
// NFS status error.
func TestHandlerHandles(t *testing.T) {
	f, _ := newTestVolume(t).open(t)
	s, err := newServer(f, Options{Logger: testLog()})
	if err != nil {
		t.Fatal(err)
	}
	b := s.h.fs(context.Background())
	if err := b.MkdirAll("d/e", 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := b.Create("d/e/f")
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	h := s.h.ToHandle(b, []string{"d", "e", "f"})
	if err := b.Rename("d", "moved"); err != nil {
		t.Fatal(err)
	}
	_, p, err := s.h.FromHandle(h)
	if err != nil || len(p) != 3 || p[0] != "moved" || p[2] != "f" {
		t.Fatalf("FromHandle after a rename: %v, %v", p, err)
	}
	var nerr *gonfs.NFSStatusError
	stale := append([]byte(nil), h...)
	stale[len(stale)-1] ^= 1
	if _, _, err := s.h.FromHandle(stale); !errors.As(err, &nerr) || nerr.NFSStatus != gonfs.NFSStatusStale {
		t.Errorf("other generation: %v", err)
	}
	if _, _, err := s.h.FromHandle([]byte{1, 2}); !errors.As(err, &nerr) || nerr.NFSStatus != gonfs.NFSStatusBadHandle {
		t.Errorf("malformed handle: %v", err)
	}
	if err := b.Remove("moved/e/f"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.h.FromHandle(h); !errors.As(err, &nerr) || nerr.NFSStatus != gonfs.NFSStatusStale {
		t.Errorf("removed file: %v", err)
	}
}
