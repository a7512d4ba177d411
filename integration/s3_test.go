package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/objfs/objfs/integration/difftest"
	"github.com/objfs/objfs/objstore/s3/s3test"
)

// TestS3Differential runs the differential random-operation test on a
// volume whose only store is a bucket on a real MinIO: format, mount, the
// operations, unmount, remount, compare.
//
// OBJFS_DIFF_SEED fixes the seed, OBJFS_S3_DIFF_OPS the number of
// operations (default 3000).
func TestS3Differential(t *testing.T) {
	srv := startMinIO(t)
	bucket := "objfs-diff"
	srv.MakeBucket(t, bucket)
	seed := envSeed(t, "OBJFS_DIFF_SEED")
	nops := envCount(t, "OBJFS_S3_DIFF_OPS", 3000)
	t.Logf("seed %d, %d operations (rerun with OBJFS_DIFF_SEED=%d OBJFS_S3_DIFF_OPS=%d)", seed, nops, seed, nops)

	old := syscall.Umask(0)
	defer syscall.Umask(old)

	// Small blocks, so that even modest files go to the bucket as several
	// objects.
	newVol := func(t testing.TB) *volume {
		return newVolumeWith(t, "--block-size", "65536", "--store", srv.URL(bucket, "vol"))
	}
	start := time.Now()
	if f := runDifferentialOn(t, newVol, seed, nops, true); f != nil {
		t.Fatalf("seed %d: %s\nlast operations:\n%s\nrerun with OBJFS_DIFF_SEED=%d OBJFS_S3_DIFF_OPS=%d", seed, f, difftest.LastOps(f.Trace, 15), seed, nops)
	}
	t.Logf("run took %v", time.Since(start).Round(time.Millisecond))

	// The data really went to the bucket.
	objs := bucketObjects(t, srv, bucket, "vol/")
	blocks := 0
	for _, o := range objs {
		if strings.HasPrefix(o, "vol/blocks/") {
			blocks++
		}
	}
	if !slices.Contains(objs, "vol/objfs-volume") || blocks == 0 {
		t.Fatalf("bucket holds %d objects (%d blocks) below vol/, want the volume mark and blocks: %.10q", len(objs), blocks, objs)
	}
	t.Logf("bucket holds %d blocks", blocks)
}

// TestS3ReplicatedOutage replicates a volume over a local directory and
// MinIO (two copies, write quorum one), kills MinIO with SIGKILL in the
// middle of a write/read workload and restarts it: reads keep working from
// the local copy, writes complete or fail with EIO, never with wrong data;
// scrub then restores the MinIO copies, fsck --verify is clean, and every
// acknowledged file reads back from MinIO alone.
func TestS3ReplicatedOutage(t *testing.T) {
	srv := startMinIO(t)
	bucket := "objfs-replicated"
	srv.MakeBucket(t, bucket)
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(base, "local")
	v := &volume{base: base, dir: filepath.Join(base, "vol"), mnt: filepath.Join(base, "mnt")}
	if err := os.Mkdir(v.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := runObjfs(time.Minute, "format", "--block-size", "65536",
		"--store", "file://"+local, "--store", srv.URL(bucket, "vol"),
		"--replicas", "2", "--write-quorum", "1", v.dir); err != nil {
		t.Fatalf("objfs format: %v\n%s", err, out)
	}
	v.mount(t)

	// Every read must reach the stores: the workload drops the kernel's
	// page cache of the file and the mount's block cache (SIGUSR1) first.
	mountProc := v.proc
	w := &outageWorkload{mnt: v.mnt, acked: map[string][]byte{}, rng: rand.New(rand.NewPCG(7, 7)),
		dropCache: func() { mountProc.signal(syscall.SIGUSR1) }}
	// Before the outage: both copies are written.
	for range 10 {
		if err := w.step(); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var werr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := w.step(); err != nil {
				werr = err
				return
			}
		}
	})
	waitSteps := func(n int) {
		t.Helper()
		target := w.steps.Load() + int64(n)
		deadline := time.Now().Add(2 * time.Minute)
		for w.steps.Load() < target {
			if w.failed.Load() || time.Now().After(deadline) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitSteps(5)
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed MinIO after %d steps", w.steps.Load())
	downAt := w.steps.Load()
	waitSteps(15)
	downSteps := w.steps.Load() - downAt
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted MinIO after %d steps during the outage", downSteps)
	waitSteps(5)
	close(stop)
	wg.Wait()
	if werr != nil {
		t.Fatalf("workload: %v", werr)
	}
	if downSteps < 10 {
		t.Fatalf("only %d workload steps while MinIO was down", downSteps)
	}
	t.Logf("%d steps, %d files acknowledged, %d writes failed with EIO", w.steps.Load(), len(w.acked), w.eio)
	if ok, why := v.alive(); !ok {
		t.Fatal(why)
	}
	v.unmount(t)

	out, err := runObjfs(5*time.Minute, "scrub", v.dir)
	if err != nil {
		t.Fatalf("scrub: %v\n%s", err, out)
	}
	counts := scrubCounts(t, out)
	t.Logf("scrub: %v", counts)
	if counts["blocks"] == 0 || counts["unrecoverable"] != 0 {
		t.Fatalf("scrub after the outage: %v\n%s", counts, out)
	}
	out, err = runObjfs(5*time.Minute, "scrub", v.dir)
	if err != nil {
		t.Fatalf("second scrub: %v\n%s", err, out)
	}
	if c := scrubCounts(t, out); c["restored"] != 0 || c["copies ok"] != 2*c["blocks"] {
		t.Fatalf("second scrub should find both copies of every block: %v\n%s", c, out)
	}
	if out, err := runObjfs(5*time.Minute, "fsck", "--verify", v.dir); err != nil {
		t.Fatalf("fsck --verify: %v\n%s", err, out)
	}

	// Lose the local copy: everything must come back from MinIO alone.
	entries, err := os.ReadDir(local)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(local, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	v.mount(t)
	for name, data := range w.acked {
		got, err := os.ReadFile(filepath.Join(v.mnt, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s from MinIO alone: %d bytes, %v; want %d identical bytes", name, len(got), err, len(data))
		}
	}
	v.unmount(t)
}

// outageWorkload writes new files (each fsynced) and reads back earlier
// ones, checking every byte. A write may fail only with EIO; a read may
// not fail at all.
type outageWorkload struct {
	mnt       string
	dropCache func()
	rng       *rand.Rand
	mu        sync.Mutex
	acked     map[string][]byte // files whose write, fsync and close succeeded
	names     []string
	n         int
	eio       int
	steps     atomic.Int64
	failed    atomic.Bool
}

func (w *outageWorkload) step() (err error) {
	defer func() {
		if err != nil {
			w.failed.Store(true)
		}
		w.steps.Add(1)
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	name := fmt.Sprintf("f%04d", w.n)
	data := make([]byte, 1+w.rng.IntN(200_000))
	for i := range data {
		data[i] = byte(w.rng.Uint32())
	}
	if err := writeSynced(filepath.Join(w.mnt, name), data); err != nil {
		if !errors.Is(err, syscall.EIO) {
			return fmt.Errorf("write %s: %w (want success or EIO)", name, err)
		}
		w.eio++
	} else {
		w.acked[name] = data
		w.names = append(w.names, name)
	}
	// Read back two acknowledged files, the newest and a random one.
	if len(w.names) == 0 {
		return nil
	}
	w.dropCache()
	for _, rn := range []string{w.names[len(w.names)-1], w.names[w.rng.IntN(len(w.names))]} {
		got, err := readUncached(filepath.Join(w.mnt, rn))
		if err != nil {
			return fmt.Errorf("read %s: %w", rn, err)
		}
		if !bytes.Equal(got, w.acked[rn]) {
			return fmt.Errorf("read %s: %d bytes differing from the %d written", rn, len(got), len(w.acked[rn]))
		}
	}
	return nil
}

// readUncached reads a whole file after dropping its pages from the
// kernel's cache, so the read goes to the file system.
func readUncached(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return nil, fmt.Errorf("fadvise: %w", err)
	}
	return io.ReadAll(f)
}

// writeSynced writes a new file and fsyncs it before closing.
func writeSynced(path string, data []byte) error {
	return writeFileSynced(path, os.O_EXCL, bytes.NewReader(data), len(data))
}

// TestS3StoreProblems: bad credentials, a missing bucket and an unreachable
// endpoint are named by `objfs format` and `objfs mount`, which exit
// non-zero and write nothing.
func TestS3StoreProblems(t *testing.T) {
	srv := startMinIO(t)
	bucket := "objfs-problems"
	srv.MakeBucket(t, bucket)
	closedPort := closedLoopbackPort(t)
	type problem struct {
		name string
		url  string
		env  map[string]string
		want []string
	}
	problems := []problem{
		{"wrong secret", srv.URL(bucket, "vol"), map[string]string{"AWS_SECRET_ACCESS_KEY": "not-the-secret-42"},
			[]string{"access denied", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}},
		{"unknown access key", srv.URL(bucket, "vol"), map[string]string{"AWS_ACCESS_KEY_ID": "nobody-at-all"},
			[]string{"access denied", "AWS_ACCESS_KEY_ID"}},
		{"missing bucket", srv.URL("objfs-no-such-bucket", "vol"), nil,
			[]string{`bucket "objfs-no-such-bucket" does not exist`}},
		{"unreachable endpoint", "s3://" + bucket + "/vol?endpoint=" + closedPort + "&tls=false", nil,
			[]string{"endpoint unreachable", closedPort}},
	}
	checkFailure := func(t *testing.T, out string, err error, want []string) {
		t.Helper()
		var ee *exec.ExitError
		if err == nil || !errors.As(err, &ee) {
			t.Fatalf("succeeded or did not exit (%v), want a non-zero exit:\n%s", err, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output does not mention %q:\n%s", w, out)
			}
		}
		for _, secret := range []string{s3test.Password, "not-the-secret-42"} {
			if strings.Contains(out, secret) {
				t.Fatalf("output leaks a secret:\n%s", out)
			}
		}
	}

	t.Run("format", func(t *testing.T) {
		for _, p := range problems {
			t.Run(p.name, func(t *testing.T) {
				for k, v := range p.env {
					t.Setenv(k, v)
				}
				dir := filepath.Join(t.TempDir(), "vol")
				out, err := runObjfs(time.Minute, "format", "--store", p.url, dir)
				checkFailure(t, out, err, p.want)
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed format left %s behind (%v)", dir, err)
				}
			})
		}
		if objs := srv.Objects(t, bucket); len(objs) != 0 {
			t.Fatalf("failed formats wrote to the bucket: %v", objs)
		}
	})

	t.Run("mount", func(t *testing.T) {
		// Volumes formatted while everything was fine; then each problem
		// appears before the mount.
		vols := map[string]*volume{}
		for _, p := range problems {
			prefix := strings.ReplaceAll(p.name, " ", "-")
			b := bucket
			if p.name == "missing bucket" {
				b = "objfs-gone"
				srv.MakeBucket(t, b)
			}
			vols[p.name] = newVolumeWith(t, "--store", srv.URL(b, prefix))
		}
		removeBucket(t, srv, "objfs-gone")
		before := srv.Objects(t, bucket)
		for _, p := range problems {
			t.Run(p.name, func(t *testing.T) {
				v := vols[p.name]
				url := p.url
				switch p.name {
				case "missing bucket":
					url = srv.URL("objfs-gone", "missing-bucket")
					p.want = []string{`bucket "objfs-gone" does not exist`}
				case "unreachable endpoint":
					// The volume's store moved nowhere: its record names
					// the real server, so stop it for this case.
					if err := srv.Kill(); err != nil {
						t.Fatal(err)
					}
					url = srv.URL(bucket, "unreachable-endpoint")
					p.want = []string{"endpoint unreachable", srv.Addr()}
				default:
					url = srv.URL(bucket, strings.ReplaceAll(p.name, " ", "-"))
				}
				for k, val := range p.env {
					t.Setenv(k, val)
				}
				t.Cleanup(func() { _ = lazyUnmount(v.mnt) })
				out, err := runObjfs(time.Minute, "mount", v.dir, v.mnt)
				checkFailure(t, out, err, p.want)
				if !strings.Contains(out, strings.SplitN(url, "?", 2)[0]) {
					t.Errorf("output does not name the store %s:\n%s", url, out)
				}
				if isMounted(v.mnt) {
					t.Errorf("%s is mounted after the failed mount", v.mnt)
				}
				if _, err := os.Stat(filepath.Join(v.dir, "mount.json")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed mount wrote mount.json (%v)", err)
				}
			})
		}
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		if after := srv.Objects(t, bucket); !slices.Equal(after, before) {
			t.Fatalf("failed mounts changed the bucket:\nbefore %v\nafter  %v", before, after)
		}
	})
}
