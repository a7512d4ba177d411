package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
