package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/objfs/objfs/objstore"
)

// volumeKey is an object in every store naming the volume that owns it.
// Two volumes sharing a store would be a quiet disaster: gc of one deletes
// the blocks the other references. format refuses a store that belongs to
// another volume or already holds blocks, and opening a volume refuses a
// store that another volume owns.
const volumeKey = "objfs-volume"

// errForeignStore marks a store owned by another volume.
var errForeignStore = errors.New("object store belongs to another volume")

// storeOwner reads the uuid of the volume that owns s ("" if none).
func storeOwner(ctx context.Context, s objstore.Store) (string, error) {
	b, err := s.Get(ctx, volumeKey)
	if errors.Is(err, objstore.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the owner of object store %s: %w", s, err)
	}
	return string(bytes.TrimSpace(b)), nil
}

// claimNewStore marks s as the store of a new volume uuid, refusing a store
// that has an owner or holds blocks already.
func claimNewStore(ctx context.Context, s objstore.Store, uuid string) error {
	owner, err := storeOwner(ctx, s)
	if err != nil {
		return err
	}
	if owner != "" && owner != uuid {
		return fmt.Errorf("%w: %s is used by volume %s; give each volume its own store", errForeignStore, s, owner)
	}
	errHasBlocks := errors.New("has blocks")
	err = s.List(ctx, "blocks/", func(string, int64) error { return errHasBlocks })
	if errors.Is(err, errHasBlocks) {
		return fmt.Errorf("%w: %s already holds blocks (of a lost volume?); give each volume its own, empty store", errForeignStore, s)
	}
	if err != nil {
		return fmt.Errorf("list object store %s: %w", s, err)
	}
	if err := s.Put(ctx, volumeKey, []byte(uuid+"\n")); err != nil {
		return fmt.Errorf("mark object store %s: %w", s, err)
	}
	return nil
}

// checkStoreOwner verifies that s belongs to volume uuid. A store without a
// mark (a lost store recreated empty, to be refilled by scrub) is marked.
func checkStoreOwner(ctx context.Context, s objstore.Store, uuid string) error {
	owner, err := storeOwner(ctx, s)
	if err != nil {
		return err
	}
	switch owner {
	case uuid:
		return nil
	case "":
		if err := s.Put(ctx, volumeKey, []byte(uuid+"\n")); err != nil {
			return fmt.Errorf("mark object store %s: %w", s, err)
		}
		return nil
	}
	return fmt.Errorf("%w: %s is used by volume %s, not by this volume (%s)", errForeignStore, s, owner, uuid)
}
