package integration

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

// These tests run two well-known outside exercisers, stress-ng and fio,
// against a real mount, so that POSIX and data-integrity regressions that
// our own tests do not think of still show. .ci/setup installs both.

// requireTool returns the path of the program name, or fails (CI=true) or
// skips the test when it is not installed.
func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		reason := fmt.Sprintf("%s not in PATH (Debian package %s; .ci/setup installs it)", name, pkg)
		if os.Getenv("CI") == "true" {
			t.Fatal(reason)
		}
		t.Skip(reason)
	}
	return path
}

// runExerciser runs an exerciser in its own process group and returns its
// combined output, with dir as its working directory ("": the test's).
// Past timeout the whole group (stress-ng forks a process
// per instance) is killed.
func runExerciser(timeout time.Duration, dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v, process group killed: %w", timeout, err)
	}
	return out.String(), err
}

// toolVersion is the first line of `name --version`, for the log.
func toolVersion(name string) string {
	out, err := runExerciser(time.Minute, "", name, "--version")
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if err != nil {
		return fmt.Sprintf("%s --version: %v: %s", name, err, line)
	}
	return line
}

// stressor is one stress-ng stressor run against the mount.
type stressor struct {
	name string
	// unsupported, when set, says why stress-ng may skip the stressor on
	// this mount ("... not supported on the file system, skipping
	// stressor"): only then is a skip logged rather than failed. Mark only
	// what the kernel or objfs's design rules out; a stressor that fails
	// stays unmarked and fails the test.
	unsupported string
	// ops, when set, runs the stressor until each instance has done this
	// many bogo operations (with a time limit of 20 times the usual one)
	// rather than for the usual time: for stressors whose one operation
	// takes seconds on this mount, so that a timed run could end before it
	// reaches its checks.
	ops int
}

// stressors is TestStressNG's table, each run with --verify. io-uring is
// left out: stress-ng 0.15.06's io-uring stressor fails on ext4 and tmpfs
// alike on Linux 6.18 (IORING_OP_STATX completes with ENOENT), which says
// nothing about objfs.
var stressors = []stressor{
	{name: "dir"},
	{name: "dirdeep"},
	{name: "dentry"},
	{name: "rename"},
	{name: "link"},
	{name: "symlink"},
	{name: "chmod"},
	{name: "chown"}, // as root, so that it really changes owners
	{name: "fallocate"},
	{name: "fpunch"},
	{name: "hdd"},
	{name: "seek"},
	{name: "sync-file"},
	// One operation sets 4096 attributes on a file, replaces each three
	// ways, reads each back three ways and compares, lists and removes
	// them: 2-3 s here for two instances (ext4 stops at its few KiB of
	// attribute space), so 3 s often ended inside the first loop.
	{name: "xattr", ops: 1},
	{name: "lockf"},
	{name: "flock"},
	{name: "fcntl"},
	{name: "lockofd"},
	{name: "mmap"},
	{name: "msync"},
	{name: "readahead"},
	{name: "utime"},
	{name: "filename"},
	{name: "open"},
	{name: "copy-file"},
	{name: "getdent"},
	{name: "sendfile"},
	{name: "splice"},
	{name: "fstat"},
	{name: "file-ioctl"},
	{name: "iomix"},
	{name: "fiemap", unsupported: "FUSE has no fiemap: the VFS answers FS_IOC_FIEMAP with EOPNOTSUPP without asking objfs"},
	{name: "verity", unsupported: "objfs implements no fs-verity (no FUSE ioctls at all)"},
}

var (
	// stress-ng 0.16 and later end with "skipped: N", "passed: N",
	// "failed: N" and "metrics untrustworthy: N" lines (0.15 prints none):
	// only their counts matter.
	stressSummaryLine = regexp.MustCompile(`\] (skipped|passed|failed|metrics untrustworthy): (\d+)`)
	// "stress-ng: fail:  [pid] ...", "stress-ng: error: [pid] process ...
	// terminated with an error", "unsuccessful run completed", "5 failures
	// reached, aborting stress process".
	stressFailureLine = regexp.MustCompile(`(?i)unsuccessful|\bfail(s|ed|ure|ures)?\b|^stress-ng: error:`)
	// Every skip message of stress-ng (pr_inf_skip) says "skipping ..." or
	// "... will be skipped".
	stressSkipLine = regexp.MustCompile(`(?i)\bskip`)
)

// stressVerdict picks out of stress-ng's output the lines that report a
// failure and those that report a skipped stressor.
func stressVerdict(out string) (failures, skips []string) {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if m := stressSummaryLine.FindStringSubmatch(line); m != nil {
			if n, _ := strconv.Atoi(m[2]); n > 0 {
				switch m[1] {
				case "failed":
					failures = append(failures, line)
				case "skipped":
					skips = append(skips, line)
				}
			}
			continue
		}
		switch {
		case stressFailureLine.MatchString(line):
			failures = append(failures, line)
		case stressSkipLine.MatchString(line):
			skips = append(skips, line)
		}
	}
	return failures, skips
}

// TestStressNGVerdict checks the reading of stress-ng's output on what
// stress-ng 0.15 and 0.18 print.
func TestStressNGVerdict(t *testing.T) {
	tests := []struct {
		name                string
		out                 string
		wantFails, wantSkip int
	}{
		{"0.15 pass", `stress-ng: info:  [21272] setting to a 3 second run per stressor
stress-ng: info:  [21272] dispatching hogs: 2 dir
stress-ng: metrc: [21272] stressor       bogo ops real time  usr time  sys time   bogo ops/s     bogo ops/s
stress-ng: metrc: [21272] dir                3619      5.75      0.15      2.77       629.10        1238.29
stress-ng: info:  [21272] successful run completed in 5.81s`, 0, 0},
		{"0.15 skip", `stress-ng: info:  [21218] dispatching hogs: 2 fiemap
stress-ng: info:  [21219] fiemap: FS_IOC_FIEMAP not supported on the file system, skipping stressor, filesystem type: fuse
stress-ng: info:  [21218] successful run completed in 0.01s`, 0, 1},
		{"0.15 xattr skip", `stress-ng: info:  [1] xattr stressor will be skipped, filesystem does not support xattr, filesystem type: fuse`, 0, 1},
		{"0.15 fail", `stress-ng: fail:  [16542] io-uring: completion opcode=21 (IORING_OP_STATX), error=2 (No such file or directory)
info: 5 failures reached, aborting stress process
stress-ng: error: [16539] process [16542] (io-uring) terminated with an error, exit status=2 (stressor failed)
stress-ng: info:  [16539] unsuccessful run completed in 0.14s`, 4, 0},
		{"0.18 pass", `stress-ng: info:  [1338] skipped: 0
stress-ng: info:  [1338] passed: 2: dir (2)
stress-ng: info:  [1338] failed: 0
stress-ng: info:  [1338] metrics untrustworthy: 0
stress-ng: info:  [1338] successful run completed in 5.25 secs`, 0, 0},
		{"0.18 skip", `stress-ng: info:  [1338] skipped: 2: fiemap (2)
stress-ng: info:  [1338] passed: 0
stress-ng: info:  [1338] failed: 0`, 0, 1},
		{"0.18 fail", `stress-ng: info:  [1338] skipped: 0
stress-ng: info:  [1338] passed: 0
stress-ng: info:  [1338] failed: 2: clock (2)
stress-ng: info:  [1338] unsuccessful run completed in 5.25 secs`, 2, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fails, skips := stressVerdict(tc.out)
			if len(fails) != tc.wantFails || len(skips) != tc.wantSkip {
				t.Errorf("stressVerdict: %d failure lines %q and %d skip lines %q, want %d and %d",
					len(fails), fails, len(skips), skips, tc.wantFails, tc.wantSkip)
			}
		})
	}
}

// TestStressNG runs each stressor of the table for OBJFS_STRESS_SECONDS
// (3 by default) with two instances and --verify, in a fresh directory of
// one mount. A stressor fails on a non-zero exit, on any failure line, on
// a skip it is not marked for, or when it leaves files behind (stress-ng
// removes its own). If the server dies or hangs, the rest run on a fresh
// mount of the same volume. Then the volume must unmount cleanly and fsck
// clean.
func TestStressNG(t *testing.T) {
	requirePrereqs(t)
	bin := requireTool(t, "stress-ng", "stress-ng")
	secs := envCount(t, "OBJFS_STRESS_SECONDS", 3)
	t.Log(toolVersion(bin))
	v := newVolume(t)
	v.mount(t)
	root := filepath.Join(v.mnt, "stress-ng")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	cwd := t.TempDir()

	start := time.Now()
	for _, s := range stressors {
		if ok, _ := v.alive(); !ok {
			v.mount(t)
		}
		t.Run(s.name, func(t *testing.T) {
			dir := filepath.Join(root, s.name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("creating the stressor's directory: %v", err)
			}
			timeout := secs
			args := []string{"--" + s.name, "2"}
			if s.ops > 0 {
				timeout = 20 * secs
				args = append(args, fmt.Sprintf("--%s-ops", s.name), strconv.Itoa(2*s.ops))
			}
			args = append(args, "--timeout", fmt.Sprintf("%ds", timeout),
				"--verify", "--metrics-brief", "--temp-path", dir)
			command := "stress-ng " + strings.Join(args, " ")
			limit := time.Duration(timeout)*time.Second + 90*time.Second
			stop := v.stallWatchdog(t, command, limit-30*time.Second)
			began := time.Now()
			// stress-ng 0.15's open stressor leaves empty files named
			// stress-open-PID-N in its working directory, not in
			// --temp-path: keep them out of the source tree.
			out, err := runExerciser(limit, cwd, bin, args...)
			took := time.Since(began).Round(10 * time.Millisecond)
			stop()
			if ok, why := v.alive(); !ok {
				t.Fatalf("%s (%v): %v\n%s\n%s", command, took, err, out, why)
			}

			fails, skips := stressVerdict(out)
			switch {
			case err != nil || len(fails) > 0:
				t.Errorf("%s (%v): %v; %d failure lines:\n%s\n--- full output ---\n%s",
					command, took, exitDesc(err), len(fails), strings.Join(fails, "\n"), out)
			case len(skips) > 0 && s.unsupported == "":
				t.Errorf("%s (%v): stress-ng skipped %s, which objfs supports:\n%s\n--- full output ---\n%s",
					command, took, s.name, strings.Join(skips, "\n"), out)
			case len(skips) > 0:
				t.Logf("%s: skipped as unsupported (%s): %s", s.name, s.unsupported, strings.Join(skips, "; "))
			case s.unsupported != "":
				t.Logf("%s ran although marked unsupported (%s); drop the mark? (%v)\n%s", s.name, s.unsupported, took, out)
			default:
				t.Logf("%s passed in %v: %s", s.name, took, stressMetrics(out, s.name))
			}

			left, err := os.ReadDir(dir)
			if err != nil {
				t.Errorf("reading %s after the run: %v", dir, err)
			} else if len(left) > 0 {
				var names []string
				for _, e := range left {
					names = append(names, e.Name())
				}
				t.Errorf("stress-ng %s left %v in %s; it removes everything it makes, so an unlink, rmdir or readdir went wrong", s.name, names, dir)
			}
		})
	}
	t.Logf("stress-ng runs took %v", time.Since(start).Round(time.Second))

	if ok, _ := v.alive(); ok {
		v.unmount(t)
	}
	t.Log(v.fsck(t, "--verify"))
}

// stressMetrics is the --metrics-brief line of the stressor, for the log.
func stressMetrics(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[1] == "metrc:" && f[3] == name {
			return strings.Join(f[3:], " ")
		}
	}
	return "(no metrics line)"
}

// exitDesc describes how an exerciser ended.
func exitDesc(err error) string {
	if err == nil {
		return "status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	return err.Error()
}

// fioJob is one fio workload of TestFioVerify, run with numjobs=2, each
// job on its own file.
type fioJob struct {
	name string
	args []string
}

var fioJobs = []fioJob{
	{"randwrite-direct", []string{"--rw=randwrite", "--bs=4k", "--size=32m", "--direct=1"}},
	{"randwrite-buffered", []string{"--rw=randwrite", "--bs=4k", "--size=32m"}},
	// 96 MiB per file: across the 64 MiB chunk boundary.
	{"write-1m", []string{"--rw=write", "--bs=1m", "--size=96m"}},
	{"randrw", []string{"--rw=randrw", "--bs=4k", "--size=32m"}},
	// 256 writes per job, each followed by an fsync.
	{"randwrite-fsync", []string{"--rw=randwrite", "--bs=4k", "--size=8m", "--io_size=1m", "--fsync=1"}},
}

// fioProblem matches what fio prints about a bad block or a failed job:
// "crc32c: verify failed at file ...", "verify: bad magic header ...",
// "fio: pid=N, err=84/file:io_u.c:..., func=io_u_sync_complete, ...",
// "v: (groupid=0, jobs=1): err=84 (...)", "fio: io_u error on file ...".
var fioProblem = regexp.MustCompile(`(?i)verify|bad magic|bad header|io_u error|\berr=\s*[1-9]|^fio: `)

// runFio runs job in dir with crc32c verification and fails the test on a
// non-zero exit or a line fioProblem matches. extra selects the phase:
// --do_verify=1 (write, then read back) or --verify_only=1 (read back what
// the same job wrote earlier).
func runFio(t *testing.T, v *volume, bin, dir string, job fioJob, extra ...string) {
	t.Helper()
	args := fioArgs(dir, job, extra...)
	out, took, err := fioRun(t, v, bin, args)
	var bad []string
	for _, line := range strings.Split(out, "\n") {
		if fioProblem.MatchString(strings.TrimSpace(line)) {
			bad = append(bad, line)
		}
	}
	if err != nil || len(bad) > 0 {
		t.Fatalf("fio %s (%v): %v; %d problem lines:\n%s\n--- full output ---\n%s",
			strings.Join(args, " "), took, exitDesc(err), len(bad), strings.Join(bad, "\n"), out)
	}
	var summary []string
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "READ:") || strings.HasPrefix(l, "WRITE:") {
			summary = append(summary, l)
		}
	}
	t.Logf("%s %s passed in %v: %s", job.name, strings.Join(extra, " "), took, strings.Join(summary, "; "))
}

// fioArgs is fio's command line for job in dir, with crc32c verification.
// (verify_state_save=0: on a failed verification fio would otherwise leave
// local-v-N-verify.state files in the working directory.)
func fioArgs(dir string, job fioJob, extra ...string) []string {
	args := append([]string{"--name=v", "--directory=" + dir, "--ioengine=psync", "--numjobs=2",
		"--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0"}, job.args...)
	return append(args, extra...)
}

// fioRun runs fio under a stall watchdog and checks that the server
// survived.
func fioRun(t *testing.T, v *volume, bin string, args []string) (out string, took time.Duration, err error) {
	t.Helper()
	stop := v.stallWatchdog(t, "fio", 2*time.Minute)
	began := time.Now()
	out, err = runExerciser(3*time.Minute, t.TempDir(), bin, args...)
	took = time.Since(began).Round(10 * time.Millisecond)
	stop()
	if ok, why := v.alive(); !ok {
		t.Fatalf("fio %s (%v): %v\n%s\n%s", strings.Join(args, " "), took, err, out, why)
	}
	return out, took, err
}

// TestFioVerify writes with fio through the mount and reads everything
// back with crc32c checks: at once (fio's verify phase, after it synced
// and dropped the files' page cache), and again after a clean remount
// (--verify_only), so that what is checked came back from the volume. A
// canary then corrupts four bytes of one file through the mount and
// requires the re-verification to catch them, so a fio that silently
// stopped verifying cannot pass. The volume must then fsck clean.
func TestFioVerify(t *testing.T) {
	requirePrereqs(t)
	bin := requireTool(t, "fio", "fio")
	t.Log(toolVersion(bin))
	v := newVolume(t)
	v.mount(t)
	dirOf := func(job fioJob) string { return filepath.Join(v.mnt, "fio", job.name) }

	start := time.Now()
	for _, job := range fioJobs {
		if ok, _ := v.alive(); !ok {
			v.mount(t)
		}
		t.Run(job.name, func(t *testing.T) {
			if err := os.MkdirAll(dirOf(job), 0o755); err != nil {
				t.Fatal(err)
			}
			runFio(t, v, bin, dirOf(job), job, "--do_verify=1")
		})
	}

	if ok, _ := v.alive(); ok {
		v.unmount(t)
	}
	v.mount(t)
	for _, job := range fioJobs {
		if ok, _ := v.alive(); !ok {
			v.mount(t)
		}
		t.Run("remount/"+job.name, func(t *testing.T) {
			runFio(t, v, bin, dirOf(job), job, "--verify_only=1")
		})
	}

	t.Run("canary", func(t *testing.T) {
		job := fioJobs[2] // write-1m
		file := filepath.Join(dirOf(job), "v.0.0")
		f, err := os.OpenFile(file, os.O_WRONLY, 0)
		if err != nil {
			t.Fatalf("canary: %v", err)
		}
		const off = 5<<20 + 100
		if _, err := f.WriteAt([]byte("XXXX"), off); err != nil {
			f.Close()
			t.Fatalf("canary: corrupting %s: %v", file, err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("canary: %v", err)
		}
		args := fioArgs(dirOf(job), job, "--verify_only=1")
		out, took, err := fioRun(t, v, bin, args)
		if err == nil || !strings.Contains(out, "verify failed at file "+file+" offset 5242880") {
			t.Fatalf("fio %s (%v) after 4 bytes of %s at offset %d were overwritten: %v, want a failure naming the block at offset 5242880:\n%s",
				strings.Join(args, " "), took, file, off, exitDesc(err), out)
		}
		t.Logf("fio caught the corrupted block (%v, %v)", took, exitDesc(err))
	})
	t.Logf("fio workloads in %v", time.Since(start).Round(time.Second))

	if ok, _ := v.alive(); ok {
		v.unmount(t)
	}
	t.Log(v.fsck(t, "--verify"))
}
