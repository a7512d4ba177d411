package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/objfs/objfs/cache"
	"github.com/objfs/objfs/cmd/objfs/internal/space"
	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/metered"
	"github.com/objfs/objfs/objstore/replicated"
	"github.com/objfs/objfs/objstore/staging"
)

// A volume directory holds:
//
//	VOLUME         marker naming the directory an objfs volume (JSON)
//	meta/          the Badger database
//	store/         blocks, when the default local store is used
//	staging/       the write-back log: blocks not yet uploaded to the stores
//	cache/         the disk block cache (unless --cache-dir puts it elsewhere)
//	mount.json     written while mounted: pid, mountpoint, statistics
//	repairs.log    replicated volumes: copies still to rewrite, resumed at
//	               the next start (replicated.Store.OpenJournal)
const (
	markerFile    = "VOLUME"
	metaDir       = "meta"
	localStore    = "store"
	stagingDir    = "staging"
	repairJournal = "repairs.log"
	diskCacheDir  = "cache"
	mountFile     = "mount.json"
	localStoreID  = "local" // store URL meaning VOLUME_DIR/store
)

type marker struct {
	Magic   string `json:"magic"`
	Version int    `json:"version"`
	UUID    string `json:"uuid"`
}

const magic = "objfs volume"

// volume is an opened volume.
type volume struct {
	dir   string
	kv    *meta.Badger
	meta  *meta.Meta
	store objstore.Store
	// staging is the write-back log in front of store, and disk the disk
	// block cache, while served.
	staging *staging.Store
	disk    *cache.Disk
	// space keeps free space under the metadata, while served.
	space *space.Guard
}

// readMarker reads the VOLUME marker of dir.
func readMarker(dir string) (marker, error) {
	var m marker
	b, err := os.ReadFile(filepath.Join(dir, markerFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return m, fmt.Errorf("volume %s does not exist", dir)
		}
		return m, fmt.Errorf("%s is not an objfs volume (no %s file; create one with `objfs format`)", dir, markerFile)
	}
	if err != nil {
		return m, fmt.Errorf("read volume marker: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Magic != magic {
		return m, fmt.Errorf("%s is not an objfs volume: damaged %s file", dir, markerFile)
	}
	return m, nil
}

// volumeDir returns the absolute path of dir once checkVolume accepts it.
func volumeDir(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return dir, checkVolume(dir)
}

// writeMarker writes dir's VOLUME marker for a volume of format f,
// synced: format and load write it last, so that a directory with it is
// a complete volume; upgrade rewrites it.
func writeMarker(dir string, f meta.Format) error {
	b, _ := json.MarshalIndent(marker{Magic: magic, Version: f.Version, UUID: f.UUID}, "", "  ")
	return writeFileSync(filepath.Join(dir, markerFile), append(b, '\n'))
}

// checkVolume verifies dir looks like a volume before anything opens it,
// so that pointing objfs at the wrong directory changes nothing there.
func checkVolume(dir string) error {
	m, err := readMarker(dir)
	if err != nil {
		return err
	}
	if m.Version < meta.MinFormatVersion || m.Version > meta.FormatVersion {
		return fmt.Errorf("volume %s has format version %d; this objfs reads versions %d to %d", dir, m.Version, meta.MinFormatVersion, meta.FormatVersion)
	}
	if st, err := os.Stat(filepath.Join(dir, metaDir)); err != nil || !st.IsDir() {
		return fmt.Errorf("volume %s is damaged: its metadata directory %s is missing", dir, metaDir)
	}
	// Badger would quietly create a new, empty database where its files
	// are gone; refuse instead, so a damaged volume is left as it is.
	if _, err := os.Stat(filepath.Join(dir, metaDir, "MANIFEST")); err != nil {
		return fmt.Errorf("volume %s is damaged: the metadata database in %s is missing its MANIFEST (restore it, or load a dump)", dir, filepath.Join(dir, metaDir))
	}
	return nil
}

// openVolume opens the volume in dir for exclusive use, for the offline
// commands (fsck, gc, scrub, dump...): blocks a crash left in the staging
// log are uploaded first, so those commands see every block in the stores.
func openVolume(ctx context.Context, dir string) (*volume, error) {
	v, err := openVolumeOnly(ctx, dir, 0)
	if err != nil {
		return nil, err
	}
	if err := uploadStaged(ctx, v); err != nil {
		_ = v.close()
		return nil, err
	}
	return v, nil
}

// uploadStaged uploads what the staging log of v holds and removes the log.
func uploadStaged(ctx context.Context, v *volume) error {
	sdir := filepath.Join(v.dir, stagingDir)
	if segs, _ := filepath.Glob(filepath.Join(sdir, "*.seg")); len(segs) == 0 {
		return nil
	}
	st, err := staging.Open(sdir, keepOpen{v.store}, staging.Options{Logger: slog.Default()})
	if err != nil {
		return fmt.Errorf("volume %s: %w", v.dir, err)
	}
	if n := st.Stats(); n.Objects > 0 {
		slog.Info("uploading blocks left in the staging log", "blocks", n.Objects, "bytes", n.Bytes, "store", v.store.String())
	}
	err = st.Drain(ctx, uploadStalledOffline)
	if err != nil {
		err = fmt.Errorf("volume %s: %w; they stay staged: run this again once the store takes uploads", v.dir, err)
	}
	return errors.Join(err, st.Close())
}

// keepOpen hides Close, for a store lent to a wrapper that closes what it
// wraps.
type keepOpen struct{ objstore.Store }

func (keepOpen) Close() error { return nil }

// openVolumeOnly opens the volume without touching its staging log;
// reserve is the mount's --reserve (0: the default), see openMetaDB.
func openVolumeOnly(ctx context.Context, dir string, reserve uint64) (*volume, error) {
	dir, err := volumeDir(dir)
	if err != nil {
		return nil, err
	}
	kv, err := openMetaKV(dir, reserve)
	if err != nil {
		return nil, err
	}
	m, err := meta.Open(ctx, kv)
	if err != nil {
		_ = kv.Close()
		return nil, metaOpenError(dir, err, "is damaged")
	}
	store, err := openStores(ctx, dir, m.Format())
	if err != nil {
		_ = kv.Close()
		return nil, err
	}
	return &volume{dir: dir, kv: kv, meta: m, store: store}, nil
}

// openMetaKV opens the metadata database of the volume in dir (an absolute
// path that checkVolume accepted) for exclusive use.
func openMetaKV(dir string, reserve uint64) (*meta.Badger, error) {
	kv, err := openMetaDB(dir, reserve)
	if err != nil {
		return nil, metaOpenError(dir, err, "is damaged")
	}
	return kv, nil
}

// openMetaDB opens (creating if missing: format, load) the metadata
// database of the volume in dir, with the space check of the offline
// commands: Badger writes through memory-mapped files, so a full file
// system under it would kill the process with SIGBUS (see package space);
// instead its transactions get ENOSPC once less than a quarter of the
// reserve (0: the default) is free, the floor a mount keeps for changes
// that free space. A mount replaces the check with its own (keepSpace).
func openMetaDB(dir string, reserve uint64) (*meta.Badger, error) {
	path := filepath.Join(dir, metaDir)
	kv, err := meta.OpenBadger(path, false)
	if err != nil {
		return nil, err
	}
	guard, err := space.New(path, reserve, slog.Default())
	if err != nil {
		_ = kv.Close()
		return nil, fmt.Errorf("volume %s: %w", dir, err)
	}
	kv.SetSpaceCheck(func(bool) error { return guard.Check(true) })
	return kv, nil
}

// isErrno reports whether err is errno, or says it: Badger formats the
// errors of its own file operations into its messages (y.Wrapf), so
// errors.Is cannot see them ("Cannot write pid file ... no space left on
// device").
func isErrno(err error, errno syscall.Errno) bool {
	return errors.Is(err, errno) || strings.Contains(err.Error(), errno.Error())
}

// metaOpenError says why the metadata database of the volume in dir did
// not open: in use, no space, not writable, or else what otherwise says
// (nothing: err as it is).
func metaOpenError(dir string, err error, otherwise string) error {
	path := filepath.Join(dir, metaDir)
	switch {
	case strings.Contains(err.Error(), "Another process is using this Badger database") || errors.Is(err, syscall.EWOULDBLOCK):
		return fmt.Errorf("volume %s is in use by another process (mounted?)%s", dir, mountedBy(dir))
	case isErrno(err, syscall.ENOSPC) || isErrno(err, syscall.EDQUOT):
		return fmt.Errorf("volume %s: no space left on the file system holding %s; free some there and try again: %w", dir, path, err)
	case isErrno(err, syscall.EROFS) || isErrno(err, syscall.EACCES) || isErrno(err, syscall.EPERM):
		return fmt.Errorf("volume %s: cannot write its metadata in %s: %w", dir, path, err)
	case otherwise == "":
		return err
	}
	return fmt.Errorf("volume %s %s: %w", dir, otherwise, err)
}

// openStores opens every store of the volume: the store itself when there
// is one, else a replicated store over all of them. A replicated volume
// still opens with stores missing (a failed disk), as long as enough remain
// for a write quorum: the missing ones fail every call and the other copies
// serve, until the store is back and scrub refills it.
func openStores(ctx context.Context, dir string, f meta.Format) (objstore.Store, error) {
	var stores []objstore.Store
	closeAll := func() {
		for _, s := range stores {
			_ = s.Close()
		}
	}
	if len(f.Stores) == 1 {
		s, err := openStore(ctx, dir, f.Stores[0], false)
		if err != nil {
			return nil, err
		}
		if err := checkStoreOwner(ctx, s, f.UUID); err != nil {
			_ = s.Close()
			return nil, err
		}
		return s, nil
	}
	// Records from before replication have zeros, meaning one copy.
	replicas, quorum := max(f.Replicas, 1), max(f.WriteQuorum, 1)
	var missing []error
	for _, u := range f.Stores {
		s, err := openStore(ctx, dir, u, false)
		if err == nil {
			if err = checkStoreOwner(ctx, s, f.UUID); errors.Is(err, errForeignStore) {
				_ = s.Close()
				closeAll()
				return nil, err
			} else if err != nil {
				_ = s.Close()
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				closeAll()
				return nil, err
			}
			missing = append(missing, err)
			s = &unavailableStore{url: redactURL(u), err: err}
		}
		stores = append(stores, s)
	}
	if len(f.Stores)-len(missing) < quorum {
		closeAll()
		return nil, fmt.Errorf("only %d of %d object stores can be opened, %d needed for writes: %w",
			len(f.Stores)-len(missing), len(f.Stores), quorum, errors.Join(missing...))
	}
	for _, err := range missing {
		slog.Warn("object store unavailable; serving from the other copies (recreate it, then run objfs scrub)", "err", err)
	}
	rs, err := replicated.New(stores, replicas, quorum, blockVerifier(f), slog.Default())
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("object stores: %w", err)
	}
	if err := rs.OpenJournal(filepath.Join(dir, repairJournal)); err != nil {
		_ = rs.Close()
		return nil, fmt.Errorf("volume %s: %w", dir, err)
	}
	return rs, nil
}

// unavailableStore stands in for a store that could not be opened. Every
// call fails with the reason (never ErrNotFound: the copies may well be
// there once the store is back).
type unavailableStore struct {
	url string
	err error
}

func (u *unavailableStore) fail(op string) error {
	return fmt.Errorf("%s: object store %s is unavailable: %w", op, u.url, u.err)
}

func (u *unavailableStore) Put(context.Context, string, []byte) error { return u.fail("put") }
func (u *unavailableStore) Get(context.Context, string) ([]byte, error) {
	return nil, u.fail("get")
}
func (u *unavailableStore) Delete(context.Context, string) error { return u.fail("delete") }
func (u *unavailableStore) List(context.Context, string, func(string, int64) error) error {
	return u.fail("list")
}
func (u *unavailableStore) String() string { return u.url + " (unavailable)" }
func (u *unavailableStore) Close() error   { return nil }

// blockVerifier tells the replicated store whether a copy it read is
// intact: a block's key names the hash of its content (the volume's block
// hash). Other keys (none today) have nothing to check against and pass.
func blockVerifier(f meta.Format) func(key string, data []byte) bool {
	return func(key string, data []byte) bool {
		id, ok := meta.ParseObjectKey(key)
		if !ok {
			return true
		}
		return f.HashBlock(data) == id
	}
}

func (v *volume) close() error {
	var derr error
	if v.disk != nil {
		derr = v.disk.Close()
	}
	return errors.Join(v.store.Close(), derr, v.kv.Close())
}

// diskCacheSpec says where the disk block cache lives and how big it may
// grow (size 0: none).
type diskCacheSpec struct {
	dir  string
	size int64
}

// openStore opens (or with create, creates) the object store named by url.
func openStore(ctx context.Context, volDir, url string, create bool) (objstore.Store, error) {
	if url == localStoreID {
		url = fileURL(filepath.Join(volDir, localStore))
	}
	open := objstore.Open
	if create {
		open = objstore.Create
	}
	s, err := open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", redactURL(url), err)
	}
	return s, nil
}

// redactURL returns a store URL fit for messages: without user
// information, which may hold credentials.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.User = nil
	return u.String()
}

// fileURL is the file:// URL of the absolute path dir, escaped: a '#', '?'
// or '%' in a volume's path is part of the name, not of the URL's syntax.
func fileURL(dir string) string {
	return (&url.URL{Scheme: "file", Path: dir}).String()
}

// storeDir returns the local directory of a store URL, if it has one.
func storeDir(volDir, rawURL string) (string, bool) {
	if rawURL == localStoreID {
		return filepath.Join(volDir, localStore), true
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "file" || u.Path == "" {
		return "", false
	}
	return filepath.Clean(u.Path), true
}

// allLocal reports whether every store of the volume is a local directory.
func allLocal(volDir string, urls []string) bool {
	for _, u := range urls {
		if _, ok := storeDir(volDir, u); !ok {
			return false
		}
	}
	return len(urls) > 0
}

// storeCapacity reports the space of the file systems holding the local
// stores among urls: the sum over distinct file systems (two stores on one
// disk count once), raw, without dividing by the number of replicas; see
// volume.capacity for the space left for file data. Nil when no store is
// local.
func storeCapacity(volDir string, urls ...string) func() (uint64, uint64, error) {
	var paths []string
	for _, u := range urls {
		if p, ok := storeDir(volDir, u); ok {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return nil
	}
	return func() (uint64, uint64, error) {
		var total, free uint64
		seen := map[[2]int32]bool{}
		for _, p := range paths {
			var st syscall.Statfs_t
			if err := syscall.Statfs(p, &st); err != nil {
				return 0, 0, fmt.Errorf("statfs %s: %w", p, err)
			}
			if seen[st.Fsid.X__val] {
				continue
			}
			seen[st.Fsid.X__val] = true
			total += st.Blocks * uint64(st.Bsize)
			free += st.Bavail * uint64(st.Bsize)
		}
		return total, free, nil
	}
}

// capacity reports the space for file data: the stores' space divided by
// the number of copies each block takes. It is approximate, since blocks
// spread evenly over the stores but the stores need not be equal.
func (v *volume) capacity() func() (uint64, uint64, error) {
	f := v.meta.Format()
	raw := storeCapacity(v.dir, f.Stores...)
	if raw == nil {
		return nil
	}
	n := uint64(max(f.Replicas, 1))
	return func() (uint64, uint64, error) {
		total, free, err := raw()
		return total / n, free / n, err
	}
}

// mountInfo is what a mounted volume publishes in mount.json.
type mountInfo struct {
	Pid        int        `json:"pid"`
	Mountpoint string     `json:"mountpoint"`
	Stats      meta.Stats `json:"stats"`
	Updated    string     `json:"updated"`
	// What the running process holds: buffered writes, the memory block
	// cache and the blocks read ahead, with their hit counts.
	BufferedBytes   int64  `json:"buffered_bytes"`
	CacheBytes      int64  `json:"cache_bytes"`
	CacheHits       uint64 `json:"cache_hits"`
	CacheMisses     uint64 `json:"cache_misses"`
	ReadAheadHits   uint64 `json:"readahead_hits"`
	ReadAheadUnread uint64 `json:"readahead_unread"`
	ReadAheadBytes  int64  `json:"readahead_bytes"`
	DiskCacheBytes  int64  `json:"disk_cache_bytes"`
	DiskCacheHits   uint64 `json:"disk_cache_hits"`
	DiskCacheMisses uint64 `json:"disk_cache_misses"`
	// The staging log: blocks acknowledged but not yet uploaded.
	StagedBlocks int    `json:"staged_blocks"`
	StagedBytes  int64  `json:"staged_bytes"`
	UploadQueue  int    `json:"upload_queue"`
	UploadHeld   int    `json:"upload_held"` // held back (small blocks on a local volume)
	Uploaded     uint64 `json:"uploaded"`
	UploadErrors uint64 `json:"upload_errors"`
	// What the background freed since the mount: a mass deletion's
	// progress.
	Reaped        uint64 `json:"reaped"`
	BlocksDeleted uint64 `json:"blocks_deleted"`
	DeleteErrors  uint64 `json:"delete_errors"`
	// The file system under the metadata: free bytes, the reserve kept
	// (see package space) and what was refused for lack of it.
	MetaFree     uint64 `json:"meta_free"`
	MetaReserve  uint64 `json:"meta_reserve"`
	SpaceRefused uint64 `json:"space_refused"`
	// Blocks the staging log made wait for uploads to free that file
	// system (stores elsewhere), and those refused all the same.
	SpaceWaits        uint64 `json:"space_waits"`
	SpaceWaitsRefused uint64 `json:"space_waits_refused"`
}

func readMountInfo(dir string) (*mountInfo, error) {
	b, err := os.ReadFile(filepath.Join(dir, mountFile))
	if err != nil {
		return nil, err
	}
	var mi mountInfo
	if err := json.Unmarshal(b, &mi); err != nil {
		return nil, err
	}
	return &mi, nil
}

func mountedBy(dir string) string {
	mi, err := readMountInfo(dir)
	if err != nil || syscall.Kill(mi.Pid, 0) != nil {
		return ""
	}
	return fmt.Sprintf(": mounted at %s by pid %d", mi.Mountpoint, mi.Pid)
}

// openFS opens the volume in dir for exclusive use and starts its POSIX
// layer, as the serving commands (mount, nfs) need it; closeFS undoes it.
// With reg not nil, object store requests and the layer's counters are
// registered as metrics.
func openFS(ctx context.Context, dir string, opts fs.Options, so staging.Options, dc diskCacheSpec, reserve uint64, reg *prometheus.Registry) (*volume, *fs.FS, error) {
	v, err := openVolumeOnly(ctx, dir, reserve)
	if err != nil {
		return nil, nil, err
	}
	if hint := upgradeHint(v.meta.Format(), v.dir); hint != "" {
		slog.Info(hint)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := v.keepSpace(reserve, &opts, &so); err != nil {
		_ = v.close()
		return nil, nil, err
	}
	if reg != nil {
		v.store = metered.New(v.store, reg)
	}
	// Writes are acknowledged once in the staging log and uploaded in the
	// background; blocks a crash left there are uploaded from now on and
	// read from the log until then.
	if so.Logger == nil {
		so.Logger = opts.Logger
	}
	if allLocal(v.dir, v.meta.Format().Stores) {
		// Whole blocks go straight to local directory stores, which are
		// as durable and as near as the log: staging them too only wrote
		// every sequential write twice (512 MiB dd with fsync: 1.4 s
		// through the log, 0.95 s straight, raw disk 0.55 s). Small
		// blocks still share the log's group commits (4 KiB random
		// writes: 4096 IOPS through the log, 1400 straight).
		so.DirectFrom = int(v.meta.Format().BlockSize)
		// The log is as durable as those stores, so holding a small block
		// back costs nothing, and most die young: a compaction replaces
		// a fsync'd database's 4 KiB blocks within seconds, a temporary
		// file goes with its name. Held back for longer than a deleted
		// block waits before it is deleted (fs.Options.DeleteGrace, 10 s,
		// plus a deletion pass), they leave the log without ever being
		// copied (4 KiB random writes each fsync'd: see README).
		so.UploadDelay = localUploadDelay
		// For the same reason, streams read ahead are not copied to the
		// disk cache; random reads still are (it serves them by range).
		opts.ReadAheadBypassesDiskCache = true
	}
	st, err := staging.Open(filepath.Join(v.dir, stagingDir), v.store, so)
	if err != nil {
		_ = v.close()
		return nil, nil, fmt.Errorf("volume %s: %w", v.dir, err)
	}
	v.store, v.staging = st, st
	if v.space.Shares(filepath.Join(v.dir, stagingDir)) {
		// Segments already uploaded go first when space is short.
		v.space.AddReclaim(st.Release)
	}
	if dc.size > 0 {
		dir := dc.dir
		if dir == "" {
			dir = filepath.Join(v.dir, diskCacheDir)
		}
		if v.disk, err = cache.OpenDisk(dir, dc.size, opts.Logger); err != nil {
			_ = v.close()
			return nil, nil, fmt.Errorf("--cache-dir: %w", err)
		}
		if v.space.Shares(dir) {
			// The cache takes only room nothing else needs, and
			// gives it back when something does.
			v.disk.SetSpaceCheck(v.space.WriteIfRoom)
			v.space.AddReclaim(v.disk.Shrink)
		}
		opts.DiskCache = v.disk
	}
	f, err := fs.New(ctx, v.meta, v.store, opts)
	if err != nil {
		_ = v.close()
		return nil, nil, err
	}
	if reg != nil {
		registerFS(reg, f)
		registerStaging(reg, st)
		registerSpace(reg, v.space)
	}
	return v, f, nil
}

// keepSpace sets up v.space, which keeps the file system under the
// metadata from filling up (see package space): the database refuses
// growth below the reserve, and so do the staging log and uploads to local
// stores when they share that file system; df counts the reserve as used.
// (openFS adds the disk cache once it is open.)
func (v *volume) keepSpace(reserve uint64, opts *fs.Options, so *staging.Options) error {
	guard, err := space.New(filepath.Join(v.dir, metaDir), reserve, opts.Logger)
	if err != nil {
		return fmt.Errorf("volume %s: %w", v.dir, err)
	}
	v.space = guard
	if free := guard.Free(); free < guard.Reserve() {
		opts.Logger.Warn("less free space under the metadata than the reserve: new data and files get ENOSPC until space is freed (see --reserve)",
			"dir", filepath.Join(v.dir, metaDir), "free", free, "reserve", guard.Reserve())
	}
	v.kv.SetSpaceCheck(guard.Check)
	storesShare := false
	for _, u := range v.meta.Format().Stores {
		if p, ok := storeDir(v.dir, u); ok && guard.Shares(p) {
			storesShare = true
		}
	}
	if storesShare {
		so.AdmitUpload = guard.Freeing
	}
	switch {
	case !guard.Shares(filepath.Join(v.dir, stagingDir)):
	case storesShare:
		// Uploads only move data within the file system: a full one
		// is full, and writes get ENOSPC.
		so.Admit = guard.Write
	default:
		// Uploads free the log's space: writers wait for them, as
		// they do beyond --staging-size, rather than get ENOSPC.
		so.Admit = guard.Staged
		so.SpaceWait = uploadStalledSpace
	}
	if opts.Capacity == nil {
		opts.Capacity = v.capacity()
		if storesShare && opts.Capacity != nil {
			// df shows what can still be written before ENOSPC.
			raw := opts.Capacity
			opts.Capacity = func() (uint64, uint64, error) {
				total, free, err := raw()
				return total, free - min(free, guard.Reserve()), err
			}
		}
	}
	return nil
}

// closeFS commits what the POSIX layer still buffers, then closes the
// volume; it returns the first error.
func closeFS(ctx context.Context, v *volume, f *fs.FS) error {
	ferr := f.Close(ctx)
	if ferr != nil {
		slog.Error("close volume", "volume", v.dir, "err", ferr)
	}
	if v.staging != nil {
		drainOnClose(v.staging)
	}
	return errors.Join(ferr, v.close())
}

// Closing a served volume waits for staged uploads at most uploadOnClose,
// and gives up sooner when none has finished for uploadStalled (the store
// is down): what is left stays durable in the log and is uploaded at the
// next start. The offline commands, which need every block in the stores,
// wait longer for a stalled store before they give up.
//
// On a volume whose stores are all local directories, a small staged block
// is held back localUploadDelay before its upload (see openFS).
const (
	localUploadDelay     = 30 * time.Second
	uploadOnClose        = 60 * time.Second
	uploadStalled        = 5 * time.Second
	uploadStalledOffline = 30 * time.Second
	// uploadStalledSpace is how long a write waits for uploads to free
	// the staging log's disk before it gets ENOSPC (stores elsewhere).
	uploadStalledSpace = 30 * time.Second
)

// drainOnClose uploads what is staged before a served volume is let go,
// for as long as uploads make progress.
func drainOnClose(st *staging.Store) {
	n := st.Stats()
	if n.Objects == 0 {
		return
	}
	slog.Info("uploading staged blocks before closing", "blocks", n.Objects, "bytes", n.Bytes)
	ctx, cancel := context.WithTimeout(context.Background(), uploadOnClose)
	defer cancel()
	if err := st.Drain(ctx, uploadStalled); err != nil {
		slog.Warn("closing with blocks still staged; they are uploaded at the next start", "err", err)
	}
}
