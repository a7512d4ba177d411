package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopSignalWhileMounting sends SIGTERM or SIGINT to `objfs mount` (and
// `objfs mount --nfs`) while it is still opening the volume, as a service
// manager stopping it at the wrong moment would: the process must finish
// mounting, unmount cleanly and exit 0, leaving no mount behind. Before,
// the signal killed it halfway (a mount nothing serves, or none at all,
// and exit by signal).
func TestStopSignalWhileMounting(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		extra []string
	}{
		{"SIGTERM", syscall.SIGTERM, nil},
		{"SIGINT", syscall.SIGINT, nil},
		{"SIGTERM with NFS", syscall.SIGTERM, []string{"--nfs", "127.0.0.1:0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVolume(t)
			srv := startServer(t, v, append(append([]string{"mount"}, tc.extra...), v.dir, v.mnt)...)
			// The disk cache opens early in opening the volume, well
			// before the mount.
			srv.waitLog(t, "disk cache opened", 30*time.Second)
			srv.signal(t, tc.sig)
			select {
			case <-srv.exited:
				if srv.err != nil {
					t.Errorf("objfs mount exited with %v after %v during start-up, want status 0\n%s", srv.err, tc.sig, srv.log())
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("objfs mount still running 60 s after %v", tc.sig)
			}
			if isMounted(v.mnt) {
				t.Errorf("%s is still mounted after objfs mount exited", v.mnt)
			}
		})
	}
}

// TestStopSignalWhileClosing: once `objfs mount` has unmounted and is
// closing the volume, which can wait for ever (here Badger cannot write
// its last table: the metadata directory was moved away under it, as a
// full or failing disk would), a second SIGTERM makes it exit at once,
// with status 1 and a log line saying so. Before, every further signal
// was swallowed and only SIGKILL ended it.
func TestStopSignalWhileClosing(t *testing.T) {
	v := newVolume(t)
	srv := startServer(t, v, "mount", v.dir, v.mnt)
	srv.waitLog(t, "msg=mounted", 30*time.Second)
	// Metadata in Badger's memtable, which its close must write out.
	for i := range 50 {
		if err := os.WriteFile(filepath.Join(v.mnt, fmt.Sprint("f", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(v.dir, "meta"), filepath.Join(v.dir, "meta.away")); err != nil {
		t.Fatal(err)
	}
	srv.signal(t, syscall.SIGTERM)
	srv.waitLog(t, "msg=unmounted", 30*time.Second)
	select {
	case <-srv.exited:
		t.Fatalf("objfs mount finished closing (%v): the test needs a close that cannot finish\n%s", srv.err, srv.log())
	case <-time.After(2 * time.Second):
	}
	srv.signal(t, syscall.SIGTERM)
	select {
	case <-srv.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("objfs mount still running 10 s after a second SIGTERM while closing\n%s", srv.log())
	}
	var ee *exec.ExitError
	if !errors.As(srv.err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("objfs mount exited with %v, want status 1", srv.err)
	}
	if !strings.Contains(srv.log(), "stop signal while closing the volume") {
		t.Errorf("no log line about the forced exit:\n%s", srv.log())
	}
	if isMounted(v.mnt) {
		t.Errorf("%s is still mounted", v.mnt)
	}
}

// TestNFSCommandSignals: `objfs nfs` drops its block cache on SIGUSR1, as
// `objfs mount` does, and keeps serving (before, it ignored SIGUSR1); it
// stops cleanly with status 0 on SIGTERM.
func TestNFSCommandSignals(t *testing.T) {
	v := newVolume(t)
	srv := startServer(t, v, "nfs", "--listen", "127.0.0.1:0", v.dir)
	srv.waitLog(t, "serving NFSv3", 30*time.Second)
	srv.signal(t, syscall.SIGUSR1)
	srv.waitLog(t, "dropped block cache", 10*time.Second)
	select {
	case <-srv.exited:
		t.Fatalf("objfs nfs exited on SIGUSR1 (%v)\n%s", srv.err, srv.log())
	case <-time.After(200 * time.Millisecond):
	}
	srv.signal(t, syscall.SIGTERM)
	select {
	case <-srv.exited:
		if srv.err != nil {
			t.Errorf("objfs nfs exited with %v after SIGTERM, want status 0\n%s", srv.err, srv.log())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("objfs nfs still running 60 s after SIGTERM\n%s", srv.log())
	}
	if !strings.Contains(srv.log(), "stopping NFS server") {
		t.Errorf("no log line about stopping:\n%s", srv.log())
	}
}

// server is an objfs process a signal test starts and signals itself.
type server struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once err is set
	err     error         // what Wait returned
	logPath string
}

// startServer runs objfs with args, its output in a log file in v.base,
// from the spawner thread (see TestSpawnerThreadOutlivesLockedGoroutines).
// A t.Cleanup kills it if it is still running and lazily unmounts v.mnt
// if it is still mounted.
func startServer(t *testing.T, v *volume, args ...string) *server {
	t.Helper()
	s := &server{exited: make(chan struct{}), logPath: filepath.Join(v.base, args[0]+".log")}
	logf, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	s.cmd = exec.Command(objfsBin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startFromSpawner(s.cmd); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		if isMounted(v.mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", v.mnt).Run()
		}
	})
	return s
}

func (s *server) log() string { b, _ := os.ReadFile(s.logPath); return string(b) }

// waitLog waits up to d for what to appear in the server's log.
func (s *server) waitLog(t *testing.T, what string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); !strings.Contains(s.log(), what); {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after %v:\n%s", what, d, s.log())
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *server) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}
