package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoreBelongsToOneVolume: a second volume cannot be formatted on a
// store another volume uses (gc of one would delete the other's blocks),
// nor can a volume open a store another volume owns; a lost store that is
// recreated empty is accepted and marked again.
func TestStoreBelongsToOneVolume(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	store := filepath.Join(base, "shared")
	url := "file://" + store
	volA, volB := filepath.Join(base, "a"), filepath.Join(base, "b")
	if err := format(ctx, volA, url, 1<<20); err != nil {
		t.Fatal(err)
	}
	err := format(ctx, volB, url, 1<<20)
	if !errors.Is(err, errForeignStore) || !strings.Contains(err.Error(), store) {
		t.Fatalf("format of a second volume on the same store: %v, want a refusal naming the store", err)
	}
	if _, err := os.Stat(filepath.Join(volB, markerFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused format left a volume behind: %v", err)
	}

	v, err := openVolume(ctx, volA)
	if err != nil {
		t.Fatalf("the first volume no longer opens: %v", err)
	}
	uuid := v.meta.Format().UUID
	_ = v.close()

	// The store's mark names another volume: refuse.
	if err := os.WriteFile(filepath.Join(store, volumeKey), []byte("0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openVolume(ctx, volA); !errors.Is(err, errForeignStore) {
		t.Fatalf("open with a store owned by another volume: %v, want a refusal", err)
	}

	// A lost store recreated empty: accepted and marked again.
	if err := os.RemoveAll(store); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(store, 0o700); err != nil {
		t.Fatal(err)
	}
	v, err = openVolume(ctx, volA)
	if err != nil {
		t.Fatalf("open with a recreated empty store: %v", err)
	}
	defer v.close()
	if owner, err := storeOwner(ctx, v.store); err != nil || owner != uuid {
		t.Errorf("owner of the recreated store: %q (%v), want %s", owner, err, uuid)
	}

	// A store holding blocks but no mark (a lost volume's): not for a new volume.
	dirty := filepath.Join(base, "dirty")
	if err := os.MkdirAll(filepath.Join(dirty, "blocks", "aa", "bb"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirty, "blocks", "aa", "bb", strings.Repeat("a", 64)), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := format(ctx, filepath.Join(base, "c"), "file://"+dirty, 1<<20); !errors.Is(err, errForeignStore) {
		t.Errorf("format on a store with blocks: %v, want a refusal", err)
	}
}
