package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/objstore"
)

// A volume directory holds:
//
//	VOLUME         marker naming the directory an objfs volume (JSON)
//	meta/          the Badger database
//	store/         blocks, when the default local store is used
//	mount.json     written while mounted: pid, mountpoint, statistics
const (
	markerFile   = "VOLUME"
	metaDir      = "meta"
	localStore   = "store"
	mountFile    = "mount.json"
	localStoreID = "local" // store URL meaning VOLUME_DIR/store
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
}

// checkVolume verifies dir looks like a volume before anything opens it,
// so that pointing objfs at the wrong directory changes nothing there.
func checkVolume(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, markerFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return fmt.Errorf("volume %s does not exist", dir)
		}
		return fmt.Errorf("%s is not an objfs volume (no %s file; create one with `objfs format`)", dir, markerFile)
	}
	if err != nil {
		return fmt.Errorf("read volume marker: %w", err)
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil || m.Magic != magic {
		return fmt.Errorf("%s is not an objfs volume: damaged %s file", dir, markerFile)
	}
	if m.Version != meta.FormatVersion {
		return fmt.Errorf("volume %s has format version %d; this objfs reads version %d", dir, m.Version, meta.FormatVersion)
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

// openVolume opens the volume in dir for exclusive use.
func openVolume(ctx context.Context, dir string) (*volume, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := checkVolume(dir); err != nil {
		return nil, err
	}
	kv, err := meta.OpenBadger(filepath.Join(dir, metaDir), false)
	if err != nil {
		if strings.Contains(err.Error(), "Another process is using this Badger database") ||
			errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("volume %s is in use by another process (mounted?)%s", dir, mountedBy(dir))
		}
		return nil, fmt.Errorf("volume %s is damaged: %w", dir, err)
	}
	m, err := meta.Open(ctx, kv)
	if err != nil {
		_ = kv.Close()
		return nil, fmt.Errorf("volume %s is damaged: %w", dir, err)
	}
	store, err := openStore(ctx, dir, m.Format().Stores[0], false)
	if err != nil {
		_ = kv.Close()
		return nil, err
	}
	return &volume{dir: dir, kv: kv, meta: m, store: store}, nil
}

func (v *volume) close() error {
	return errors.Join(v.store.Close(), v.kv.Close())
}

// openStore opens (or with create, creates) the object store named by url.
func openStore(ctx context.Context, volDir, url string, create bool) (objstore.Store, error) {
	if url == localStoreID {
		url = "file://" + filepath.Join(volDir, localStore)
	}
	open := objstore.Open
	if create {
		open = objstore.Create
	}
	s, err := open(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	return s, nil
}

// storeCapacity reports the space of the file system holding a local store.
func storeCapacity(volDir, url string) func() (uint64, uint64, error) {
	path := ""
	switch {
	case url == localStoreID:
		path = filepath.Join(volDir, localStore)
	case strings.HasPrefix(url, "file://"):
		path = strings.TrimPrefix(url, "file://")
	default:
		return nil
	}
	return func() (uint64, uint64, error) {
		var st syscall.Statfs_t
		if err := syscall.Statfs(path, &st); err != nil {
			return 0, 0, err
		}
		return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), nil
	}
}

// mountInfo is what a mounted volume publishes in mount.json.
type mountInfo struct {
	Pid        int        `json:"pid"`
	Mountpoint string     `json:"mountpoint"`
	Stats      meta.Stats `json:"stats"`
	Updated    string     `json:"updated"`
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
