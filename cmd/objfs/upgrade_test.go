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

// versions reads the format version a volume's marker and format record say.
func versions(t *testing.T, dir string) (marked, recorded int) {
	t.Helper()
	m, err := readMarker(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := openForTest(t, dir)
	defer v.close()
	return m.Version, v.meta.Format().Version
}

// openForTest opens the volume in dir without uploading staged blocks.
func openForTest(t *testing.T, dir string) *volume {
	t.Helper()
	v, err := openVolumeOnly(context.Background(), dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// runFormat runs `objfs format ARGS... DIR`.
func runFormat(args []string, dir string) error {
	cmd := formatCmd()
	cmd.SetArgs(append(args, dir))
	cmd.SetOut(new(strings.Builder))
	return cmd.ExecuteContext(context.Background())
}

// TestUpgradeCommand: format --format-version makes an older volume, and
// upgrade raises its record and marker to this objfs's version, once; it
// refuses a volume in use, and finishes the marker after a crash that
// came between the two.
func TestUpgradeCommand(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "vol")
	if err := formatVolume(ctx, dir, formatOptions{stores: []string{localStoreID}, replicas: 1, writeQuorum: 1, blockSize: 1 << 20, version: 2}); err != nil {
		t.Fatal(err)
	}
	if m, r := versions(t, dir); m != 2 || r != 2 {
		t.Fatalf("format --format-version 2 made marker %d, record %d", m, r)
	}

	v, err := openVolumeOnly(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = upgrade(ctx, dir)
	_ = v.close()
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("upgrade of a volume in use: %v; want it refused as in use", err)
	}
	if m, r := versions(t, dir); m != 2 || r != 2 {
		t.Fatalf("a refused upgrade changed the volume: marker %d, record %d", m, r)
	}

	if err := upgrade(ctx, dir); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if m, r := versions(t, dir); m != meta.FormatVersion || r != meta.FormatVersion {
		t.Fatalf("after upgrade: marker %d, record %d; want %d", m, r, meta.FormatVersion)
	}

	// A crash after the record, before the marker: upgrade finishes it.
	mk, err := readMarker(dir)
	if err != nil {
		t.Fatal(err)
	}
	mk.Version = 2
	b, _ := json.Marshal(mk)
	if err := os.WriteFile(filepath.Join(dir, markerFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := upgrade(ctx, dir); err != nil {
		t.Fatalf("upgrade after a crash: %v", err)
	}
	if m, r := versions(t, dir); m != meta.FormatVersion || r != meta.FormatVersion {
		t.Fatalf("after the second upgrade: marker %d, record %d; want %d", m, r, meta.FormatVersion)
	}
	if err := upgrade(ctx, dir); err != nil {
		t.Fatalf("upgrade of an upgraded volume: %v", err)
	}
}

// TestUpgradeHint: status and the serving commands point a volume of an
// older format at upgrade, and say nothing for a current one.
func TestUpgradeHint(t *testing.T) {
	for _, tc := range []struct {
		version int
		want    string
	}{
		{1, fmt.Sprintf("format version 1; this objfs writes %d", meta.FormatVersion)},
		{2, "`objfs upgrade /v` raises it"},
		{meta.FormatVersion, ""},
	} {
		got := upgradeHint(meta.Format{Version: tc.version}, "/v")
		if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
			t.Errorf("hint for version %d: %q, want one saying %q", tc.version, got, tc.want)
		}
	}
}

// TestFormatVersionFlag: --format-version takes every version this objfs
// writes and names the range when it is outside it.
func TestFormatVersionFlag(t *testing.T) {
	tests := []struct {
		args    []string
		want    string // in the error; "" for success
		version int    // made on success
	}{
		{nil, "", meta.FormatVersion},
		{[]string{"--format-version", "2"}, "", 2},
		{[]string{"--format-version", "1", "--block-hash", "sha256"}, "", 1},
		{[]string{"--format-version", "1"}, "format version 1 volumes use sha256", 0},
		{[]string{"--format-version", "0"}, "this objfs writes versions", 0},
		{[]string{"--format-version", "3"}, "", 3},
		{[]string{"--format-version", fmt.Sprint(meta.FormatVersion + 1)}, "this objfs writes versions", 0},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vol")
			err := runFormat(tc.args, dir)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if m, r := versions(t, dir); m != tc.version || r != tc.version {
					t.Errorf("made marker %d, record %d; want %d", m, r, tc.version)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("format %v: %v; want an error saying %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestFormatRootOwner: the root directory belongs to the user running
// format, or to --root-owner; a bad --root-owner is refused and creates
// nothing.
func TestFormatRootOwner(t *testing.T) {
	tests := []struct {
		args     []string
		want     string // in the error; "" for success
		uid, gid uint32 // the root directory's owner on success
	}{
		{nil, "", uint32(os.Getuid()), uint32(os.Getgid())},
		{[]string{"--root-owner", "1000:100"}, "", 1000, 100},
		{[]string{"--root-owner", "0:0"}, "", 0, 0},
		{[]string{"--root-owner", "4294967294:7"}, "", 4294967294, 7},
		{[]string{"--root-owner", "1000"}, "want UID:GID", 0, 0},
		{[]string{"--root-owner", "alice:staff"}, `UID "alice" is not a number`, 0, 0},
		{[]string{"--root-owner", "1000:-1"}, `GID "-1" is not a number`, 0, 0},
		{[]string{"--root-owner", "4294967295:0"}, "is not a number from 0 to 4294967294", 0, 0},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "vol")
			err := runFormat(tc.args, dir)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("format %v: %v; want an error saying %q", tc.args, err, tc.want)
				}
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused format left %s behind (%v)", dir, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v := openForTest(t, dir)
			defer v.close()
			a, err := v.meta.GetAttr(context.Background(), meta.RootIno)
			if err != nil {
				t.Fatal(err)
			}
			if a.Uid != tc.uid || a.Gid != tc.gid || a.Mode != syscall.S_IFDIR|0o755 {
				t.Errorf("root directory %d:%d mode %o, want %d:%d mode 40755", a.Uid, a.Gid, a.Mode, tc.uid, tc.gid)
			}
		})
	}
}
