package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/objfs/objfs/fs/meta"
)

func init() {
	register(dumpCmd)
	register(loadCmd)
}

func dumpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dump VOLUME_DIR FILE",
		Short: "Write a consistent snapshot of a volume's metadata",
		Long: `dump writes every metadata record of an unmounted volume, from one
consistent snapshot, to FILE ("-": standard output): gzip-compressed, with a
header naming the volume and a trailer with the record count and a SHA-256
checksum. File data is not included: it stays in the volume's block store.
Memory does not grow with the number of files.

Keep dumps somewhere other than the volume's disk: with a dump and the block
store, a volume whose metadata directory is lost can be restored with
` + "`objfs load`" + `.`,
		Example: `  objfs dump /var/lib/objfs/vol /backup/vol-meta.objfsdump
  objfs dump /var/lib/objfs/vol - | ssh backup 'cat > vol-meta.objfsdump'`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return dump(ctx, args[0], args[1])
		},
	}
}

func dump(ctx context.Context, dir, file string) (err error) {
	v, err := openVolume(ctx, dir)
	if err != nil {
		return err
	}
	defer v.close()
	var w io.Writer = os.Stdout
	var f *os.File
	tmp := ""
	if file != "-" {
		// Written aside and renamed into place, so FILE is never a
		// partial dump.
		tmp = file + ".tmp"
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("dump: %w", err)
		}
		defer func() {
			if err != nil {
				f.Close()
				os.Remove(tmp)
			}
		}()
		w = f
	}
	p := newProgress("dumping records", -1)
	info, err := meta.Dump(ctx, v.kv, w, p.Add)
	p.Done()
	if err != nil {
		return err
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("dump: %w", err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("dump: %w", err)
		}
		if err := os.Rename(tmp, file); err != nil {
			return fmt.Errorf("dump: %w", err)
		}
	}
	fmt.Fprintf(os.Stderr, "dumped %d records of volume %s (uuid %s)\n", info.Records, v.dir, info.Header.UUID)
	return nil
}

func loadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "load FILE VOLUME_DIR",
		Short: "Restore a volume's metadata from a dump",
		Long: `load restores the metadata written by ` + "`objfs dump`" + ` into VOLUME_DIR, whose
metadata must be missing or empty: the usual case is a volume whose meta/
directory was lost while its block store survived, or a new directory next
to a copy of the store. load first reads the whole dump and refuses a
truncated or damaged one (checksum, record count) before writing anything,
then writes the records in bounded batches and the VOLUME marker last, so
an interrupted load leaves a directory that nothing mistakes for a volume
(remove VOLUME_DIR/meta and run load again).

If VOLUME_DIR already has a VOLUME marker, it must name the same volume
(uuid) as the dump. Run ` + "`objfs fsck --verify`" + ` afterwards to check that
every block the metadata references is in the store.`,
		Example: `  # the metadata directory of /var/lib/objfs/vol was lost
  mv /var/lib/objfs/vol/meta /var/lib/objfs/vol/meta.broken
  objfs load /backup/vol-meta.objfsdump /var/lib/objfs/vol
  objfs fsck --verify /var/lib/objfs/vol`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return load(ctx, args[0], args[1])
		},
	}
}

func load(ctx context.Context, file, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if file == "-" {
		return errors.New("load reads a file, not standard input: it reads the dump twice (verify, then load)")
	}
	// Verify the whole dump before touching the volume.
	info, err := loadFile(ctx, file, nil, "verifying dump")
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(dir, markerFile)); err == nil {
		var m marker
		if json.Unmarshal(b, &m) == nil && m.Magic == magic && m.UUID != info.Format.UUID {
			return fmt.Errorf("%s is volume %s; the dump is of volume %s", dir, m.UUID, info.Format.UUID)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read volume marker: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, metaDir), 0o700); err != nil {
		return fmt.Errorf("create metadata directory: %w", err)
	}
	kv, err := openMetaDB(dir, 0)
	if err != nil {
		return metaOpenError(dir, err, "")
	}
	closed := false
	defer func() {
		if !closed {
			_ = kv.Close()
		}
	}()
	if empty, err := meta.IsEmpty(ctx, kv); err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(dir, metaDir), err)
	} else if !empty {
		return fmt.Errorf("%s already holds metadata; load needs it missing or empty (move it away first)", filepath.Join(dir, metaDir))
	}
	if _, err := loadFile(ctx, file, kv, "loading records"); err != nil {
		return fmt.Errorf("%w (the metadata in %s is incomplete: remove it before loading again)", err, filepath.Join(dir, metaDir))
	}
	closed = true
	if err := kv.Close(); err != nil {
		return fmt.Errorf("close metadata: %w", err)
	}
	// The marker goes last, as format writes it: a directory with it is a
	// complete volume.
	if err := writeMarker(dir, info.Format); err != nil {
		return fmt.Errorf("write volume marker: %w", err)
	}
	for _, url := range info.Format.Stores {
		if url != localStoreID {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, localStore)); err != nil {
			fmt.Fprintf(os.Stderr, "warning: the volume's block store %s is missing: copy the store's directory there before mounting\n", filepath.Join(dir, localStore))
		}
	}
	fmt.Printf("loaded %d records into volume %s (uuid %s, dumped %s); check it with: objfs fsck --verify %s\n",
		info.Records, dir, info.Format.UUID, info.Header.Created.Format("2006-01-02 15:04:05 MST"), dir)
	return nil
}

func loadFile(ctx context.Context, file string, kv meta.KV, what string) (*meta.DumpInfo, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open dump: %w", err)
	}
	defer f.Close()
	p := newProgress(what, -1)
	defer p.Done()
	info, err := meta.Load(ctx, f, kv, p.Add)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return info, nil
}
