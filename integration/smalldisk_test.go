package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/objstore/s3/s3test"
)

// smallDiskReserve is the --reserve of TestS3StagingOnSmallDisk's mount.
const smallDiskReserve = 32 << 20

// TestS3StagingOnSmallDisk writes a file twice the size of the disk that
// holds the volume directory (metadata, staging log, disk cache) of a
// volume whose store is S3 (MinIO, elsewhere). Staged blocks leave that
// disk once uploaded, so the writer waits for uploads instead of getting
// ENOSPC, with the default --staging-size far above what the disk holds;
// files created meanwhile never meet the reserve either. With the store
// down, a writer gets ENOSPC after 30 s without an upload, and writes go
// on once it is back. The file reads back intact, and fsck --verify finds
// every block in the bucket.
func TestS3StagingOnSmallDisk(t *testing.T) {
	srv, v, disk := s3VolumeOnSmallDisk(t, "160m")
	v.mount(t, "--reserve", fmt.Sprint(smallDiskReserve))

	// The free space on the small disk, sampled while the files are
	// written.
	lowest := freeBytes(t, disk)
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var st syscall.Statfs_t
			if syscall.Statfs(disk, &st) == nil {
				lowest = min(lowest, st.Bavail*uint64(st.Bsize))
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()

	const size = 320 << 20
	seed := [32]byte{7}
	big := filepath.Join(v.mnt, "big")
	var wg sync.WaitGroup
	var fillErr error
	written := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(written)
		fillErr = writeFileSynced(big, os.O_EXCL, rand.NewChaCha8(seed), size)
	}()
	// Small files (kept in the metadata) created meanwhile: the log
	// leaves room for them rather than filling the disk to the reserve.
	var smallErr error
	made := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-written:
				return
			case <-time.After(20 * time.Millisecond):
			}
			name := filepath.Join(v.mnt, fmt.Sprintf("small%d", made))
			if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
				smallErr = err
				return
			}
			made++
		}
	}()
	wg.Wait()
	close(stopSampling)
	<-sampled
	t.Logf("%d MiB written to a 160 MiB disk, %d small files created meanwhile; free space at the lowest %.1f MiB (reserve %d MiB)",
		size>>20, made, float64(lowest)/(1<<20), smallDiskReserve>>20)
	if fillErr != nil {
		t.Fatalf("writing %d MiB through a 160 MiB staging disk: %v (want the writer to wait for uploads)", size>>20, fillErr)
	}
	if smallErr != nil {
		t.Fatalf("creating small file %d while the log waited for uploads: %v", made, smallErr)
	}
	if lowest < smallDiskReserve/4 {
		t.Errorf("free space went down to %d bytes, below a quarter of the reserve (%d)", lowest, smallDiskReserve/4)
	}
	// The mount publishes its figures every 2 s.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, err := runObjfs(time.Minute, "status", v.dir)
		if err == nil && regexp.MustCompile(`; [1-9][0-9]* blocks waited for uploads to free space \(0 refused after all\)`).MatchString(out) {
			t.Logf("objfs status:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("objfs status: %v, want the blocks that waited for uploads shown\n%s\nlog:\n%s", err, out, v.proc.logTail())
			break
		}
	}

	// With the store down nothing leaves the disk: a writer that needs
	// room gets ENOSPC once no upload has finished for 30 s, rather than
	// waiting for ever, and the mount stays up. Once the store is back,
	// uploads resume (after their backoff, up to 30 s) and so do writes.
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := fill(filepath.Join(v.mnt, "outage"), 256<<20)
	took := time.Since(start)
	t.Logf("256 MiB written with the store down: %v after %v", err, took.Round(time.Millisecond))
	// Not 30 s per block: the stall is the staging log's, not each
	// write's (it took 4.5 minutes when it was each block's).
	if !errors.Is(err, syscall.ENOSPC) || took < 30*time.Second || took > 2*time.Minute {
		t.Fatalf("writing 256 MiB to a 160 MiB disk with the store down: %v after %v, want ENOSPC after 30 s without an upload", err, took)
	}
	if ok, why := v.alive(); !ok {
		t.Fatalf("the mount died: %s", why)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(v.mnt, "outage")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		err := fill(filepath.Join(v.mnt, "after"), 64<<20)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENOSPC) || time.Now().After(deadline) {
			t.Fatalf("writing 64 MiB once the store was back: %v", err)
		}
		_ = os.Remove(filepath.Join(v.mnt, "after"))
	}

	// Read back from the store: caches dropped, the log long uploaded.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
	v.proc.signal(syscall.SIGUSR1)
	time.Sleep(100 * time.Millisecond)
	if err := sameAs(big, io.LimitReader(rand.NewChaCha8(seed), size)); err != nil {
		t.Fatal(err)
	}
	for i := range made {
		name := filepath.Join(v.mnt, fmt.Sprintf("small%d", i))
		if got, err := os.ReadFile(name); err != nil || string(got) != name {
			t.Fatalf("small file %d: %q, %v", i, got, err)
		}
	}
	v.unmount(t)
	if out, err := runObjfs(5*time.Minute, "fsck", "--verify", v.dir); err != nil || !strings.Contains(out, "; 0 errors") {
		t.Fatalf("fsck --verify: %v\n%s", err, out)
	}
}

// s3VolumeOnSmallDisk formats a volume whose directory (metadata, staging
// log, disk cache) is on a tmpfs of size and whose store is a bucket of a
// MinIO server of its own, and returns the server, the volume (not
// mounted) and the tmpfs's directory.
func s3VolumeOnSmallDisk(t *testing.T, size string) (*s3test.Server, *volume, string) {
	t.Helper()
	srv := startMinIO(t)
	bucket := "objfs-small-disk"
	srv.MakeBucket(t, bucket)
	v, disk := volumeOnSmallDisk(t, size)
	if out, err := runObjfs(time.Minute, "format", "--store", srv.URL(bucket, "vol"), v.dir); err != nil {
		t.Fatalf("objfs format: %v\n%s", err, out)
	}
	return srv, v, disk
}

// sameAs compares the file at path with what want reads, in 1 MiB pieces,
// and names the first difference.
func sameAs(path string, want io.Reader) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	got, exp := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(exp)) {
		n, werr := io.ReadFull(want, exp)
		m, gerr := io.ReadFull(f, got[:n])
		if gerr != nil && !(n == 0 && errors.Is(gerr, io.EOF)) {
			return fmt.Errorf("%s: read at %d: %w", path, off, gerr)
		}
		if !bytes.Equal(got[:m], exp[:n]) {
			return fmt.Errorf("%s: differs from what was written within [%d, %d)", path, off, off+int64(n))
		}
		if werr != nil {
			if k, _ := f.Read(got[:1]); k > 0 {
				return fmt.Errorf("%s: longer than the %d bytes written", path, off+int64(n))
			}
			return nil
		}
	}
}
