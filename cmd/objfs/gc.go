package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

func init() { register(gcCmd) }

func gcCmd() *cobra.Command {
	var (
		dryRun bool
		grace  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gc [--dry-run] [--grace DURATION] VOLUME_DIR",
		Short: "Delete stored blocks nothing references",
		Long: `gc deletes the objects of an unmounted volume's store that no file
references: blocks left by a crash between an upload and its commit, and
blocks queued for deletion (their last reference was dropped) that the mount
had not deleted yet. Then it reclaims the dead space of the metadata
database (value log files that are mostly deleted or overwritten values),
as a mounted volume does every few minutes.

An unreferenced object found by listing is deleted only if an earlier gc run
already saw it unreferenced at least --grace ago (the first sighting is
recorded in the metadata), so that an upload in flight which a process is
about to commit is never deleted under it. Run gc periodically, or twice
--grace apart; --grace 0 deletes at once. Blocks queued for deletion were
committed and released, so they are deleted at once.

gc can be interrupted (Ctrl-C) at any point and run again; --dry-run only
counts.`,
		Example: `  objfs gc /var/lib/objfs/vol
  objfs gc --dry-run /var/lib/objfs/vol
  objfs gc --grace 0 /var/lib/objfs/vol   # nothing else uses the store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if grace < 0 {
				return fmt.Errorf("--grace %v: must not be negative", grace)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return gc(ctx, args[0], dryRun, grace)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "count what would be deleted, delete nothing")
	cmd.Flags().DurationVar(&grace, "grace", time.Hour, "delete an unreferenced object only once it has been seen unreferenced this long")
	return cmd
}

// gcStats are gc's counts.
type gcStats struct {
	listed, referenced, deleted, waiting, foreign int64
	deletedBytes                                  int64
	queueDone, queueStale                         int64
	metaFiles                                     int // metadata value log files rewritten
}

// gcBatch bounds the objects classified per metadata transaction.
const gcBatch = 1000

func gc(ctx context.Context, dir string, dryRun bool, grace time.Duration) error {
	v, err := openVolume(ctx, dir)
	if err != nil {
		return err
	}
	defer v.close()
	var st gcStats
	err = gcRun(ctx, v, dryRun, grace, &st)
	if err == nil && !dryRun {
		st.metaFiles, err = v.meta.CollectGarbage(ctx)
	}
	verb := "deleted"
	if dryRun {
		verb = "would delete"
	}
	fmt.Printf("%s: %d objects listed, %d referenced, %s %d unreferenced (%d bytes), %d unreferenced within the grace period, %d not blocks; deletion queue: %s %d, %d stale entries dropped; metadata value log: %d files rewritten\n",
		v.dir, st.listed, st.referenced, verb, st.deleted, st.deletedBytes, st.waiting, st.foreign, verb, st.queueDone, st.queueStale, st.metaFiles)
	if err != nil {
		return fmt.Errorf("gc %s: %w (safe to run again)", v.dir, err)
	}
	return nil
}

func gcRun(ctx context.Context, v *volume, dryRun bool, grace time.Duration, st *gcStats) error {
	// First the deletion queue: these blocks had references that were all
	// dropped, so no upload can be in flight for them.
	if err := gcQueue(ctx, v, dryRun, st); err != nil {
		return err
	}
	runStart := time.Now()
	p := newProgress("listing store", v.meta.Stats().Blocks)
	defer p.Done()
	var batch []meta.BlockID
	sizes := map[meta.BlockID]int64{}
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		now := time.Now()
		seen, err := v.meta.GCObserve(ctx, batch, now, !dryRun)
		if err != nil {
			return err
		}
		var gone []meta.BlockID
		for _, s := range seen {
			switch {
			case s.Referenced:
				st.referenced++
			case s.Pending && dryRun:
				// Counted with the deletion queue, which a real run
				// empties before listing.
			case now.Sub(s.FirstSeen) < grace:
				st.waiting++
			default:
				if !dryRun {
					if err := v.store.Delete(ctx, s.ID.ObjectKey()); err != nil {
						return fmt.Errorf("delete block %s: %w", s.ID, err)
					}
					gone = append(gone, s.ID)
				}
				st.deleted++
				st.deletedBytes += sizes[s.ID]
			}
		}
		if len(gone) > 0 {
			if err := v.meta.GCDeleted(ctx, gone); err != nil {
				return err
			}
		}
		p.Add(int64(len(batch)))
		batch = batch[:0]
		clear(sizes)
		return nil
	}
	err := v.store.List(ctx, "blocks/", func(key string, size int64) error {
		st.listed++
		id, ok := meta.ParseObjectKey(key)
		if !ok {
			// Not named like a block: not ours to delete.
			st.foreign++
			slog.Debug("gc: skipping object not named like a block", "key", key)
			return nil
		}
		batch = append(batch, id)
		sizes[id] = size
		if len(batch) == gcBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	if dryRun {
		return nil
	}
	// Only a complete listing shows which recorded objects are gone.
	if _, err := v.meta.GCSweep(ctx, runStart); err != nil {
		return err
	}
	return nil
}

// gcQueue finishes the deletion queue (P records): deletes the object of
// each block still unreferenced, and drops entries of blocks that are
// referenced again.
func gcQueue(ctx context.Context, v *volume, dryRun bool, st *gcStats) error {
	var after *meta.BlockID
	for {
		pending, err := v.meta.GCPending(ctx, after, gcBatch)
		if err != nil {
			return err
		}
		if len(pending) == 0 {
			return nil
		}
		var stale, gone []meta.BlockID
		for _, s := range pending {
			if s.Referenced {
				stale = append(stale, s.ID)
				continue
			}
			st.queueDone++
			if dryRun {
				continue
			}
			if err := v.store.Delete(ctx, s.ID.ObjectKey()); err != nil && !errors.Is(err, objstore.ErrNotFound) {
				return fmt.Errorf("delete block %s: %w", s.ID, err)
			}
			gone = append(gone, s.ID)
		}
		st.queueStale += int64(len(stale))
		if !dryRun {
			if err := v.meta.GCDropPending(ctx, stale); err != nil {
				return err
			}
			if err := v.meta.GCDeleted(ctx, gone); err != nil {
				return err
			}
		}
		last := pending[len(pending)-1].ID
		after = &last
	}
}
