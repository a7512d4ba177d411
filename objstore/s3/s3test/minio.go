// Package s3test runs a real MinIO server for tests: on loopback, on a
// free port, over a temporary data directory, stopped (the whole process
// group, by PID) when the test ends, also on failure.
//
// The server binary is built once by .ci/setup into a cache directory (see
// Binary); a test that cannot find it is skipped, except under CI=true,
// where it fails, so CI never skips silently.
package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIOVersion is the github.com/minio/minio module version .ci/setup
// installs (a test checks the two agree).
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Credentials of the test servers' root user.
const (
	User     = "objfs-test-admin"
	Password = "objfs-test-secret-0123456789"
)

const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 10 * time.Second
)

// Binary returns the MinIO server binary: $OBJFS_MINIO if set, else where
// .ci/setup installs it, ${OBJFS_CACHE:-$HOME/.cache/objfs}/minio/VERSION/minio.
func Binary() (string, error) {
	if p := os.Getenv("OBJFS_MINIO"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("OBJFS_MINIO=%s: %w", p, err)
		}
		return p, nil
	}
	cache := os.Getenv("OBJFS_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no OBJFS_MINIO, no OBJFS_CACHE and no home directory: %w", err)
		}
		cache = filepath.Join(home, ".cache", "objfs")
	}
	p := filepath.Join(cache, "minio", MinIOVersion, "minio")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("MinIO server not installed (run .ci/setup, or set OBJFS_MINIO): %w", err)
	}
	return p, nil
}

// RequireBinary returns the MinIO binary, or skips the test when it is
// missing (fails it under CI=true).
func RequireBinary(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MinIO is required under CI: %v", err)
		}
		t.Skipf("MinIO not available: %v", err)
	}
	return bin
}

// Server is one MinIO process and its data directory. Kill and Restart
// simulate an outage; the data survives them.
type Server struct {
	bin, dir, addr string
	logPath        string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been reaped
}

// Start runs a MinIO server for the test, stopped by t.Cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := RequireBinary(t)
	dir := t.TempDir()
	s, err := StartIn(bin, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop MinIO: %v", err)
		}
	})
	return s
}

// StartIn runs a MinIO server over data directory dir (created if
// needed), with its log in dir/../minio-PORT.log beside it. The caller
// must Stop it.
func StartIn(bin, dir string) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("minio data directory: %w", err)
	}
	var lastErr error
	// A free port can be taken between our probe and MinIO's bind; try a
	// few.
	for range 3 {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &Server{bin: bin, dir: dir, addr: addr, logPath: filepath.Join(filepath.Dir(dir), "minio-"+portOf(addr)+".log")}
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, lastErr
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// freePort returns a loopback address whose port was just free.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return addr, nil
}

// start runs the process and waits until /minio/health/live answers.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && !closed(s.done) {
		return errors.New("minio is already running")
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("minio log: %w", err)
	}
	cmd := exec.Command(s.bin, "server", "--quiet", "--address", s.addr, s.dir)
	cmd.Env = append(cleanEnv(),
		"MINIO_ROOT_USER="+User,
		"MINIO_ROOT_PASSWORD="+Password,
		"MINIO_BROWSER=off", // no console listener
		"MINIO_UPDATE=off",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so that Stop reaches anything it forks; and
	// killed if the test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start minio: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status of a killed server says nothing
		logFile.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := client.Get("http://" + s.addr + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("minio on %s exited before it was ready\n%s", s.addr, s.LogTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.killLocked()
			return fmt.Errorf("minio on %s not ready within %v\n%s", s.addr, readyTimeout, s.LogTail())
		}
	}
}

// cleanEnv is the environment without AWS and MinIO settings, so the
// server sees only ours.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "MINIO_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// killLocked sends SIGKILL to the server's process group and waits for
// the server to be reaped. s.mu must be held.
func (s *Server) killLocked() error {
	if s.cmd == nil || closed(s.done) {
		return nil
	}
	pid := s.cmd.Process.Pid
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = s.cmd.Process.Kill()
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("minio pid %d did not exit within %v of SIGKILL", pid, stopTimeout)
	}
}

// Kill stops the server abruptly (SIGKILL), as a crash would.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.killLocked()
}

// Restart starts the server again on the same address and data.
func (s *Server) Restart() error {
	if err := s.Kill(); err != nil {
		return err
	}
	return s.start()
}

// Stop ends the server: SIGTERM to its process group, then SIGKILL if it
// lingers. It is safe to call more than once.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || closed(s.done) {
		return nil
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(stopTimeout):
	}
	return s.killLocked()
}

// Addr is the server's HOST:PORT.
func (s *Server) Addr() string { return s.addr }

// Dir is the server's data directory.
func (s *Server) Dir() string { return s.dir }

// URL returns the objfs store URL of bucket (and prefix, if not empty) on
// this server, with extra query parameters ("max-inflight=4") appended.
func (s *Server) URL(bucket, prefix string, extra ...string) string {
	u := "s3://" + bucket
	if prefix != "" {
		u += "/" + prefix
	}
	q := append([]string{"endpoint=" + s.addr, "tls=false"}, extra...)
	return u + "?" + strings.Join(q, "&")
}

// Env returns the environment variables giving objfs the root user's
// credentials (and nothing from the host's shared credentials file).
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + User,
		"AWS_SECRET_ACCESS_KEY=" + Password,
		"AWS_SESSION_TOKEN=",
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(s.dir, "no-such-credentials-file"),
	}
}

// SetEnv sets Env's variables for the rest of the test (t.Setenv).
func (s *Server) SetEnv(t testing.TB) {
	t.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// Client returns a client with the root user's credentials, for setting
// up and inspecting buckets behind objfs's back.
func (s *Server) Client() (*minio.Client, error) {
	c, err := minio.New(s.addr, &minio.Options{
		Creds:  credentials.NewStaticV4(User, Password, ""),
		Secure: false,
	})
	if err != nil {
		return nil, fmt.Errorf("minio client: %w", err)
	}
	return c, nil
}

// MakeBucket creates bucket.
func (s *Server) MakeBucket(t testing.TB, bucket string) {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %q: %v", bucket, err)
	}
}

// Objects lists every object name in bucket, sorted.
func (s *Server) Objects(t testing.TB, bucket string) []string {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var names []string
	for obj := range c.ListObjectsIter(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatalf("list bucket %q: %v", bucket, obj.Err)
		}
		names = append(names, obj.Key)
	}
	return names
}

// LogTail returns the end of the server's log, for failure messages.
func (s *Server) LogTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no minio log: %v)", err)
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "(minio log is empty)"
	}
	return "--- minio log (" + s.logPath + ") ---\n" + string(b) + "\n--- end ---"
}

// Pid is the server's process id (0 when it is not running).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || closed(s.done) {
		return 0
	}
	return s.cmd.Process.Pid
}

// String describes the server for logs.
func (s *Server) String() string {
	return "minio " + s.addr + " (pid " + strconv.Itoa(s.Pid()) + ")"
}
