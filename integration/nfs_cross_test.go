package integration

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// TestNFSCrossProtocol mounts a volume with `objfs mount --nfs`, one process
// serving FUSE and NFS over one POSIX layer, and checks that what one side
// writes or renames the other sees at once.
func TestNFSCrossProtocol(t *testing.T) {
	v := newVolume(t)
	if out, _ := runObjfs(time.Minute, "mount", "--help"); !strings.Contains(out, "--nfs") {
		t.Skip("objfs mount has no --nfs flag yet")
	}
	addr := freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")

	target := dialNFS(t, v, addr)

	// FUSE writes, NFS reads.
	data := bytes.Repeat([]byte("fuse->nfs "), 50000)
	if err := os.WriteFile(filepath.Join(v.mnt, "from-fuse"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := target.Open("from-fuse")
	if err != nil {
		t.Fatalf("NFS open of a file FUSE just wrote: %v", err)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("NFS read %d bytes (%v), want the %d FUSE wrote", len(got), err, len(data))
	}

	// NFS writes, FUSE reads.
	data2 := bytes.Repeat([]byte("nfs->fuse "), 50000)
	nfsWrite(t, target, "from-nfs", data2)
	if got, err := os.ReadFile(filepath.Join(v.mnt, "from-nfs")); err != nil || !bytes.Equal(got, data2) {
		t.Fatalf("FUSE read %d bytes (%v), want the %d NFS wrote", len(got), err, len(data2))
	}

	// Renames both ways.
	if err := target.Rename("from-nfs", "renamed-by-nfs"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(v.mnt, "renamed-by-nfs")); err != nil {
		t.Errorf("FUSE does not see the NFS rename: %v", err)
	}
	if err := os.Rename(filepath.Join(v.mnt, "from-fuse"), filepath.Join(v.mnt, "renamed-by-fuse")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := target.Lookup("renamed-by-fuse"); err != nil {
		t.Errorf("NFS does not see the FUSE rename: %v", err)
	}
}

// TestNFSChangesReachFUSECaches: the FUSE mount first caches an
// attribute, a name and file pages; an NFS client of the same process then
// changes each. The mount must see every change at once, not after its
// cache timeouts: NFS changes drop the kernel's caches.
func TestNFSChangesReachFUSECaches(t *testing.T) {
	v := newVolume(t)
	addr := freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")
	target := dialNFS(t, v, addr)
	path := filepath.Join(v.mnt, "shared")
	if err := os.WriteFile(path, []byte("version-1"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Cache everything on the FUSE side: the name, the attributes, the pages.
	fd, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	buf := make([]byte, 64)
	if n, err := fd.ReadAt(buf, 0); string(buf[:n]) != "version-1" {
		t.Fatalf("FUSE read %q (%v)", buf[:n], err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != 9 {
		t.Fatalf("FUSE stat: %v %v", st, err)
	}

	// NFS rewrites the content in place and extends the file.
	nfsWrite(t, target, "shared", []byte("VERSION-2 longer"))
	if st, err := os.Stat(path); err != nil || st.Size() != 16 {
		t.Errorf("FUSE stat right after the NFS write: size %v (%v), want 16", st.Size(), err)
	}
	if n, _ := fd.ReadAt(buf, 0); string(buf[:n]) != "VERSION-2 longer" {
		t.Errorf("FUSE read through an open descriptor right after the NFS write: %q, want %q", buf[:n], "VERSION-2 longer")
	}
	// The same size again, so that only the NFS front end's word can tell
	// the kernel: a new descriptor must not be served the pages it kept
	// (FOPEN_KEEP_CACHE).
	nfsWrite(t, target, "shared", []byte("version-3 LONGER"))
	if got, err := os.ReadFile(path); string(got) != "version-3 LONGER" {
		t.Errorf("FUSE read through a new descriptor right after a same-size NFS write: %q (%v), want %q", got, err, "version-3 LONGER")
	}

	// FUSE learns that a name is missing (a negative entry); NFS creates
	// it: the mount must see the new file at once.
	fresh := filepath.Join(v.mnt, "fresh")
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing name: %v", err)
	}
	nfsWrite(t, target, "fresh", []byte("new"))
	if got, err := os.ReadFile(fresh); err != nil || string(got) != "new" {
		t.Errorf("FUSE read of a name NFS just created (after FUSE saw it missing): %q, %v", got, err)
	}

	// A file with two links, its nlink cached by FUSE; NFS removes one
	// link: the other name must show nlink 1 at once.
	h1, h2 := filepath.Join(v.mnt, "h1"), filepath.Join(v.mnt, "h2")
	if err := os.WriteFile(h1, []byte("linked"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(h1, h2); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(h1, &st); err != nil || st.Nlink != 2 {
		t.Fatalf("nlink before: %d, %v", st.Nlink, err)
	}
	if err := target.Remove("h2"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(h1, &st); err != nil || st.Nlink != 1 {
		t.Errorf("FUSE nlink right after NFS removed the other link: %d (%v), want 1", st.Nlink, err)
	}

	// NFS renames it away: the cached name must go at once.
	if err := target.Rename("shared", "moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FUSE stat of the old name right after the NFS rename: %v, want ENOENT", err)
	}
	if _, err := os.Stat(filepath.Join(v.mnt, "moved")); err != nil {
		t.Errorf("FUSE stat of the new name: %v", err)
	}
}

// freeAddr returns a loopback TCP address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// dialNFS mounts the export of v's server at addr as an NFS client (root,
// AUTH_SYS), retrying until the server is up.
func dialNFS(t *testing.T, v *volume, addr string) *nfsc.Target {
	t.Helper()
	return dialNFSAs(t, v, addr, 0, 0)
}

// dialNFSAs is dialNFS with AUTH_SYS credentials uid and gid.
func dialNFSAs(t *testing.T, v *volume, addr string, uid, gid uint32) *nfsc.Target {
	t.Helper()
	for deadline := time.Now().Add(mountReadyTimeout); ; time.Sleep(20 * time.Millisecond) {
		c, err := rpc.DialTCP("tcp", addr, false)
		if err == nil {
			target, err := (&nfsc.Mount{Client: c}).Mount("/", rpc.NewAuthUnix("t", uid, gid).Auth())
			if err == nil {
				t.Cleanup(c.Close)
				return target
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("NFS on %s not ready: %v\n%s", addr, err, v.proc.logTail())
		}
	}
}

// nfsWrite writes data to name (created if missing) through the NFS client.
func nfsWrite(t *testing.T, target *nfsc.Target, name string, data []byte) {
	t.Helper()
	w, err := target.OpenFile(name, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
