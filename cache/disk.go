package cache

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// On-disk format of one entry (all integers little-endian):
//
//	[0:4]    magic "OFDC"
//	[4:8]    format version (1)
//	[8:16]   data length n
//	[16:20]  piece size (64 KiB)
//	[20:24]  CRC32C of bytes [0:20], the 32-byte binary key and the piece table
//	[24:24+4p] piece table: CRC32C of each piece of data, p = ceil(n / piece size)
//	[24+4p:] the n bytes of data
//
// The file size alone therefore determines n (see diskDataLen), which lets
// the startup scan check sizes without reading anything.
const (
	diskMagic      = "OFDC"
	diskVersion    = 1
	diskPieceSize  = 64 << 10
	diskHeaderSize = 24

	// diskOfferQueueBytes and diskOfferQueueLen bound what Offer keeps
	// waiting in memory: bytes for big blocks, entries for tiny ones.
	diskOfferQueueBytes = 64 << 20
	diskOfferQueueLen   = 4096

	// diskTouchInterval is how often, at most, a hit refreshes an entry's
	// file mtime, which is what orders entries after a restart.
	diskTouchInterval = time.Minute

	diskTmpDir   = "tmp"
	diskLockFile = "lock"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrDiskClosed is returned by Add after Close.
var ErrDiskClosed = errors.New("disk cache is closed")

// errDiskCorrupt marks an entry whose file does not match its header,
// its checksums or its expected size.
var errDiskCorrupt = errors.New("corrupt disk cache entry")

// DiskStats are the counters of a Disk cache.
type DiskStats struct {
	Hits      uint64 // reads served from disk
	Misses    uint64 // reads not served, corrupt entries included
	Corrupt   uint64 // entries found damaged and removed (at read or at open)
	Dropped   uint64 // blocks not written: queue full, invalid key, closed, or no room on the disk (SetSpaceCheck)
	Evictions uint64 // entries removed to stay within the size limit
	Bytes     int64  // size of the entry files, headers included
	Entries   int64  // number of entries
}

// Disk is a bounded LRU of immutable blocks kept as files in a directory,
// surviving restarts and verified on every read. It is safe for concurrent
// use. Keys are block names: 64 lowercase hex characters.
//
// Each entry is one file, dir/ab/cd/<key> for key "abcd...", holding a small
// header with a CRC32C per 64 KiB piece followed by the data. Files are
// written under dir/tmp and renamed into place, without fsync: after a crash
// a file may be torn or missing, which the checksums and the startup scan
// catch. A reader verifies exactly the pieces it touches, so a read of an
// intact piece of an entry damaged elsewhere can still succeed; a read that
// touches a damaged piece, or any read of an entry with a damaged header or
// wrong size, removes the entry and reports a miss. The checksums guard
// against accidental damage (torn writes, bit rot), not against tampering.
// Reads do not hold the index lock during disk I/O; an entry removed while
// being read (evicted, say) still yields either verified data or a miss.
//
// The size limit counts whole files (headers included, about 0.01% for
// 4 MiB blocks), not file system allocation rounding or directories. Each
// Add in progress may briefly hold one more file, in dir/tmp, beyond it.
// The index costs about 200 bytes of memory per entry; no block data is
// kept in memory except blocks waiting in the Offer queue.
//
// Recency is kept in memory. A hit also refreshes the file's mtime, at most
// once a minute per entry, and OpenDisk orders entries by mtime, so the LRU
// order roughly survives a restart. The directory is locked (flock) while
// open, so two processes cannot share it.
type Disk struct {
	dir      string
	tmp      string
	maxBytes int64
	log      *slog.Logger
	lockFile *os.File
	// admit, when set, is asked before a block of n bytes is written;
	// an error leaves the block uncached (see SetSpaceCheck).
	admit func(n int64) (done func(), err error)

	// fileMu serialises every change to the entry files (rename into place,
	// unlink) together with the matching index change, so that the index
	// and the directory agree whenever fileMu is free. Readers never take
	// it, except to drop an entry they found broken.
	fileMu sync.Mutex
	closed atomic.Bool // set under fileMu

	mu    sync.Mutex // guards the fields below; never held during disk I/O
	lru   *simplelru.LRU[[32]byte, *diskEntry]
	bytes int64
	gen   uint64

	hits, misses, corrupt, dropped, evictions atomic.Uint64

	queue    chan diskOffer
	queued   atomic.Int64 // bytes offered and not yet written or dropped
	pending  atomic.Int64 // blocks offered and not yet written or dropped
	stop     chan struct{}
	done     chan struct{}
	lastWarn atomic.Int64 // unix nanos of the last fill failure warning

	closeOnce sync.Once
	closeErr  error

	// wrapWriter, when set (by tests), wraps the writer of new entry files.
	wrapWriter func(io.Writer) io.Writer
}

type diskEntry struct {
	n       int64  // data length
	gen     uint64 // distinguishes successive files of the same key
	touched int64  // unix nanos of the file's mtime as last set or seen
}

type diskOffer struct {
	k    [32]byte
	key  string
	data []byte
}

// OpenDisk opens (creating if needed) the cache kept in dir, holding at most
// maxBytes of entry files. maxBytes <= 0 is an error: to run without a disk
// cache, do not open one. Leftover temporary files are removed; entries
// found in dir are kept, ordered by file mtime, and evicted oldest first if
// they exceed maxBytes. Entries whose file size is impossible are removed.
// A nil log discards messages.
func OpenDisk(dir string, maxBytes int64, log *slog.Logger) (*Disk, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dir == "" {
		return nil, errors.New("disk cache: no directory given")
	}
	if maxBytes <= 0 {
		return nil, fmt.Errorf("disk cache %s: size limit %d must be positive", dir, maxBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("disk cache: %s is not a directory", dir)
	}
	lock, err := os.OpenFile(filepath.Join(dir, diskLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("disk cache: directory not usable: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("disk cache: %s is in use by another process", dir)
		}
		return nil, fmt.Errorf("disk cache: lock %s: %w", dir, err)
	}
	d := &Disk{
		dir:      dir,
		tmp:      filepath.Join(dir, diskTmpDir),
		maxBytes: maxBytes,
		log:      log,
		lockFile: lock,
		queue:    make(chan diskOffer, diskOfferQueueLen),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	// The byte budget, not the entry count, bounds this cache. NewLRU only
	// fails for a non-positive size.
	d.lru, _ = simplelru.NewLRU[[32]byte, *diskEntry](math.MaxInt, nil)
	if err := d.open(); err != nil {
		lock.Close()
		return nil, err
	}
	go d.run()
	return d, nil
}

// open clears the temporary directory, checks that dir is writable and
// loads the entries found.
func (d *Disk) open() error {
	if n, err := d.clearTmp(); err != nil {
		return err
	} else if n > 0 {
		d.log.Info("disk cache: removed leftover temporary files", "dir", d.dir, "count", n)
	}
	probe, err := os.CreateTemp(d.tmp, "probe-*")
	if err != nil {
		return fmt.Errorf("disk cache: directory not writable: %w", err)
	}
	probe.Close()
	if err := os.Remove(probe.Name()); err != nil {
		return fmt.Errorf("disk cache: %w", err)
	}
	found, err := d.scan()
	if err != nil {
		return err
	}
	slices.SortFunc(found, func(a, b scannedEntry) int {
		if c := cmp.Compare(a.mtime, b.mtime); c != 0 {
			return c
		}
		return slices.Compare(a.k[:], b.k[:])
	})
	for _, e := range found { // oldest first, so the newest ends up most recent
		d.gen++
		d.lru.Add(e.k, &diskEntry{n: e.n, gen: d.gen, touched: e.mtime})
		d.bytes += diskFileSize(e.n)
	}
	var evicted int
	for d.bytes > d.maxBytes {
		k, e, ok := d.lru.RemoveOldest()
		if !ok {
			break
		}
		d.bytes -= diskFileSize(e.n)
		d.removeFile(hex.EncodeToString(k[:]))
		d.evictions.Add(1)
		evicted++
	}
	d.log.Info("disk cache opened", "dir", d.dir, "entries", d.lru.Len(), "bytes", d.bytes,
		"max_bytes", d.maxBytes, "evicted", evicted)
	return nil
}

// clearTmp empties (creating if needed) the temporary directory and returns
// how many files it removed.
func (d *Disk) clearTmp() (int, error) {
	ents, err := os.ReadDir(d.tmp)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(d.tmp, 0o700); err != nil {
			return 0, fmt.Errorf("disk cache: directory not writable: %w", err)
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("disk cache: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(d.tmp, e.Name())); err != nil {
			return 0, fmt.Errorf("disk cache: remove temporary file: %w", err)
		}
	}
	return len(ents), nil
}

type scannedEntry struct {
	k     [32]byte
	n     int64
	mtime int64
}

// scan lists the entry files of the fan-out directories, from directory
// entries and lstat alone. Files whose size cannot be an entry's are removed;
// files and directories that do not look like entries are left alone.
func (d *Disk) scan() ([]scannedEntry, error) {
	var found []scannedEntry
	top, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	for _, a := range top {
		if !a.IsDir() || !isHexName(a.Name(), 2) {
			continue
		}
		mids, err := os.ReadDir(filepath.Join(d.dir, a.Name()))
		if err != nil {
			return nil, fmt.Errorf("disk cache: %w", err)
		}
		for _, b := range mids {
			if !b.IsDir() || !isHexName(b.Name(), 2) {
				continue
			}
			sub := filepath.Join(d.dir, a.Name(), b.Name())
			files, err := os.ReadDir(sub)
			if err != nil {
				return nil, fmt.Errorf("disk cache: %w", err)
			}
			for _, f := range files {
				name := f.Name()
				k, kerr := parseDiskKey(name)
				if kerr != nil || name[0:2] != a.Name() || name[2:4] != b.Name() || !f.Type().IsRegular() {
					d.log.Debug("disk cache: ignoring unknown file", "path", filepath.Join(sub, name))
					continue
				}
				info, err := f.Info()
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("disk cache: %w", err)
				}
				n, ok := diskDataLen(info.Size())
				if !ok {
					d.log.Warn("disk cache: removing entry of impossible size", "key", name, "size", info.Size())
					d.corrupt.Add(1)
					d.removeFile(name)
					continue
				}
				found = append(found, scannedEntry{k: k, n: n, mtime: info.ModTime().UnixNano()})
			}
		}
	}
	return found, nil
}

// Add stores a block the caller has already verified under key, which must
// be 64 lowercase hex characters. It evicts least recently used entries until
// the total fits. A block whose file would exceed the whole limit is not
// cached (and nil returned); a key already cached is only marked recently
// used, since blocks are immutable. On a write error (a full disk, say)
// nothing is left behind and the cache is unchanged.
func (d *Disk) Add(key string, data []byte) error {
	k, err := parseDiskKey(key)
	if err != nil {
		return err
	}
	return d.add(k, key, data)
}

func (d *Disk) add(k [32]byte, key string, data []byte) error {
	n := int64(len(data))
	if diskFileSize(n) > d.maxBytes {
		return nil
	}
	if d.closed.Load() {
		return ErrDiskClosed
	}
	d.mu.Lock()
	_, present := d.lru.Get(k)
	d.mu.Unlock()
	if present {
		return nil
	}
	if d.admit != nil {
		done, err := d.admit(n)
		if err != nil {
			d.dropped.Add(1)
			return nil
		}
		defer done()
	}
	tmp, err := d.writeTemp(&k, data)
	if err != nil {
		return fmt.Errorf("disk cache: add %s: %w", key, err)
	}

	d.fileMu.Lock()
	defer d.fileMu.Unlock()
	if d.closed.Load() {
		os.Remove(tmp)
		return ErrDiskClosed
	}
	d.mu.Lock()
	present = d.lru.Contains(k)
	d.mu.Unlock()
	if present { // added meanwhile by another caller
		os.Remove(tmp)
		return nil
	}
	final := d.path(key)
	if err := os.Rename(tmp, final); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			os.Remove(tmp)
			return fmt.Errorf("disk cache: add %s: %w", key, err)
		}
		// Fan-out directories are made on first use and never removed.
		if err := os.MkdirAll(filepath.Dir(final), 0o700); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("disk cache: add %s: %w", key, err)
		}
		if err := os.Rename(tmp, final); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("disk cache: add %s: %w", key, err)
		}
	}

	d.mu.Lock()
	d.gen++
	d.lru.Add(k, &diskEntry{n: n, gen: d.gen, touched: time.Now().UnixNano()})
	d.bytes += diskFileSize(n)
	victims, _ := d.evictLocked(func(int64) bool { return d.bytes > d.maxBytes })
	d.mu.Unlock()
	d.removeVictims(victims)
	return nil
}

// evictLocked takes least recently used entries out of the index while
// more(bytes taken so far) says so; it returns them, for removeVictims,
// and their bytes. d.mu and d.fileMu are held.
func (d *Disk) evictLocked(more func(freed int64) bool) (victims [][32]byte, freed int64) {
	for more(freed) {
		vk, ve, ok := d.lru.RemoveOldest()
		if !ok {
			break
		}
		size := diskFileSize(ve.n)
		d.bytes -= size
		freed += size
		victims = append(victims, vk)
	}
	return victims, freed
}

// removeVictims deletes the files of entries evictLocked took out (d.fileMu
// held).
func (d *Disk) removeVictims(victims [][32]byte) {
	for _, vk := range victims {
		d.removeFile(hex.EncodeToString(vk[:]))
		d.evictions.Add(1)
	}
}

// Shrink evicts least recently used entries until at least n bytes of
// entry files are removed (or the cache is empty), and returns how many
// bytes it removed: the cache gives back its disk when what it shares the
// disk with needs the room.
func (d *Disk) Shrink(n int64) int64 {
	d.fileMu.Lock()
	defer d.fileMu.Unlock()
	d.mu.Lock()
	victims, freed := d.evictLocked(func(freed int64) bool { return freed < n })
	d.mu.Unlock()
	d.removeVictims(victims)
	return freed
}

// writeTemp writes an entry file for data under the temporary directory and
// returns its name. On error nothing is left behind.
func (d *Disk) writeTemp(k *[32]byte, data []byte) (string, error) {
	f, err := os.CreateTemp(d.tmp, "add-*")
	if err != nil {
		return "", err
	}
	var w io.Writer = f
	if d.wrapWriter != nil {
		w = d.wrapWriter(f)
	}
	_, err = w.Write(diskEncodeHeader(k, data))
	if err == nil {
		_, err = w.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// SetSpaceCheck makes the cache ask check before it writes a block of n
// bytes (and call done once it is written), and leave the block uncached
// when it says no: a cache on a disk it shares with the volume's metadata
// must not fill it. Call it before the cache is used.
func (d *Disk) SetSpaceCheck(check func(n int64) (done func(), err error)) { d.admit = check }

// Offer is Add done later by the cache's own goroutine, for callers that
// must not wait for the disk. Data is not copied: the caller must not modify
// it afterwards. At most 64 MiB (and 4096 blocks) wait in the queue; beyond
// that, and after Close, blocks are dropped and counted as Dropped, as are
// blocks with an invalid key. Write errors are logged, at most once a minute.
func (d *Disk) Offer(key string, data []byte) {
	k, err := parseDiskKey(key)
	if err != nil {
		d.dropped.Add(1)
		d.log.Debug("disk cache: offer refused", "err", err)
		return
	}
	n := int64(len(data))
	if diskFileSize(n) > d.maxBytes {
		return // Add would not cache it either
	}
	if d.closed.Load() {
		d.dropped.Add(1)
		return
	}
	d.mu.Lock()
	present := d.lru.Contains(k)
	d.mu.Unlock()
	if present {
		return
	}
	for {
		q := d.queued.Load()
		if q+n > diskOfferQueueBytes {
			d.dropped.Add(1)
			return
		}
		if d.queued.CompareAndSwap(q, q+n) {
			break
		}
	}
	d.pending.Add(1)
	select {
	case d.queue <- diskOffer{k: k, key: key, data: data}:
	default:
		d.dequeued(n)
		d.dropped.Add(1)
	}
}

// run writes offered blocks until Close, which drops what is still queued.
func (d *Disk) run() {
	defer close(d.done)
	for {
		select {
		case <-d.stop:
		case o := <-d.queue:
			if d.closed.Load() {
				d.dequeued(int64(len(o.data)))
				d.dropped.Add(1)
				break // closing: drop the rest too
			}
			if err := d.add(o.k, o.key, o.data); err != nil {
				if errors.Is(err, ErrDiskClosed) {
					d.dropped.Add(1)
				} else if now := time.Now().UnixNano(); now-d.lastWarn.Load() >= int64(time.Minute) {
					d.lastWarn.Store(now)
					d.log.Warn("disk cache: fill failed", "err", err)
				}
			}
			d.dequeued(int64(len(o.data)))
			continue
		}
		for {
			select {
			case o := <-d.queue:
				d.dequeued(int64(len(o.data)))
				d.dropped.Add(1)
			default:
				return
			}
		}
	}
}

// dequeued accounts for one offered block of n bytes leaving the queue.
func (d *Disk) dequeued(n int64) {
	d.queued.Add(-n)
	d.pending.Add(-1)
}

// lookup finds k and marks it recently used. touch reports that the file's
// mtime is due for a refresh (the entry then counts as refreshed).
func (d *Disk) lookup(k [32]byte) (e diskEntry, touch, ok bool) {
	if d.closed.Load() {
		return e, false, false
	}
	now := time.Now().UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.lru.Get(k)
	if !ok {
		return e, false, false
	}
	if now-p.touched >= int64(diskTouchInterval) {
		p.touched = now
		touch = true
	}
	return *p, touch, true
}

// ReadAt copies the bytes of the cached block key from offset off into p and
// reports whether the block was cached, and its size. Only the 64 KiB pieces
// the range touches are read and verified. On a hit n is len(p), or less
// when the range runs past the end of the block (n = 0 when off is at or
// beyond the end), as io.ReaderAt would with io.EOF. ok is false on a miss,
// for a negative offset, or when the entry is found damaged, in which case
// it is removed; p's contents are then unspecified.
func (d *Disk) ReadAt(key string, p []byte, off int64) (n int, size int64, ok bool) {
	k, err := parseDiskKey(key)
	if err != nil || off < 0 {
		d.misses.Add(1)
		return 0, 0, false
	}
	e, touch, ok := d.lookup(k)
	if !ok {
		d.misses.Add(1)
		return 0, 0, false
	}
	if off >= e.n || len(p) == 0 {
		d.hits.Add(1)
		return 0, e.n, true
	}
	p = p[:min(int64(len(p)), e.n-off)]
	path := d.path(key)
	f, err := openDiskFile(path)
	if err != nil {
		d.readFailed(k, key, e.gen, err)
		return 0, 0, false
	}
	err = diskReadRange(f, &k, e.n, p, off)
	f.Close()
	if err != nil {
		d.readFailed(k, key, e.gen, err)
		return 0, 0, false
	}
	d.hit(path, touch)
	return len(p), e.n, true
}

// Get returns the whole cached block key, every piece verified, or false as
// ReadAt does. The slice is the caller's.
func (d *Disk) Get(key string) ([]byte, bool) {
	k, err := parseDiskKey(key)
	if err != nil {
		d.misses.Add(1)
		return nil, false
	}
	e, touch, ok := d.lookup(k)
	if !ok {
		d.misses.Add(1)
		return nil, false
	}
	path := d.path(key)
	f, err := openDiskFile(path)
	if err != nil {
		d.readFailed(k, key, e.gen, err)
		return nil, false
	}
	data, err := diskReadAll(f, &k, e.n)
	f.Close()
	if err != nil {
		d.readFailed(k, key, e.gen, err)
		return nil, false
	}
	d.hit(path, touch)
	return data, true
}

func (d *Disk) hit(path string, touch bool) {
	d.hits.Add(1)
	if touch {
		now := time.Now()
		if err := os.Chtimes(path, now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.log.Debug("disk cache: touch", "path", path, "err", err)
		}
	}
}

// readFailed handles a read of entry k (generation gen) that did not produce
// data: a file gone missing is forgotten quietly, anything else is treated
// as corruption.
func (d *Disk) readFailed(k [32]byte, key string, gen uint64, err error) {
	d.misses.Add(1)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed by an eviction racing with this read, or from outside.
		d.forget(k, key, gen)
		return
	}
	d.corrupt.Add(1)
	d.log.Warn("disk cache: removing corrupt entry", "key", key, "err", err)
	d.forget(k, key, gen)
}

// forget removes entry k and its file if it is still generation gen, that is
// the very file a reader found broken, not one added since.
func (d *Disk) forget(k [32]byte, key string, gen uint64) {
	d.drop(k, key, func(e *diskEntry) bool { return e.gen == gen })
}

// Remove drops key from the cache, if present. Readers of the entry in
// progress finish with either verified data or a miss.
func (d *Disk) Remove(key string) {
	k, err := parseDiskKey(key)
	if err != nil {
		return
	}
	d.drop(k, key, func(*diskEntry) bool { return true })
}

// drop removes entry k and its file when match accepts the entry.
func (d *Disk) drop(k [32]byte, key string, match func(*diskEntry) bool) {
	d.fileMu.Lock()
	defer d.fileMu.Unlock()
	if d.closed.Load() {
		return
	}
	d.mu.Lock()
	e, ok := d.lru.Peek(k)
	ok = ok && match(e)
	if ok {
		d.lru.Remove(k)
		d.bytes -= diskFileSize(e.n)
	}
	d.mu.Unlock()
	if ok {
		d.removeFile(key)
	}
}

// Stats returns the counters. After Close, Bytes and Entries are zero.
func (d *Disk) Stats() DiskStats {
	d.mu.Lock()
	b, n := d.bytes, int64(d.lru.Len())
	d.mu.Unlock()
	return DiskStats{
		Hits:      d.hits.Load(),
		Misses:    d.misses.Load(),
		Corrupt:   d.corrupt.Load(),
		Dropped:   d.dropped.Load(),
		Evictions: d.evictions.Load(),
		Bytes:     b,
		Entries:   n,
	}
}

// Close stops the Offer goroutine, dropping (and counting as Dropped) the
// blocks still queued rather than writing them, waits for its write in
// progress, forgets the index and unlocks the directory. Adds racing with
// Close return ErrDiskClosed and leave nothing behind. The entries stay on
// disk for the next OpenDisk. Later calls return the first call's result.
func (d *Disk) Close() error {
	d.closeOnce.Do(func() {
		d.fileMu.Lock()
		d.closed.Store(true)
		d.fileMu.Unlock()
		close(d.stop)
		<-d.done
		d.mu.Lock()
		d.lru.Purge()
		d.bytes = 0
		d.mu.Unlock()
		d.closeErr = d.lockFile.Close()
	})
	return d.closeErr
}

func (d *Disk) path(key string) string {
	return filepath.Join(d.dir, key[0:2], key[2:4], key)
}

// removeFile unlinks the file of key, which must be out of the index.
func (d *Disk) removeFile(key string) {
	if err := os.Remove(d.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("disk cache: remove entry", "key", key, "err", err)
	}
}

// parseDiskKey decodes a key of exactly 64 lowercase hex characters.
func parseDiskKey(key string) ([32]byte, error) {
	var k [32]byte
	if len(key) != 2*len(k) {
		return k, fmt.Errorf("disk cache: invalid key %.80q: want 64 lowercase hex characters", key)
	}
	for i := range k {
		hi, ok1 := hexNibble(key[2*i])
		lo, ok2 := hexNibble(key[2*i+1])
		if !ok1 || !ok2 {
			return k, fmt.Errorf("disk cache: invalid key %q: want 64 lowercase hex characters", key)
		}
		k[i] = hi<<4 | lo
	}
	return k, nil
}

func hexNibble(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func isHexName(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range len(s) {
		if _, ok := hexNibble(s[i]); !ok {
			return false
		}
	}
	return true
}

func diskPieces(n int64) int64 { return (n + diskPieceSize - 1) / diskPieceSize }

func diskHeaderLen(n int64) int64 { return diskHeaderSize + 4*diskPieces(n) }

func diskFileSize(n int64) int64 { return diskHeaderLen(n) + n }

// diskDataLen returns the data length of an entry file of the given size,
// or false if no data length gives that size.
func diskDataLen(size int64) (int64, bool) {
	r := size - diskHeaderSize
	if r < 0 {
		return 0, false
	}
	p := (r + diskPieceSize + 4 - 1) / (diskPieceSize + 4)
	n := r - 4*p
	if n < 0 || diskPieces(n) != p {
		return 0, false
	}
	return n, true
}

func diskEncodeHeader(k *[32]byte, data []byte) []byte {
	n := int64(len(data))
	h := make([]byte, diskHeaderLen(n))
	copy(h, diskMagic)
	binary.LittleEndian.PutUint32(h[4:], diskVersion)
	binary.LittleEndian.PutUint64(h[8:], uint64(n))
	binary.LittleEndian.PutUint32(h[16:], diskPieceSize)
	for i := range diskPieces(n) {
		piece := data[i*diskPieceSize : min((i+1)*diskPieceSize, n)]
		binary.LittleEndian.PutUint32(h[diskHeaderSize+4*i:], crc32.Checksum(piece, castagnoli))
	}
	binary.LittleEndian.PutUint32(h[20:], diskHeaderCRC(k, h))
	return h
}

func diskHeaderCRC(k *[32]byte, h []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[:20])
	c = crc32.Update(c, castagnoli, k[:])
	return crc32.Update(c, castagnoli, h[diskHeaderSize:])
}

// diskCheckHeader checks the header h (diskHeaderLen(n) bytes) of entry k,
// expected to hold n bytes of data.
func diskCheckHeader(k *[32]byte, h []byte, n int64) error {
	switch {
	case string(h[0:4]) != diskMagic:
		return fmt.Errorf("%w: bad magic", errDiskCorrupt)
	case binary.LittleEndian.Uint32(h[4:]) != diskVersion:
		return fmt.Errorf("%w: unknown version %d", errDiskCorrupt, binary.LittleEndian.Uint32(h[4:]))
	case binary.LittleEndian.Uint64(h[8:]) != uint64(n):
		return fmt.Errorf("%w: data length %d, file size says %d", errDiskCorrupt, binary.LittleEndian.Uint64(h[8:]), n)
	case binary.LittleEndian.Uint32(h[16:]) != diskPieceSize:
		return fmt.Errorf("%w: piece size %d", errDiskCorrupt, binary.LittleEndian.Uint32(h[16:]))
	case binary.LittleEndian.Uint32(h[20:]) != diskHeaderCRC(k, h):
		return fmt.Errorf("%w: header checksum mismatch", errDiskCorrupt)
	}
	return nil
}

// diskPieceCRC returns the recorded checksum of piece i from header h.
func diskPieceCRC(h []byte, i int64) uint32 {
	return binary.LittleEndian.Uint32(h[diskHeaderSize+4*i:])
}

// diskReadFull is f.ReadAt that calls a short file corruption.
func diskReadFull(f diskFile, p []byte, off int64) error {
	if _, err := f.ReadAt(p, off); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: file too short", errDiskCorrupt)
		}
		return err
	}
	return nil
}

// diskFile is an entry file open for reading. It bypasses os.File, whose
// open registers the descriptor with the runtime poller (three more system
// calls, a third of the cost of a small cached read) for no benefit on a
// regular file.
type diskFile int

func openDiskFile(path string) (diskFile, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return diskFile(fd), nil
	}
}

// ReadAt reads len(p) bytes at off, as io.ReaderAt does.
func (f diskFile) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := syscall.Pread(int(f), p[n:], off+int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return n, &fs.PathError{Op: "read", Path: "disk cache entry", Err: err}
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func (f diskFile) size() (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f), &st); err != nil {
		return 0, &fs.PathError{Op: "fstat", Path: "disk cache entry", Err: err}
	}
	return st.Size, nil
}

func (f diskFile) Close() error { return syscall.Close(int(f)) }

// diskCheckFile reads and checks the header of entry file f of entry k,
// expected to hold n bytes of data, and checks the file size.
func diskCheckFile(f diskFile, k *[32]byte, n int64) ([]byte, error) {
	size, err := f.size()
	if err != nil {
		return nil, err
	}
	if size != diskFileSize(n) {
		return nil, fmt.Errorf("%w: file size %d, want %d", errDiskCorrupt, size, diskFileSize(n))
	}
	h := make([]byte, diskHeaderLen(n))
	if err := diskReadFull(f, h, 0); err != nil {
		return nil, err
	}
	return h, diskCheckHeader(k, h, n)
}

var diskPiecePool = sync.Pool{New: func() any {
	b := make([]byte, diskPieceSize)
	return &b
}}

// diskReadRange fills p (non-empty, within the data) from data offset off of
// entry file f, reading and verifying exactly the pieces the range touches.
// Runs of whole pieces are read straight into p; a partly wanted piece at
// either end goes through a scratch buffer.
func diskReadRange(f diskFile, k *[32]byte, n int64, p []byte, off int64) error {
	h, err := diskCheckFile(f, k, n)
	if err != nil {
		return err
	}
	hl := int64(len(h))
	end := off + int64(len(p))
	last := (end - 1) / diskPieceSize
	for i := off / diskPieceSize; i <= last; {
		start, stop := i*diskPieceSize, min((i+1)*diskPieceSize, n)
		if start >= off && stop <= end {
			j := i // extend over the following whole pieces
			for j < last && min((j+2)*diskPieceSize, n) <= end {
				j++
			}
			runEnd := min((j+1)*diskPieceSize, n)
			dst := p[start-off : runEnd-off]
			if err := diskReadFull(f, dst, hl+start); err != nil {
				return err
			}
			for q := i; q <= j; q++ {
				ps := (q - i) * diskPieceSize
				piece := dst[ps:min(ps+diskPieceSize, int64(len(dst)))]
				if crc32.Checksum(piece, castagnoli) != diskPieceCRC(h, q) {
					return fmt.Errorf("%w: piece %d checksum mismatch", errDiskCorrupt, q)
				}
			}
			i = j + 1
			continue
		}
		bp := diskPiecePool.Get().(*[]byte)
		buf := (*bp)[:stop-start]
		err := diskReadFull(f, buf, hl+start)
		if err == nil && crc32.Checksum(buf, castagnoli) != diskPieceCRC(h, i) {
			err = fmt.Errorf("%w: piece %d checksum mismatch", errDiskCorrupt, i)
		}
		if err == nil {
			from := max(start, off)
			copy(p[from-off:], buf[from-start:min(stop, end)-start])
		}
		diskPiecePool.Put(bp)
		if err != nil {
			return err
		}
		i++
	}
	return nil
}

// diskReadAll reads and verifies the whole of entry file f.
func diskReadAll(f diskFile, k *[32]byte, n int64) ([]byte, error) {
	got, err := f.size()
	if err != nil {
		return nil, err
	}
	size := diskFileSize(n)
	if got != size {
		return nil, fmt.Errorf("%w: file size %d, want %d", errDiskCorrupt, got, size)
	}
	buf := make([]byte, size)
	if err := diskReadFull(f, buf, 0); err != nil {
		return nil, err
	}
	hl := diskHeaderLen(n)
	h, data := buf[:hl], buf[hl:size:size]
	if err := diskCheckHeader(k, h, n); err != nil {
		return nil, err
	}
	for i := range diskPieces(n) {
		piece := data[i*diskPieceSize : min((i+1)*diskPieceSize, n)]
		if crc32.Checksum(piece, castagnoli) != diskPieceCRC(h, i) {
			return nil, fmt.Errorf("%w: piece %d checksum mismatch", errDiskCorrupt, i)
		}
	}
	return data, nil
}
