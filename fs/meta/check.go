package meta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"syscall"
	"time"
)

// Check verifies every invariant of a volume's metadata and, with
// CheckOptions.Repair, fixes what can be fixed safely. It reads the
// database through streaming prefix scans of one snapshot, and inode by
// inode looks up the few records that must agree with each one, so its
// memory does not grow with the number of files. The recount of block
// references, spread over every file's slices in no useful order, is
// sorted in bounded memory, spilling to files (see blockRefs).
//
// The volume must not be in use by another process (the caller holds the
// database's lock): a repair rewrites records without the checks a running
// file system would make.

// Severity of a finding.
type Severity int

const (
	// Error is a broken invariant.
	Error Severity = iota
	// Note is an operation still under way (an orphan waiting to be reaped,
	// a block waiting to be deleted): normal after a crash, finished by the
	// next mount or gc.
	Note
)

// Problem is one finding of Check.
type Problem struct {
	Severity Severity
	Ino      uint64 // inode concerned, 0 if none
	Path     string // one path of Ino, when it still has one
	Msg      string
	Fixed    bool // repaired by this Check

	// fix repairs the problem inside one transaction; nil when it cannot be
	// repaired safely.
	fix func(x *tx) error
	// store marks a finding about a stored object, which no repair changes.
	store bool
}

func (p Problem) String() string {
	var b bytes.Buffer
	if p.Severity == Note {
		b.WriteString("note: ")
	} else {
		b.WriteString("error: ")
	}
	if p.Ino != 0 {
		fmt.Fprintf(&b, "inode %d", p.Ino)
		if p.Path != "" {
			fmt.Fprintf(&b, " (%s)", p.Path)
		}
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Fixed {
		b.WriteString(" [fixed]")
	}
	return b.String()
}

// CheckOptions selects what Check does beyond reading the metadata.
type CheckOptions struct {
	// Repair fixes what is safe to fix.
	Repair bool
	// Block, when not nil, is asked about every block a slice references;
	// it returns an error describing what is wrong with the stored object
	// (missing, wrong size, wrong content). The metadata never reaches into
	// an object store itself: the caller decides how to look.
	Block func(ctx context.Context, id BlockID, size uint32) error
	// Progress, when not nil, is called now and then with the number of
	// records examined since the previous call.
	Progress func(n int64)
	// TempDir is where references to more blocks than fit in memory are
	// sorted, in files (60 bytes a block; "" for the system's temporary
	// directory, which may be in memory).
	TempDir string
}

// CheckResult is what Check found.
type CheckResult struct {
	Problems []Problem
	// Dropped counts findings beyond maxProblems that were counted but not kept.
	Dropped int
	// Counted are the totals found by the scan.
	Counted Stats
	// Blocks is the number of distinct referenced blocks examined.
	Blocks int64
}

// Errors returns how many findings are errors that remain (not fixed).
func (r *CheckResult) Errors() int {
	n := r.Dropped
	for _, p := range r.Problems {
		if p.Severity == Error && !p.Fixed {
			n++
		}
	}
	return n
}

// maxProblems bounds the findings kept in memory: a badly damaged volume
// must not make fsck run out of memory describing it. Repairs work in
// passes, so what is dropped is found again by the next pass.
const maxProblems = 100000

// repairPasses bounds how often Check re-runs after repairing: one fix can
// uncover the next (an entry dropped leaves its inode unreachable).
const repairPasses = 4

// fixBatch bounds the repairs made in one transaction.
const fixBatch = 256

// LostFound is the directory of the root that Check re-links unreachable
// inodes into, as "#<ino>".
const LostFound = "lost+found"

// Check runs the checks described at the top of this file.
func (m *Meta) Check(ctx context.Context, opts CheckOptions) (*CheckResult, error) {
	var all, store []Problem
	if opts.Repair {
		n, err := m.countAllocs(ctx)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			all = append(all, Problem{Severity: Note, Fixed: true,
				Msg: fmt.Sprintf("%d files made before format 4 now count what they store (st_blocks)", n)})
		}
	}
	for pass := 0; ; pass++ {
		r, err := m.checkOnce(ctx, opts)
		if err != nil {
			return nil, err
		}
		if !opts.Repair {
			return r, nil
		}
		fixable := 0
		for _, p := range r.Problems {
			if p.fix != nil {
				fixable++
			}
			if pass == 0 && p.store {
				store = append(store, p)
			}
		}
		if fixable == 0 || pass == repairPasses-1 {
			// What remains is what could not be fixed; keep the record
			// of what earlier passes fixed in front of it, and what the
			// first pass found in the store.
			if pass > 0 {
				r.Problems = append(r.Problems, store...)
			}
			r.Problems = append(all, r.Problems...)
			return r, nil
		}
		// Repairs change no stored object: asking the store again (for
		// --verify, reading every block again) would only cost time.
		opts.Block = nil
		if err := m.applyFixes(ctx, r.Problems); err != nil {
			return nil, err
		}
		for _, p := range r.Problems {
			if p.Fixed {
				all = append(all, p)
			}
		}
	}
}

// countAllocs gives the regular files of a format 4 volume that were made
// before it was (an upgraded volume) FlagAlloc and their Alloc, 256 files
// a transaction, and returns how many it changed. Until then they report
// their size as st_blocks.
func (m *Meta) countAllocs(ctx context.Context) (int, error) {
	if m.format.Version < 4 {
		return 0, nil
	}
	changed := 0
	for after := uint64(0); ; {
		var inos []uint64
		err := m.view(ctx, func(x *tx) error {
			inos = inos[:0]
			return x.t.Scan(key1(pInode), keyIno(pInode, after+1), func(k, v []byte) (bool, error) {
				if len(k) != 9 {
					return true, nil
				}
				ino := beU64(k[1:])
				after = ino
				if a, err := decodeAttr(ino, v); err == nil && a.IsRegular() && a.Flags&FlagAlloc == 0 {
					inos = append(inos, ino)
				}
				return len(inos) < 256, nil
			})
		})
		if err != nil || len(inos) == 0 {
			return changed, err
		}
		done := 0
		err = m.update(ctx, func(x *tx) error {
			done = 0
			for _, ino := range inos {
				a, err := x.inode(ino)
				if errors.Is(err, syscall.ENOENT) {
					continue
				}
				if err != nil {
					return err
				}
				if a.Flags&FlagAlloc != 0 {
					continue
				}
				n, err := x.allocOf(a)
				if errors.Is(err, errCorrupt) {
					continue // reported, and repaired, by the check
				}
				if err != nil {
					return err
				}
				a.Flags |= FlagAlloc
				a.Alloc = n
				x.touch(a)
				done++
			}
			return nil
		})
		if err != nil {
			return changed, err
		}
		changed += done
	}
}

// applyFixes runs the fixes of ps in bounded transactions and marks each
// problem fixed.
func (m *Meta) applyFixes(ctx context.Context, ps []Problem) error {
	var batch []int
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := m.update(ctx, func(x *tx) error {
			for _, i := range batch {
				if err := ps[i].fix(x); err != nil {
					return fmt.Errorf("repair %q: %w", ps[i].Msg, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, i := range batch {
			ps[i].Fixed = true
		}
		batch = batch[:0]
		return nil
	}
	for i := range ps {
		if ps[i].fix == nil {
			continue
		}
		// Re-linking into lost+found creates the directory first, in a
		// transaction of its own, so that the batch's fixes find it.
		if ps[i].Msg == msgUnreachable {
			if err := flush(); err != nil {
				return err
			}
			if _, err := m.lostFound(ctx); err != nil {
				return err
			}
		}
		batch = append(batch, i)
		if len(batch) == fixBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// lostFound returns the inode of /lost+found, creating it if needed.
func (m *Meta) lostFound(ctx context.Context) (uint64, error) {
	a, err := m.Lookup(ctx, &Root, RootIno, LostFound)
	if err == nil {
		if !a.IsDir() {
			return 0, fmt.Errorf("/%s exists and is not a directory: move it away to let fsck re-link unreachable inodes", LostFound)
		}
		return a.Ino, nil
	}
	if !errors.Is(err, syscall.ENOENT) {
		return 0, fmt.Errorf("look up /%s: %w", LostFound, err)
	}
	a, err = m.Mknod(ctx, &Root, RootIno, LostFound, NewNode{Mode: syscall.S_IFDIR | 0o700})
	if err != nil {
		return 0, fmt.Errorf("create /%s: %w", LostFound, err)
	}
	return a.Ino, nil
}

const msgUnreachable = "unreachable: no directory entry names it and it is not an orphan"

// checker holds the state of one pass.
type checker struct {
	m     *Meta
	ctx   context.Context
	t     Txn
	opts  CheckOptions
	res   *CheckResult
	refs  *blockRefs
	since int64 // records since the last progress call
	// beyond is the last inode reported for chunks beyond its end (one
	// report a file: its chunks come in order).
	beyond uint64
	// lastLie is the last inode and flag reported for a chunk or an
	// attribute its FlagNoChunks or FlagNoXattrs denies (records come by
	// inode).
	lastLie struct {
		ino  uint64
		flag uint32
	}
}

func (c *checker) report(p Problem) {
	if len(c.res.Problems) >= maxProblems {
		c.res.Dropped++
		return
	}
	if p.Ino != 0 && p.Path == "" {
		if path, err := c.m.Path(c.ctx, p.Ino); err == nil {
			p.Path = path
		}
	}
	c.res.Problems = append(c.res.Problems, p)
}

func (c *checker) errorf(ino uint64, fix func(x *tx) error, format string, args ...any) {
	c.report(Problem{Severity: Error, Ino: ino, Msg: fmt.Sprintf(format, args...), fix: fix})
}

func (c *checker) tick() error {
	c.since++
	if c.since >= 1000 {
		if c.opts.Progress != nil {
			c.opts.Progress(c.since)
		}
		c.since = 0
		return c.ctx.Err()
	}
	return nil
}

// get reads a key of the snapshot; found is false for a missing key.
func (c *checker) get(k []byte) (v []byte, found bool, err error) {
	v, err = c.t.Get(k)
	if errors.Is(err, ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read key %x: %w", k, err)
	}
	return v, true, nil
}

// inode reads an inode of the snapshot; nil if missing or undecodable.
func (c *checker) inode(ino uint64) (*Attr, error) {
	v, ok, err := c.get(keyIno(pInode, ino))
	if err != nil || !ok {
		return nil, err
	}
	a, err := decodeAttr(ino, v)
	if err != nil {
		return nil, nil // reported by the inode scan
	}
	return a, nil
}

func (m *Meta) checkOnce(ctx context.Context, opts CheckOptions) (*CheckResult, error) {
	res := &CheckResult{}
	err := m.kv.View(ctx, func(t Txn) error {
		c := &checker{m: m, ctx: ctx, t: t, opts: opts, res: res}
		c.refs = newBlockRefs(opts.TempDir, func(first, other refEntry) {
			c.errorf(other.ino, nil, "chunk %d: block %s referenced with size %d here and %d elsewhere", other.idx, other.id, other.size, first.size)
		})
		defer c.refs.close()
		for _, step := range []struct {
			what string
			fn   func() error
		}{
			{"directory entries", c.entries},
			{"readdir order records", c.order},
			{"back-links", c.backLinks},
			{"inodes", c.inodes},
			{"records of inodes", c.inodeRecords},
			{"slices", c.slices},
			{"block reference counts", c.refcounts},
			{"pending deletions", c.pending},
			{"orphans", c.orphans},
			{"truncations", c.truncations},
			{"statistics", c.stats},
		} {
			if err := step.fn(); err != nil {
				return fmt.Errorf("check %s: %w", step.what, err)
			}
		}
		if opts.Progress != nil && c.since > 0 {
			opts.Progress(c.since)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// delKeys is a fix that deletes keys.
func delKeys(keys ...[]byte) func(x *tx) error {
	return func(x *tx) error {
		for _, k := range keys {
			if err := x.del(k); err != nil {
				return err
			}
		}
		return nil
	}
}

func cloneKey(b []byte) []byte { return append([]byte(nil), b...) }

// orderValue encodes an O record's value as addEntry does.
func orderValue(e entry, name string) []byte {
	v := make([]byte, 0, 12+len(name))
	v = binary.LittleEndian.AppendUint64(v, e.child)
	v = binary.LittleEndian.AppendUint32(v, e.typ)
	return append(v, name...)
}

// entries checks every E record: its directory and its child are live
// inodes of the right type, and its O and B records exist.
func (c *checker) entries() error {
	var dir *Attr
	dirIno := uint64(0)
	return c.t.Scan(key1(pEntry), nil, func(k, v []byte) (bool, error) {
		if err := c.tick(); err != nil {
			return false, err
		}
		k = cloneKey(k)
		if len(k) < 10 {
			c.errorf(0, delKeys(k), "malformed directory entry key %x", k)
			return true, nil
		}
		parent, name := beU64(k[1:]), string(k[9:])
		e, err := decodeEntry(k, v)
		if err != nil {
			c.errorf(parent, delKeys(k), "entry %q: undecodable value %x", name, v)
			return true, nil
		}
		if parent != dirIno {
			dirIno = parent
			if dir, err = c.inode(parent); err != nil {
				return false, err
			}
		}
		drop := delKeys(k, keyInoU64(pOrder, parent, e.seq), keyBack(e.child, parent, name))
		switch {
		case dir == nil:
			c.errorf(parent, drop, "entry %q (inode %d) is in a directory that does not exist", name, e.child)
			return true, nil
		case !dir.IsDir():
			c.errorf(parent, drop, "entry %q (inode %d) is in an inode that is not a directory", name, e.child)
			return true, nil
		}
		child, err := c.inode(e.child)
		if err != nil {
			return false, err
		}
		if child == nil {
			c.errorf(parent, drop, "entry %q points to inode %d, which does not exist", name, e.child)
			return true, nil
		}
		if child.Type() != e.typ {
			c.errorf(e.child, func(x *tx) error {
				e.typ = child.Type()
				if err := x.set(k, e.encode()); err != nil {
					return err
				}
				return x.set(keyInoU64(pOrder, parent, e.seq), orderValue(e, name))
			}, "entry %q in directory %d has type %o, the inode has type %o", name, parent, e.typ, child.Type())
		}
		if e.seq < firstSeq || e.seq >= dir.NextSeq {
			c.errorf(parent, nil, "entry %q has readdir cookie %d outside [%d, %d)", name, e.seq, firstSeq, dir.NextSeq)
		}
		ok := orderValue(entry{child: e.child, typ: child.Type()}, name)
		ov, found, err := c.get(keyInoU64(pOrder, parent, e.seq))
		if err != nil {
			return false, err
		}
		if !found || !bytes.Equal(ov, orderValue(e, name)) {
			what := "is missing"
			if found {
				what = "disagrees with it"
			}
			c.errorf(parent, func(x *tx) error { return x.set(keyInoU64(pOrder, parent, e.seq), ok) },
				"entry %q (inode %d): its readdir order record (cookie %d) %s", name, e.child, e.seq, what)
		}
		if _, found, err := c.get(keyBack(e.child, parent, name)); err != nil {
			return false, err
		} else if !found {
			c.errorf(e.child, func(x *tx) error { return x.set(keyBack(e.child, parent, name), nil) },
				"entry %q in directory %d has no back-link", name, parent)
		}
		return true, nil
	})
}

// order checks that every O record has its E record.
func (c *checker) order() error {
	return c.t.Scan(key1(pOrder), nil, func(k, v []byte) (bool, error) {
		if err := c.tick(); err != nil {
			return false, err
		}
		k = cloneKey(k)
		if len(k) != 17 || len(v) < 13 {
			c.errorf(0, delKeys(k), "malformed readdir order record %x", k)
			return true, nil
		}
		parent, seq := beU64(k[1:]), beU64(k[9:])
		name := string(v[12:])
		ev, found, err := c.get(keyInoName(pEntry, parent, name))
		if err != nil {
			return false, err
		}
		if found {
			if e, err := decodeEntry(k, ev); err == nil && e.seq == seq {
				return true, nil
			}
		}
		c.errorf(parent, delKeys(k), "readdir order record (cookie %d, %q) has no matching directory entry", seq, name)
		return true, nil
	})
}

// backLinks checks that every B record has its E record.
func (c *checker) backLinks() error {
	return c.t.Scan(key1(pBack), nil, func(k, v []byte) (bool, error) {
		if err := c.tick(); err != nil {
			return false, err
		}
		k = cloneKey(k)
		if len(k) < 18 {
			c.errorf(0, delKeys(k), "malformed back-link %x", k)
			return true, nil
		}
		child, parent, name := beU64(k[1:]), beU64(k[9:]), string(k[17:])
		if ok, err := c.validLink(child, parent, name); err != nil {
			return false, err
		} else if !ok {
			c.errorf(child, delKeys(k), "back-link to %q in directory %d has no matching directory entry", name, parent)
		}
		return true, nil
	})
}

// validLink reports whether entry name in parent exists and names child.
func (c *checker) validLink(child, parent uint64, name string) (bool, error) {
	k := keyInoName(pEntry, parent, name)
	ev, found, err := c.get(k)
	if err != nil || !found {
		return false, err
	}
	e, err := decodeEntry(k, ev)
	return err == nil && e.child == child, nil
}

// inodes checks each inode against the entries that name it: link count,
// reachability, orphan record; and counts the totals.
func (c *checker) inodes() error {
	return c.t.Scan(key1(pInode), nil, func(k, v []byte) (bool, error) {
		if err := c.tick(); err != nil {
			return false, err
		}
		if len(k) != 9 {
			c.errorf(0, delKeys(cloneKey(k)), "malformed inode key %x", k)
			return true, nil
		}
		ino := beU64(k[1:])
		a, err := decodeAttr(ino, v)
		if err != nil {
			c.errorf(ino, nil, "undecodable inode record %x", v)
			return true, nil
		}
		c.res.Counted.Inodes++
		switch {
		case a.IsDir():
			c.res.Counted.Dirs++
		case a.IsRegular():
			c.res.Counted.Files++
			c.res.Counted.Bytes += int64(a.Size)
		}
		return true, c.inode1(a)
	})
}

func (c *checker) inode1(a *Attr) error {
	ino := a.Ino
	// Links: the back-links of ino whose entry exists.
	var links uint32
	var firstParent uint64
	err := c.t.Scan(keyIno(pBack, ino), nil, func(k, v []byte) (bool, error) {
		if len(k) < 18 {
			return true, nil // reported by backLinks
		}
		parent, name := beU64(k[9:]), string(k[17:])
		ok, err := c.validLink(ino, parent, name)
		if ok {
			if links == 0 {
				firstParent = parent
			}
			links++
		}
		return true, err
	})
	if err != nil {
		return err
	}
	_, orphan, err := c.get(keyIno(pOrphan, ino))
	if err != nil {
		return err
	}
	if truncating(a) != nil {
		if !a.IsRegular() {
			c.errorf(ino, flagFix(ino, FlagTruncating, false), "inode of type %o marked as truncating", a.Type())
		} else if _, found, err := c.get(keyIno(pTruncate, ino)); err != nil {
			return err
		} else if !found {
			c.errorf(ino, markTruncating(ino), "marked as truncating with no truncation record: the next start would not finish it")
		}
	}
	setNlink := func(n uint32) func(x *tx) error {
		return inodeFix(ino, func(a *Attr) { a.Nlink = n })
	}
	if ino == RootIno {
		if !a.IsDir() {
			c.errorf(ino, nil, "the root is not a directory (mode %o)", a.Mode)
			return nil
		}
		if a.Parent != RootIno {
			c.errorf(ino, func(x *tx) error {
				cur, err := x.inode(ino)
				if err != nil {
					return err
				}
				cur.Parent = RootIno
				x.touch(cur)
				return nil
			}, "the root's parent is %d, not itself", a.Parent)
		}
		if links != 0 {
			c.errorf(ino, nil, "the root is named by %d directory entries", links)
		}
		if orphan {
			c.errorf(ino, delKeys(keyIno(pOrphan, ino)), "the root has an orphan record")
		}
		return c.dirLinks(a, setNlink)
	}
	if links > 0 && orphan {
		c.errorf(ino, delKeys(keyIno(pOrphan, ino)), "stale orphan record: %d directory entries name it", links)
	}
	if links == 0 {
		switch {
		case a.Nlink > 0 && !orphan:
			c.report(Problem{Severity: Error, Ino: ino, Msg: msgUnreachable, fix: c.relink(a)})
			return nil
		case a.Nlink > 0:
			c.errorf(ino, setNlink(0), "orphan with nlink %d, want 0", a.Nlink)
		case !orphan:
			c.errorf(ino, func(x *tx) error { return x.set(keyIno(pOrphan, ino), u64bytes(uint64(x.now))) },
				"nlink 0 but no orphan record: it would never be freed")
		default:
			c.report(Problem{Severity: Note, Ino: ino, Msg: "orphan (unlinked, was open) waiting to be freed at the next mount"})
		}
		if a.IsDir() {
			// A removed directory was empty; an entry in it would be lost.
			empty := true
			if err := c.t.Scan(keyIno(pEntry, ino), nil, func(k, v []byte) (bool, error) {
				empty = false
				return false, nil
			}); err != nil {
				return err
			}
			if !empty {
				c.errorf(ino, nil, "removed directory still holds entries")
			}
		}
		return nil
	}
	if !a.IsDir() {
		if a.Nlink != links {
			c.errorf(ino, setNlink(links), "nlink %d, but %d directory entries name it", a.Nlink, links)
		}
		return nil
	}
	if links > 1 {
		c.errorf(ino, nil, "directory named by %d entries (hard links to a directory)", links)
	}
	if a.Parent != firstParent {
		c.errorf(ino, func(x *tx) error {
			cur, err := x.inode(ino)
			if err != nil {
				return err
			}
			cur.Parent = firstParent
			x.touch(cur)
			return nil
		}, "directory's parent is %d, but its entry is in %d", a.Parent, firstParent)
	}
	if err := c.reachable(ino); err != nil {
		return err
	}
	return c.dirLinks(a, setNlink)
}

// dirLinks checks a live directory's nlink: 2 plus its subdirectories.
func (c *checker) dirLinks(a *Attr, setNlink func(uint32) func(x *tx) error) error {
	sub := uint32(0)
	err := c.t.Scan(keyIno(pEntry, a.Ino), nil, func(k, v []byte) (bool, error) {
		e, err := decodeEntry(k, v)
		if err == nil && e.typ == syscall.S_IFDIR {
			if child, err := c.inode(e.child); err != nil {
				return false, err
			} else if child != nil && child.IsDir() {
				sub++
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	if a.Nlink != 2+sub {
		c.errorf(a.Ino, setNlink(2+sub), "directory nlink %d, want 2 + %d subdirectories", a.Nlink, sub)
	}
	return nil
}

// reachable walks the parent chain of directory ino up to the root: a
// loop of directories can name each other and still be cut off from it.
func (c *checker) reachable(ino uint64) error {
	cur := ino
	for depth := 0; cur != RootIno; depth++ {
		a, err := c.inode(cur)
		if err != nil {
			return err
		}
		if a == nil || !a.IsDir() || depth > 4096 || a.Parent == cur || (depth > 0 && cur == ino) {
			c.errorf(ino, nil, "directory is not reachable from the root (its parent chain breaks at %d)", cur)
			return nil
		}
		cur = a.Parent
	}
	return nil
}

// relink is the fix for an unreachable inode: a name in /lost+found.
func (c *checker) relink(a *Attr) func(x *tx) error {
	ino := a.Ino
	return func(x *tx) error {
		lf, ok, err := x.entry(RootIno, LostFound)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("/%s is missing", LostFound)
		}
		dir, err := x.dir(lf.child)
		if err != nil {
			return fmt.Errorf("/%s: %w", LostFound, err)
		}
		cur, err := x.inode(ino)
		if err != nil {
			return err
		}
		name := "#" + strconv.FormatUint(ino, 10)
		if _, exists, err := x.entry(dir.Ino, name); err != nil {
			return err
		} else if exists {
			return fmt.Errorf("/%s/%s already exists", LostFound, name)
		}
		if err := x.addEntry(dir, name, cur); err != nil {
			return err
		}
		if cur.IsDir() {
			cur.Parent = dir.Ino
			dir.Nlink++
		} else {
			cur.Nlink = 1
		}
		x.touch(cur)
		return x.del(keyIno(pOrphan, ino))
	}
}

// inodeRecords checks that inline data, extended attributes and symlink
// targets belong to live inodes, that symlinks have their target, and that
// the files that keep Alloc have it right.
func (c *checker) inodeRecords() error {
	for _, p := range []struct {
		prefix byte
		what   string
	}{{pInline, "inline data"}, {pXattr, "extended attribute"}} {
		err := c.t.Scan(key1(p.prefix), nil, func(k, v []byte) (bool, error) {
			if err := c.tick(); err != nil {
				return false, err
			}
			k = cloneKey(k)
			if len(k) < 9 || (p.prefix == pInline && len(k) != 9) {
				c.errorf(0, delKeys(k), "malformed %s key %x", p.what, k)
				return true, nil
			}
			ino := beU64(k[1:])
			a, err := c.inode(ino)
			if err != nil {
				return false, err
			}
			if a == nil {
				c.errorf(ino, delKeys(k), "%s of an inode that does not exist", p.what)
				return true, nil
			}
			if p.prefix == pXattr {
				c.flagLie(a, FlagNoXattrs, fmt.Sprintf("extended attribute %q", k[9:]))
			}
			if p.prefix == pInline {
				switch {
				case a.Type() == syscall.S_IFLNK:
				case !a.IsRegular():
					c.errorf(ino, delKeys(k), "inline data on an inode of type %o", a.Type())
				case uint64(len(v)) > a.Size:
					c.errorf(ino, nil, "inline data of %d bytes is longer than the file (%d)", len(v), a.Size)
				}
			}
			return true, nil
		})
		if err != nil {
			return err
		}
	}
	// Symlinks need their target; Alloc is recounted.
	x := &tx{m: c.m, t: c.t, inodes: map[uint64]*Attr{}, dirty: map[uint64]bool{}, gone: map[uint64]bool{}}
	uncounted := 0
	defer func() {
		if uncounted > 0 {
			c.report(Problem{Severity: Note, Msg: fmt.Sprintf("%d files made before format 4 report their size as what they store (st_blocks); `objfs fsck --repair` counts it", uncounted)})
		}
	}()
	return c.t.Scan(key1(pInode), nil, func(k, v []byte) (bool, error) {
		if len(k) != 9 {
			return true, nil
		}
		a, err := decodeAttr(beU64(k[1:]), v)
		if err != nil {
			return true, nil
		}
		if a.IsRegular() && a.Flags&FlagAlloc == 0 && c.m.format.Version >= 4 {
			uncounted++
		}
		if a.IsRegular() && a.Flags&FlagAlloc != 0 {
			n, err := x.allocOf(a)
			switch {
			case errors.Is(err, errCorrupt):
				// A damaged slice list, reported by the slices pass;
				// its repair comes first.
			case err != nil:
				return false, err
			case n != a.Alloc:
				c.errorf(a.Ino, allocFix(a.Ino, n), "allocated bytes %d, but its data covers %d", a.Alloc, n)
			}
			return true, nil
		}
		if a.Type() != syscall.S_IFLNK {
			return true, nil
		}
		if _, found, err := c.get(keyIno(pInline, a.Ino)); err != nil {
			return false, err
		} else if !found {
			c.errorf(a.Ino, nil, "symbolic link without a target")
		}
		return true, nil
	})
}

// slices checks every slice list (a chunk's main and tail records alike)
// and counts block references.
func (c *checker) slices() error {
	f := c.m.format
	return c.t.Scan(key1(pSlices), nil, func(k, v []byte) (bool, error) {
		if err := c.tick(); err != nil {
			return false, err
		}
		k = cloneKey(k)
		tail, ok := chunkKeyTail(k)
		if !ok || tail && !c.m.tails() {
			c.errorf(0, delKeys(k), "malformed slice list key %x", k)
			return true, nil
		}
		ino, idx := beU64(k[1:]), beU64(k[9:])
		a, err := c.inode(ino)
		if err != nil {
			return false, err
		}
		switch {
		case a == nil:
			// Deleting the list drops its references; the next pass
			// recounts the blocks.
			c.errorf(ino, delKeys(k), "chunk %d: slices of an inode that does not exist", idx)
			return true, nil
		case !a.IsRegular():
			c.errorf(ino, delKeys(k), "chunk %d: slices on an inode of type %o", idx, a.Type())
			return true, nil
		}
		ss, err := decodeSlices(k, v)
		if err != nil {
			c.errorf(ino, nil, "chunk %d: undecodable slice list", idx)
			return true, nil
		}
		c.flagLie(a, FlagNoChunks, fmt.Sprintf("chunk %d", idx))
		if tail && a.Flags&FlagTails == 0 {
			c.errorf(ino, flagFix(ino, FlagTails, true), "chunk %d: a tail record on an inode not marked as having tails (reads skip it)", idx)
		}
		if idx >= MaxFileSize/uint64(f.ChunkSize) {
			c.errorf(ino, nil, "chunk %d lies beyond the largest file size", idx)
		}
		if err := c.pastEnd(a, idx, ss); err != nil {
			return false, err
		}
		for i, s := range ss {
			if s.Len == 0 || uint64(s.Pos)+uint64(s.Len) > uint64(f.ChunkSize) {
				c.errorf(ino, nil, "chunk %d slice %d: [%d, +%d) is empty or outside the chunk", idx, i, s.Pos, s.Len)
			}
			if s.Hole() && !f.HoleSlices() {
				c.errorf(ino, nil, "chunk %d slice %d: a hole slice on a volume of format version %d (holes need 4)", idx, i, f.Version)
			}
			for _, b := range s.Blocks {
				if b.Size == 0 || b.Size > uint32(f.BlockSize) {
					c.errorf(ino, nil, "chunk %d slice %d: block %s has size %d (block size %d)", idx, i, b.ID, b.Size, f.BlockSize)
				}
				if err := c.refs.add(b.ID, b.Size, ino, idx); err != nil {
					return false, err
				}
			}
		}
		return true, nil
	})
}

// pastEnd checks that chunk idx of a holds nothing beyond the end of the
// file: a later extension would show those stale bytes. Whole chunks past
// the end are normal while a truncation record says they are being
// released; the fix leaves one for the next mount to finish.
func (c *checker) pastEnd(a *Attr, idx uint64, ss []Slice) error {
	cs := uint64(c.m.format.ChunkSize)
	start := idx * cs
	if start < a.Size {
		end := a.Size - start
		for _, s := range ss {
			if end < cs && uint64(s.Pos)+uint64(s.Len) > end {
				c.errorf(a.Ino, func(x *tx) error {
					cur, err := x.inode(a.Ino)
					if err == nil {
						_, err = x.trimChunk(cur, idx, uint32(end))
					}
					return err
				},
					"chunk %d: a slice runs past the end of the file (%d bytes)", idx, a.Size)
				break
			}
		}
		return nil
	}
	if c.beyond == a.Ino || truncating(a) != nil {
		return nil
	}
	c.beyond = a.Ino
	c.errorf(a.Ino, markTruncating(a.Ino),
		"chunk %d lies wholly beyond the end of the file (%d bytes) with no truncation under way", idx, a.Size)
	return nil
}

// inodeFix is a fix that applies change to inode ino's attributes.
func inodeFix(ino uint64, change func(a *Attr)) func(x *tx) error {
	return func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		change(a)
		x.touch(a)
		return nil
	}
}

// allocFix is a fix that sets inode ino's Alloc to n.
func allocFix(ino, n uint64) func(x *tx) error {
	return inodeFix(ino, func(a *Attr) { a.Alloc = n })
}

// flagFix is a fix that sets (on) or clears flag on inode ino.
func flagFix(ino uint64, flag uint32, on bool) func(x *tx) error {
	return inodeFix(ino, func(a *Attr) {
		if on {
			a.Flags |= flag
		} else {
			a.Flags &^= flag
		}
	})
}

// flagLie reports what, a record of a, when a's flag says a has none:
// freeing a would leave it behind (a chunk's blocks never released), and
// an attribute would be hidden, file capabilities surviving writes.
func (c *checker) flagLie(a *Attr, flag uint32, what string) {
	if !a.hasNo(flag) || c.lastLie.ino == a.Ino && c.lastLie.flag == flag {
		return
	}
	c.lastLie.ino, c.lastLie.flag = a.Ino, flag
	c.errorf(a.Ino, flagFix(a.Ino, flag, false), "%s on an inode marked as having none", what)
}

// markTruncating is a fix that leaves ino's truncation for the next
// start to finish.
func markTruncating(ino uint64) func(x *tx) error {
	return func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		x.touch(a)
		return x.markTruncating(a)
	}
}

func refValue(refs int64, size uint32) []byte {
	v := binary.LittleEndian.AppendUint64(make([]byte, 0, 12), uint64(refs))
	return binary.LittleEndian.AppendUint32(v, size)
}

// refcounts compares the R records with the references counted, and asks
// the store about every referenced block. Both come in block ID order, so
// this is a merge of two sorted streams.
func (c *checker) refcounts() error {
	var refsErr error
	next, stop := iter.Pull(c.refs.all(&refsErr))
	defer stop()
	ref, more := next()
	err := c.t.Scan(key1(pRefcount), nil, func(k, v []byte) (bool, error) {
		if err := c.tick(); err != nil {
			return false, err
		}
		k = cloneKey(k)
		if len(k) != 33 {
			c.errorf(0, delKeys(k), "malformed refcount key %x", k)
			return true, nil
		}
		var id BlockID
		copy(id[:], k[1:])
		for more && bytes.Compare(ref.id[:], id[:]) < 0 {
			if err := c.noRefcount(ref); err != nil {
				return false, err
			}
			ref, more = next()
		}
		var u *refEntry
		if more && ref.id == id {
			cur := ref
			u = &cur
			ref, more = next()
		}
		if len(v) != 12 {
			if u != nil {
				c.errorf(0, func(x *tx) error { return x.set(k, refValue(u.refs, u.size)) }, "block %s: undecodable refcount record", id)
			} else {
				c.errorf(0, delKeys(k), "block %s: undecodable refcount record", id)
			}
			return true, nil
		}
		refs, size := int64(binary.LittleEndian.Uint64(v)), binary.LittleEndian.Uint32(v[8:])
		if u == nil {
			// Nothing references it: queue it for deletion like a count
			// that reached zero, so gc frees its object.
			c.errorf(0, func(x *tx) error {
				if err := x.del(k); err != nil {
					return err
				}
				return x.set(keyBlock(pPending, id), u64bytes(uint64(x.now)))
			}, "block %s: refcount %d, but no slice references it", id, refs)
			return true, nil
		}
		c.res.Counted.Blocks++
		c.res.Counted.BlockBytes += int64(u.size)
		if refs != u.refs || size != u.size {
			c.errorf(0, func(x *tx) error { return x.set(k, refValue(u.refs, u.size)) },
				"block %s: refcount %d size %d, but slices hold %d references of size %d", id, refs, size, u.refs, u.size)
		}
		return true, c.block(id, u.size)
	})
	for err == nil && more {
		err = c.noRefcount(ref)
		ref, more = next()
	}
	stop()
	return errors.Join(err, refsErr)
}

// noRefcount reports a block referenced without a refcount record.
func (c *checker) noRefcount(u refEntry) error {
	c.res.Counted.Blocks++
	c.res.Counted.BlockBytes += int64(u.size)
	k := keyBlock(pRefcount, u.id)
	c.errorf(0, func(x *tx) error {
		if err := x.del(keyBlock(pPending, u.id)); err != nil {
			return err
		}
		return x.set(k, refValue(u.refs, u.size))
	}, "block %s: %d references but no refcount record", u.id, u.refs)
	return c.block(u.id, u.size)
}

func (c *checker) block(id BlockID, size uint32) error {
	c.res.Blocks++
	if c.opts.Block == nil {
		return nil
	}
	if err := c.opts.Block(c.ctx, id, size); err != nil {
		if ctxErr := c.ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		c.report(Problem{Severity: Error, Msg: fmt.Sprintf("block %s (%d bytes): %v", id, size, err), store: true})
	}
	return nil
}

// pending checks the deletion queue: only blocks nobody references.
func (c *checker) pending() error {
	n := 0
	err := c.t.Scan(key1(pPending), nil, func(k, v []byte) (bool, error) {
		if err := c.tick(); err != nil {
			return false, err
		}
		k = cloneKey(k)
		if len(k) != 33 {
			c.errorf(0, delKeys(k), "malformed pending deletion key %x", k)
			return true, nil
		}
		var id BlockID
		copy(id[:], k[1:])
		if _, found, err := c.get(keyBlock(pRefcount, id)); err != nil {
			return false, err
		} else if found {
			c.errorf(0, delKeys(k), "block %s is queued for deletion but still referenced", id)
			return true, nil
		}
		n++
		return true, nil
	})
	if n > 0 {
		c.report(Problem{Severity: Note, Msg: fmt.Sprintf("%d unreferenced blocks waiting to be deleted (the next mount or `objfs gc` deletes them)", n)})
	}
	return err
}

// orphans checks that every X record names an existing inode; X records of
// linked inodes are found by the inode scan.
func (c *checker) orphans() error {
	return c.inodeList(pOrphan, "orphan", func(ino uint64, a *Attr, k []byte) {
		if a == nil {
			c.errorf(ino, delKeys(k), "stale orphan record: the inode does not exist")
		}
	})
}

// truncations checks that every U record names an existing regular file.
func (c *checker) truncations() error {
	return c.inodeList(pTruncate, "truncation", func(ino uint64, a *Attr, k []byte) {
		switch {
		case a == nil:
			c.errorf(ino, delKeys(k), "stale truncation record: the inode does not exist")
		case !a.IsRegular():
			c.errorf(ino, delKeys(k), "truncation record on an inode of type %o", a.Type())
		case truncating(a) == nil:
			c.errorf(ino, markTruncating(ino), "truncation record, but the file is not marked as truncating: writes would not finish it first")
		default:
			c.report(Problem{Severity: Note, Ino: ino, Msg: "truncation still releasing the chunks beyond the end of the file (the next mount finishes it)"})
		}
	})
}

// inodeList walks the records of prefix p keyed by an inode alone (what
// names them in reports), reporting malformed keys, and calls check with
// each inode's attributes (nil: it does not exist) and the record's key.
func (c *checker) inodeList(p byte, what string, check func(ino uint64, a *Attr, k []byte)) error {
	return c.t.Scan(key1(p), nil, func(k, v []byte) (bool, error) {
		if err := c.tick(); err != nil {
			return false, err
		}
		k = cloneKey(k)
		if len(k) != 9 {
			c.errorf(0, delKeys(k), "malformed %s key %x", what, k)
			return true, nil
		}
		ino := beU64(k[1:])
		a, err := c.inode(ino)
		if err != nil {
			return false, err
		}
		check(ino, a, k)
		return true, nil
	})
}

// stats compares the stored totals plus deltas with the counts, and the
// inode counter with the inodes found.
func (c *checker) stats() error {
	var total Stats
	v, found, err := c.get(key1(pTotals))
	if err != nil {
		return err
	}
	if found {
		if total, err = decodeStats(key1(pTotals), v); err != nil {
			found = false
		}
	}
	ok := found
	err = c.t.Scan(key1(pDelta), nil, func(k, v []byte) (bool, error) {
		d, err := decodeStats(k, v)
		if err != nil {
			ok = false
		}
		total.add(d)
		return true, nil
	})
	if err != nil {
		return err
	}
	want := c.res.Counted
	if !ok || total != want {
		c.errorf(0, func(x *tx) error {
			// Every mount folds the deltas, so there are few of them;
			// too many fails this fix cleanly (ErrTxnTooBig).
			var deltas [][]byte
			if err := x.t.Scan(key1(pDelta), nil, func(k, v []byte) (bool, error) {
				deltas = append(deltas, cloneKey(k))
				return true, nil
			}); err != nil {
				return err
			}
			for _, k := range deltas {
				if err := x.del(k); err != nil {
					return err
				}
			}
			return x.set(key1(pTotals), want.encode())
		}, "statistics say %+v, the volume holds %+v", total, want)
	}
	// The inode counter must be past every inode, or a new file would
	// reuse a live number.
	var maxIno uint64
	if err := c.t.Scan(key1(pInode), nil, func(k, v []byte) (bool, error) {
		if len(k) == 9 {
			maxIno = max(maxIno, beU64(k[1:]))
		}
		return true, nil
	}); err != nil {
		return err
	}
	cv, found, err := c.get(counterKey("next_inode"))
	if err != nil {
		return err
	}
	if !found || len(cv) != 8 || u64(cv) <= maxIno {
		c.errorf(0, func(x *tx) error { return x.set(counterKey("next_inode"), u64bytes(maxIno+inoBatch)) },
			"inode counter %d is not past the highest inode %d", u64(cv), maxIno)
	}
	return nil
}

// Garbage collection of objects (`objfs gc`) keeps what it has seen under
// its own key prefix:
//
//	G blockID(32) -> first seen unreferenced (unix nanos, 8) + last seen (8)
//
// An object is deleted only once a previous run saw it unreferenced at
// least the grace period ago, so an upload that some process has made but
// not yet committed is never deleted under it. The record goes when the
// object is deleted, when a run finds it referenced, or when a complete run
// no longer lists the object. (Key layout: pGCSeen in records.go.)

// GCSeen is what gc knows about one listed object.
type GCSeen struct {
	ID         BlockID
	Referenced bool
	Pending    bool      // queued for deletion (a P record)
	FirstSeen  time.Time // when it was first seen unreferenced (Referenced false)
}

// GCObserve classifies listed blocks in one transaction: referenced ones
// lose any G record; unreferenced ones get one (first seen now) or have
// their last-seen time updated. With record false nothing is written (a dry
// run), and a block never seen before reports FirstSeen now.
func (m *Meta) GCObserve(ctx context.Context, ids []BlockID, now time.Time, record bool) ([]GCSeen, error) {
	ctx = freeing(ctx)
	var out []GCSeen
	fn := func(t Txn) error {
		out = out[:0]
		for _, id := range ids {
			s := GCSeen{ID: id}
			if _, err := t.Get(keyBlock(pRefcount, id)); err == nil {
				s.Referenced = true
			} else if !errors.Is(err, ErrKeyNotFound) {
				return fmt.Errorf("read refcount of %s: %w", id, err)
			}
			if _, err := t.Get(keyBlock(pPending, id)); err == nil {
				s.Pending = true
			} else if !errors.Is(err, ErrKeyNotFound) {
				return fmt.Errorf("read deletion queue entry of %s: %w", id, err)
			}
			gk := keyBlock(pGCSeen, id)
			v, err := t.Get(gk)
			found := err == nil
			if err != nil && !errors.Is(err, ErrKeyNotFound) {
				return fmt.Errorf("read gc record of %s: %w", id, err)
			}
			first := now.UnixNano()
			if found && len(v) == 16 {
				first = int64(binary.LittleEndian.Uint64(v))
			}
			s.FirstSeen = time.Unix(0, first)
			out = append(out, s)
			if !record {
				continue
			}
			if s.Referenced {
				if found {
					if err := t.Delete(gk); err != nil {
						return err
					}
				}
				continue
			}
			nv := binary.LittleEndian.AppendUint64(make([]byte, 0, 16), uint64(first))
			if err := t.Set(gk, binary.LittleEndian.AppendUint64(nv, uint64(now.UnixNano()))); err != nil {
				return err
			}
		}
		return nil
	}
	var err error
	if record {
		err = m.kv.Update(ctx, fn)
	} else {
		err = m.kv.View(ctx, fn)
	}
	if err != nil {
		return nil, fmt.Errorf("gc: classify blocks: %w", err)
	}
	return out, nil
}

// GCDeleted forgets blocks whose objects gc deleted, if they are still
// unreferenced: their G and P records go.
func (m *Meta) GCDeleted(ctx context.Context, ids []BlockID) error {
	ctx = freeing(ctx)
	err := m.kv.Update(ctx, func(t Txn) error {
		for _, id := range ids {
			for _, p := range []byte{pGCSeen, pPending} {
				if err := t.Delete(keyBlock(p, id)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gc: forget deleted blocks: %w", err)
	}
	return nil
}

// GCPending returns up to limit blocks queued for deletion (P records)
// after the key of after (nil: from the start), and whether each is still
// referenced (a stale queue entry).
func (m *Meta) GCPending(ctx context.Context, after *BlockID, limit int) ([]GCSeen, error) {
	var out []GCSeen
	err := m.kv.View(ctx, func(t Txn) error {
		var start []byte
		if after != nil {
			start = append(keyBlock(pPending, *after), 0)
		}
		return t.Scan(key1(pPending), start, func(k, v []byte) (bool, error) {
			if len(k) != 33 {
				return true, nil
			}
			s := GCSeen{}
			copy(s.ID[:], k[1:])
			if _, err := t.Get(keyBlock(pRefcount, s.ID)); err == nil {
				s.Referenced = true
			} else if !errors.Is(err, ErrKeyNotFound) {
				return false, err
			}
			out = append(out, s)
			return len(out) < limit, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("gc: read deletion queue: %w", err)
	}
	return out, nil
}

// GCDropPending removes P records of blocks that are referenced again.
func (m *Meta) GCDropPending(ctx context.Context, ids []BlockID) error {
	ctx = freeing(ctx)
	return m.kv.Update(ctx, func(t Txn) error {
		for _, id := range ids {
			if _, err := t.Get(keyBlock(pRefcount, id)); errors.Is(err, ErrKeyNotFound) {
				continue
			} else if err != nil {
				return err
			}
			if err := t.Delete(keyBlock(pPending, id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// GCSweep deletes, in bounded transactions, the G records of objects that
// a complete listing started at runStart did not see again (the object is
// gone). It returns how many it deleted.
func (m *Meta) GCSweep(ctx context.Context, runStart time.Time) (int, error) {
	ctx = freeing(ctx)
	total := 0
	var after []byte
	for {
		var stale [][]byte
		more := false
		err := m.kv.View(ctx, func(t Txn) error {
			return t.Scan(key1(pGCSeen), after, func(k, v []byte) (bool, error) {
				after = append(cloneKey(k), 0)
				if len(v) != 16 || int64(binary.LittleEndian.Uint64(v[8:])) < runStart.UnixNano() {
					stale = append(stale, cloneKey(k))
				}
				if len(stale) == fixBatch {
					more = true
					return false, nil
				}
				return true, nil
			})
		})
		if err == nil && len(stale) > 0 {
			err = m.kv.Update(ctx, func(t Txn) error {
				for _, k := range stale {
					if err := t.Delete(k); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err != nil {
			return total, fmt.Errorf("gc: sweep records of vanished objects: %w", err)
		}
		total += len(stale)
		if !more {
			return total, nil
		}
	}
}
