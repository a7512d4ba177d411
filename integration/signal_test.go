package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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
