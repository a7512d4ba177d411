package integration

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// skipReasons names posixtest cases that are skipped, each with the kernel
// limitation that makes it impossible to pass. Keep it empty unless a case
// cannot pass on any correct FUSE filesystem.
var skipReasons = map[string]string{
	// The case sets a write lock with F_SETLK on one descriptor and expects
	// F_SETLK of a read lock on a second descriptor of the SAME process to
	// fail with EAGAIN. POSIX record locks belong to the process (fcntl(2)),
	// so no conflict exists; on this mount the Linux kernel's own lock
	// manager keeps the locks, and it (correctly) grants the second lock,
	// exactly as on ext4. go-fuse's loopback passes only because it turns
	// F_SETLK into F_OFD_SETLK, and go-fuse's own runner skips the case.
	// TestLocks checks the real semantics: conflicts between processes
	// (F_SETLK), and between open file descriptions (flock, F_OFD_SETLK).
	"FcntlFlockLocksFile": "POSIX record locks never conflict within one process; the kernel's lock manager serving this mount grants the second lock (see TestLocks for cross-process checks)",
}

// TestPosixSuite runs every go-fuse posixtest case, each in its own fresh
// subdirectory of one mount. None of the cases needs the mount root: they
// only create names below the directory they are given (ReadDirBasic,
// ReadDirConsistency and Tmpfile want it empty, which a fresh subdirectory
// is). If the server dies or hangs during a case, the case fails with the
// server's log and the rest run on a fresh mount of the same volume.
func TestPosixSuite(t *testing.T) {
	v := newVolume(t)
	v.mount(t)

	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)

	for _, name := range names {
		fn := posixtest.All[name]
		if ok, _ := v.alive(); !ok {
			v.mount(t)
		}
		t.Run(name, func(t *testing.T) {
			if reason, ok := skipReasons[name]; ok {
				t.Skip(reason)
			}
			dir := filepath.Join(v.mnt, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("creating the test directory: %v", err)
			}
			stop := v.stallWatchdog(t, "posixtest "+name, 90*time.Second)
			defer func() {
				stop()
				if ok, why := v.alive(); !ok {
					t.Errorf("after %s: %s", name, why)
				}
			}()
			fn(t, dir)
		})
	}

	if ok, _ := v.alive(); ok {
		v.unmount(t)
	}
}
