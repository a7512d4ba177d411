package integration

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLocalVolumeHoldsSmallBlocks: on a volume whose store is a local
// directory, a small block stays in the staging log (held back 30 s, see
// staging.Options.UploadDelay) and mount.json says so; unmounting uploads
// it at once, and the store then holds it.
func TestLocalVolumeHoldsSmallBlocks(t *testing.T) {
	v := newVolume(t)
	v.mount(t)
	data := make([]byte, 100_000) // more than inline, less than a block
	for i := range data {
		data[i] = byte(i*31 + i>>9)
	}
	if err := os.WriteFile(filepath.Join(v.mnt, "small"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	var held int
	for deadline := time.Now().Add(10 * time.Second); held == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("mount.json never showed a block held back")
		}
		b, err := os.ReadFile(filepath.Join(v.dir, "mount.json"))
		if err != nil {
			continue
		}
		var mi struct {
			Held int `json:"upload_held"`
		}
		if json.Unmarshal(b, &mi) == nil {
			held = mi.Held
		}
	}
	if n := storeFiles(t, v.dir); n != 0 {
		t.Fatalf("the store holds %d files while the block is held back", n)
	}
	v.unmount(t)
	if n := storeFiles(t, v.dir); n != 1 {
		t.Fatalf("after unmount the store holds %d files, want the 1 block", n)
	}
	v.mount(t)
	if got, err := os.ReadFile(filepath.Join(v.mnt, "small")); err != nil || string(got) != string(data) {
		t.Fatalf("read back after remount: %d bytes, %v", len(got), err)
	}
}

// storeFiles counts the blocks in the volume's local store (files under
// store/blocks, temporary ones aside).
func storeFiles(t *testing.T, volDir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(volDir, "store", "blocks"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == filepath.Join(volDir, "store", "blocks") {
			return nil // nothing stored yet
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".tmp-") {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
