package meta

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"syscall"
)

// Key prefixes. Every key starts with one byte naming its record type; inode
// numbers and chunk indexes are big-endian so that a prefix scan walks them in
// numeric order. Nothing is keyed by path: renaming a directory rewrites two
// entries, never its subtree.
const (
	pFormat   = 'F' // F                        -> Format (JSON)
	pCounter  = 'C' // C name                   -> uint64
	pInode    = 'I' // I ino                    -> Attr
	pEntry    = 'E' // E parent name            -> child, seq, type
	pOrder    = 'O' // O parent seq             -> child, type, name (readdir order)
	pBack     = 'B' // B child parent name      -> nil (every link of an inode, for paths and fsck)
	pInline   = 'D' // D ino                    -> inline file bytes or symlink target
	pSlices   = 'S' // S ino chunk              -> []Slice (main record; + 't': the chunk's tail, format 3 on)
	pXattr    = 'A' // A ino name               -> value
	pRefcount = 'R' // R blockID(32)            -> refs(8) size(4)
	pPending  = 'P' // P blockID(32)            -> unix nanos when refs reached 0
	pOrphan   = 'X' // X ino                    -> unix nanos when nlink reached 0
	pTruncate = 'U' // U ino                    -> unix nanos of a truncation still releasing chunks
	pDelta    = 'Q' // Q boot(8) seq(8)         -> Stats delta
	pTotals   = 'T' // T                        -> Stats
	pGCSeen   = 'G' // G blockID(32)            -> first seen unreferenced by gc (ns), last seen listed (ns)
)

func key1(p byte) []byte { return []byte{p} }

func keyIno(p byte, ino uint64) []byte {
	k := make([]byte, 9)
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], ino)
	return k
}

func keyInoName(p byte, ino uint64, name string) []byte {
	k := make([]byte, 9, 9+len(name))
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], ino)
	return append(k, name...)
}

func keyInoU64(p byte, ino, n uint64) []byte {
	k := make([]byte, 17)
	k[0] = p
	binary.BigEndian.PutUint64(k[1:], ino)
	binary.BigEndian.PutUint64(k[9:], n)
	return k
}

func keyChunk(ino uint64, chunk uint64) []byte {
	return keyInoU64(pSlices, ino, chunk)
}

// A chunk's slices are its main record's followed by its tail record's.
// A commit that adds slices to a chunk which already has a main record
// writes them to the tail, as long as the tail stays short (tailMax), and
// only then rewrites the main record with the tail folded in. Without the
// tail, every commit rewrote the whole list: up to 23 KiB for a fragmented
// chunk, for each fsync'd 4 KiB write, all of it into Badger's value log.
// The tail key sorts right after its main record's and before the next
// chunk's, so a scan meets a chunk's two records together.
const tailSuffix = 't'

func keyChunkTail(ino uint64, chunk uint64) []byte {
	k := make([]byte, 18)
	k[0] = pSlices
	binary.BigEndian.PutUint64(k[1:], ino)
	binary.BigEndian.PutUint64(k[9:], chunk)
	k[17] = tailSuffix
	return k
}

// chunkKeyTail reports whether k, a key under pSlices, is a well-formed
// main record key (false, true) or tail record key (true, true).
func chunkKeyTail(k []byte) (tail, ok bool) {
	switch {
	case len(k) == 17:
		return false, true
	case len(k) == 18 && k[17] == tailSuffix:
		return true, true
	}
	return false, false
}

func keyBlock(p byte, id BlockID) []byte {
	k := make([]byte, 33)
	k[0] = p
	copy(k[1:], id[:])
	return k
}

// errCorrupt marks a record that cannot be decoded: the volume is damaged.
// It is an EIO, which front ends answer for the one request.
var errCorrupt = fmt.Errorf("corrupt metadata record (%w)", syscall.EIO)

func corrupt(what string, key []byte) error {
	return fmt.Errorf("%w: %s at key %x", errCorrupt, what, key)
}

// Attr is an inode's attributes. Times are nanoseconds since the epoch.
type Attr struct {
	Ino     uint64
	Gen     uint64
	Mode    uint32 // file type bits and permissions, as in stat(2)
	Uid     uint32
	Gid     uint32
	Nlink   uint32
	Rdev    uint32
	Size    uint64
	Atime   int64
	Mtime   int64
	Ctime   int64
	Parent  uint64 // a directory holding an entry for this inode (exact for directories)
	NextSeq uint64 // directories: readdir cookie of the next entry created
	Flags   uint32 // FlagLinkable, FlagTruncating, FlagNoXattrs, FlagNoChunks, FlagTails, FlagAlloc
	// Alloc is what a regular file stores, in bytes, when FlagAlloc says
	// it is kept: the length of its inline content, or the bytes its
	// chunks' slices cover less what hole slices punched out (st_blocks).
	Alloc uint64
}

// FlagLinkable marks an O_TMPFILE inode: it has no links yet but may be
// given one by linkat.
const FlagLinkable = 1

// FlagTruncating marks a file whose truncation is still releasing the
// chunks beyond its end (its U record lists it for the next start). Writes
// and size changes, which read the inode anyway, finish the release first.
const FlagTruncating = 2

// FlagNoXattrs marks an inode that has had no extended attribute since it
// was created, and FlagNoChunks one that has had no chunk record (a new
// inode, a file whose data is inline): freeing it need not look for any,
// nor need every write look for file capabilities to drop. Setting an
// attribute or writing a chunk clears the flag for good, in the same
// transaction. Inodes made before the flags existed lack them and are
// looked through as before; fsck reports a flag that lies.
const (
	FlagNoXattrs = 4
	FlagNoChunks = 8
)

// FlagTails marks a file that has had a chunk tail record (format 3 on),
// set in the transaction that writes its first one and never cleared:
// only such a file's chunks are looked up twice, main record and tail, so
// files written whole (most of them) pay nothing for tails.
const FlagTails = 16

// FlagAlloc marks an inode whose Alloc is kept (format 4 on, set at
// creation): every transaction that changes its inline content or chunks
// changes Alloc by as much. Inodes made before (or on older formats) lack
// it, and report their size as allocated. Its record is 8 bytes longer.
const FlagAlloc = 32

// Blocks returns st_blocks for a: allocated 512-byte units. A regular file
// that keeps Alloc reports that (never more than its size rounded up:
// chunks beyond the end that a truncation is still releasing are not
// counted); everything else its size.
func (a *Attr) Blocks() uint64 {
	n := a.Size
	if a.Flags&FlagAlloc != 0 && a.IsRegular() {
		n = min(a.Alloc, a.Size)
	}
	return (n + 511) / 512
}

// hasNo reports whether a is marked as having none of what flag stands for.
func (a *Attr) hasNo(flag uint32) bool { return a.Flags&flag != 0 }

// IsDir reports whether the inode is a directory.
func (a *Attr) IsDir() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// IsRegular reports whether the inode is a regular file.
func (a *Attr) IsRegular() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFREG }

// Type returns the file type bits of Mode.
func (a *Attr) Type() uint32 { return a.Mode & syscall.S_IFMT }

const attrVersion = 1
const attrLen = 1 + 8 + 4*5 + 8 + 8*3 + 8 + 8 + 4

func (a *Attr) encode() []byte {
	b := make([]byte, 0, attrLen+8)
	b = append(b, attrVersion)
	b = binary.LittleEndian.AppendUint64(b, a.Gen)
	b = binary.LittleEndian.AppendUint32(b, a.Mode)
	b = binary.LittleEndian.AppendUint32(b, a.Uid)
	b = binary.LittleEndian.AppendUint32(b, a.Gid)
	b = binary.LittleEndian.AppendUint32(b, a.Nlink)
	b = binary.LittleEndian.AppendUint32(b, a.Rdev)
	b = binary.LittleEndian.AppendUint64(b, a.Size)
	b = binary.LittleEndian.AppendUint64(b, uint64(a.Atime))
	b = binary.LittleEndian.AppendUint64(b, uint64(a.Mtime))
	b = binary.LittleEndian.AppendUint64(b, uint64(a.Ctime))
	b = binary.LittleEndian.AppendUint64(b, a.Parent)
	b = binary.LittleEndian.AppendUint64(b, a.NextSeq)
	b = binary.LittleEndian.AppendUint32(b, a.Flags)
	if a.Flags&FlagAlloc != 0 {
		b = binary.LittleEndian.AppendUint64(b, a.Alloc)
	}
	return b
}

func decodeAttr(ino uint64, b []byte) (*Attr, error) {
	if len(b) < attrLen || b[0] != attrVersion {
		return nil, corrupt("inode", keyIno(pInode, ino))
	}
	le := binary.LittleEndian
	flags := le.Uint32(b[77:])
	var alloc uint64
	switch {
	case flags&FlagAlloc == 0 && len(b) == attrLen:
	case flags&FlagAlloc != 0 && len(b) == attrLen+8:
		alloc = le.Uint64(b[attrLen:])
	default:
		return nil, corrupt("inode", keyIno(pInode, ino))
	}
	return &Attr{
		Alloc:   alloc,
		Ino:     ino,
		Gen:     le.Uint64(b[1:]),
		Mode:    le.Uint32(b[9:]),
		Uid:     le.Uint32(b[13:]),
		Gid:     le.Uint32(b[17:]),
		Nlink:   le.Uint32(b[21:]),
		Rdev:    le.Uint32(b[25:]),
		Size:    le.Uint64(b[29:]),
		Atime:   int64(le.Uint64(b[37:])),
		Mtime:   int64(le.Uint64(b[45:])),
		Ctime:   int64(le.Uint64(b[53:])),
		Parent:  le.Uint64(b[61:]),
		NextSeq: le.Uint64(b[69:]),
		Flags:   le.Uint32(b[77:]),
	}, nil
}

// entry is the value of an E record.
type entry struct {
	child uint64
	seq   uint64
	typ   uint32 // mode type bits of the child
}

func (e entry) encode() []byte {
	b := make([]byte, 0, 20)
	b = binary.LittleEndian.AppendUint64(b, e.child)
	b = binary.LittleEndian.AppendUint64(b, e.seq)
	return binary.LittleEndian.AppendUint32(b, e.typ)
}

func decodeEntry(k, b []byte) (entry, error) {
	if len(b) != 20 {
		return entry{}, corrupt("directory entry", k)
	}
	return entry{
		child: binary.LittleEndian.Uint64(b),
		seq:   binary.LittleEndian.Uint64(b[8:]),
		typ:   binary.LittleEndian.Uint32(b[16:]),
	}, nil
}

// BlockID names a block by the SHA-256 of its content.
type BlockID [32]byte

func (id BlockID) String() string { return hex.EncodeToString(id[:]) }

// ObjectKey is the name of the block in an object store.
func (id BlockID) ObjectKey() string {
	h := id.String()
	return "blocks/" + h[0:2] + "/" + h[2:4] + "/" + h
}

// ParseObjectKey is the inverse of ObjectKey.
func ParseObjectKey(key string) (BlockID, bool) {
	var id BlockID
	const prefix = "blocks/xx/yy/"
	if len(key) != len(prefix)+64 || key[:7] != "blocks/" {
		return id, false
	}
	n, err := hex.Decode(id[:], []byte(key[len(prefix):]))
	if err != nil || n != 32 || id.ObjectKey() != key {
		return id, false
	}
	return id, true
}

// BlockRef is a block as referenced by a slice.
type BlockRef struct {
	ID   BlockID
	Size uint32
}

// Slice is one write's data within a chunk: bytes [Pos, Pos+Len) of the
// chunk are the first Len bytes of the concatenated Blocks. Later slices in a
// chunk's list cover earlier ones. A slice without blocks is a hole slice
// (format 4 on): its bytes read as zeros and hide what older slices held
// there, which is how a range is punched out of a file (fallocate
// FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE).
type Slice struct {
	Pos    uint32
	Len    uint32
	Blocks []BlockRef
}

// Hole reports whether s is a hole slice.
func (s *Slice) Hole() bool { return len(s.Blocks) == 0 }

const slicesVersion = 1

// encodedSize is the length of encodeSlices(ss).
func encodedSize(ss []Slice) int {
	n := 1
	for _, s := range ss {
		n += 10 + 36*len(s.Blocks)
	}
	return n
}

func encodeSlices(ss []Slice) []byte {
	b := make([]byte, 0, encodedSize(ss))
	b = append(b, slicesVersion)
	for _, s := range ss {
		b = binary.LittleEndian.AppendUint32(b, s.Pos)
		b = binary.LittleEndian.AppendUint32(b, s.Len)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s.Blocks)))
		for _, r := range s.Blocks {
			b = append(b, r.ID[:]...)
			b = binary.LittleEndian.AppendUint32(b, r.Size)
		}
	}
	return b
}

func decodeSlices(k, b []byte) ([]Slice, error) {
	if len(b) < 1 || b[0] != slicesVersion {
		return nil, corrupt("slice list", k)
	}
	b = b[1:]
	// One array for every slice's blocks: a fragmented chunk has hundreds
	// of slices, decoded on every read and commit of it.
	var refs []BlockRef
	if n, ok := countBlocks(b); ok {
		refs = make([]BlockRef, 0, n)
	}
	var ss []Slice
	for len(b) > 0 {
		if len(b) < 10 {
			return nil, corrupt("slice list", k)
		}
		s := Slice{Pos: binary.LittleEndian.Uint32(b), Len: binary.LittleEndian.Uint32(b[4:])}
		nb := int(binary.LittleEndian.Uint16(b[8:]))
		b = b[10:]
		if len(b) < nb*36 {
			return nil, corrupt("slice list", k)
		}
		var total uint64
		if cap(refs)-len(refs) < nb {
			refs = make([]BlockRef, 0, nb) // unreachable when countBlocks agreed
		}
		s.Blocks = refs[len(refs) : len(refs)+nb : len(refs)+nb]
		refs = refs[:len(refs)+nb]
		for i := range s.Blocks {
			copy(s.Blocks[i].ID[:], b[:32])
			s.Blocks[i].Size = binary.LittleEndian.Uint32(b[32:])
			total += uint64(s.Blocks[i].Size)
			b = b[36:]
		}
		if nb > 0 && total < uint64(s.Len) {
			return nil, corrupt("slice shorter than its blocks", k)
		}
		ss = append(ss, s)
	}
	return ss, nil
}

// countBlocks returns how many block references an encoded slice list
// (after its version byte) holds, or false if it is malformed (decodeSlices
// then says where).
func countBlocks(b []byte) (int, bool) {
	n := 0
	for len(b) > 0 {
		if len(b) < 10 {
			return 0, false
		}
		nb := int(binary.LittleEndian.Uint16(b[8:]))
		if len(b)-10 < nb*36 {
			return 0, false
		}
		n += nb
		b = b[10+nb*36:]
	}
	return n, true
}

// Stats are the volume's totals, kept exactly by every transaction.
type Stats struct {
	Inodes     int64 // every live inode, including the root and orphans
	Dirs       int64
	Files      int64 // regular files
	Bytes      int64 // sum of regular file sizes
	Blocks     int64 // distinct blocks referenced
	BlockBytes int64 // their total size
}

func (s *Stats) add(d Stats) {
	s.Inodes += d.Inodes
	s.Dirs += d.Dirs
	s.Files += d.Files
	s.Bytes += d.Bytes
	s.Blocks += d.Blocks
	s.BlockBytes += d.BlockBytes
}

func (s Stats) isZero() bool { return s == Stats{} }

func (s Stats) encode() []byte {
	b := make([]byte, 0, 48)
	for _, v := range []int64{s.Inodes, s.Dirs, s.Files, s.Bytes, s.Blocks, s.BlockBytes} {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

func decodeStats(k, b []byte) (Stats, error) {
	if len(b) != 48 {
		return Stats{}, corrupt("statistics", k)
	}
	v := func(i int) int64 { return int64(binary.LittleEndian.Uint64(b[8*i:])) }
	return Stats{v(0), v(1), v(2), v(3), v(4), v(5)}, nil
}

func u64(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func u64bytes(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
