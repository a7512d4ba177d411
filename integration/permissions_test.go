package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountOptions returns the per-mount and super block options of the topmost
// mount at path, as /proc/self/mountinfo lists them.
func mountOptions(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var opts []string
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) < 7 || unescapeMountinfo(fields[4]) != path {
			continue
		}
		opts = strings.Split(fields[5], ",")
		for i := 6; i < len(fields)-3; i++ {
			if fields[i] == "-" {
				opts = append(opts, strings.Split(fields[i+3], ",")...)
				break
			}
		}
	}
	if opts == nil {
		t.Fatalf("%s is not in /proc/self/mountinfo", path)
	}
	return opts
}

// asFsuid runs fn on an OS thread of its own whose file system uid and gid
// are uid and gid, its real and effective ids staying 0: what knfsd and
// NFS-Ganesha do to act for a client. Such a thread passes the kernel's
// test of who may use a mount that root made without allow_other, while
// the change of fsuid drops its file system capabilities. The thread is
// never unlocked, so it dies with the goroutine.
func asFsuid(uid, gid int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// setfsgid and setfsuid return the previous id, not an error.
		unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
		unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
		if got, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0); int(got) != uid {
			errc <- fmt.Errorf("setfsuid(%d): the thread's fsuid is %d", uid, got)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// renameGetattrs renames n files from one directory of the mount to another
// and returns how many GETATTR requests the mount served meanwhile.
func renameGetattrs(t *testing.T, mnt, addr string, n int) int {
	t.Helper()
	a, b := filepath.Join(mnt, "ra"), filepath.Join(mnt, "rb")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(a, fmt.Sprint(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := fuseOpCount(t, addr, "getattr")
	for i := range n {
		if err := os.Rename(filepath.Join(a, fmt.Sprint(i)), filepath.Join(b, fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	return fuseOpCount(t, addr, "getattr") - before
}

// TestRootOnlyMountChecksPermissionsItself: a mount that root makes without
// --allow-other leaves permission checks to objfs (no default_permissions),
// which saves the GETATTR of each directory a rename, create or unlink
// changes, and still answers as the kernel would: root cannot execute a
// file without an execute bit, and a root thread acting as another user
// through its fsuid (the only other caller such a mount lets in) is
// refused what that user may not do, and logged. --kernel-permissions
// brings the kernel's checks, and their GETATTRs, back.
func TestRootOnlyMountChecksPermissionsItself(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only a mount by root leaves the checks to objfs")
	}
	const n = 200
	v := newVolume(t)
	// The temporary directories above the mountpoint are 0700: the thread
	// acting as another user must be able to reach the mount.
	for _, d := range []string{v.base, filepath.Dir(v.base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	v.mount(t, "--metrics", "127.0.0.1:0")
	if opts := mountOptions(t, v.mnt); slices.Contains(opts, "default_permissions") {
		t.Errorf("mount by root without --allow-other has options %v, want no default_permissions", opts)
	}
	if got := renameGetattrs(t, v.mnt, metricsAddrOf(t, v), n); got > n/10 {
		t.Errorf("%d renames across directories sent %d GETATTRs, want (almost) none", n, got)
	}

	p := func(name string) string { return filepath.Join(v.mnt, name) }
	if err := os.WriteFile(p("script"), []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(p("script")).Run(); !errors.Is(err, os.ErrPermission) {
		t.Errorf("root executes a file of mode 0644: %v, want permission denied", err)
	}
	if err := unix.Access(p("script"), unix.X_OK); !errors.Is(err, unix.EACCES) {
		t.Errorf("access(X_OK) by root on a file of mode 0644: %v, want EACCES", err)
	}
	if err := unix.Access(p("script"), unix.W_OK|unix.R_OK); err != nil {
		t.Errorf("access(R_OK|W_OK) by root: %v", err)
	}
	if err := os.Chmod(p("script"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(p("script")).Run(); err != nil {
		t.Errorf("root executes a file of mode 0755: %v", err)
	}
	if err := os.Mkdir(p("locked"), 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-c", "cd "+p("locked")).CombinedOutput(); err != nil {
		t.Errorf("root's chdir into a directory of mode 0700: %v\n%s", err, out)
	}
	if err := os.WriteFile(p("secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("public"), []byte("p"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A root thread acting as uid 1000: what objfs alone now refuses.
	for _, tc := range []struct {
		what string
		fn   func() error
		want error // nil: allowed
	}{
		{"create in root's 0755 directory", func() error { return createFile(p("mine"), nil) }, unix.EACCES},
		{"read root's 0600 file", func() error { _, err := readAll(p("secret")); return err }, unix.EACCES},
		{"read root's 0644 file", func() error { _, err := readAll(p("public")); return err }, nil},
		{"write root's 0644 file", func() error { return onFD(p("public"), unix.O_WRONLY, func(int) error { return nil }) }, unix.EACCES},
		{"unlink from root's 0755 directory", func() error { return unix.Unlink(p("public")) }, unix.EACCES},
		{"chmod root's file", func() error { return unix.Chmod(p("public"), 0o666) }, unix.EPERM},
		{"list a 0700 directory", func() error { _, err := os.ReadDir(p("locked")); return err }, unix.EACCES},
	} {
		err := asFsuid(1000, 1000, tc.fn)
		if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("fsuid 1000: %s: %v, want %v", tc.what, err, tc.want)
		}
	}
	if got, _ := os.ReadFile(p("public")); string(got) != "p" {
		t.Errorf("root's 0644 file holds %q after the refused writes, want %q", got, "p")
	}
	if log, _ := os.ReadFile(v.proc.logPath); !strings.Contains(string(log), "--kernel-permissions") {
		t.Errorf("the mount did not warn of a caller acting as another user\n%s", v.proc.logTail())
	}
	v.unmount(t)

	v.mount(t, "--metrics", "127.0.0.1:0", "--kernel-permissions")
	if opts := mountOptions(t, v.mnt); !slices.Contains(opts, "default_permissions") {
		t.Errorf("mount with --kernel-permissions has options %v, want default_permissions", opts)
	}
	for _, d := range []string{"ra", "rb"} {
		if err := os.RemoveAll(p(d)); err != nil {
			t.Fatal(err)
		}
	}
	if got := renameGetattrs(t, v.mnt, metricsAddrOf(t, v), n); got < n {
		t.Errorf("%d renames with the kernel's checks sent %d GETATTRs, want at least one each", n, got)
	}
}
