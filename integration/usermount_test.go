package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUserMount is a workstation user's own mount: a user other than root
// formats a volume and mounts it through fusermount3, then uses it as
// root would use a mount of their own: files, directories, links, modes,
// times and user.* attributes, within what an unprivileged owner may do
// (no chown to others, no device nodes, no trusted.* attributes). Nobody
// else may use the mount, root included (no --allow-other); and the user
// unmounts it cleanly, leaving a volume fsck finds clean.
func TestUserMount(t *testing.T) {
	requirePrereqs(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil || st.Mode&0o006 != 0o006 {
		reason := "/dev/fuse is not open to every user (mode 0666 on Debian; .ci/setup sets it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(reason)
		}
		t.Skip(reason)
	}
	// fusermount3 needs the user to have a name; nobody is on every
	// Debian system.
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The temporary directories are 0700; the user needs their own.
	for _, d := range []string{base, filepath.Dir(base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(base, "home")
	v := &volume{base: base, dir: filepath.Join(home, "vol"), mnt: filepath.Join(home, "mnt"),
		user: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, bin: filepath.Join(base, "objfs")}
	if err := copyFile(objfsBin, v.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{home, v.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	asUserCmd := func(args ...string) (string, error) {
		cmd := exec.Command(v.bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: v.user}
		cmd.Dir = home
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := asUserCmd("format", v.dir); err != nil {
		t.Fatalf("objfs format as uid %d: %v\n%s", uid, err, out)
	}
	v.mount(t)

	p := func(name string) string { return filepath.Join(v.mnt, name) }
	data := bytes.Repeat([]byte("user data "), 100_000)
	err = asUser(uid, gid, nil, func() error {
		var st unix.Stat_t
		if err := unix.Stat(v.mnt, &st); err != nil {
			return err
		}
		if st.Uid != uint32(uid) || st.Gid != uint32(gid) {
			return fmt.Errorf("the root directory of the user's volume is %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
		}
		steps := []struct {
			what string
			do   func() error
			want error // nil: must succeed
		}{
			{"create and write", func() error { return createFile(p("f"), data) }, nil},
			{"fsync", func() error { return onFD(p("f"), unix.O_RDWR, unix.Fsync) }, nil},
			{"mkdir", func() error { return unix.Mkdir(p("d"), 0o755) }, nil},
			{"rename", func() error { return unix.Rename(p("f"), p("d/g")) }, nil},
			{"symlink", func() error { return unix.Symlink("d/g", p("l")) }, nil},
			{"link", func() error { return unix.Link(p("d/g"), p("h")) }, nil},
			{"chmod setuid", func() error { return unix.Chmod(p("h"), 0o4750) }, nil},
			{"utimes", func() error {
				return unix.UtimesNano(p("h"), []unix.Timespec{unix.NsecToTimespec(1e9), unix.NsecToTimespec(946684800e9)})
			}, nil},
			{"setxattr user.*", func() error { return unix.Setxattr(p("h"), "user.note", []byte("mine"), 0) }, nil},
			{"mkfifo", func() error { return unix.Mkfifo(p("fifo"), 0o600) }, nil},
			{"chown to root", func() error { return unix.Chown(p("h"), 0, 0) }, unix.EPERM},
			{"chgrp to a group not theirs", func() error { return unix.Chown(p("h"), -1, 0) }, unix.EPERM},
			{"mknod of a device", func() error { return unix.Mknod(p("null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) }, unix.EPERM},
			{"setxattr trusted.*", func() error { return unix.Setxattr(p("h"), "trusted.x", []byte("1"), 0) }, unix.EPERM},
		}
		for _, s := range steps {
			if err := s.do(); !errors.Is(err, s.want) && !(s.want == nil && err == nil) {
				return fmt.Errorf("%s: %v, want %v", s.what, err, s.want)
			}
		}
		got, err := readAllFD(p("l"))
		if err != nil || !bytes.Equal(got, data) {
			return fmt.Errorf("read back through the symlink: %v (%d bytes, want %d)", err, len(got), len(data))
		}
		if err := unix.Lstat(p("h"), &st); err != nil {
			return err
		}
		if st.Mode != unix.S_IFREG|0o4750 || st.Nlink != 2 || st.Mtim.Sec != 946684800 || st.Uid != uint32(uid) {
			return fmt.Errorf("h: mode %o, nlink %d, mtime %d, uid %d", st.Mode, st.Nlink, st.Mtim.Sec, st.Uid)
		}
		buf := make([]byte, 16)
		if n, err := unix.Getxattr(p("h"), "user.note", buf); err != nil || string(buf[:n]) != "mine" {
			return fmt.Errorf("getxattr user.note: %q, %v", buf[:max(n, 0)], err)
		}
		if err := unix.Unlink(p("h")); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("as uid %d on their own mount: %v", uid, err)
	}
	// Root did not mount it and there is no --allow-other: the kernel
	// keeps root out, as for any FUSE mount.
	if _, err := os.Stat(p("d")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("root's stat on a user's mount: %v, want EACCES", err)
	}
	v.unmount(t)
	if out, err := asUserCmd("fsck", v.dir); err != nil || !strings.Contains(out, "; 0 errors") {
		t.Fatalf("fsck as uid %d: %v\n%s", uid, err, out)
	}
}

// readAllFD reads the whole file at path on the calling thread.
func readAllFD(path string) (data []byte, err error) {
	err = onFD(path, unix.O_RDONLY, func(fd int) error {
		buf := make([]byte, 1<<20)
		for {
			n, err := unix.Read(fd, buf)
			if err != nil {
				return err
			}
			if n == 0 {
				return nil
			}
			data = append(data, buf[:n]...)
		}
	})
	return data, err
}

// copyFile copies src to a new file dst with mode perm.
func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
