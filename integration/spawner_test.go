package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// The kernel sends a child its Pdeathsig when the thread that forked it
// exits. A goroutine that locks its thread and returns (as withoutFsetid
// does, to throw away changed credentials) ends that thread, so children
// that must outlive such goroutines are forked by the spawner's thread.
func TestSpawnerThreadOutlivesLockedGoroutines(t *testing.T) {
	for _, tc := range []struct {
		name      string
		start     func(*exec.Cmd) error
		wantAlive bool
	}{
		{"forked by an exiting locked thread (the hazard)", (*exec.Cmd).Start, false},
		{"forked by the spawner", startFromSpawner, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sleep", "30")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
			errc := make(chan error, 1)
			go func() {
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				errc <- tc.start(cmd)
			}()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-done
			})
			select {
			case err := <-done:
				var ee *exec.ExitError
				if tc.wantAlive {
					t.Fatalf("child died: %v", err)
				}
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
					t.Fatalf("child ended with %v, want SIGTERM", err)
				}
				done <- err // for the cleanup
			case <-time.After(500 * time.Millisecond):
				if !tc.wantAlive {
					t.Fatal("child still alive: the kernel did not send the Pdeathsig this test relies on")
				}
			}
		})
	}
}

// abortFuse, the harness's way out of a server that cannot finish dying,
// ends the mount's FUSE connection: requests fail at once instead of
// waiting for the server, and the harness can then reap and unmount.
func TestAbortFuseEndsTheConnection(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	if err := os.WriteFile(filepath.Join(v.mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := abortFuse(v.mnt); err != nil {
		t.Fatal(err)
	}
	_, err := os.Stat(filepath.Join(v.mnt, "f"))
	if !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		t.Fatalf("stat after the abort: %v, want ENOTCONN", err)
	}
	// The server may be exiting on its own by now: reap it either way.
	p := v.proc
	v.proc = nil
	if err := p.forceStop(); err != nil {
		t.Fatal(err)
	}
	if err := abortFuse(v.mnt); err == nil {
		t.Fatal("abortFuse of a directory with nothing mounted succeeded")
	}
}
