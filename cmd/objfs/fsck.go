package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

func init() { register(fsckCmd) }

// errProblemsRemain makes the exit status non-zero after the report has
// been printed; main prints it as the last line.
var errProblemsRemain = errors.New("problems remain")

func fsckCmd() *cobra.Command {
	var repair, verify bool
	cmd := &cobra.Command{
		Use:   "fsck [--repair] [--verify] VOLUME_DIR",
		Short: "Check a volume's consistency (and repair it)",
		Long: `fsck checks every invariant of an unmounted volume: each directory entry
names a live inode of the right type, entries agree with their readdir order
records and back-links, link counts equal the entries naming each inode, every
inode is reachable or a recorded orphan, slices are well-formed, block
reference counts equal the references, every referenced block exists in the
store with the right size (with --verify: and the right content, reading every
block), and the statistics match. Each problem is printed with the inode and,
where it has one, a path.

Orphans waiting to be freed and blocks waiting to be deleted are unfinished
work after a crash, printed as notes: the next mount (or gc) finishes them.

--repair fixes what is safe to fix: recounts reference counts and statistics,
drops stale records, restores missing readdir order records and back-links,
drops entries naming missing inodes, and re-links unreachable inodes into
/lost+found as "#<inode>". It prints what it could not fix.

The exit status is 0 when no error remains, 1 otherwise. The volume must not
be mounted. Memory grows with the number of distinct blocks referenced (a map
used to recount references), not with the number of files.`,
		Example: `  objfs fsck /var/lib/objfs/vol
  objfs fsck --verify /var/lib/objfs/vol      # also read and hash every block
  objfs fsck --repair /var/lib/objfs/vol`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return fsck(ctx, args[0], repair, verify)
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "fix what can be fixed safely")
	cmd.Flags().BoolVar(&verify, "verify", false, "read every block and check its hash (slow)")
	return cmd
}

func fsck(ctx context.Context, dir string, repair, verify bool) error {
	v, err := openVolume(ctx, dir)
	if err != nil {
		return err
	}
	defer v.close()
	st := v.meta.Stats()
	what := "checking blocks exist"
	if verify {
		what = "reading and verifying blocks"
	}
	// Runs of block references an fsck killed before its end left behind;
	// we hold the volume's lock, so no other fsck is using them.
	stale, _ := filepath.Glob(filepath.Join(v.dir, "objfs-fsck-refs-*"))
	for _, d := range stale {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("remove runs an earlier fsck left: %w", err)
		}
	}
	p := newProgress(what, st.Blocks)
	format := v.meta.Format()
	listed := newStoreSizes(v.store, st.Blocks)
	res, err := v.meta.Check(ctx, meta.CheckOptions{
		Repair: repair,
		// On the volume's disk: the system's temporary directory may be
		// in memory, and a large volume's references take 60 bytes a block.
		TempDir: v.dir,
		Block: func(ctx context.Context, id meta.BlockID, size uint32) error {
			defer p.Add(1)
			return checkBlock(ctx, v.store, listed, format.HashBlock, id, size, verify)
		},
	})
	p.Done()
	if err != nil {
		return fmt.Errorf("fsck %s: %w", v.dir, err)
	}
	notes, fixed := 0, 0
	for _, pr := range res.Problems {
		fmt.Println(pr)
		switch {
		case pr.Severity == meta.Note:
			notes++
		case pr.Fixed:
			fixed++
		}
	}
	remain := res.Errors()
	if res.Dropped > 0 {
		fmt.Printf("... and %d more problems not listed\n", res.Dropped)
	}
	c := res.Counted
	fmt.Printf("%s: %d inodes (%d files, %d directories), %d bytes, %d blocks checked", v.dir, c.Inodes, c.Files, c.Dirs, c.Bytes, res.Blocks)
	if verify {
		fmt.Print(" and verified")
	}
	fmt.Printf("; %d errors", remain)
	if repair {
		fmt.Printf(" remaining, %d fixed", fixed)
	}
	fmt.Printf(", %d notes\n", notes)
	if remain > 0 {
		if repair {
			return fmt.Errorf("%w: %d problems could not be fixed safely (listed above)", errProblemsRemain, remain)
		}
		return fmt.Errorf("%w: %d errors found; run with --repair to fix what is safe", errProblemsRemain, remain)
	}
	return nil
}

// checkBlock looks at the stored object of a block: present with the right
// size (as listed), and with verify, the right content (hash names the
// volume's block hash).
func checkBlock(ctx context.Context, s objstore.Store, listed *storeSizes, hash func([]byte) meta.BlockID, id meta.BlockID, size uint32, verify bool) error {
	key := id.ObjectKey()
	if verify {
		data, err := s.Get(ctx, key)
		switch {
		case errors.Is(err, objstore.ErrNotFound):
			return errors.New("missing from the store")
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case len(data) != int(size):
			return fmt.Errorf("stored object has %d bytes", len(data))
		case hash(data) != id:
			return errors.New("stored content does not match its hash")
		}
		return nil
	}
	found, ok, err := listed.size(ctx, key)
	switch {
	case err != nil:
		return fmt.Errorf("list: %w", err)
	case !ok:
		return errors.New("missing from the store")
	case found != int64(size):
		return fmt.Errorf("stored object has %d bytes", found)
	}
	return nil
}

// storeSizes tells the sizes of stored block objects by listing the store
// one key range at a time: "blocks/xx/" (1/256th of the keys) on volumes of
// up to 2^22 blocks, "blocks/xx/yy/" (1/65,536th) above, so that a range
// holds at most a few tens of thousands of keys in memory. Check asks about
// blocks in ascending order, which is key order, so every range is listed
// once: a List per range (a few pages of an S3 listing) instead of one per
// block. Asked out of order, it lists a range again.
type storeSizes struct {
	store  objstore.Store
	depth  int    // key levels of a range: 1 for "blocks/xx/", 2 for "blocks/xx/yy/"
	prefix string // the range listed into sizes; "" for none
	sizes  map[string]int64
}

// fineListing is the block count above which ranges are "blocks/xx/yy/".
const fineListing = 1 << 22

func newStoreSizes(s objstore.Store, blocks int64) *storeSizes {
	l := &storeSizes{store: s, depth: 1, sizes: map[string]int64{}}
	if blocks > fineListing {
		l.depth = 2
	}
	return l
}

// size returns the size of the object key (a block's ObjectKey), and
// whether it exists.
func (l *storeSizes) size(ctx context.Context, key string) (int64, bool, error) {
	dir := key[:len("blocks/xx/")]
	if l.depth == 2 {
		dir = key[:len("blocks/xx/yy/")]
	}
	if dir != l.prefix {
		l.prefix = ""
		clear(l.sizes)
		err := l.store.List(ctx, dir, func(k string, n int64) error {
			l.sizes[k] = n
			return nil
		})
		if err != nil {
			return 0, false, err
		}
		l.prefix = dir
	}
	n, ok := l.sizes[key]
	return n, ok, nil
}
