package integration

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
)

// fullDiskReserve is the --reserve of TestFullDisk's mount.
const fullDiskReserve = 48 << 20

// TestFullDisk fills the file system under a volume (a 192 MiB tmpfs
// holding its metadata, staging log, block store and disk cache) from
// the mount. Writes past the reserve get ENOSPC, the mount stays up (a
// full disk under Badger's memory-mapped files used to kill it with
// SIGBUS), the free space never drops below a quarter of the reserve,
// a kill -9 there and a restart lose nothing, deleting the big file makes
// room for new writes again, data written before is intact, and the volume
// unmounts cleanly and passes fsck.
func TestFullDisk(t *testing.T) {
	requirePrereqs(t)
	v, disk := volumeOnSmallDisk(t, "192m")
	if out, err := runObjfs(time.Minute, "format", v.dir); err != nil {
		t.Fatalf("objfs format: %v\n%s", err, out)
	}
	addr := freeAddr(t)
	v.mount(t, "--reserve", fmt.Sprint(fullDiskReserve), "--nfs", addr, "--nfs-squash", "none")
	target := dialNFS(t, v, addr)

	keep := make([]byte, 16<<20)
	if _, err := rand.Read(keep); err != nil {
		t.Fatal(err)
	}
	if err := writeSynced(filepath.Join(v.mnt, "keep"), keep); err != nil {
		t.Fatal(err)
	}

	// Random reads bring its blocks into the disk cache, on the same
	// file system: it must give them back when data needs the room.
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
	v.proc.signal(syscall.SIGUSR1) // and the mount's memory block cache
	time.Sleep(100 * time.Millisecond)
	kf, err := os.Open(filepath.Join(v.mnt, "keep"))
	if err != nil {
		t.Fatal(err)
	}
	page := make([]byte, 4096)
	for i := range 64 {
		// Strided, so that no read looks sequential (read-ahead
		// bypasses the disk cache on a local volume).
		at := int64(i*37%64) * int64(len(keep)/64)
		if _, err := kf.ReadAt(page, at); err != nil {
			t.Fatal(err)
		}
	}
	kf.Close()
	cacheDir := filepath.Join(v.dir, "cache")
	cached := dirBytes(t, cacheDir)
	for deadline := time.Now().Add(5 * time.Second); cached < 4<<20 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // the cache writes in the background
		cached = dirBytes(t, cacheDir)
	}

	// Fill: the error comes at a write, or at the fsync or close that
	// commits what the mount buffered.
	big := filepath.Join(v.mnt, "big")
	err = fill(big, 400<<20)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling 192 MiB with 400 MiB: %v, want ENOSPC", err)
	}
	lowest := freeBytes(t, disk)
	// New files, small ones kept in the metadata among them: created or
	// refused with ENOSPC, never another error.
	made := 0
	for i := range 2000 {
		err := os.WriteFile(filepath.Join(v.mnt, fmt.Sprintf("small%d", i)), []byte("small file"), 0o644)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("small file %d on a full disk: %v, want ENOSPC", i, err)
			}
			break
		}
		made++
		lowest = min(lowest, freeBytes(t, disk))
	}
	// An NFS client's writes: NFS3ERR_NOSPC at a WRITE or at the COMMIT
	// of its close.
	nfsErr := func() error {
		w, err := target.OpenFile("over-nfs", 0o644)
		if err != nil {
			return err
		}
		chunk := make([]byte, 1<<20)
		for range 16 {
			// Random: equal blocks would be stored once.
			if _, err := rand.Read(chunk); err != nil {
				return err
			}
			if _, err := w.Write(chunk); err != nil {
				w.Close()
				return err
			}
		}
		return w.Close()
	}()
	var ne *nfsc.Error
	if !errors.As(nfsErr, &ne) || ne.ErrorNum != nfsc.NFS3ErrNoSpc {
		t.Errorf("NFS write of 16 MiB on a full disk: %v, want NFS3ERR_NOSPC", nfsErr)
	}
	if ok, why := v.alive(); !ok {
		t.Fatalf("the mount died on a full disk: %s", why)
	}
	if lowest < fullDiskReserve/4 {
		t.Errorf("free space went down to %d bytes, below a quarter of the reserve (%d)", lowest, fullDiskReserve/4)
	}
	left := dirBytes(t, cacheDir)
	t.Logf("full: %d bytes free at the lowest, %d small files made; disk cache %d bytes before, %d after", lowest, made, cached, left)
	if cached < 4<<20 {
		t.Errorf("random reads of a 16 MiB file left %d bytes in the disk cache, want a block at least", cached)
	} else if left > cached/4 {
		t.Errorf("the disk cache kept %d of its %d bytes on a full disk", left, cached)
	}

	if out, err := runObjfs(time.Minute, "status", v.dir); err != nil || !strings.Contains(out, "kept in reserve") || strings.Contains(out, "; 0 writes refused") {
		t.Errorf("objfs status on a full disk: %v, want the reserve and refusals shown\n%s", err, out)
	}
	// A crash on the full disk, and a restart there: Badger replays its
	// logs in the room the reserve kept.
	v.kill9(t)
	v.mount(t, "--reserve", fmt.Sprint(fullDiskReserve), "--nfs", addr, "--nfs-squash", "none")
	target = dialNFS(t, v, addr)
	if got, err := os.ReadFile(filepath.Join(v.mnt, "keep")); err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("after kill -9 and a restart on the full disk: %v (%d bytes, equal: %v)", err, len(got), bytes.Equal(got, keep))
	}
	for i := range made {
		if got, err := os.ReadFile(filepath.Join(v.mnt, fmt.Sprintf("small%d", i))); err != nil || string(got) != "small file" {
			t.Fatalf("small file %d after kill -9 and a restart: %q, %v", i, got, err)
		}
	}
	if err := os.Remove(big); err != nil {
		t.Fatalf("removing the big file on a full disk: %v", err)
	}
	// The big file's blocks are deleted in the background.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := fill(filepath.Join(v.mnt, "after"), 32<<20)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENOSPC) || time.Now().After(deadline) {
			t.Fatalf("writing 32 MiB after deleting the big file: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	nfsWrite(t, target, "over-nfs-after", make([]byte, 4<<20))
	if got, err := os.ReadFile(filepath.Join(v.mnt, "keep")); err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("file written before the disk filled: %v (%d bytes, equal: %v)", err, len(got), bytes.Equal(got, keep))
	}
	v.unmount(t)
	if out, err := runObjfs(5*time.Minute, "fsck", "--verify", v.dir); err != nil || !strings.Contains(out, "; 0 errors") {
		t.Fatalf("fsck after the disk was full: %v\n%s", err, out)
	}
}

// volumeOnSmallDisk mounts a tmpfs of size (a mount option: "192m") for a
// volume directory to fill, and returns the volume (not formatted yet;
// its mountpoint is not on the tmpfs) and the tmpfs's directory. Skipped
// where tmpfs cannot be mounted (not root).
func volumeOnSmallDisk(t *testing.T, size string) (v *volume, disk string) {
	t.Helper()
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	disk = filepath.Join(base, "disk")
	if err := os.Mkdir(disk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root): %v", err)
	}
	// Registered first, so it runs after the mount's own cleanup.
	t.Cleanup(func() {
		if err := syscall.Unmount(disk, 0); err != nil {
			_ = syscall.Unmount(disk, syscall.MNT_DETACH)
		}
	})
	v = &volume{base: base, dir: filepath.Join(disk, "vol"), mnt: filepath.Join(base, "mnt")}
	if err := os.Mkdir(v.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	return v, disk
}

// fill writes n bytes of random data to a new file (replacing one of that
// name) in 1 MiB writes, then fsyncs and closes it, and returns the first
// error.
func fill(path string, n int) error { return writeFileSynced(path, os.O_TRUNC, rand.Reader, n) }

// writeFileSynced creates path (flag: os.O_EXCL, or os.O_TRUNC to replace a
// file of that name), writes n bytes read from src in writes of at most 1
// MiB, fsyncs and closes it, and returns the first error.
func writeFileSynced(path string, flag int, src io.Reader, n int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|flag, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, min(n, 1<<20))
	for written := 0; written < n; {
		piece := buf[:min(len(buf), n-written)]
		if _, err := io.ReadFull(src, piece); err != nil {
			f.Close()
			return err
		}
		if _, err := f.Write(piece); err != nil {
			f.Close()
			return err
		}
		written += len(piece)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func freeBytes(t *testing.T, dir string) uint64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// dirBytes is the size of the files under dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
