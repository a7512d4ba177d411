package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// TestVolumeMarkerVersions checks which format versions a volume's marker
// may name: every version this objfs reads opens; others are refused with
// a message naming both, before anything is opened or changed.
func TestVolumeMarkerVersions(t *testing.T) {
	tests := []struct {
		version int
		ok      bool
	}{
		{meta.FormatVersion, true},
		{meta.MinFormatVersion - 1, false},
		{meta.FormatVersion + 1, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint("version ", tc.version), func(t *testing.T) {
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), "vol")
			if err := format(ctx, dir, "", 1<<20); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, markerFile)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var m marker
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			m.Version = tc.version
			b, _ = json.Marshal(m)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			v, err := openVolume(ctx, dir)
			if tc.ok {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				_ = v.close()
				return
			}
			if err == nil {
				_ = v.close()
				t.Fatal("opened a volume of an unknown format version")
			}
			want := fmt.Sprintf("format version %d; this objfs reads versions %d to %d", tc.version, meta.MinFormatVersion, meta.FormatVersion)
			if !strings.Contains(err.Error(), want) {
				t.Errorf("open: %v; want it to say %q", err, want)
			}
		})
	}
}

// TestVolumePathWithURLSyntax: a volume directory whose name holds what is
// syntax in a URL ('#', '?', '%', a space) formats and opens, its default
// store inside it. Its file:// URL used to be made by concatenation, and
// format failed ("fragments are not allowed").
func TestVolumePathWithURLSyntax(t *testing.T) {
	for _, name := range []string{"a#b", "a?b", "a%41b", "a b"} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), name)
			if err := format(ctx, dir, "", 1<<20); err != nil {
				t.Fatalf("format: %v", err)
			}
			v, err := openVolume(ctx, dir)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer v.close()
			if err := v.store.Put(ctx, "probe", []byte("x")); err != nil {
				t.Fatalf("put: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, localStore)); err != nil {
				t.Errorf("the store is not inside the volume directory: %v", err)
			}
		})
	}
}

// TestMetaOpenError: why the metadata database did not open is said
// plainly, also when Badger has flattened the errno into its message; only
// what is none of the usual causes is called damage.
func TestMetaOpenError(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{errors.New(`Cannot write pid file "LOCK" err: write LOCK: no space left on device`), "no space left on the file system holding"},
		{fmt.Errorf("fold statistics: %w", syscall.ENOSPC), "no space left on the file system holding"},
		{fmt.Errorf("sync: %w", syscall.EDQUOT), "no space left on the file system holding"},
		{fmt.Errorf("open: %w", syscall.EROFS), "cannot write its metadata in"},
		{errors.New("open MANIFEST: permission denied"), "cannot write its metadata in"},
		{errors.New("Cannot acquire directory lock: Another process is using this Badger database"), "is in use by another process"},
		{errors.New("manifest has bad magic"), "is damaged"},
	}
	for _, tc := range tests {
		got := metaOpenError("/v", tc.err, "is damaged").Error()
		if !strings.Contains(got, tc.want) || tc.want != "is damaged" && strings.Contains(got, "damaged") {
			t.Errorf("%v: %q, want it to say %q", tc.err, got, tc.want)
		}
	}
	if err := errors.New("bad"); metaOpenError("/v", err, "") != err {
		t.Error("an unknown cause with nothing else to say is not returned as it is")
	}
}

// TestOfflineOnFullDisk: an offline command on a full disk under the
// metadata gets a plain "no space" error, not "damaged" and not SIGBUS in
// Badger's memory-mapped files: nothing opens below a quarter of the
// default reserve (2 MiB of a 32 MiB file system); once there is room the
// volume opens as it was.
func TestOfflineOnFullDisk(t *testing.T) {
	base := t.TempDir()
	if err := syscall.Mount("tmpfs", base, "tmpfs", 0, "size=32m"); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(base, syscall.MNT_DETACH) })
	ctx := context.Background()
	dir := filepath.Join(base, "vol")
	if err := format(ctx, dir, "", 1<<20); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(base, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 1<<20))
	}
	f.Close()
	for _, free := range []int64{0, 1 << 20} {
		if free > 0 {
			st, err := os.Stat(filler)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(filler, st.Size()-free); err != nil {
				t.Fatal(err)
			}
		}
		v, err := openVolume(ctx, dir)
		if err == nil {
			_ = v.close()
			t.Fatalf("the volume opened with %d bytes free", free)
		}
		if msg := err.Error(); !strings.Contains(msg, "no space left on the file system holding") || strings.Contains(msg, "damaged") {
			t.Errorf("open with %d bytes free: %v, want it to say there is no space", free, err)
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	v, err := openVolume(ctx, dir)
	if err != nil {
		t.Fatalf("open once there is room: %v", err)
	}
	if err := v.close(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckUserMount: what fusermount3 would refuse a mount by a user
// other than root for is said up front: /dev/fuse out of reach, or
// --allow-other without user_allow_other in fuse.conf (a commented-out
// line does not count). Root is never stopped.
func TestCheckUserMount(t *testing.T) {
	dir := t.TempDir()
	conf := func(body string) string {
		p := filepath.Join(dir, fmt.Sprintf("fuse%d.conf", len(body)))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dev := filepath.Join(dir, "dev")
	if err := os.WriteFile(dev, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		euid       int
		allowOther bool
		conf, dev  string
		want       string // in the error; "" for none
	}{
		{0, true, filepath.Join(dir, "missing"), filepath.Join(dir, "missing"), ""},
		{1000, false, filepath.Join(dir, "missing"), dev, ""},
		{1000, true, conf("# mount_max = 1000\nuser_allow_other\n"), dev, ""},
		{1000, true, conf("  user_allow_other  # yes\n"), dev, ""},
		{1000, true, conf("#user_allow_other\n"), dev, `needs a line "user_allow_other"`},
		{1000, true, filepath.Join(dir, "missing"), dev, `needs a line "user_allow_other"`},
		{1000, false, filepath.Join(dir, "missing"), filepath.Join(dir, "nodev"), "needs read and write access"},
	}
	for i, tc := range tests {
		err := checkUserMount(tc.euid, tc.allowOther, tc.conf, tc.dev)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("case %d: %v, want %q", i, err, tc.want)
		}
	}
}
