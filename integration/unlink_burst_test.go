package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// burstChildEnv makes the test binary act as a process that opens files in
// the directory the environment names, unlinks them and exits with all of
// them open, so the kernel closes them all at once.
const burstChildEnv = "OBJFS_BURST_CHILD_DIR"

// burstFiles is three times the reaper's queue (fs.reapQueue).
const burstFiles = 3000

// TestUnlinkBurstChildProcess is not a test on its own: it is the process
// TestUnlinkBurstReaped starts, with burstChildEnv set.
func TestUnlinkBurstChildProcess(t *testing.T) {
	dir := os.Getenv(burstChildEnv)
	if dir == "" {
		t.Skip("helper process for TestUnlinkBurstReaped")
	}
	for i := range burstFiles {
		path := filepath.Join(dir, fmt.Sprint("f", i))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
		if err == nil {
			_, err = f.Write([]byte("open while unlinked"))
		}
		if err == nil {
			err = os.Remove(path)
		}
		if err != nil {
			fmt.Print("error: ", err)
			os.Exit(1)
		}
		// f stays open: the exit closes every one.
	}
	fmt.Print("DONE")
	os.Exit(0)
}

// TestUnlinkBurstReaped: a process exiting with thousands of unlinked files
// open leaves as many orphans at once, more than the reaper's queue holds;
// the mount frees every one while it runs (objfs status counts them), and
// fsck after the unmount finds none left.
func TestUnlinkBurstReaped(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	dir := filepath.Join(v.mnt, "burst")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := childProcess("TestUnlinkBurstChildProcess", burstChildEnv+"="+dir)
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "DONE") {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	reaped := regexp.MustCompile(`freed: +(\d+) unlinked inodes reaped`)
	var last string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		st, err := runObjfs(time.Minute, "status", v.dir)
		if err != nil {
			t.Fatalf("objfs status: %v\n%s", err, st)
		}
		last = st
		if m := reaped.FindStringSubmatch(st); m != nil {
			if n, _ := strconv.Atoi(m[1]); n >= burstFiles {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the child exited with %d unlinked files open, the mount has not reaped them all:\n%s", burstFiles, last)
		}
	}
	v.unmount(t)
	if n := strings.Count(v.fsck(t), "orphan"); n != 0 {
		t.Errorf("fsck after the unmount: %d orphans left", n)
	}
}
