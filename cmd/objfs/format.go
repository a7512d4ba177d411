package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

func init() { register(formatCmd) }

func formatCmd() *cobra.Command {
	var (
		stores      []string
		replicas    int
		writeQuorum int
		blockSize   int
		blockHash   string
		version     int
		rootOwner   string
	)
	cmd := &cobra.Command{
		Use:   "format [flags] VOLUME_DIR",
		Short: "Create a new volume",
		Long: `format creates a volume in VOLUME_DIR (which must be missing or empty): its
Badger metadata database with a versioned format record, and, unless --store
names others, a local block store inside VOLUME_DIR.

With several --store flags every block is kept on --replicas of them (default:
all), and a write succeeds once --write-quorum copies are durable (default: a
majority of the replicas). Missing copies are restored in the background and
by 'objfs scrub'. Every store is created and checked first: if one cannot be
used, nothing is created.

Blocks are named by a hash of their content: BLAKE3 by default, SHA-256 with
--block-hash sha256 (slower; for sites that require it). The choice is fixed
for the life of the volume.

--format-version makes a volume of an older format version, which an older
objfs can still open (version 2: objfs releases before chunk tail records;
version 3: before hole slices);
'objfs upgrade' raises it later.

The root directory belongs to the user who runs format (mode 0755), so that
a user who formats a volume can mount it and write there without root;
--root-owner UID:GID gives it to someone else.`,
		Example: `  # a volume with blocks inside the volume directory
  objfs format /var/lib/objfs/vol
  # blocks in another directory (say, a different disk), 1 MiB blocks
  objfs format --store file:///data/objfs-blocks --block-size 1048576 /var/lib/objfs/vol
  # three copies of every block on three disks; writes wait for two
  objfs format --store file:///disk1/objfs --store file:///disk2/objfs \
    --store file:///disk3/objfs --replicas 3 --write-quorum 2 /var/lib/objfs/vol`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(stores) == 0 {
				stores = []string{localStoreID}
			}
			if !cmd.Flags().Changed("replicas") {
				replicas = len(stores)
			}
			if !cmd.Flags().Changed("write-quorum") {
				writeQuorum = replicas/2 + 1
			}
			if version < meta.MinFormatVersion || version > meta.FormatVersion {
				return fmt.Errorf("--format-version %d: this objfs writes versions %d to %d", version, meta.MinFormatVersion, meta.FormatVersion)
			}
			uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
			if rootOwner != "" {
				var err error
				if uid, gid, err = parseOwner(rootOwner); err != nil {
					return fmt.Errorf("--root-owner %q: %w", rootOwner, err)
				}
			}
			return formatVolume(cmd.Context(), args[0], formatOptions{
				stores: stores, replicas: replicas, writeQuorum: writeQuorum, blockSize: blockSize, blockHash: blockHash, version: version,
				uid: uid, gid: gid,
			})
		},
	}
	// StringArray, not StringSlice: a URL may contain a comma.
	cmd.Flags().StringArrayVar(&stores, "store", nil, "object store URL (file:///ABS/DIR), repeatable; default: a directory inside VOLUME_DIR")
	cmd.Flags().IntVar(&replicas, "replicas", 0, "copies of every block, on distinct stores (default: the number of stores)")
	cmd.Flags().IntVar(&writeQuorum, "write-quorum", 0, "copies that must be durable before a write succeeds (default: replicas/2+1)")
	cmd.Flags().IntVar(&blockSize, "block-size", 4<<20, "largest block size in bytes (power of two, 4 KiB to 16 MiB)")
	cmd.Flags().StringVar(&blockHash, "block-hash", meta.HashBLAKE3, "hash that names blocks: blake3 or sha256")
	cmd.Flags().StringVar(&rootOwner, "root-owner", "", "UID:GID owning the root directory (default: the user running format)")
	cmd.Flags().IntVar(&version, "format-version", meta.FormatVersion, fmt.Sprintf("format version to write, %d to %d (1 only with --block-hash sha256)", meta.MinFormatVersion, meta.FormatVersion))
	return cmd
}

type formatOptions struct {
	stores      []string
	replicas    int
	writeQuorum int
	blockSize   int
	blockHash   string // "": the default
	version     int    // 0: meta.FormatVersion
	uid, gid    uint32 // the root directory's owner
}

// parseOwner parses "UID:GID" (numbers: the volume is not tied to this
// machine's user names).
func parseOwner(s string) (uid, gid uint32, err error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, errors.New("want UID:GID, two numbers")
	}
	parse := func(what, v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == math.MaxUint32 {
			return 0, fmt.Errorf("%s %q is not a number from 0 to %d", what, v, uint32(math.MaxUint32-1))
		}
		return uint32(n), nil
	}
	if uid, err = parse("UID", u); err != nil {
		return 0, 0, err
	}
	if gid, err = parse("GID", g); err != nil {
		return 0, 0, err
	}
	return uid, gid, nil
}

// format creates a volume on one store ("" for the local one), with the
// default layout.
func format(ctx context.Context, dir, store string, blockSize int) error {
	if store == "" {
		store = localStoreID
	}
	return formatVolume(ctx, dir, formatOptions{stores: []string{store}, replicas: 1, writeQuorum: 1, blockSize: blockSize,
		uid: uint32(os.Getuid()), gid: uint32(os.Getgid())})
}

// formatVolume creates the volume in dir with the given stores.
func formatVolume(ctx context.Context, dir string, o formatOptions) (err error) {
	if ctx == nil {
		ctx = context.Background()
	}
	dir, err = filepath.Abs(dir)
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
	f := meta.NewFormat(o.stores, o.blockSize)
	f.Replicas, f.WriteQuorum = o.replicas, o.writeQuorum
	if o.blockHash != "" {
		f.BlockHash = o.blockHash
	}
	if o.version != 0 {
		f.Version = o.version
	}
	if err := f.Validate(); err != nil {
		return err
	}
	if err := distinctStores(dir, o.stores); err != nil {
		return err
	}

	// Whatever this call creates is removed again if it fails, so a failed
	// format leaves things as they were. Only directories that did not
	// exist before are removed: nothing that was there is touched.
	var created []string
	defer func() {
		if err == nil {
			return
		}
		for i := len(created) - 1; i >= 0; i-- {
			_ = os.RemoveAll(created[i]) // best effort; err already says what failed
		}
	}()
	noteNew := func(p string) {
		// Record the topmost missing ancestor, so that cleanup removes all
		// the directories MkdirAll is about to create.
		top := ""
		for q := p; ; q = filepath.Dir(q) {
			if _, err := os.Lstat(q); err == nil || filepath.Dir(q) == q {
				break
			}
			top = q
		}
		if top != "" {
			created = append(created, top)
		}
	}
	noteNew(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create volume directory: %w", err)
	}
	var opened []objstore.Store
	defer func() {
		for _, s := range opened {
			_ = s.Close()
		}
	}()
	for _, u := range o.stores {
		if p, ok := storeDir(dir, u); ok {
			noteNew(p)
		}
		s, err := openStore(ctx, dir, u, true)
		if err != nil {
			return err
		}
		opened = append(opened, s)
		if err := probeStore(ctx, s); err != nil {
			return fmt.Errorf("object store %s is not usable: %w", redactURL(u), err)
		}
	}
	for _, s := range opened {
		if err := claimNewStore(ctx, s, f.UUID); err != nil {
			return err
		}
	}
	noteNew(filepath.Join(dir, metaDir))
	kv, err := openMetaDB(dir, 0)
	if err != nil {
		return metaOpenError(dir, err, "")
	}
	if err := meta.CreateOwned(ctx, kv, f, o.uid, o.gid); err != nil {
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
	if err := writeMarker(dir, *f); err != nil {
		return err
	}
	names := make([]string, len(opened))
	for i, s := range opened {
		names[i] = s.String()
	}
	fmt.Printf("formatted volume %s (uuid %s, block size %d, %d of %d stores per block, write quorum %d, stores %s)\n",
		dir, f.UUID, f.BlockSize, f.Replicas, len(opened), f.WriteQuorum, strings.Join(names, ", "))
	return nil
}

// probeKey is written, read back and deleted in every store at format time.
// It is not a block key, so nothing else ever uses it.
const probeKey = "objfs-format-probe"

// probeStore checks that a store can really be written and read, so that
// a read-only or full disk is found at format time, not at the first write.
func probeStore(ctx context.Context, s objstore.Store) error {
	want := []byte("objfs format probe\n")
	if err := s.Put(ctx, probeKey, want); err != nil {
		return fmt.Errorf("write test object: %w", err)
	}
	got, err := s.Get(ctx, probeKey)
	if err != nil {
		return fmt.Errorf("read test object: %w", err)
	}
	if !bytes.Equal(got, want) {
		return errors.New("test object read back different")
	}
	if err := s.Delete(ctx, probeKey); err != nil {
		return fmt.Errorf("delete test object: %w", err)
	}
	return nil
}

// distinctStores refuses a store named twice (also through different
// spellings of one directory): two "copies" in one place are one copy.
func distinctStores(volDir string, urls []string) error {
	seen := map[string]string{}
	for _, u := range urls {
		id := u
		if p, ok := storeDir(volDir, u); ok {
			id = "file:" + p
		}
		if prev, ok := seen[id]; ok {
			return fmt.Errorf("store %s is given twice (also as %s): each copy must be on a distinct store", redactURL(u), redactURL(prev))
		}
		seen[id] = u
	}
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
