package main

import (
	"context"
	"fmt"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/objfs/objfs/fs/meta"
)

func init() { register(statusCmd) }

func statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status VOLUME_DIR",
		Short: "Show what a volume holds",
		Long: `status prints a volume's format and totals: files, directories, bytes and
blocks. For a mounted volume it reads the figures the mount publishes.`,
		Example: `  objfs status /var/lib/objfs/vol`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return status(cmd.Context(), args[0])
		},
	}
}

func status(ctx context.Context, dir string) error {
	if ctx == nil {
		ctx = context.Background()
	}
	dir, err := volumeDir(dir)
	if err != nil {
		return err
	}
	if mi, err := readMountInfo(dir); err == nil && mountedBy(dir) != "" {
		fmt.Printf("volume:      %s\nmounted:     at %s by pid %d (figures as of %s)\n", dir, mi.Mountpoint, mi.Pid, mi.Updated)
		printStats(mi.Stats)
		fmt.Printf("buffered:    %s not yet committed\ncache:       %s in memory, %d hits, %d misses\n",
			humanize.IBytes(uint64(max(mi.BufferedBytes, 0))), humanize.IBytes(uint64(max(mi.CacheBytes, 0))), mi.CacheHits, mi.CacheMisses)
		fmt.Printf("read-ahead:  %s held, %d hits, %d blocks left unread\n", humanize.IBytes(uint64(max(mi.ReadAheadBytes, 0))), mi.ReadAheadHits, mi.ReadAheadUnread)
		fmt.Printf("disk cache:  %s, %d hits, %d misses\n", humanize.IBytes(uint64(max(mi.DiskCacheBytes, 0))), mi.DiskCacheHits, mi.DiskCacheMisses)
		fmt.Printf("staged:      %d blocks, %s not yet uploaded (%d queued, %d held back); %d uploaded, %d failed attempts\n",
			mi.StagedBlocks, humanize.IBytes(uint64(max(mi.StagedBytes, 0))), mi.UploadQueue, mi.UploadHeld, mi.Uploaded, mi.UploadErrors)
		fmt.Printf("freed:       %d unlinked inodes reaped, %d unreferenced blocks deleted, %d failed deletes (retried) since the mount\n",
			mi.Reaped, mi.BlocksDeleted, mi.DeleteErrors)
		fmt.Printf("meta disk:   %s free, %s kept in reserve; %d writes refused for lack of space since the mount",
			humanize.IBytes(mi.MetaFree), humanize.IBytes(mi.MetaReserve), mi.SpaceRefused)
		if mi.SpaceWaits > 0 {
			fmt.Printf("; %d blocks waited for uploads to free space (%d refused after all)", mi.SpaceWaits, mi.SpaceWaitsRefused)
		}
		fmt.Println()
		return nil
	}
	// Only metadata is read: no need to upload what a crash left staged.
	v, err := openVolumeOnly(ctx, dir, 0)
	if err != nil {
		return err
	}
	defer v.close()
	f := v.meta.Format()
	fmt.Printf("volume:      %s\nuuid:        %s\nformat:      version %d, block size %d, chunk size %d, inline up to %d bytes, blocks named by %s\nstores:      %v\nmounted:     no\n",
		dir, f.UUID, f.Version, f.BlockSize, f.ChunkSize, f.InlineMax, f.BlockHashName(), f.Stores)
	if hint := upgradeHint(f, dir); hint != "" {
		fmt.Printf("upgrade:     %s\n", hint)
	}
	printStats(v.meta.Stats())
	return nil
}

func printStats(s meta.Stats) {
	fmt.Printf("inodes:      %d\nfiles:       %d\ndirectories: %d\nbytes:       %d (%s)\nblocks:      %d (%s stored)\n",
		s.Inodes, s.Files, s.Dirs, s.Bytes, humanize.IBytes(uint64(max(s.Bytes, 0))), s.Blocks, humanize.IBytes(uint64(max(s.BlockBytes, 0))))
}
