package meta

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// A dump is a consistent snapshot of every metadata key, so that losing the
// database directory is not the end of a volume. Layout (gzip-compressed):
//
//	magic    "OBJFSDUMP\n"
//	header   uvarint length + JSON DumpHeader
//	records  repeated: uvarint key length (> 0), key, uvarint value length, value
//	trailer  a zero key length, uvarint record count, then the SHA-256 of
//	         every byte before the checksum (magic to record count)
//
// Records are streamed from one read transaction, so the dump is one point
// in time and its memory does not grow with the volume. The checksum and
// the count make a truncated or damaged dump detectable; gzip's own CRC
// catches most damage earlier.
const dumpMagic = "OBJFSDUMP\n"

// DumpVersion is the dump layout this code writes and reads.
const DumpVersion = 1

// maxDumpField bounds a key or value read from a dump, so that a damaged
// length cannot make load allocate without bound. Badger values are far
// smaller (extended attributes: 64 KiB; slice lists: a few MiB).
const maxDumpField = 64 << 20

// DumpHeader describes a dump.
type DumpHeader struct {
	Version int       `json:"version"`
	UUID    string    `json:"uuid"` // the volume's
	Created time.Time `json:"created"`
}

// DumpInfo is what Dump wrote or Load read.
type DumpInfo struct {
	Header  DumpHeader
	Records int64
	Format  Format // the volume's format record
}

// ErrBadDump is wrapped by every error about the content of a dump.
var ErrBadDump = errors.New("invalid dump")

// Dump writes every key of kv to w in one snapshot. progress, when not nil,
// is called now and then with the number of records written since the last
// call.
func Dump(ctx context.Context, kv KV, w io.Writer, progress func(n int64)) (*DumpInfo, error) {
	zw := gzip.NewWriter(w)
	bw := bufio.NewWriterSize(zw, 256<<10)
	h := sha256.New()
	out := io.MultiWriter(bw, h)
	info := &DumpInfo{}
	err := kv.View(ctx, func(t Txn) error {
		js, err := t.Get(key1(pFormat))
		if err != nil {
			return fmt.Errorf("read format record: %w", err)
		}
		if err := json.Unmarshal(js, &info.Format); err != nil {
			return fmt.Errorf("%w: format record: %v", errCorrupt, err)
		}
		info.Header = DumpHeader{Version: DumpVersion, UUID: info.Format.UUID, Created: time.Now().UTC()}
		hdr, err := json.Marshal(info.Header)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(out, dumpMagic); err != nil {
			return err
		}
		if err := writeField(out, hdr); err != nil {
			return err
		}
		var since int64
		err = t.Scan(nil, nil, func(k, v []byte) (bool, error) {
			if err := writeField(out, k); err != nil {
				return false, err
			}
			if err := writeField(out, v); err != nil {
				return false, err
			}
			info.Records++
			if since++; since == 10000 {
				if progress != nil {
					progress(since)
				}
				since = 0
				if err := ctx.Err(); err != nil {
					return false, err
				}
			}
			return true, nil
		})
		if progress != nil && since > 0 {
			progress(since)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	var tail []byte
	tail = binary.AppendUvarint(tail, 0)
	tail = binary.AppendUvarint(tail, uint64(info.Records))
	if _, err := out.Write(tail); err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	if _, err := bw.Write(h.Sum(nil)); err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	return info, nil
}

func writeField(w io.Writer, b []byte) error {
	var n [binary.MaxVarintLen64]byte
	if _, err := w.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// dumpReader reads a dump, hashing what it reads.
type dumpReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (d *dumpReader) ReadByte() (byte, error) {
	b, err := d.r.ReadByte()
	if err != nil {
		return 0, damaged(err)
	}
	d.h.Write([]byte{b})
	return b, nil
}

func (d *dumpReader) full(b []byte) error {
	if _, err := io.ReadFull(d.r, b); err != nil {
		return damaged(err)
	}
	d.h.Write(b)
	return nil
}

// damaged classifies a read error of the decompressed stream: an early end
// stays io.EOF/io.ErrUnexpectedEOF (see truncated); anything else (corrupt
// deflate data, a bad gzip checksum or header, a failing file) is a damaged
// dump, whatever layer noticed it.
func damaged(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrBadDump) {
		return err
	}
	return fmt.Errorf("%w: the dump is damaged: %v", ErrBadDump, err)
}

// uvarint reads a length; one that does not fit 64 bits (damage that got
// past gzip's checks, as a flipped byte can) is a damaged dump like any
// other, not a decoding error of its own.
func (d *dumpReader) uvarint() (uint64, error) {
	n, err := binary.ReadUvarint(d)
	if err != nil {
		return 0, damaged(err)
	}
	return n, nil
}

func (d *dumpReader) field(n uint64) ([]byte, error) {
	if n > maxDumpField {
		return nil, fmt.Errorf("%w: field of %d bytes", ErrBadDump, n)
	}
	b := make([]byte, n)
	return b, d.full(b)
}

// truncated turns the errors of a dump that ends too early into one message.
func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the dump is truncated (it ends before its trailer)", ErrBadDump)
	}
	if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) {
		return fmt.Errorf("%w: the dump is damaged: %v", ErrBadDump, err)
	}
	return err
}

// Load reads a dump from r. With kv nil it only verifies the dump (every
// record, the count and the checksum); otherwise it writes every record into
// kv in bounded transactions, the format record last, so that a load cut
// short leaves a database Open refuses rather than a half volume that looks
// whole. kv must be empty; Load does not check (the caller does, before it
// starts). Verify a dump that is not a plain file before loading it: Load
// finds damage only at the end.
func Load(ctx context.Context, r io.Reader, kv KV, progress func(n int64)) (*DumpInfo, error) {
	info, err := load(ctx, r, kv, progress)
	if err != nil {
		return nil, fmt.Errorf("load: %w", truncated(err))
	}
	return info, nil
}

// loadBatch bounds the records (and bytes) written per transaction.
const (
	loadBatch      = 1000
	loadBatchBytes = 4 << 20
)

func load(ctx context.Context, r io.Reader, kv KV, progress func(n int64)) (*DumpInfo, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: not a gzip stream (%v)", ErrBadDump, err)
	}
	defer zr.Close()
	d := &dumpReader{r: bufio.NewReaderSize(zr, 256<<10), h: sha256.New()}
	magic := make([]byte, len(dumpMagic))
	if err := d.full(magic); err != nil {
		return nil, err
	}
	if string(magic) != dumpMagic {
		return nil, fmt.Errorf("%w: not an objfs metadata dump", ErrBadDump)
	}
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	hdr, err := d.field(n)
	if err != nil {
		return nil, err
	}
	info := &DumpInfo{}
	if err := json.Unmarshal(hdr, &info.Header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBadDump, err)
	}
	if info.Header.Version != DumpVersion {
		return nil, fmt.Errorf("%w: dump version %d (this objfs reads version %d)", ErrBadDump, info.Header.Version, DumpVersion)
	}

	type kvPair struct{ k, v []byte }
	var batch []kvPair
	batchBytes := 0
	var formatRec []byte
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if kv == nil {
			if progress != nil {
				progress(int64(len(batch)))
			}
			batch, batchBytes = batch[:0], 0
			return nil
		}
		err := kv.Update(ctx, func(t Txn) error {
			for _, p := range batch {
				if err := t.Set(p.k, p.v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("write records: %w", err)
		}
		if progress != nil {
			progress(int64(len(batch)))
		}
		batch, batchBytes = batch[:0], 0
		return nil
	}
	var prev []byte
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		kn, err := d.uvarint()
		if err != nil {
			return nil, err
		}
		if kn == 0 {
			break
		}
		k, err := d.field(kn)
		if err != nil {
			return nil, err
		}
		vn, err := d.uvarint()
		if err != nil {
			return nil, err
		}
		v, err := d.field(vn)
		if err != nil {
			return nil, err
		}
		// A snapshot scan is in key order; anything else is damage.
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return nil, fmt.Errorf("%w: keys out of order at record %d", ErrBadDump, info.Records+1)
		}
		prev = k
		info.Records++
		if bytes.Equal(k, key1(pFormat)) {
			formatRec = v
			continue
		}
		batch = append(batch, kvPair{k, v})
		batchBytes += len(k) + len(v)
		if len(batch) >= loadBatch || batchBytes >= loadBatchBytes {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	count, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	sum := d.h.Sum(nil)
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(d.r, want); err != nil {
		return nil, damaged(err)
	}
	switch {
	case count != uint64(info.Records):
		return nil, fmt.Errorf("%w: the trailer counts %d records, the dump holds %d", ErrBadDump, count, info.Records)
	case !bytes.Equal(sum, want):
		return nil, fmt.Errorf("%w: checksum mismatch: the dump is damaged", ErrBadDump)
	case formatRec == nil:
		return nil, fmt.Errorf("%w: no format record", ErrBadDump)
	}
	// Nothing may follow the trailer (but the end of the gzip stream).
	if _, err := d.r.ReadByte(); err == nil {
		return nil, fmt.Errorf("%w: data after the trailer", ErrBadDump)
	} else if !errors.Is(err, io.EOF) {
		return nil, damaged(err)
	}
	if err := json.Unmarshal(formatRec, &info.Format); err != nil {
		return nil, fmt.Errorf("%w: format record: %v", ErrBadDump, err)
	}
	if err := info.Format.Validate(); err != nil {
		return nil, fmt.Errorf("%w: format record: %v", ErrBadDump, err)
	}
	if info.Format.UUID != info.Header.UUID {
		return nil, fmt.Errorf("%w: header names volume %s, format record %s", ErrBadDump, info.Header.UUID, info.Format.UUID)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if kv != nil {
		err := kv.Update(ctx, func(t Txn) error { return t.Set(key1(pFormat), formatRec) })
		if err != nil {
			return nil, fmt.Errorf("write format record: %w", err)
		}
		if err := kv.Sync(); err != nil {
			return nil, fmt.Errorf("sync: %w", err)
		}
	}
	return info, nil
}

// IsEmpty reports whether kv holds no key at all.
func IsEmpty(ctx context.Context, kv KV) (bool, error) {
	empty := true
	err := kv.View(ctx, func(t Txn) error {
		return t.Scan(nil, nil, func(k, v []byte) (bool, error) {
			empty = false
			return false, nil
		})
	})
	return empty, err
}
