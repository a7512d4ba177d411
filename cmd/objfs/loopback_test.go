package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireFUSE skips the test where FUSE cannot be used, and fails it
// instead on CI, where it must run (as integration/harness_test.go does).
func requireFUSE(t *testing.T) {
	t.Helper()
	var missing []string
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, fmt.Sprintf("/dev/fuse: %v", err))
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		missing = append(missing, "fusermount3 not in PATH (Debian package fuse3)")
	}
	if len(missing) == 0 {
		return
	}
	reason := "FUSE prerequisites missing: " + strings.Join(missing, "; ")
	if os.Getenv("CI") == "true" {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

// buildObjfs builds this command into a temporary directory: --background
// re-executes the binary, so the test needs the real one, not itself.
func buildObjfs(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "objfs")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -o %s .: %v\n%s", bin, err, out)
	}
	return bin
}

// processGone reports whether pid has exited (a zombie counts: it serves
// nothing and only waits for its new parent to reap it).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func waitGone(pid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if processGone(pid) {
			return true
		}
	}
	return processGone(pid)
}

var pidRe = regexp.MustCompile(`\(pid ([0-9]+),`)

// TestLoopbackMount mounts `objfs loopback --background` as make bench does,
// uses it, and stops it with SIGTERM, which must unmount it cleanly.
func TestLoopbackMount(t *testing.T) {
	requireFUSE(t)
	bin := buildObjfs(t)
	tmp := t.TempDir()
	src, mnt, logPath := filepath.Join(tmp, "src"), filepath.Join(tmp, "mnt"), filepath.Join(tmp, "loopback.log")
	for _, d := range []string{src, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	pid := 0
	// Registered before the mount starts, so that it runs whatever
	// happens after: detach the mount, then make sure the server is gone.
	t.Cleanup(func() {
		if isMounted(mnt) {
			if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
				t.Logf("fusermount3 -u %s: %v: %s; detaching lazily", mnt, err, out)
				_ = exec.Command("fusermount3", "-u", "-z", mnt).Run()
			}
		}
		if pid > 0 && !waitGone(pid, 10*time.Second) {
			t.Errorf("loopback server pid %d still running after unmount; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
		if isMounted(mnt) {
			t.Errorf("%s still mounted after cleanup", mnt)
		}
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s:\n%s", logPath, b)
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "loopback", "--background", "--log", logPath, src, mnt).CombinedOutput()
	if m := pidRe.FindSubmatch(out); m != nil {
		pid, _ = strconv.Atoi(string(m[1]))
	}
	if err != nil {
		t.Fatalf("objfs loopback --background: %v\n%s", err, out)
	}
	if pid == 0 {
		t.Fatalf("no (pid N, ...) in the output: %q", out)
	}
	if !isMounted(mnt) {
		t.Fatalf("%s is not mounted after %q", mnt, out)
	}
	if typ := mountType(t, mnt); typ != "fuse.objfs-loopback" {
		t.Errorf("mount type %q, want fuse.objfs-loopback", typ)
	}

	// Through the mount to SRC_DIR and back.
	want := []byte("through go-fuse's loopback\n")
	if err := os.WriteFile(filepath.Join(mnt, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(src, "f")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("SRC_DIR/f = %q, %v; want %q", got, err, want)
	}
	if err := os.Mkdir(filepath.Join(mnt, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "f"), filepath.Join(mnt, "d", "g")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "d", "g")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("MOUNTPOINT/d/g = %q, %v; want %q", got, err, want)
	}

	// A second mount on the same mountpoint is refused, clearly.
	out, err = exec.CommandContext(ctx, bin, "loopback", "--background", "--log", logPath, src, mnt).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already a mount point") {
		t.Errorf("second loopback on %s: %v: %s", mnt, err, out)
	}

	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !waitGone(pid, 10*time.Second) {
		t.Fatalf("pid %d still running 10s after SIGTERM", pid)
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted after SIGTERM", mnt)
	}
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), "unmounted loopback") {
		t.Errorf("log lacks the clean unmount:\n%s", b)
	}
}

// mountType is the file system type of the mount at path, from
// /proc/self/mountinfo ("" if none).
func mountType(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	typ := ""
	for _, l := range strings.Split(string(b), "\n") {
		// The fields after " - " are type, source, options.
		pre, post, ok := strings.Cut(l, " - ")
		f := strings.Fields(pre)
		if ok && len(f) > 4 && unescapeMount(f[4]) == path {
			if g := strings.Fields(post); len(g) > 0 {
				typ = g[0] // the last one listed is on top
			}
		}
	}
	return typ
}

func TestLoopbackErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		src, mnt string
		want     string
	}{
		{filepath.Join(dir, "nope"), mnt, "source directory " + filepath.Join(dir, "nope") + " does not exist"},
		{file, mnt, "is not a directory"},
		{dir, dir, "inside the source directory"},
		{dir, mnt, "inside the source directory"},
		{mnt, filepath.Join(dir, "nope"), "mountpoint " + filepath.Join(dir, "nope") + " does not exist"},
		{mnt, file, "is not a directory"},
	} {
		if err := loopback(tc.src, tc.mnt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loopback(%s, %s) = %v, want an error with %q", tc.src, tc.mnt, err, tc.want)
		}
	}
}

func TestLoopbackHelp(t *testing.T) {
	cmd := loopbackCmd()
	if !cmd.Hidden {
		t.Error("loopback is not hidden")
	}
	for _, want := range []string{"FUSE reference", "objfs bench", "--background", "--log"} {
		if !strings.Contains(cmd.Long+cmd.Example+cmd.Flags().FlagUsages(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}
