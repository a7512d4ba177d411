package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/integration/difftest"
)

// objfsBin is the objfs binary built once by TestMain; buildErr holds the
// reason (with the compiler output) when it could not be built.
var (
	objfsBin string
	buildErr error
)

const (
	mountReadyTimeout = 20 * time.Second
	termTimeout       = 10 * time.Second
	cleanUnmountWait  = 20 * time.Second
)

func TestMain(m *testing.M) {
	flag.Parse()
	// A prebuilt binary (a race build, a release) is tested as it is. The
	// helper processes some tests start (childProcess) get the parent's
	// binary this way too, so they neither rebuild it nor leave a
	// directory behind when they exit.
	var tmp string
	if bin := os.Getenv("OBJFS_BIN"); bin != "" {
		objfsBin = bin
	} else {
		var err error
		tmp, err = os.MkdirTemp("", "objfs-integration-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "integration: MkdirTemp:", err)
			os.Exit(2)
		}
		objfsBin = filepath.Join(tmp, "objfs")
		buildErr = buildObjfs(objfsBin)
	}

	// Make sure no mount outlives the test binary: on SIGINT/SIGTERM and
	// shortly before the -timeout panic (which runs no t.Cleanup) every
	// live mount server is stopped and its mount detached.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "integration: got %v, stopping all mounts\n", s)
		emergencyCleanup()
		os.Exit(2)
	}()
	if f := flag.Lookup("test.timeout"); f != nil {
		if g, ok := f.Value.(flag.Getter); ok {
			if d, ok := g.Get().(time.Duration); ok && d > 0 {
				margin := min(30*time.Second, d/10)
				time.AfterFunc(d-margin, func() {
					fmt.Fprintf(os.Stderr, "integration: test timeout (%v) is near; stopping all mounts so hung syscalls return\n", d)
					emergencyCleanup()
				})
			}
		}
	}

	code := m.Run()
	if n := emergencyCleanup(); n > 0 {
		fmt.Fprintf(os.Stderr, "integration: %d mount(s) were still alive at exit (harness bug)\n", n)
		code = 1
	}
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	os.Exit(code)
}

// moduleRoot finds the directory holding go.mod, starting at the working
// directory (which is the package directory under go test).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// childProcess returns a command that runs the test named test of this
// test binary as a helper process, with env added to its environment.
func childProcess(test string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), "OBJFS_BIN="+objfsBin)
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

func buildObjfs(out string) error {
	root, err := moduleRoot()
	if err != nil {
		return fmt.Errorf("locating module root: %w", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/objfs")
	cmd.Dir = root
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build -o %s ./cmd/objfs (in %s): %v\n%s", out, root, err, output)
	}
	return nil
}

// requirePrereqs fails (CI=true) or skips the test when FUSE cannot be used,
// and fails it when the binary did not build.
func requirePrereqs(t testing.TB) {
	t.Helper()
	var missing []string
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, fmt.Sprintf("/dev/fuse: %v", err))
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		missing = append(missing, "fusermount3 not in PATH (Debian package fuse3)")
	}
	if len(missing) > 0 {
		reason := "FUSE prerequisites missing: " + strings.Join(missing, "; ")
		if os.Getenv("CI") == "true" {
			t.Fatal(reason)
		}
		t.Skip(reason)
	}
	if buildErr != nil {
		t.Fatalf("objfs binary did not build:\n%v", buildErr)
	}
}

// runObjfs runs a short objfs subcommand and returns its combined output.
func runObjfs(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, objfsBin, args...).CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	return string(out), err
}

// --- mountinfo ---

// unescapeMountinfo undoes the octal escapes (\040 etc.) of /proc mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountFSType returns the fstype of the topmost mount at path, or "" if
// nothing is mounted there.
func mountFSType(path string) string {
	fstype, _ := topMount(path)
	return fstype
}

// topMount returns the fstype and device (major:minor) of the topmost
// mount at path; "" if nothing is mounted there.
func topMount(path string) (fstype, dev string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || unescapeMountinfo(fields[4]) != path {
			continue
		}
		for i := 6; i < len(fields)-1; i++ {
			if fields[i] == "-" {
				fstype, dev = fields[i+1], fields[2] // later lines are mounted on top
				break
			}
		}
	}
	return fstype, dev
}

// abortFuse aborts the FUSE connection of the mount at mnt through fusectl
// (/sys/fs/fuse/connections/MINOR/abort, mounting fusectl if needed): every
// request waiting on it fails at once. It is the way out when a killed
// server cannot finish dying (see forceStop).
func abortFuse(mnt string) error {
	fstype, dev := topMount(mnt)
	if !strings.HasPrefix(fstype, "fuse") {
		return fmt.Errorf("abort FUSE connection: %s is not a FUSE mount (%q)", mnt, fstype)
	}
	_, minor, ok := strings.Cut(dev, ":")
	if !ok {
		return fmt.Errorf("abort FUSE connection of %s: device %q", mnt, dev)
	}
	const ctl = "/sys/fs/fuse/connections"
	if _, err := os.Stat(filepath.Join(ctl, minor)); err != nil {
		if err := syscall.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil && !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("mount fusectl on %s: %w", ctl, err)
		}
	}
	return os.WriteFile(filepath.Join(ctl, minor, "abort"), []byte("1"), 0)
}

func isFuseMounted(path string) bool {
	return strings.HasPrefix(mountFSType(path), "fuse")
}

func isMounted(path string) bool { return mountFSType(path) != "" }

// lazyUnmount detaches whatever is mounted at mnt (fusermount3 -u -z, with
// umount2(MNT_DETACH) as a fallback). "Not mounted" is not an error.
func lazyUnmount(mnt string) error {
	if !isMounted(mnt) {
		return nil
	}
	out, err := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput()
	if err == nil || !isMounted(mnt) {
		return nil
	}
	if err2 := syscall.Unmount(mnt, syscall.MNT_DETACH); err2 != nil && isMounted(mnt) {
		return fmt.Errorf("fusermount3 -u -z %s: %v: %s; umount2(MNT_DETACH): %v", mnt, err, bytes.TrimSpace(out), err2)
	}
	return nil
}

// --- mount processes ---

// mountProc is one running `objfs mount` process.
type mountProc struct {
	cmd     *exec.Cmd
	mnt     string
	logPath string
	logFile *os.File
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // valid after done
}

var (
	liveMu    sync.Mutex
	liveProcs = map[*mountProc]bool{}
)

// exited reports whether the process has been reaped.
func (p *mountProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor waits up to d for the process to exit.
func (p *mountProc) waitFor(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *mountProc) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// forceStop kills the process by PID if needed, reaps it and detaches the
// mount. It is safe to call any number of times.
//
// A SIGKILL can leave the server unable to die: a thread of it that was
// sending the kernel an entry invalidation (for a change made over NFS)
// waits, unkillably, for a directory lock that a FUSE request holds while
// it waits for the dead server's answer, and the connection only closes
// once every thread is gone. Aborting the connection (as an administrator
// would through fusectl) fails that request and lets the process finish.
func (p *mountProc) forceStop() error {
	if !p.exited() {
		p.signal(syscall.SIGKILL)
		if !p.waitFor(termTimeout) {
			if err := abortFuse(p.mnt); err != nil {
				return fmt.Errorf("pid %d did not die after SIGKILL: %w", p.cmd.Process.Pid, err)
			}
			if !p.waitFor(termTimeout) {
				return fmt.Errorf("pid %d did not die after SIGKILL and an aborted FUSE connection", p.cmd.Process.Pid)
			}
		}
	}
	err := lazyUnmount(p.mnt)
	p.forget()
	return err
}

func (p *mountProc) forget() {
	liveMu.Lock()
	delete(liveProcs, p)
	liveMu.Unlock()
	if p.logFile != nil {
		p.logFile.Close()
	}
}

// logTail returns the last lines of the process's stderr/stdout log.
func (p *mountProc) logTail() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	const max = 6000
	if len(data) > max {
		data = data[len(data)-max:]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
		data = append([]byte("...\n"), data...)
	}
	if len(data) == 0 {
		return "(empty)"
	}
	return fmt.Sprintf("--- tail of %s ---\n%s\n--- end ---", p.logPath, data)
}

func (p *mountProc) exitString() string {
	if !p.exited() {
		return "still running"
	}
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}

// emergencyCleanup stops every live mount process (SIGTERM, then SIGKILL)
// and detaches its mount. It returns how many there were.
func emergencyCleanup() int {
	liveMu.Lock()
	procs := make([]*mountProc, 0, len(liveProcs))
	for p := range liveProcs {
		procs = append(procs, p)
	}
	liveMu.Unlock()
	for _, p := range procs {
		p.signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		p.waitFor(5 * time.Second)
		if err := p.forceStop(); err != nil {
			fmt.Fprintln(os.Stderr, "integration: emergency cleanup:", err)
		}
	}
	return len(procs)
}

// --- volumes ---

// volume is one formatted objfs volume with its mountpoint, both inside a
// test's temporary directory.
type volume struct {
	base   string // temporary directory holding everything below
	dir    string // VOLUME_DIR
	mnt    string // MOUNTPOINT
	proc   *mountProc
	nmount int
	// user, when set, runs the mount as that user (a mount by a user
	// other than root, through fusermount3), from bin: the test's own
	// binary is in a directory only root may enter.
	user *syscall.Credential
	bin  string
}

// newVolume formats a fresh volume in t.TempDir().
func newVolume(t testing.TB) *volume {
	t.Helper()
	return newVolumeWith(t)
}

// newVolumeWith formats a fresh volume in t.TempDir(), passing formatArgs
// (e.g. "--store", URL) to `objfs format` before the volume directory.
func newVolumeWith(t testing.TB, formatArgs ...string) *volume {
	t.Helper()
	requirePrereqs(t)
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v := &volume{base: base, dir: filepath.Join(base, "vol"), mnt: filepath.Join(base, "mnt")}
	if err := os.Mkdir(v.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{"format"}, formatArgs...), v.dir)
	if out, err := runObjfs(time.Minute, args...); err != nil {
		t.Fatalf("objfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// mount starts `objfs mount` and waits until the kernel shows the mount. A
// t.Cleanup always stops the process and removes the mount.
// Extra arguments are passed to `objfs mount` before the volume and
// mountpoint (e.g. "--nfs", ADDR).
func (v *volume) mount(t testing.TB, extra ...string) {
	t.Helper()
	if v.proc != nil && !v.proc.exited() {
		t.Fatalf("mount: %s is already mounted by pid %d", v.mnt, v.proc.cmd.Process.Pid)
	}
	if isMounted(v.mnt) {
		t.Fatalf("mount: something is already mounted at %s", v.mnt)
	}
	v.nmount++
	logPath := filepath.Join(v.base, fmt.Sprintf("mount-%d.log", v.nmount))
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"mount"}, extra...)
	if os.Getenv("OBJFS_MOUNT_DEBUG") == "1" {
		args = append(args, "--debug")
	}
	args = append(args, v.dir, v.mnt)
	bin := objfsBin
	if v.bin != "" {
		bin = v.bin
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// If the test binary dies without cleaning up, the server still gets
	// SIGTERM and unmounts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Credential: v.user}
	p := &mountProc{cmd: cmd, mnt: v.mnt, logPath: logPath, logFile: logFile, done: make(chan struct{})}
	if err := startFromSpawner(cmd); err != nil {
		logFile.Close()
		t.Fatalf("starting objfs mount: %v", err)
	}
	liveMu.Lock()
	liveProcs[p] = true
	liveMu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	v.proc = p
	t.Cleanup(func() { v.cleanupProc(t, p) })

	deadline := time.Now().Add(mountReadyTimeout)
	for !isFuseMounted(v.mnt) {
		if p.exited() {
			_ = p.forceStop()
			t.Fatalf("objfs mount %s %s exited before the mount appeared (%s)\n%s", v.dir, v.mnt, p.exitString(), p.logTail())
		}
		if time.Now().After(deadline) {
			err := p.forceStop()
			t.Fatalf("objfs mount: %s did not appear in /proc/self/mountinfo within %v (stop: %v)\n%s", v.mnt, mountReadyTimeout, err, p.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// spawnRequests is served by one goroutine locked to its OS thread for the
// life of the test binary. The kernel sends a Pdeathsig when the *thread*
// that forked a child exits, not the process, and tests that change their
// thread's credentials (withoutFsetid) let that thread exit afterwards: a
// mount forked from such a thread was sent SIGTERM and unmounted itself in
// the middle of its test.
var spawnRequests = make(chan spawnRequest)

type spawnRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

func init() {
	go func() {
		runtime.LockOSThread() // never unlocked: this thread lives as long as the process
		for r := range spawnRequests {
			r.errc <- r.cmd.Start()
		}
	}()
}

// startFromSpawner starts cmd from the spawner's thread (see spawnRequests).
func startFromSpawner(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	spawnRequests <- spawnRequest{cmd, errc}
	return <-errc
}

// cleanupProc is the t.Cleanup of one mount: SIGTERM, wait, SIGKILL by PID,
// then a lazy unmount. It never leaves the mount behind.
func (v *volume) cleanupProc(t testing.TB, p *mountProc) {
	if p.exited() && !isMounted(p.mnt) {
		p.forget()
		return
	}
	if !p.exited() {
		p.signal(syscall.SIGTERM)
		if !p.waitFor(termTimeout) {
			t.Errorf("cleanup: objfs mount pid %d did not exit within %v of SIGTERM; killing it\n%s", p.cmd.Process.Pid, termTimeout, p.logTail())
		} else if p.waitErr != nil && !t.Failed() {
			t.Errorf("cleanup: objfs mount exited with %v after SIGTERM\n%s", p.waitErr, p.logTail())
		}
	}
	if err := p.forceStop(); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// unmount is the clean path: SIGTERM, exit status 0, mount gone.
func (v *volume) unmount(t testing.TB) {
	t.Helper()
	p := v.proc
	if p == nil {
		t.Fatal("unmount: not mounted")
	}
	v.proc = nil
	if p.exited() {
		_ = p.forceStop()
		t.Fatalf("unmount: objfs mount had already exited (%s)\n%s", p.exitString(), p.logTail())
	}
	p.signal(syscall.SIGTERM)
	if !p.waitFor(cleanUnmountWait) {
		err := p.forceStop()
		t.Fatalf("unmount: objfs mount pid %d did not exit within %v of SIGTERM (killed: %v)\n%s", p.cmd.Process.Pid, cleanUnmountWait, err, p.logTail())
	}
	stillMounted := isMounted(v.mnt)
	if err := p.forceStop(); err != nil {
		t.Errorf("unmount: %v", err)
	}
	if p.waitErr != nil {
		t.Fatalf("unmount: objfs mount exited with %v after SIGTERM, want status 0\n%s", p.waitErr, p.logTail())
	}
	if stillMounted {
		t.Fatalf("unmount: objfs mount exited 0 but %s was still in /proc/self/mountinfo\n%s", v.mnt, p.logTail())
	}
}

// kill9 simulates a crash: SIGKILL, reap, then detach the stale mount.
func (v *volume) kill9(t testing.TB) {
	t.Helper()
	p := v.proc
	if p == nil {
		t.Fatal("kill9: not mounted")
	}
	v.proc = nil
	wasRunning := !p.exited()
	if err := p.forceStop(); err != nil {
		t.Fatalf("kill9: %v", err)
	}
	if isMounted(v.mnt) {
		t.Fatalf("kill9: %s is still mounted after fusermount3 -u -z", v.mnt)
	}
	if !wasRunning {
		t.Fatalf("kill9: objfs mount had already exited before the kill (%s)\n%s", p.exitString(), p.logTail())
	}
}

// alive reports whether the current mount process is still running; if it
// died on its own, it detaches the mount and returns a description.
func (v *volume) alive() (bool, string) {
	p := v.proc
	if p == nil {
		return false, "not mounted"
	}
	if !p.exited() {
		return true, ""
	}
	v.proc = nil
	_ = p.forceStop()
	return false, fmt.Sprintf("objfs mount died (%s)\n%s", p.exitString(), p.logTail())
}

// status runs `objfs status` for the log (the volume should be unmounted).
func (v *volume) status(t testing.TB) {
	t.Helper()
	out, err := runObjfs(time.Minute, "status", v.dir)
	if err != nil {
		t.Logf("objfs status %s: %v\n%s", v.dir, err, out)
		return
	}
	t.Logf("objfs status:\n%s", strings.TrimSpace(out))
}

// destroy unmounts (if needed) and removes the volume's files now rather
// than at the end of the test.
func (v *volume) destroy(t testing.TB) {
	t.Helper()
	if v.proc != nil {
		p := v.proc
		v.proc = nil
		p.signal(syscall.SIGTERM)
		p.waitFor(termTimeout)
		if err := p.forceStop(); err != nil {
			t.Errorf("destroy: %v", err)
		}
	}
	if !isMounted(v.mnt) {
		os.RemoveAll(v.base)
	}
}

// stallWatchdog returns a stop function. If it is not called within d, the
// mount server gets SIGQUIT (a Go program then dumps all goroutine stacks
// to its log) and the mount is detached, so that hung syscalls return.
func (v *volume) stallWatchdog(t testing.TB, what string, d time.Duration) (stop func()) {
	p := v.proc
	if p == nil {
		return func() {}
	}
	timer := time.AfterFunc(d, func() {
		fmt.Fprintf(os.Stderr, "integration: %s: no progress for %v; sending SIGQUIT to objfs mount pid %d (goroutine dump goes to %s)\n", what, d, p.cmd.Process.Pid, p.logPath)
		p.signal(syscall.SIGQUIT)
		p.waitFor(5 * time.Second)
		_ = p.forceStop()
	})
	return func() { timer.Stop() }
}

// envSeed returns the seed named by environment variable name, or a fresh
// one from the clock; tests log it so that a failure can be rerun.
func envSeed(t testing.TB, name string) uint64 {
	t.Helper()
	return difftest.EnvUint(t, name, uint64(time.Now().UnixNano()))
}

// envCount reads a positive count from environment variable name, def if
// it is unset.
func envCount(t testing.TB, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive count", name, s)
	}
	return n
}
