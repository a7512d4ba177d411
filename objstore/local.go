package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// tmpPrefix starts the name of every file that Put has not yet renamed into
// place. Such files are never listed, and keys may not use the prefix, so a
// half-written object can never be mistaken for a real one.
const tmpPrefix = ".tmp-"

// Dir is a Store kept in a local directory: key "blocks/ab/cd/abcd..." is the
// file root/blocks/ab/cd/abcd....
type Dir struct {
	root string

	// durableDirs holds the directories (below root) whose entry in their
	// parent this process has already fsynced, so that each directory costs
	// one extra fsync per process lifetime rather than one per Put.
	durableDirs sync.Map
}

var _ Store = (*Dir)(nil)

// NewDir returns the store kept in root, which must already exist and be a
// directory.
func NewDir(root string) (*Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("objstore: open directory store %q: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("objstore: open directory store: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("objstore: open directory store: %s is not a directory", abs)
	}
	return &Dir{root: abs}, nil
}

// String returns the file:// URL of the store.
func (d *Dir) String() string {
	return (&url.URL{Scheme: "file", Path: d.root}).String()
}

// Close releases nothing: a Dir holds no open files between calls.
func (d *Dir) Close() error { return nil }

// path returns the file name for key, refusing any key that could name a file
// outside root or collide with a temporary file.
func (d *Dir) path(key string) (string, error) {
	if !ValidKey(key) {
		return "", fmt.Errorf("invalid key %q", key)
	}
	for elem := range strings.SplitSeq(key, "/") {
		if strings.HasPrefix(elem, tmpPrefix) {
			return "", fmt.Errorf("invalid key %q: elements may not start with %q", key, tmpPrefix)
		}
	}
	return filepath.Join(d.root, filepath.FromSlash(key)), nil
}

// Put writes data to a temporary file next to its final name, fsyncs it,
// renames it into place and fsyncs the directory, so a reader or a crash sees
// either the whole object or nothing.
func (d *Dir) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: put %q: %w", key, err)
	}
	p, err := d.path(key)
	if err != nil {
		return fmt.Errorf("objstore: put: %w", err)
	}
	dir := filepath.Dir(p)
	if err := d.makeParents(dir); err != nil {
		return fmt.Errorf("objstore: put %q: %w", key, err)
	}
	err = writeFileAtomic(dir, p, data)
	if errors.Is(err, fs.ErrNotExist) {
		// The directories were removed under us (a lost disk replaced by
		// an empty one, an operator's cleanup): forget what we knew of
		// them and create them again, once.
		d.forgetDirs()
		if err = d.makeParents(dir); err == nil {
			err = writeFileAtomic(dir, p, data)
		}
	}
	if err != nil {
		return fmt.Errorf("objstore: put %q: %w", key, err)
	}
	return nil
}

// forgetDirs drops the cache of directories known to exist durably.
func (d *Dir) forgetDirs() {
	d.durableDirs.Range(func(k, _ any) bool {
		d.durableDirs.Delete(k)
		return true
	})
}

// makeParents creates every missing directory between root and dir and makes
// each one's entry durable by fsyncing its parent.
func (d *Dir) makeParents(dir string) error {
	rel, err := filepath.Rel(d.root, dir)
	if err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	if rel == "." {
		return nil
	}
	cur := d.root
	for elem := range strings.SplitSeq(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, elem)
		if _, ok := d.durableDirs.Load(cur); ok {
			continue
		}
		if err := os.Mkdir(cur, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create directory: %w", err)
		}
		// The parent is fsynced even when another Put (or an earlier process)
		// created the directory: that creator may not have fsynced it yet, and
		// this Put must not report durability before it is.
		if err := syncDir(parent); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		d.durableDirs.Store(cur, struct{}{})
	}
	return nil
}

// writeFileAtomic makes p hold data, durably, via a temporary file in dir.
func writeFileAtomic(dir, p string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err == nil {
			return
		}
		// Best effort: a leftover temporary file wastes space but is never
		// listed or read, so failing to remove it is only worth a warning.
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			slog.Warn("objstore: cannot remove temporary file", "path", tmp, "err", rerr)
		}
	}()
	if err := writeAll(f, data); err != nil {
		_ = f.Close() // the write error is the one worth reporting
		return fmt.Errorf("write temporary file: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close() // the sync error is the one worth reporting
		return fmt.Errorf("sync temporary file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close temporary file: %w", err)
	}
	// rename replaces an existing object atomically, which is what makes
	// overwrites and concurrent Puts of the same key safe.
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return nil
}

// writeAll writes data to the empty file f, bypassing the page cache where
// it can (setDirect); if the device refuses the direct write (an
// alignment it does not take), it writes again through the page cache.
// The written blocks are not read back soon: reads of a stream go
// through read-ahead buffers, repeated reads through the caches.
func writeAll(f *os.File, data []byte) error {
	if setDirect(f, data) {
		_, err := f.WriteAt(data, 0)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		if err := clearDirect(f); err != nil {
			return err
		}
	}
	_, err := f.WriteAt(data, 0)
	return err
}

// Get reads the whole object.
func (d *Dir) Get(ctx context.Context, key string) ([]byte, error) {
	return d.GetInto(ctx, key, nil)
}

// GetInto reads the whole object into buf when it fits (see IntoGetter),
// else into a fresh slice.
func (d *Dir) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("objstore: get %q: %w", key, err)
	}
	p, err := d.path(key)
	if err != nil {
		return nil, fmt.Errorf("objstore: get: %w", err)
	}
	f, err := os.Open(p)
	if err != nil {
		if isMissing(err) {
			return nil, fmt.Errorf("objstore: get %q from %s: %w", key, d, ErrNotFound)
		}
		return nil, fmt.Errorf("objstore: get %q: %w", key, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("objstore: get %q: %w", key, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("objstore: get %q from %s: %w", key, d, ErrNotFound)
	}
	size := st.Size()
	if buf == nil || size > int64(cap(buf)) {
		buf = make([]byte, size, roundDirect(size))
	}
	data, err := readAll(f, buf, size)
	if err != nil {
		return nil, fmt.Errorf("objstore: get %q: read %d bytes: %w", key, size, err)
	}
	return data, nil
}

// readAll reads the size bytes of f into buf, bypassing the page cache
// where it can (setDirect): a block read back is verified and kept by the
// caller, and a copy in the page cache would only cost a copy (and the
// faults of fresh page-cache pages). Objects are immutable once renamed
// into place, so the size read before is the size to read; anything else
// is damage.
func readAll(f *os.File, buf []byte, size int64) ([]byte, error) {
	if n := roundDirect(size); n <= int64(cap(buf)) && setDirect(f, buf[:n]) {
		// One read of the whole aligned length: it stops short at the
		// end of the file, and a second read there would be unaligned.
		m, err := f.ReadAt(buf[:n], 0)
		if int64(m) == size && (err == nil || errors.Is(err, io.EOF)) {
			return buf[:size], nil
		}
		if err := clearDirect(f); err != nil {
			return nil, err
		}
		// Refused or short: read again through the page cache.
	}
	data := buf[:size]
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, err
	}
	return data, nil
}

// isMissing reports whether err from opening an object's path means there is
// no object there. A directory at the path (key "blocks" when "blocks/x"
// exists) or a file where a directory was expected are not objects either.
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR)
}

// Delete removes the object. The directory is not fsynced: a crash may bring a
// deleted object back, which callers (gc) already tolerate because they
// retry, and skipping the fsync keeps mass deletion fast.
func (d *Dir) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: delete %q: %w", key, err)
	}
	p, err := d.path(key)
	if err != nil {
		return fmt.Errorf("objstore: delete: %w", err)
	}
	// os.Remove would also remove an empty directory, which is not an
	// object, so look first.
	fi, err := os.Lstat(p)
	if err != nil {
		if isMissing(err) {
			return nil
		}
		return fmt.Errorf("objstore: delete %q: %w", key, err)
	}
	if fi.IsDir() {
		return nil
	}
	if err := os.Remove(p); err != nil && !isMissing(err) {
		return fmt.Errorf("objstore: delete %q: %w", key, err)
	}
	return nil
}

// List walks the directory tree depth first. Only one directory listing per
// level is held at a time, so memory grows with the depth of the tree and the
// size of one directory, not with the number of objects.
func (d *Dir) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	// An error from fn is returned as is, so callers can recognise their own.
	return d.listDir(ctx, d.root, "", prefix, fn)
}

// listDir lists the directory dir, whose entries have keys starting with
// keyPrefix ("" for root, else "a/b/").
func (d *Dir) listDir(ctx context.Context, dir, keyPrefix, prefix string, fn func(key string, size int64) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore: list %q: %w", prefix, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("objstore: list %q: %w", prefix, err)
	}
	// os.ReadDir sorts by name, but key order differs when a name in a
	// directory is followed by '-' or '.', which sort before '/': "a-b" comes
	// before "a/x" as keys. Sorting directories as "name/" restores key order.
	slices.SortFunc(entries, func(a, b fs.DirEntry) int {
		return strings.Compare(sortName(a), sortName(b))
	})
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			continue
		}
		key := keyPrefix + name
		if e.IsDir() {
			sub := key + "/"
			// Descend only where keys matching prefix can be.
			if !strings.HasPrefix(sub, prefix) && !strings.HasPrefix(prefix, sub) {
				continue
			}
			if err := d.listDir(ctx, filepath.Join(dir, name), sub, prefix, fn); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		if !e.Type().IsRegular() || !ValidKey(key) {
			// Not written by Put (a symlink, a stray file): Get could not
			// read it under this key, so it is not an object.
			slog.Debug("objstore: skipping non-object file", "store", d.String(), "name", key)
			continue
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since ReadDir
			}
			return fmt.Errorf("objstore: list %q: %w", prefix, err)
		}
		if err := fn(key, info.Size()); err != nil {
			return err
		}
	}
	return nil
}

func sortName(e fs.DirEntry) string {
	if e.IsDir() {
		return e.Name() + "/"
	}
	return e.Name()
}

// syncDir fsyncs a directory so that entries created, renamed or removed in it
// survive a machine crash.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	serr := f.Sync()
	cerr := f.Close()
	if serr != nil {
		return fmt.Errorf("sync directory %s: %w", dir, serr)
	}
	if cerr != nil {
		return fmt.Errorf("close directory %s: %w", dir, cerr)
	}
	return nil
}
