package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/objfs/objfs/fs/meta"
)

func init() { register(upgradeCmd) }

func upgradeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "upgrade VOLUME_DIR",
		Short: "Raise an unmounted volume to this objfs's format version",
		Long: fmt.Sprintf(`upgrade raises the format version of the volume in VOLUME_DIR, which must not
be mounted or served, to %d, the version this objfs writes. This objfs opens
volumes of versions %d to %d as they are and writes them in their own format,
which an older objfs can still read; upgrading lets it use what later versions
add (version 3: chunk tail records, so a small commit to a large file no longer
rewrites the file's whole slice list; version 4: hole slices, so fallocate can
punch holes and zero ranges, and files count what they store for st_blocks;
files made before the upgrade report their size there until 'objfs fsck
--repair' counts them). No data is rewritten: only the format
record and the VOLUME marker change. There is no way back: an objfs that reads
only older versions refuses the volume afterwards.`, meta.FormatVersion, meta.MinFormatVersion, meta.FormatVersion),
		Example: `  objfs upgrade /var/lib/objfs/vol`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return upgrade(cmd.Context(), args[0])
		},
	}
}

// upgradeHint says what upgrading a volume of format f in dir would bring,
// or "" when it is at this objfs's version.
func upgradeHint(f meta.Format, dir string) string {
	if f.Version >= meta.FormatVersion {
		return ""
	}
	return fmt.Sprintf("volume has format version %d; this objfs writes %d (version 3: chunk tail records, so small commits to large files no longer rewrite their slice lists; version 4: hole slices, so fallocate can punch holes); `objfs upgrade %s` raises it while unmounted, after which an older objfs refuses it", f.Version, meta.FormatVersion, dir)
}

// upgrade raises the volume in dir to meta.FormatVersion. The format record
// goes first, then the marker: an objfs of the old version reads the
// marker's version before anything else, and one that finds the old
// version there still refuses the newer format record, so a crash in
// between leaves a volume that only a new objfs opens, and running upgrade
// again finishes it.
func upgrade(ctx context.Context, dir string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	dir, err := volumeDir(dir)
	if err != nil {
		return err
	}
	kv, err := openMetaKV(dir, 0)
	if err != nil {
		return err
	}
	from, f, err := meta.Upgrade(ctx, kv)
	if err == nil {
		err = kv.Sync()
	}
	if cerr := kv.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("upgrade volume %s: %w", dir, err)
	}
	m, err := readMarker(dir)
	if err != nil {
		return err
	}
	if from == f.Version && m.Version == f.Version {
		fmt.Printf("volume %s is already at format version %d\n", dir, f.Version)
		return nil
	}
	if from == f.Version {
		from = m.Version // a crash came between the record and the marker
	}
	if err := writeMarker(dir, f); err != nil {
		return fmt.Errorf("upgrade volume %s: write its marker: %w", dir, err)
	}
	fmt.Printf("upgraded volume %s from format version %d to %d\n", dir, from, f.Version)
	return nil
}
