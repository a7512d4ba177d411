package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/replicated"
)

func init() { register(scrubCmd) }

func scrubCmd() *cobra.Command {
	var workers int
	cmd := &cobra.Command{
		Use:   "scrub [flags] VOLUME_DIR",
		Short: "Verify every copy of every block and restore missing or corrupt ones",
		Long: `scrub reads every copy of every block the volume references, checks it against
the block's hash, and rewrites missing or corrupt copies from a good one, so
that every block is back to its full number of copies. It prints what it
found. A block with no good copy left is reported as unrecoverable (its files
read as I/O errors there).

The volume must not be mounted. scrub can be interrupted (Ctrl-C) and run
again at any time: it only ever adds good copies.

To replace a lost store directory, create it again empty, then run scrub.`,
		Example: `  objfs scrub /var/lib/objfs/vol`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			c, err := scrub(ctx, args[0], scrubOptions{workers: workers})
			if c != nil {
				c.print(out)
			}
			if err != nil {
				return err
			}
			if c.unrecoverable.Load() > 0 || c.failed.Load() > 0 {
				return fmt.Errorf("%d blocks unrecoverable, %d copies could not be checked or restored", c.unrecoverable.Load(), c.failed.Load())
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&workers, "workers", 4, "blocks checked in parallel")
	return cmd
}

type scrubOptions struct {
	workers int // blocks checked in parallel
}

// scrubCounts is what a scrub found.
type scrubCounts struct {
	blocks        atomic.Int64 // blocks checked
	copiesOK      atomic.Int64
	missing       atomic.Int64
	corrupt       atomic.Int64
	restored      atomic.Int64
	failed        atomic.Int64 // copies that could not be read or rewritten
	unrecoverable atomic.Int64 // blocks with no good copy
}

func (c *scrubCounts) print(w io.Writer) {
	fmt.Fprintf(w, "blocks: %d\ncopies ok: %d\nmissing copies: %d\ncorrupt copies: %d\nrestored: %d\nfailed: %d\nunrecoverable: %d\n",
		c.blocks.Load(), c.copiesOK.Load(), c.missing.Load(), c.corrupt.Load(), c.restored.Load(), c.failed.Load(), c.unrecoverable.Load())
}

// scrub checks every block of the volume in dir. The counts are returned
// (with what was done so far) even when it fails or is interrupted.
func scrub(ctx context.Context, dir string, o scrubOptions) (*scrubCounts, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("scrub: %w", err)
	}
	v, err := openVolume(ctx, dir)
	if err != nil {
		// openVolume's message already says when the volume is mounted
		// (in use) or a store is missing.
		return nil, fmt.Errorf("scrub: %w", err)
	}
	// A single-store volume is scrubbed through a one-copy replicated
	// store: the same checks, with nothing to restore from.
	rs, ok := v.store.(*replicated.Store)
	if !ok {
		rs, err = replicated.New([]objstore.Store{v.store}, 1, 1, blockVerifier(v.meta.Format()), slog.Default())
		if err != nil {
			_ = v.close()
			return nil, err
		}
		v.store = rs // closed once, by v.close
	}
	defer func() {
		if cerr := v.close(); cerr != nil {
			slog.Warn("scrub: closing the volume", "err", cerr)
		}
	}()

	c := &scrubCounts{}
	// A bar on a terminal, plain lines otherwise (see progress.go). The
	// total is the count when scrub starts; blocks written since are
	// checked too if the walk reaches them.
	p := newProgress("scrub: blocks checked", v.meta.Stats().Blocks)
	defer p.Done()

	workers := max(o.workers, 1)
	ids := make(chan meta.BlockID, workers)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var errOnce sync.Once
	var werr error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				r, err := rs.Scrub(wctx, id.ObjectKey())
				if err != nil {
					errOnce.Do(func() { werr = err })
					cancel()
					continue // drain ids so the walk can stop
				}
				c.blocks.Add(1)
				p.Add(1)
				c.copiesOK.Add(int64(r.OK))
				c.missing.Add(int64(r.Missing))
				c.corrupt.Add(int64(r.Corrupt))
				c.restored.Add(int64(r.Restored))
				c.failed.Add(int64(r.Failed))
				if r.Lost {
					c.unrecoverable.Add(1)
					slog.Error("scrub: block has no good copy left", "block", id.ObjectKey())
				}
			}
		}()
	}
	walkErr := v.meta.ForEachBlock(wctx, func(id meta.BlockID, _ uint32, _ uint64) error {
		select {
		case ids <- id:
			return nil
		case <-wctx.Done():
			return wctx.Err()
		}
	})
	close(ids)
	wg.Wait()
	p.Done()
	switch {
	case ctx.Err() != nil:
		return c, fmt.Errorf("scrub interrupted after %d blocks (safe to run again): %w", c.blocks.Load(), ctx.Err())
	case werr != nil:
		return c, fmt.Errorf("scrub: %w", werr)
	case walkErr != nil:
		return c, fmt.Errorf("scrub: walk blocks: %w", walkErr)
	}
	return c, nil
}
