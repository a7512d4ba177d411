package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/objfs/objfs/fs/meta"
)

func init() { register(formatCmd) }

func formatCmd() *cobra.Command {
	var (
		store     string
		blockSize int
	)
	cmd := &cobra.Command{
		Use:   "format [flags] VOLUME_DIR",
		Short: "Create a new volume",
		Long: `format creates a volume in VOLUME_DIR (which must be missing or empty): its
Badger metadata database with a versioned format record, and, unless --store
names another one, a local block store inside VOLUME_DIR.`,
		Example: `  # a volume with blocks inside the volume directory
  objfs format /var/lib/objfs/vol
  # blocks in another directory (say, a different disk), 1 MiB blocks
  objfs format --store file:///data/objfs-blocks --block-size 1048576 /var/lib/objfs/vol`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return format(cmd.Context(), args[0], store, blockSize)
		},
	}
	cmd.Flags().StringVar(&store, "store", "", "object store URL (file:///ABS/DIR); default: a directory inside VOLUME_DIR")
	cmd.Flags().IntVar(&blockSize, "block-size", 4<<20, "largest block size in bytes (power of two, 4 KiB to 16 MiB)")
	return cmd
}

func format(ctx context.Context, dir, store string, blockSize int) error {
	if ctx == nil {
		ctx = context.Background()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, markerFile)); err == nil {
			return fmt.Errorf("%s is already an objfs volume", dir)
		}
		return fmt.Errorf("%s is not empty; format needs a new or empty directory", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	if store == "" {
		store = localStoreID
	}
	f := meta.NewFormat([]string{store}, blockSize)
	if err := f.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create volume directory: %w", err)
	}
	s, err := openStore(ctx, dir, store, true)
	if err != nil {
		return err
	}
	defer s.Close()
	kv, err := meta.OpenBadger(filepath.Join(dir, metaDir), false)
	if err != nil {
		return err
	}
	if err := meta.Create(ctx, kv, f); err != nil {
		_ = kv.Close()
		return err
	}
	if err := kv.Sync(); err != nil {
		_ = kv.Close()
		return err
	}
	if err := kv.Close(); err != nil {
		return err
	}
	// The marker goes last: a directory with it is a complete volume.
	b, _ := json.MarshalIndent(marker{Magic: magic, Version: f.Version, UUID: f.UUID}, "", "  ")
	if err := writeFileSync(filepath.Join(dir, markerFile), append(b, '\n')); err != nil {
		return err
	}
	fmt.Printf("formatted volume %s (uuid %s, block size %d, store %s)\n", dir, f.UUID, f.BlockSize, s)
	return nil
}

// writeFileSync writes a small file atomically and durably.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
