package fuse

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"testing"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
)

func TestSplitTime(t *testing.T) {
	for _, tc := range []struct {
		ns   int64
		sec  int64
		nsec uint32
	}{
		{0, 0, 0},
		{1, 0, 1},
		{1_500_000_000, 1, 500_000_000},
		{-1, -1, 999_999_999},
		{-1_500_000_000, -2, 500_000_000},
		{-250_000_000, -1, 750_000_000},
		{-100_000_000_001, -101, 999_999_999},
		{-2_000_000_000, -2, 0},
	} {
		sec, nsec := splitTime(tc.ns)
		if int64(sec) != tc.sec || nsec != tc.nsec {
			t.Errorf("splitTime(%d) = %d s + %d ns, want %d s + %d ns", tc.ns, int64(sec), nsec, tc.sec, tc.nsec)
		}
		if back := int64(sec)*1e9 + int64(nsec); back != tc.ns {
			t.Errorf("splitTime(%d) does not add back up: %d", tc.ns, back)
		}
	}
}

func TestErrno(t *testing.T) {
	a := &FS{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, tc := range []struct {
		err  error
		want gofuse.Status
	}{
		{nil, gofuse.OK},
		{syscall.ENOENT, gofuse.ENOENT},
		{fmt.Errorf("rename: %w", syscall.ENOTEMPTY), gofuse.Status(syscall.ENOTEMPTY)},
		{fmt.Errorf("commit: %w", meta.ErrTxnTooBig), gofuse.Status(syscall.EFBIG)},
		// An I/O failure wrapping EIO and a cause stays EIO.
		{fmt.Errorf("read block: %w: %w", syscall.EIO, errors.New("store down")), gofuse.EIO},
		// Anything that is no errno is an unexpected failure: EIO, logged.
		{errors.New("corrupt metadata record"), gofuse.EIO},
	} {
		if got := a.errno("op", tc.err); got != tc.want {
			t.Errorf("errno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestOpenFlags: FUSE_OPEN_KILL_SUIDGID in the kernel's open_flags reaches
// fs as OpenKillSuidgid; nothing else is added.
func TestOpenFlags(t *testing.T) {
	const trunc = syscall.O_WRONLY | syscall.O_TRUNC
	if got := openFlags(trunc, gofuse.OPEN_KILL_SUIDGID); got != trunc|fs.OpenKillSuidgid {
		t.Errorf("with the kill flag: %#x, want %#x", got, trunc|fs.OpenKillSuidgid)
	}
	if got := openFlags(trunc, 0); got != trunc {
		t.Errorf("without it: %#x, want %#x", got, trunc)
	}
}

// TestPermissionOptions: the kernel checks permissions on every mount but
// one by root that root alone may use, unless asked to.
func TestPermissionOptions(t *testing.T) {
	for _, tc := range []struct {
		allowOther, kernelPermissions bool
		euid                          int
		want                          bool
	}{
		{false, false, 0, false},
		{false, true, 0, true},
		{true, false, 0, true},
		{true, true, 0, true},
		{false, false, 1000, true},
		{true, false, 1000, true},
		{false, true, 1000, true},
	} {
		opts := PermissionOptions(tc.allowOther, tc.kernelPermissions, tc.euid)
		got := len(opts) == 1 && opts[0] == "default_permissions"
		if got != tc.want || (!tc.want && len(opts) != 0) {
			t.Errorf("PermissionOptions(allowOther %v, kernelPermissions %v, euid %d) = %q, want default_permissions: %v",
				tc.allowOther, tc.kernelPermissions, tc.euid, opts, tc.want)
		}
		if KernelChecks(tc.allowOther, tc.kernelPermissions, tc.euid) != tc.want {
			t.Errorf("KernelChecks(%v, %v, %d) = %v", tc.allowOther, tc.kernelPermissions, tc.euid, !tc.want)
		}
	}
}
