package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// lockChildEnv makes the test binary act as a second process that tries to
// take a POSIX record lock on the file the environment names.
const lockChildEnv = "OBJFS_LOCK_CHILD_FILE"

// TestLockChildProcess is not a test on its own: it is the second process
// of TestLocks, started with lockChildEnv set.
func TestLockChildProcess(t *testing.T) {
	path := os.Getenv(lockChildEnv)
	if path == "" {
		t.Skip("helper process for TestLocks")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		os.Stdout.WriteString("open: " + err.Error())
		return
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 0, Len: 0}
	err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	switch {
	case err == nil:
		os.Stdout.WriteString("LOCKED")
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES):
		os.Stdout.WriteString("CONFLICT")
	default:
		os.Stdout.WriteString("error: " + err.Error())
	}
}

// tryLockFromOtherProcess reports what a second process sees when it asks
// for a read lock on path: "CONFLICT" or "LOCKED".
func tryLockFromOtherProcess(t *testing.T, path string) string {
	t.Helper()
	cmd := childProcess("TestLockChildProcess", lockChildEnv+"="+path)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lock child process: %v\n%s", err, out)
	}
	s := string(out)
	for _, w := range []string{"CONFLICT", "LOCKED"} {
		if strings.Contains(s, w) {
			return w
		}
	}
	t.Fatalf("lock child process said: %q", s)
	return ""
}

// TestLocks checks the locking semantics applications rely on: POSIX
// record locks conflict between processes (not between descriptors of one
// process), flock and OFD locks conflict between open file descriptions.
func TestLocks(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	path := filepath.Join(v.mnt, "locked")
	if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	f1, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	f2, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()

	t.Run("posix record locks between processes", func(t *testing.T) {
		if got := tryLockFromOtherProcess(t, path); got != "LOCKED" {
			t.Fatalf("unlocked file: other process got %s, want LOCKED", got)
		}
		wr := unix.Flock_t{Type: unix.F_WRLCK}
		if err := unix.FcntlFlock(f1.Fd(), unix.F_SETLK, &wr); err != nil {
			t.Fatalf("F_SETLK write lock: %v", err)
		}
		if got := tryLockFromOtherProcess(t, path); got != "CONFLICT" {
			t.Fatalf("write-locked file: other process got %s, want CONFLICT", got)
		}
		// POSIX: locks belong to the process; its other descriptor is not blocked.
		rd := unix.Flock_t{Type: unix.F_RDLCK}
		if err := unix.FcntlFlock(f2.Fd(), unix.F_SETLK, &rd); err != nil {
			t.Fatalf("same process, second descriptor: %v, want success", err)
		}
		un := unix.Flock_t{Type: unix.F_UNLCK}
		if err := unix.FcntlFlock(f1.Fd(), unix.F_SETLK, &un); err != nil {
			t.Fatalf("unlock: %v", err)
		}
		if got := tryLockFromOtherProcess(t, path); got != "LOCKED" {
			t.Fatalf("after unlock: other process got %s, want LOCKED", got)
		}
	})

	t.Run("flock between open file descriptions", func(t *testing.T) {
		if err := unix.Flock(int(f1.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Fatalf("flock LOCK_EX: %v", err)
		}
		if err := unix.Flock(int(f2.Fd()), unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, syscall.EWOULDBLOCK) {
			t.Fatalf("flock on second description: %v, want EWOULDBLOCK", err)
		}
		if err := unix.Flock(int(f1.Fd()), unix.LOCK_UN); err != nil {
			t.Fatalf("flock LOCK_UN: %v", err)
		}
		if err := unix.Flock(int(f2.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
			t.Fatalf("flock after unlock: %v", err)
		}
		_ = unix.Flock(int(f2.Fd()), unix.LOCK_UN)
	})

	t.Run("OFD locks between open file descriptions", func(t *testing.T) {
		wr := unix.Flock_t{Type: unix.F_WRLCK}
		if err := unix.FcntlFlock(f1.Fd(), unix.F_OFD_SETLK, &wr); err != nil {
			t.Fatalf("F_OFD_SETLK: %v", err)
		}
		rd := unix.Flock_t{Type: unix.F_RDLCK}
		if err := unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &rd); !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("F_OFD_SETLK on second description: %v, want EAGAIN", err)
		}
	})
}
