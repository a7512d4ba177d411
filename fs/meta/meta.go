// Package meta keeps a volume's namespace and file layout in a transactional
// key-value store (Badger by default): inodes, directory entries, slices,
// block reference counts, extended attributes. Every change to the namespace
// is exactly one transaction, retried on conflict and never split.
package meta

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"
)

// FormatVersion is the on-disk format this code writes. It reads every
// version from MinFormatVersion on: version 1 names blocks by SHA-256
// only; version 2 records the block hash (BLAKE3 by default), so an objfs
// that knows only version 1 refuses such a volume instead of finding every
// block "corrupt"; version 3 adds chunk tail records (see tailSuffix),
// which an objfs that knows only version 2 would not read; version 4 adds
// hole slices (see Slice), which an objfs that knows only version 3 would
// call corrupt. Volumes of older versions keep their version, and get
// neither tail records nor hole slices.
const FormatVersion = 4

// MinFormatVersion is the oldest on-disk format this code reads.
const MinFormatVersion = 1

// RootIno is the inode number of the root directory.
const RootIno = 1

// firstSeq is the readdir cookie of a directory's first entry; 1 and 2 are
// left for "." and "..".
const firstSeq = 3

// MaxNameLen is the longest name a directory entry may have.
const MaxNameLen = 255

// Format is the volume's format record, written once by `objfs format`.
type Format struct {
	Version   int       `json:"version"`
	UUID      string    `json:"uuid"`
	Created   time.Time `json:"created"`
	BlockSize int       `json:"block_size"` // largest block, bytes
	ChunkSize int       `json:"chunk_size"` // files are cut into chunks at multiples of this
	InlineMax int       `json:"inline_max"` // files up to this size live in metadata
	Stores    []string  `json:"stores"`     // object store URLs
	// Replicas is how many of Stores hold each block, and WriteQuorum how
	// many copies must be durable before a write succeeds. Records written
	// before replication existed have neither; 0 means 1 so they keep
	// working unchanged.
	Replicas    int `json:"replicas,omitempty"`
	WriteQuorum int `json:"write_quorum,omitempty"`
	// BlockHash names the hash whose value is each block's ID (and object
	// key): HashBLAKE3 or HashSHA256. Version 1 records have none: SHA-256.
	BlockHash string `json:"block_hash,omitempty"`
}

// Validate checks that the layout parameters are usable.
func (f *Format) Validate() error {
	switch {
	case f.Version < MinFormatVersion || f.Version > FormatVersion:
		return fmt.Errorf("volume format version %d is not supported (this objfs reads versions %d to %d)", f.Version, MinFormatVersion, FormatVersion)
	case f.Version == 1 && f.BlockHash != "" && f.BlockHash != HashSHA256:
		return fmt.Errorf("block hash %q: format version 1 volumes use %s", f.BlockHash, HashSHA256)
	case f.Version >= 2 && !knownBlockHash(f.BlockHash):
		return fmt.Errorf("block hash %q is not known (known: %v)", f.BlockHash, BlockHashes)
	case f.BlockSize < 4096 || f.BlockSize > 16<<20 || f.BlockSize&(f.BlockSize-1) != 0:
		return fmt.Errorf("block size %d: must be a power of two between 4 KiB and 16 MiB", f.BlockSize)
	case f.ChunkSize < f.BlockSize || f.ChunkSize > 256<<20 || f.ChunkSize%f.BlockSize != 0:
		return fmt.Errorf("chunk size %d: must be a multiple of the block size, at most 256 MiB", f.ChunkSize)
	case f.InlineMax < 0 || f.InlineMax > 64<<10:
		return fmt.Errorf("inline limit %d: must be between 0 and 64 KiB", f.InlineMax)
	case len(f.Stores) == 0:
		return errors.New("no object store configured")
	case f.Replicas < 0 || max(f.Replicas, 1) > len(f.Stores):
		return fmt.Errorf("replicas %d: must be between 1 and the number of stores (%d)", f.Replicas, len(f.Stores))
	case f.WriteQuorum < 0 || max(f.WriteQuorum, 1) > max(f.Replicas, 1):
		return fmt.Errorf("write quorum %d: must be between 1 and the number of replicas (%d)", f.WriteQuorum, max(f.Replicas, 1))
	}
	return nil
}

// NewFormat returns a format record with default layout parameters.
func NewFormat(stores []string, blockSize int) *Format {
	var u [16]byte
	_, _ = rand.Read(u[:])
	return &Format{
		Version:   FormatVersion,
		UUID:      hex.EncodeToString(u[:]),
		Created:   time.Now().UTC(),
		BlockSize: blockSize,
		ChunkSize: 64 << 20,
		InlineMax: 16 << 10,
		Stores:    stores,
		BlockHash: HashBLAKE3,
	}
}

// Caller is who asks for an operation, for permission checks.
type Caller struct {
	Uid, Gid uint32
	Groups   []uint32    // supplementary groups (unused when lazy is set)
	lazy     *lazyGroups // see LazyCaller
}

// lazyGroups reads a caller's supplementary groups once, when first needed.
type lazyGroups struct {
	once   sync.Once
	load   func() []uint32
	groups []uint32
}

// LazyCaller returns a caller whose supplementary groups load returns, called
// only if and when a decision depends on them (at most once). The FUSE front
// end reads them from /proc, which costs more than most requests, and most
// checks are settled by the owner or by group and other bits that agree.
func LazyCaller(uid, gid uint32, load func() []uint32) *Caller {
	return &Caller{Uid: uid, Gid: gid, lazy: &lazyGroups{load: load}}
}

// Root is the superuser.
var Root = Caller{}

func (c *Caller) inGroup(gid uint32) bool {
	if c.Gid == gid {
		return true
	}
	groups := c.Groups
	if l := c.lazy; l != nil {
		l.once.Do(func() { l.groups = l.load() })
		groups = l.groups
	}
	return slices.Contains(groups, gid)
}

// Meta is a volume's metadata.
type Meta struct {
	kv     KV
	format Format
	boot   uint64 // distinguishes this process's delta records

	inoMu   sync.Mutex
	nextIno uint64
	maxIno  uint64

	dirs dirLocks // serializes changes to one directory in this process

	statsMu  sync.Mutex
	stats    Stats
	deltaSeq uint64
	deltas   int
	// Delta records are numbered before their transaction commits, so
	// they may commit out of order. unsettled holds the numbers of
	// transactions not yet finished; every delta numbered below
	// foldFrom is folded, so a fold starts there instead of stepping
	// again over the tombstones of earlier folds (see fold).
	unsettled map[uint64]bool
	foldFrom  uint64

	pendingMu        sync.Mutex
	pendingNotBefore int64 // nothing in the deletion queue is due before; see PendingBlocks

	attrs *attrCache // inodes read by GetAttr and Lookup
}

// Create writes a new volume's format record and root directory, owned by
// root, into kv, which must be empty.
func Create(ctx context.Context, kv KV, f *Format) error {
	return CreateOwned(ctx, kv, f, 0, 0)
}

// CreateOwned is Create with the root directory owned by uid and gid: a
// volume formatted by a user for their own mount must let them write.
func CreateOwned(ctx context.Context, kv KV, f *Format, uid, gid uint32) error {
	if err := f.Validate(); err != nil {
		return err
	}
	js, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode format record: %w", err)
	}
	return kv.Update(ctx, func(t Txn) error {
		if _, err := t.Get(key1(pFormat)); err == nil {
			return errors.New("volume is already formatted")
		} else if !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		now := time.Now().UnixNano()
		root := &Attr{Ino: RootIno, Gen: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Uid: uid, Gid: gid,
			Atime: now, Mtime: now, Ctime: now, Parent: RootIno, NextSeq: firstSeq,
			Flags: FlagNoXattrs | FlagNoChunks}
		st := Stats{Inodes: 1, Dirs: 1}
		for _, kvp := range []struct{ k, v []byte }{
			{key1(pFormat), js},
			{keyIno(pInode, RootIno), root.encode()},
			{counterKey("next_inode"), u64bytes(RootIno + 1)},
			{key1(pTotals), st.encode()},
		} {
			if err := t.Set(kvp.k, kvp.v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Open reads the format record and totals of an existing volume.
func Open(ctx context.Context, kv KV) (*Meta, error) {
	m := &Meta{kv: kv, unsettled: map[uint64]bool{}, attrs: newAttrCache()}
	var b [8]byte
	_, _ = rand.Read(b[:])
	m.boot = binary.BigEndian.Uint64(b[:])
	err := kv.View(ctx, func(t Txn) (err error) {
		m.format, err = readFormat(t)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := m.loadStats(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// readFormat reads and checks the volume's format record.
func readFormat(t Txn) (Format, error) {
	var f Format
	js, err := t.Get(key1(pFormat))
	if errors.Is(err, ErrKeyNotFound) {
		return f, errors.New("not an objfs volume: no format record")
	}
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(js, &f); err != nil {
		return f, fmt.Errorf("%w: format record: %v", errCorrupt, err)
	}
	return f, f.Validate()
}

// Upgrade raises the format record of the volume in kv, which must not be
// open elsewhere, to FormatVersion, and returns the version it had and the
// record now (the same version when there was nothing to do). A version 1
// record gets its block hash written out (SHA-256, which it always meant);
// nothing else changes, since every later version only adds records an
// older objfs would not read. Afterwards, no objfs that reads only older
// versions opens the volume.
func Upgrade(ctx context.Context, kv KV) (from int, f Format, err error) {
	err = kv.Update(ctx, func(t Txn) error {
		if f, err = readFormat(t); err != nil {
			return err
		}
		from = f.Version
		if f.Version == FormatVersion {
			return nil
		}
		f.BlockHash = f.BlockHashName()
		f.Version = FormatVersion
		if err := f.Validate(); err != nil {
			return fmt.Errorf("upgraded format record: %w", err)
		}
		b, err := json.Marshal(&f)
		if err != nil {
			return fmt.Errorf("encode format record: %w", err)
		}
		return t.Set(key1(pFormat), b)
	})
	if err != nil {
		return 0, Format{}, err
	}
	return from, f, nil
}

// tails reports whether the volume's format has chunk tail records.
func (m *Meta) tails() bool { return m.format.Version >= 3 }

// HoleSlices reports whether a volume of format f may hold hole slices
// (format 4 on): only then can a range of a file be punched out.
func (f *Format) HoleSlices() bool { return f.Version >= 4 }

// Format returns the volume's format record.
func (m *Meta) Format() Format { return m.format }

// KV returns the underlying store (for tools such as fsck and dump).
func (m *Meta) KV() KV { return m.kv }

// Sync makes every committed change durable against power loss.
func (m *Meta) Sync() error { return m.kv.Sync() }

// garbageCollector is a KV that reclaims dead space itself (Badger's value
// log); see Badger.CollectGarbage.
type garbageCollector interface {
	CollectGarbage(ctx context.Context) (int, error)
}

// CollectGarbage reclaims the dead space of the metadata database, where
// its KV needs that done; it returns how many files it rewrote.
func (m *Meta) CollectGarbage(ctx context.Context) (int, error) {
	if g, ok := m.kv.(garbageCollector); ok {
		return g.CollectGarbage(ctx)
	}
	return 0, nil
}

func counterKey(name string) []byte { return append(key1(pCounter), name...) }

// inoBatch inode numbers are reserved per counter update, so that creates do
// not all conflict on one key. Numbers are never reused: a stale NFS handle
// can never reach a newer file.
const inoBatch = 1024

func (m *Meta) allocIno(ctx context.Context) (uint64, error) {
	m.inoMu.Lock()
	defer m.inoMu.Unlock()
	if m.nextIno < m.maxIno {
		m.nextIno++
		return m.nextIno - 1, nil
	}
	var first uint64
	err := m.kv.Update(ctx, func(t Txn) error {
		v, err := t.Get(counterKey("next_inode"))
		if err != nil {
			return fmt.Errorf("read inode counter: %w", err)
		}
		first = u64(v)
		return t.Set(counterKey("next_inode"), u64bytes(first+inoBatch))
	})
	if err != nil {
		return 0, err
	}
	m.nextIno, m.maxIno = first+1, first+inoBatch
	return first, nil
}

// tx wraps one attempt of a transaction with a cache of the inodes it read,
// so that an operation touching the same inode twice (a rename within one
// directory) sees and writes one copy.
type tx struct {
	m      *Meta
	t      Txn
	now    int64
	inodes map[uint64]*Attr
	dirty  map[uint64]bool
	gone   map[uint64]bool
	delta  Stats
	seq    uint64 // number of the delta record flush wrote, if any
	// cached: a read (viewCached) that may take inodes from the
	// attribute cache, and adds what it reads as of generation cacheGen.
	cached   bool
	cacheGen uint64
}

// freeingKey marks the context of a change that frees or moves space.
type freeingKey struct{}

// freeing marks ctx as that of a change that frees or moves space rather
// than adding to it (a deletion, a rename, a change of attributes, the
// release of blocks), which a nearly full disk still lets through: see
// Badger.SetSpaceCheck.
func freeing(ctx context.Context) context.Context {
	if isFreeing(ctx) {
		return ctx // nested (SetAttr finishing a truncation): already marked
	}
	return context.WithValue(ctx, freeingKey{}, true)
}

func isFreeing(ctx context.Context) bool {
	v, _ := ctx.Value(freeingKey{}).(bool)
	return v
}

// update runs fn as one transaction, retried on conflict.
func (m *Meta) update(ctx context.Context, fn func(x *tx) error) error {
	var delta Stats
	var seqs []uint64 // delta records numbered by the attempts
	var last *tx      // the attempt that committed, if any
	err := m.kv.Update(ctx, func(t Txn) error {
		x := &tx{m: m, t: t, now: time.Now().UnixNano(), inodes: map[uint64]*Attr{}, dirty: map[uint64]bool{}, gone: map[uint64]bool{}}
		if err := fn(x); err != nil {
			return err
		}
		if err := x.flush(); err != nil {
			return err
		}
		if x.seq != 0 {
			seqs = append(seqs, x.seq)
		}
		delta = x.delta
		last = x
		return nil
	})
	// The commit is visible now; no reader may find the old inodes in
	// the cache after this returns. (After a failed commit nothing
	// changed; dropping costs nothing.)
	if last != nil {
		m.attrs.drop(last.dirty, last.gone)
	}
	m.statsMu.Lock()
	for _, s := range seqs {
		delete(m.unsettled, s)
	}
	if err == nil && !delta.isZero() {
		m.stats.add(delta)
		m.deltas++
	}
	m.statsMu.Unlock()
	return err
}

func (m *Meta) view(ctx context.Context, fn func(x *tx) error) error {
	return m.kv.View(ctx, func(t Txn) error {
		return fn(&tx{m: m, t: t, now: time.Now().UnixNano(), inodes: map[uint64]*Attr{}})
	})
}

// viewCached is view for a read whose inodes may come from the attribute
// cache (see attrCache): for reads of attributes alone, where an inode
// newer than the transaction's snapshot of other records does no harm.
func (m *Meta) viewCached(ctx context.Context, fn func(x *tx) error) error {
	gen := m.attrs.generation() // before the transaction takes its snapshot
	return m.kv.View(ctx, func(t Txn) error {
		return fn(&tx{m: m, t: t, now: time.Now().UnixNano(), inodes: map[uint64]*Attr{}, cached: true, cacheGen: gen})
	})
}

// inode reads an inode; a missing one is ENOENT.
func (x *tx) inode(ino uint64) (*Attr, error) {
	if a, ok := x.inodes[ino]; ok {
		return a, nil
	}
	if x.cached {
		if a, ok := x.m.attrs.get(ino); ok {
			x.inodes[ino] = a
			return a, nil
		}
	}
	k := keyIno(pInode, ino)
	v, err := x.t.Get(k)
	if errors.Is(err, ErrKeyNotFound) {
		return nil, syscall.ENOENT
	}
	if err != nil {
		return nil, fmt.Errorf("read inode %d: %w", ino, err)
	}
	a, err := decodeAttr(ino, v)
	if err != nil {
		return nil, err
	}
	if x.cached {
		x.m.attrs.add(a, x.cacheGen)
	}
	x.inodes[ino] = a
	return a, nil
}

// dir reads an inode that must be a live directory.
func (x *tx) dir(ino uint64) (*Attr, error) {
	a, err := x.inode(ino)
	if err != nil {
		return nil, err
	}
	if !a.IsDir() {
		return nil, syscall.ENOTDIR
	}
	if a.Nlink == 0 {
		return nil, syscall.ENOENT // removed, still open somewhere
	}
	return a, nil
}

func (x *tx) touch(a *Attr)         { x.dirty[a.Ino] = true }
func (x *tx) touchTimes(a *Attr)    { a.Mtime, a.Ctime = x.now, x.now; x.touch(a) }
func (x *tx) touchCtime(a *Attr)    { a.Ctime = x.now; x.touch(a) }
func (x *tx) forget(ino uint64)     { x.gone[ino] = true }
func (x *tx) addDelta(d Stats)      { x.delta.add(d) }
func (x *tx) set(k, v []byte) error { return x.t.Set(k, v) }
func (x *tx) del(k []byte) error    { return x.t.Delete(k) }

func (x *tx) flush() error {
	for ino := range x.dirty {
		if x.gone[ino] {
			continue
		}
		if err := x.t.Set(keyIno(pInode, ino), x.inodes[ino].encode()); err != nil {
			return err
		}
	}
	for ino := range x.gone {
		if err := x.t.Delete(keyIno(pInode, ino)); err != nil {
			return err
		}
	}
	if !x.delta.isZero() {
		x.m.statsMu.Lock()
		x.m.deltaSeq++
		x.seq = x.m.deltaSeq
		x.m.unsettled[x.seq] = true
		x.m.statsMu.Unlock()
		if err := x.t.Set(keyInoU64(pDelta, x.m.boot, x.seq), x.delta.encode()); err != nil {
			return err
		}
	}
	return nil
}

// Stats returns the volume's totals.
func (m *Meta) Stats() Stats {
	m.statsMu.Lock()
	defer m.statsMu.Unlock()
	return m.stats
}

// FoldStats merges the per-transaction delta records into the totals record.
// Each transaction writes its own delta key instead of updating one shared
// totals key, so that statistics never make transactions conflict. The
// in-memory totals are exact already; folding only keeps the number of
// delta records small.
func (m *Meta) FoldStats(ctx context.Context) error {
	for {
		_, more, err := m.fold(ctx, false)
		if err != nil || !more {
			return err
		}
	}
}

// foldBatch bounds one fold transaction.
const foldBatch = 5000

// fold adds up to foldBatch delta records to the totals record and
// deletes them; more reports that it stopped at that limit. With all, it
// reads every delta record (those of earlier processes too); otherwise it starts at this process's record foldFrom. Every
// transaction numbered below the lowest one unsettled when the fold
// starts has finished, committed or not, so its record, if any, is in the
// fold's snapshot: once the fold has read them all, the next one can start
// there. (Deleted records stay as tombstones until Badger compacts them;
// a fold from the start of the range steps over every one.)
func (m *Meta) fold(ctx context.Context, all bool) (total Stats, more bool, err error) {
	m.statsMu.Lock()
	settled := m.deltaSeq + 1 // every delta numbered below is committed or abandoned
	for s := range m.unsettled {
		settled = min(settled, s)
	}
	var start []byte
	if !all {
		start = keyInoU64(pDelta, m.boot, m.foldFrom)
	}
	m.statsMu.Unlock()
	var last uint64 // number of the last record of this process folded
	// Freeing: a fold replaces many records with one, and a volume that
	// cannot fold on a nearly full disk cannot close cleanly either.
	err = m.kv.Update(freeing(ctx), func(t Txn) error {
		last = 0
		v, err := t.Get(key1(pTotals))
		if err != nil {
			return fmt.Errorf("read totals: %w", err)
		}
		if total, err = decodeStats(key1(pTotals), v); err != nil {
			return err
		}
		var keys [][]byte
		err = t.Scan(key1(pDelta), start, func(k, v []byte) (bool, error) {
			d, err := decodeStats(k, v)
			if err != nil {
				return false, err
			}
			total.add(d)
			keys = append(keys, append([]byte(nil), k...))
			if len(k) == 17 && binary.BigEndian.Uint64(k[1:]) == m.boot {
				last = binary.BigEndian.Uint64(k[9:])
			}
			return len(keys) < foldBatch, nil
		})
		if err != nil {
			return err
		}
		more = len(keys) == foldBatch
		for _, k := range keys {
			if err := t.Delete(k); err != nil {
				return err
			}
		}
		return t.Set(key1(pTotals), total.encode())
	})
	if err != nil {
		return Stats{}, false, fmt.Errorf("fold statistics: %w", err)
	}
	m.statsMu.Lock()
	m.deltas = 0
	next := settled
	if more && last != 0 {
		next = min(next, last+1)
	}
	m.foldFrom = max(m.foldFrom, next)
	m.statsMu.Unlock()
	return total, more, nil
}

// loadStats folds every outstanding delta and loads the totals; called
// before the volume serves anything.
func (m *Meta) loadStats(ctx context.Context) error {
	for {
		total, more, err := m.fold(ctx, true)
		if err != nil {
			return err
		}
		if !more {
			m.statsMu.Lock()
			m.stats = total
			m.statsMu.Unlock()
			return nil
		}
	}
}

// PendingDeltas reports how many delta records were written since the last fold.
func (m *Meta) PendingDeltas() int {
	m.statsMu.Lock()
	defer m.statsMu.Unlock()
	return m.deltas
}
