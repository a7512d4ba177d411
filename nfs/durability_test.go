package nfs

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// childEnv names the volume a re-executed test binary serves (see TestMain).
const childEnv = "OBJFS_NFS_TEST_SERVE"

// TestMain lets the test binary serve a volume as a separate process, so a
// test can kill -9 the server.
func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(serveChild(dir))
	}
	os.Exit(m.Run())
}

// serveChild serves the volume in dir on a loopback port, writes the
// address to dir/addr and serves until killed.
func serveChild(dir string) int {
	f, _, err := openFS(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open volume:", err)
		return 1
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	if err := os.WriteFile(filepath.Join(dir, "addr"), []byte(l.Addr().String()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	if err := Serve(context.Background(), f, l, Options{Squash: SquashNone, Logger: testLog()}); err != nil {
		fmt.Fprintln(os.Stderr, "child: serve:", err)
	}
	return 1
}

// TestAcknowledgedWritesSurviveKill9 kills the server with SIGKILL right
// after a FILE_SYNC WRITE and an UNSTABLE WRITE + COMMIT were acknowledged,
// and checks both are in the volume when it is opened again.
func TestAcknowledgedWritesSurviveKill9(t *testing.T) {
	v := newTestVolume(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+v.dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(kill)
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == ""; {
		b, err := os.ReadFile(filepath.Join(v.dir, "addr"))
		if err == nil && len(b) > 0 {
			addr = strings.TrimSpace(string(b))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w := dialWire(t, addr)
	w.uid, w.gid = 0, 0
	root := w.mountRoot()
	_, sync := w.create(root, "sync", createGuarded)
	_, unst := w.create(root, "unstable", createGuarded)
	if st := w.write(sync, 0, []byte("file-sync data"), fileSync); st != nfsOK {
		t.Fatalf("write: %d", st)
	}
	if st := w.write(unst, 0, []byte("committed data"), unstable); st != nfsOK {
		t.Fatalf("unstable write: %d", st)
	}
	if st, _ := w.nfs(21, args(unst, uint64(0), uint32(0))); st != nfsOK {
		t.Fatalf("commit: %d", st)
	}
	kill()

	f, _ := v.open(t)
	for name, want := range map[string]string{"sync": "file-sync data", "unstable": "committed data"} {
		a, err := f.Lookup(context.Background(), &meta.Root, meta.RootIno, name)
		if err != nil {
			t.Fatalf("%s after kill -9: %v", name, err)
		}
		buf := make([]byte, 100)
		n, err := f.ReadInode(context.Background(), &meta.Root, a.Ino, 0, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("%s after kill -9: %q, %v; want %q", name, buf[:n], err, want)
		}
	}
}
