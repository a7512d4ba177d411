package integration

import (
	"bytes"
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
			logPath := filepath.Join(v.base, "mount.log")
			logf, err := os.Create(logPath)
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			args := append(append([]string{"mount"}, tc.extra...), v.dir, v.mnt)
			cmd := exec.Command(objfsBin, args...)
			cmd.Stdout, cmd.Stderr = logf, logf
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := startFromSpawner(cmd); err != nil { // see TestSpawnerThreadOutlivesLockedGoroutines
				t.Fatal(err)
			}
			exited := make(chan struct{}) // closed once waitErr is set
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				select {
				case <-exited:
				default:
					_ = cmd.Process.Kill()
					<-exited
				}
				if isMounted(v.mnt) {
					_ = exec.Command("fusermount3", "-u", "-z", v.mnt).Run()
				}
			})
			// The disk cache opens early in opening the volume, well
			// before the mount.
			deadline := time.Now().Add(30 * time.Second)
			for {
				b, _ := os.ReadFile(logPath)
				if bytes.Contains(b, []byte("disk cache opened")) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("objfs mount did not start opening the volume in 30 s:\n%s", b)
				}
				time.Sleep(time.Millisecond)
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
				b, _ := os.ReadFile(logPath)
				if waitErr != nil {
					t.Errorf("objfs mount exited with %v after %v during start-up, want status 0\n%s", waitErr, tc.sig, b)
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
	logPath := filepath.Join(v.base, "mount.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(objfsBin, "mount", v.dir, v.mnt)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startFromSpawner(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once waitErr is set
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if isMounted(v.mnt) {
			_ = exec.Command("fusermount3", "-u", "-z", v.mnt).Run()
		}
	})
	logText := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	waitLog := func(what string, d time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(d); !strings.Contains(logText(), what); {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log after %v:\n%s", what, d, logText())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLog(`msg=mounted`, 30*time.Second)
	// Metadata in Badger's memtable, which its close must write out.
	for i := range 50 {
		if err := os.WriteFile(filepath.Join(v.mnt, fmt.Sprint("f", i)), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(v.dir, "meta"), filepath.Join(v.dir, "meta.away")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLog(`msg=unmounted`, 30*time.Second)
	select {
	case <-exited:
		t.Fatalf("objfs mount finished closing (%v): the test needs a close that cannot finish\n%s", waitErr, logText())
	case <-time.After(2 * time.Second):
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("objfs mount still running 10 s after a second SIGTERM while closing\n%s", logText())
	}
	var ee *exec.ExitError
	if !errors.As(waitErr, &ee) || ee.ExitCode() != 1 {
		t.Errorf("objfs mount exited with %v, want status 1", waitErr)
	}
	if !strings.Contains(logText(), "stop signal while closing the volume") {
		t.Errorf("no log line about the forced exit:\n%s", logText())
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
	logPath := filepath.Join(v.base, "nfs.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(objfsBin, "nfs", "--listen", "127.0.0.1:0", v.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	logText := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logText(), "serving NFSv3"); {
		if time.Now().After(deadline) {
			t.Fatalf("objfs nfs not serving after 30 s:\n%s", logText())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logText(), "dropped block cache"); {
		if time.Now().After(deadline) {
			t.Fatalf("objfs nfs did not drop its block cache on SIGUSR1:\n%s", logText())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-exited:
		t.Fatalf("objfs nfs exited on SIGUSR1 (%v)\n%s", waitErr, logText())
	case <-time.After(200 * time.Millisecond):
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("objfs nfs exited with %v after SIGTERM, want status 0\n%s", waitErr, logText())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("objfs nfs still running 60 s after SIGTERM\n%s", logText())
	}
	if !strings.Contains(logText(), "stopping NFS server") {
		t.Errorf("no log line about stopping:\n%s", logText())
	}
}
