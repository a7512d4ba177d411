package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// storeURLs returns n file:// store URLs under base.
func storeURLs(base string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, "file://"+filepath.Join(base, fmt.Sprintf("s%d", i)))
	}
	return out
}

func TestFormatStores(t *testing.T) {
	tests := []struct {
		name             string
		stores           int
		replicas, quorum int
		dup              bool   // name the first store twice
		blocker          bool   // a regular file where the last store's directory should be
		hash             string // --block-hash; "": the default
		wantErr          string
	}{
		{"one local store", 0, 1, 1, false, false, "", ""},
		{"three of three", 3, 3, 2, false, false, "", ""},
		{"two of three", 3, 2, 1, false, false, "", ""},
		{"too many replicas", 2, 3, 2, false, false, "", "replicas 3"},
		{"quorum above replicas", 3, 2, 3, false, false, "", "write quorum 3"},
		{"store given twice", 2, 2, 1, true, false, "", "given twice"},
		{"unusable store", 3, 3, 2, false, true, "", "s2"},
		{"sha256 blocks", 0, 1, 1, false, false, "sha256", ""},
		{"blake3 blocks", 0, 1, 1, false, false, "blake3", ""},
		{"unknown block hash", 0, 1, 1, false, false, "md5", `block hash "md5" is not known`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			base := t.TempDir()
			dir := filepath.Join(base, "vol")
			stores := storeURLs(base, tc.stores)
			if tc.stores == 0 {
				stores = []string{localStoreID}
			}
			if tc.dup {
				stores = append(stores, stores[0]+"/")
			}
			if tc.blocker {
				if err := os.WriteFile(filepath.Join(base, "s2"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := formatVolume(ctx, dir, formatOptions{stores: stores, replicas: tc.replicas, writeQuorum: tc.quorum, blockSize: 1 << 20, blockHash: tc.hash})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("format = %v, want an error mentioning %q", err, tc.wantErr)
				}
				// Nothing is left behind but what the test made.
				entries, _ := os.ReadDir(base)
				for _, e := range entries {
					if !(tc.blocker && e.Name() == "s2") {
						t.Errorf("failed format left %s behind", e.Name())
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("format: %v", err)
			}
			v, err := openVolume(ctx, dir)
			if err != nil {
				t.Fatal(err)
			}
			defer v.close()
			f := v.meta.Format()
			if len(f.Stores) != len(stores) || f.Replicas != tc.replicas || f.WriteQuorum != tc.quorum {
				t.Errorf("format record: %d stores, replicas %d, quorum %d", len(f.Stores), f.Replicas, f.WriteQuorum)
			}
			if want := cmp.Or(tc.hash, meta.HashBLAKE3); f.Version != meta.FormatVersion || f.BlockHash != want {
				t.Errorf("format record: version %d, block hash %q; want %d, %q", f.Version, f.BlockHash, meta.FormatVersion, want)
			}
			// The probe object is gone again; what stays is the mark naming
			// the volume that owns the stores.
			var keys []string
			if err := v.store.List(ctx, "", func(k string, _ int64) error { keys = append(keys, k); return nil }); err != nil || len(keys) != 1 || keys[0] != volumeKey {
				t.Errorf("stores hold %v after format (%v), want only %s", keys, err, volumeKey)
			}
			if owner, err := storeOwner(ctx, v.store); err != nil || owner != f.UUID {
				t.Errorf("store owner %q (%v), want the volume's uuid %s", owner, err, f.UUID)
			}
			if c := v.capacity(); c == nil {
				t.Error("no capacity for local stores")
			} else if total, free, err := c(); err != nil || total == 0 || free > total {
				t.Errorf("capacity = %d, %d, %v", total, free, err)
			}
		})
	}
}

// writeTestFiles writes n files of a few blocks each through the file
// system, and returns their contents by name.
func writeTestFiles(t *testing.T, dir string, n int) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	v, err := openVolume(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	f, err := fs.New(ctx, v.meta, v.store, fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(ctx)
	out := map[string][]byte{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("f%d", i)
		data := bytes.Repeat(fmt.Appendf(nil, "%s-%d;", name, i), 40000) // a few 64 KiB blocks
		_, fh, err := f.Create(ctx, &meta.Root, meta.RootIno, name, 0o644, syscall.O_RDWR|syscall.O_CREAT)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(ctx, fh, 0, data); err != nil {
			t.Fatal(err)
		}
		if err := f.Release(ctx, fh); err != nil {
			t.Fatal(err)
		}
		out[name] = data
	}
	return out
}

func TestScrubRestoresCopies(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "vol")
	stores := storeURLs(base, 3)
	if err := formatVolume(ctx, dir, formatOptions{stores: stores, replicas: 3, writeQuorum: 2, blockSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	writeTestFiles(t, dir, 3)

	c, err := scrub(ctx, dir, scrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	blocks := c.blocks.Load()
	if blocks == 0 || c.copiesOK.Load() != 3*blocks || c.restored.Load() != 0 {
		t.Fatalf("clean volume: blocks %d, ok %d, restored %d", blocks, c.copiesOK.Load(), c.restored.Load())
	}

	// Lose one store's contents and corrupt a copy in another.
	lost := filepath.Join(base, "s1")
	if err := os.RemoveAll(lost); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(lost, 0o700); err != nil {
		t.Fatal(err)
	}
	var victim string
	_ = filepath.WalkDir(filepath.Join(base, "s2", "blocks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && victim == "" {
			victim = p
		}
		return nil
	})
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if err := os.WriteFile(victim, b, 0o600); err != nil {
		t.Fatal(err)
	}

	c, err = scrub(ctx, dir, scrubOptions{workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if c.missing.Load() != blocks || c.corrupt.Load() != 1 || c.restored.Load() != blocks+1 || c.unrecoverable.Load() != 0 {
		var buf bytes.Buffer
		c.print(&buf)
		t.Fatalf("after losing a store (%d blocks):\n%s", blocks, buf.String())
	}
	c, err = scrub(ctx, dir, scrubOptions{})
	if err != nil || c.copiesOK.Load() != 3*blocks || c.restored.Load() != 0 {
		t.Fatalf("second scrub: ok %d of %d, restored %d, %v", c.copiesOK.Load(), 3*blocks, c.restored.Load(), err)
	}
}

func TestScrubRefusesOpenVolume(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "vol")
	if err := format(ctx, dir, "", 1<<20); err != nil {
		t.Fatal(err)
	}
	v, err := openVolume(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	_, err = scrub(ctx, dir, scrubOptions{})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("scrub of an open volume = %v, want an error saying it is in use", err)
	}
}

func TestScrubInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	dir := filepath.Join(t.TempDir(), "vol")
	if err := format(ctx, dir, "", 64<<10); err != nil {
		t.Fatal(err)
	}
	writeTestFiles(t, dir, 2)
	cancel()
	_, err := scrub(ctx, dir, scrubOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("scrub with a cancelled context = %v, want Canceled", err)
	}
}

// TestMissingStoreDirectory: a replicated volume whose store directory is
// gone altogether (a failed disk) still opens and serves from the other
// copies; scrub reports what it cannot restore, and once the directory is
// back, restores it.
func TestMissingStoreDirectory(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "vol")
	if err := formatVolume(ctx, dir, formatOptions{stores: storeURLs(base, 3), replicas: 3, writeQuorum: 2, blockSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	writeTestFiles(t, dir, 1)
	gone := filepath.Join(base, "s0")
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	writeTestFiles(t, dir, 2) // writes go to the two stores left

	c, err := scrub(ctx, dir, scrubOptions{})
	if err != nil {
		t.Fatal(err)
	}
	blocks := c.blocks.Load()
	if c.failed.Load() != blocks || c.copiesOK.Load() != 2*blocks || c.unrecoverable.Load() != 0 {
		t.Errorf("scrub with a store gone: blocks %d, failed %d, ok %d", blocks, c.failed.Load(), c.copiesOK.Load())
	}
	if err := os.Mkdir(gone, 0o700); err != nil {
		t.Fatal(err)
	}
	// The writes journaled the copies s0 missed, and opening the volume
	// would resume those repairs beside scrub's own (that is
	// TestReplicatedVolumeResumesRepairs): without the journal, scrub
	// alone must restore every one.
	if err := os.Remove(filepath.Join(dir, repairJournal)); err != nil {
		t.Fatal(err)
	}
	c, err = scrub(ctx, dir, scrubOptions{})
	if err != nil || c.restored.Load() != blocks || c.failed.Load() != 0 {
		t.Errorf("scrub with the store back: restored %d of %d, failed %d, %v", c.restored.Load(), blocks, c.failed.Load(), err)
	}

	// With two of three gone no write quorum is left: the volume refuses
	// to open rather than fail every write.
	for _, s := range []string{"s0", "s1"} {
		if err := os.RemoveAll(filepath.Join(base, s)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := openVolume(ctx, dir); err == nil {
		v.close()
		t.Fatal("volume opened with only one of three stores and a write quorum of 2")
	} else if !strings.Contains(err.Error(), "1 of 3") {
		t.Errorf("error %q does not say how many stores are left", err)
	}
}

// TestReplicatedVolumeResumesRepairs: the repair journal of a replicated
// volume (repairs.log) is replayed when the volume opens, so a copy left
// missing by the last run is rewritten without a scrub.
func TestReplicatedVolumeResumesRepairs(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "vol")
	if err := formatVolume(ctx, dir, formatOptions{stores: storeURLs(base, 2), replicas: 2, writeQuorum: 1, blockSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	v, err := openVolume(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	f := v.meta.Format()
	data := []byte("a block whose second copy was never written")
	key := f.HashBlock(data).ObjectKey()
	_ = v.close()
	s0, err := objstore.NewDir(filepath.Join(base, "s0"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s0.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, repairJournal), []byte("A 1 "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err = openVolume(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	s1, err := objstore.NewDir(filepath.Join(base, "s1"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := s1.Get(ctx, key)
		if err == nil && string(got) == string(data) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second copy was not restored from the journal: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
