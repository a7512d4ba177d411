package integration

import (
	"bufio"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"golang.org/x/sys/unix"
)

// capsValue is a valid vfs_cap_data (revision 2, cap_net_raw effective,
// what `setcap cap_net_raw+ep` writes); the kernel refuses malformed ones.
var capsValue = []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// withoutFsetid runs fn on an OS thread of its own whose effective
// capabilities lack CAP_FSETID, and returns its error. The kernel then
// treats the thread's writes and truncations as unprivileged and flags
// them (FUSE_WRITE_KILL_SUIDGID...). fn must make its system calls itself
// (package unix), on the calling thread. The mount is not mounted with
// allow_other, so no other uid could use it at all: a root thread without
// CAP_FSETID is the unprivileged writer the FUSE side can test. The thread
// is never unlocked, so it dies with the goroutine and its reduced
// capabilities never serve other code.
func withoutFsetid(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		data[0].Effective &^= 1 << unix.CAP_FSETID
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// appendByte appends one byte to path (open, write, close on this thread).
func appendByte(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte{'x'}); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ftruncate truncates path to one byte through an open descriptor.
func ftruncate(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	return unix.Ftruncate(fd, 1)
}

// openTrunc opens path with O_TRUNC.
func openTrunc(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	return unix.Close(fd)
}

// privsOf returns path's permission bits and whether it has file
// capabilities. The mode comes from statx asking for STATX_MODE alone,
// which the kernel answers from its cache while that is valid (so a stale
// cache shows), or with fresh set from objfs itself (AT_STATX_FORCE_SYNC).
func privsOf(t *testing.T, path string, fresh bool) (uint32, bool) {
	t.Helper()
	var st unix.Statx_t
	flags := 0
	if fresh {
		flags = unix.AT_STATX_FORCE_SYNC
	}
	if err := unix.Statx(unix.AT_FDCWD, path, flags, unix.STATX_MODE, &st); err != nil {
		t.Fatal(err)
	}
	_, err := unix.Getxattr(path, "security.capability", nil)
	if err != nil && !errors.Is(err, unix.ENODATA) {
		t.Fatalf("getxattr security.capability of %s: %v", path, err)
	}
	return uint32(st.Mode) & 0o7777, err == nil
}

// TestKillPrivFUSE: on a real mount, writes, truncations and chowns drop
// setuid, setgid and file capabilities exactly as on a local Linux
// filesystem (objfs does it itself since it negotiates
// FUSE_HANDLE_KILLPRIV_V2), and the kernel asks for security.capability
// once per file, not before every write.
func TestKillPrivFUSE(t *testing.T) {
	v := newVolume(t)
	v.mount(t, "--metrics", "127.0.0.1:0")
	metricsAddr := metricsAddrOf(t, v)

	unpriv := func(op func(string) error) func(string) error {
		return func(p string) error { return withoutFsetid(func() error { return op(p) }) }
	}
	chownSame := func(p string) error { return unix.Chown(p, 0, 0) }
	// chown(path, -1, -1) reaches objfs as a SETATTR naming nothing.
	chownNoIDs := func(p string) error { return unix.Chown(p, -1, -1) }
	tests := []struct {
		name     string
		mode     uint32
		gid      int // the file's group; the test runs as root, gid 0
		caps     bool
		op       func(string) error
		wantMode uint32
		wantCaps bool
	}{
		{"write without CAP_FSETID clears suid", 0o4777, 0, false, unpriv(appendByte), 0o777, false},
		{"write without CAP_FSETID clears sgid with group exec", 0o2777, 0, false, unpriv(appendByte), 0o777, false},
		{"write without CAP_FSETID in the group keeps sgid without group exec", 0o2767, 0, false, unpriv(appendByte), 0o2767, false},
		{"write without CAP_FSETID outside the group clears sgid without group exec", 0o2767, 5, false, unpriv(appendByte), 0o767, false},
		{"write as root keeps suid and sgid", 0o6777, 0, false, appendByte, 0o6777, false},
		{"write as root drops capabilities", 0o755, 0, true, appendByte, 0o755, false},
		{"write without CAP_FSETID drops capabilities and suid", 0o4755, 0, true, unpriv(appendByte), 0o755, false},
		{"ftruncate without CAP_FSETID clears suid", 0o4777, 0, false, unpriv(ftruncate), 0o777, false},
		{"ftruncate as root keeps suid, drops capabilities", 0o4755, 0, true, ftruncate, 0o4755, false},
		{"O_TRUNC without CAP_FSETID clears suid", 0o4777, 0, false, unpriv(openTrunc), 0o777, false},
		{"O_TRUNC as root keeps suid", 0o4777, 0, false, openTrunc, 0o4777, false},
		{"chown to the same owner as root clears suid and capabilities", 0o4755, 0, true, chownSame, 0o755, false},
		{"chown naming no ids clears suid and capabilities", 0o4760, 0, true, chownNoIDs, 0o760, false},
		{"chown naming no ids clears sgid with group exec", 0o2750, 0, false, chownNoIDs, 0o750, false},
		{"chown naming no ids as root keeps sgid without group exec", 0o2740, 5, false, chownNoIDs, 0o2740, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(v.mnt, fmt.Sprintf("f%d", i))
			if err := os.WriteFile(p, []byte("content"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, 0, tc.gid); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.caps {
				if err := unix.Setxattr(p, "security.capability", capsValue, 0); err != nil {
					t.Fatalf("setxattr security.capability: %v", err)
				}
			}
			if mode, caps := privsOf(t, p, false); mode != tc.mode || caps != tc.caps {
				t.Fatalf("setup: mode %o caps %v, want %o caps %v", mode, caps, tc.mode, tc.caps)
			}
			if err := tc.op(p); err != nil {
				t.Fatal(err)
			}
			// What the kernel has cached (it must have been told)...
			if mode, caps := privsOf(t, p, false); mode != tc.wantMode || caps != tc.wantCaps {
				t.Errorf("mode %o caps %v, want %o caps %v", mode, caps, tc.wantMode, tc.wantCaps)
			}
			// ...and what objfs has.
			if mode, _ := privsOf(t, p, true); mode != tc.wantMode {
				t.Errorf("mode asked of objfs %o, want %o", mode, tc.wantMode)
			}
		})
	}

	t.Run("one GETXATTR for many writes", func(t *testing.T) {
		p := filepath.Join(v.mnt, "many")
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		before := fuseOpCount(t, metricsAddr, "getxattr")
		buf := make([]byte, 4096)
		for i := range 100 {
			if _, err := unix.Pwrite(fd, buf, int64(i)*4096); err != nil {
				t.Fatal(err)
			}
		}
		after := fuseOpCount(t, metricsAddr, "getxattr")
		// Without FUSE_HANDLE_KILLPRIV_V2 the kernel asks before every
		// write: 100.
		if after-before > 1 {
			t.Errorf("%d GETXATTR requests for 100 writes to one file, want at most 1", after-before)
		}
		if w := fuseOpCount(t, metricsAddr, "write"); w < 100 {
			t.Errorf("the metrics count %d writes, want at least 100: the count is not of this mount", w)
		}
	})
}

// metricsAddrOf returns the address the mount of v serves --metrics on,
// from its log (the test asks for port 0: no port can be taken meanwhile).
func metricsAddrOf(t *testing.T, v *volume) string {
	t.Helper()
	const key = `msg="serving metrics" addr=`
	for deadline := time.Now().Add(mountReadyTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		data, _ := os.ReadFile(v.proc.logPath)
		for line := range strings.Lines(string(data)) {
			if _, rest, ok := strings.Cut(line, key); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					return f[0]
				}
			}
		}
		if v.proc.exited() {
			break
		}
	}
	t.Fatalf("the mount logged no metrics address\n%s", v.proc.logTail())
	return ""
}

// fuseOpCount reads how many FUSE requests of kind op the mount served,
// from its --metrics endpoint.
func fuseOpCount(t *testing.T, addr, op string) int {
	t.Helper()
	want := `objfs_fuse_op_seconds_count{op="` + op + `"} `
	var lastErr error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			lastErr = err
			continue
		}
		n := 0
		s := bufio.NewScanner(resp.Body)
		for s.Scan() {
			if rest, ok := strings.CutPrefix(s.Text(), want); ok {
				f, err := strconv.ParseFloat(rest, 64)
				if err != nil {
					t.Fatalf("metrics line %q: %v", s.Text(), err)
				}
				n = int(f)
			}
		}
		resp.Body.Close()
		return n // absent: none yet
	}
	t.Fatalf("metrics at %s: %v", addr, lastErr)
	return 0
}

// TestKillPrivNFS: a WRITE through the NFS front end drops setuid and
// setgid unless the caller is root (after squashing), as Linux's knfsd,
// and always drops file capabilities; the FUSE mount of the same process
// sees it at once. The kernel has no part in this: objfs does it all.
func TestKillPrivNFS(t *testing.T) {
	v := newVolume(t)
	addr := freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")
	root := dialNFSAs(t, v, addr, 0, 0)
	user := dialNFSAs(t, v, addr, 1000, 1000)
	for i, tc := range []struct {
		name     string
		target   *nfsc.Target
		mode     uint32
		wantMode uint32
	}{
		{"write by uid 1000 clears suid and sgid, drops capabilities", user, 0o6777, 0o777},
		{"write by root keeps suid and sgid, drops capabilities", root, 0o6777, 0o6777},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("n%d", i)
			p := filepath.Join(v.mnt, name)
			if err := os.WriteFile(p, []byte("content"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := unix.Setxattr(p, "security.capability", capsValue, 0); err != nil {
				t.Fatalf("setxattr security.capability: %v", err)
			}
			if mode, caps := privsOf(t, p, false); mode != tc.mode || !caps {
				t.Fatalf("setup: mode %o caps %v", mode, caps)
			}
			nfsWrite(t, tc.target, name, []byte("nfs"))
			if mode, caps := privsOf(t, p, false); mode != tc.wantMode || caps {
				t.Errorf("mode %o caps %v, want %o and no capabilities", mode, caps, tc.wantMode)
			}
		})
	}
}
