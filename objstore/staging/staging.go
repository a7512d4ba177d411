// Package staging puts a durable local write-back log in front of an object
// store: Put appends the object to a log on local disk and returns once a
// group commit (one fsync shared by every Put waiting at that moment) has
// made it durable; uploads to the real store run in the background; Get
// serves staged objects from the log until they are uploaded. Objects left
// staged by a crash are found again and uploaded when the log is reopened.
//
// The log is a directory of segment files, each a sequence of records:
//
//	magic   uint32  0x6f626a73 ("objs")
//	kind    uint8   1 = object, 2 = done (uploaded or deleted: forget it)
//	keyLen  uint16
//	dataLen uint32
//	crc     uint32  CRC-32C of kind, keyLen, dataLen, key and data
//	key     keyLen bytes
//	data    dataLen bytes
//
// all integers little-endian. Replay reads the segments in order: an object
// record stages its key, a later done record forgets it. A record that is
// torn or fails its checksum ends the segment (everything after it was
// written after the last completed fsync, so no Put returned for it). A
// segment is deleted once every object in it is uploaded or deleted and
// every older segment is gone: a done record always sits in the segment of
// the record it cancels or a later one, so deleting in order never leaves a
// cancelled object without its done record.
package staging

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/objfs/objfs/objstore"
)

const (
	recMagic   = 0x6f626a73
	kindObject = 1
	kindDone   = 2
	headerLen  = 4 + 1 + 2 + 4 + 4
	segSuffix  = ".seg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options tune a staging log.
type Options struct {
	// MaxBytes bounds the staged bytes not yet uploaded: a Put beyond it
	// waits for uploads (back pressure). Default 2 GiB.
	MaxBytes int64
	// SegmentBytes is the size at which a new segment file is started.
	// Default 256 MiB.
	SegmentBytes int64
	// Uploaders is the number of parallel background uploads. Default 8.
	Uploaders int
	// RetryMax caps the wait between attempts to upload one object.
	// Default 30 s.
	RetryMax time.Duration
	// MemBytes bounds the staged data also kept in memory, by reference,
	// so that uploads and reads need not read it back from the log. Only
	// for callers that never modify or reuse data after Put. Default 0:
	// none.
	MemBytes int64
	// DirectFrom, when positive, sends objects of at least that many bytes
	// straight to the backend (Put returns when the backend's Put does)
	// instead of through the log. It is for backends as durable and as
	// near as the log itself, such as a local directory, where staging a
	// big object only writes it twice; small objects still share the
	// log's group commits. 0: everything is staged.
	DirectFrom int
	// UploadDelay holds a staged object back this long before its upload
	// may start, so that one deleted meanwhile (a block a compaction
	// replaced, a temporary file's) is never uploaded at all. It is for
	// backends as durable as the log itself (a local directory), where
	// waiting costs nothing. Drain uploads at once, and objects found in
	// the log at Open and retries are not held back. 0: no delay.
	UploadDelay time.Duration
	// Admit, when set, is asked before an object of n bytes is staged
	// (or sent straight to the backend); an error refuses the Put, and
	// done is called once the object is written. It keeps a disk the log
	// shares with other files from filling up.
	Admit func(n int64) (done func(), err error)
	// SpaceWait, when positive, says that uploads give the log's disk
	// space back (the backend is on another file system): a Put that
	// Admit refuses for lack of space (an error wrapping ENOSPC) waits
	// for uploads and asks again, and fails only when no upload has
	// finished for SpaceWait, or when nothing is staged that an upload
	// would free. 0: a refusal fails the Put at once.
	SpaceWait time.Duration
	// AdmitUpload is Admit for an upload to the backend: an error fails
	// the attempt, which is retried later. For a backend on the same
	// disk, whose copy takes space until the log's segment is dropped.
	AdmitUpload func(n int64) (done func(), err error)
	// Paused starts the log with uploads stopped (tests; Resume starts
	// them).
	Paused bool
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 2 << 30
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = 256 << 20
	}
	if o.Uploaders <= 0 {
		o.Uploaders = 8
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Store is an objstore.Store that stages writes in a local log and uploads
// them to its backend in the background.
type Store struct {
	backend objstore.Store
	dir     string
	opts    Options
	log     *slog.Logger

	// appendMu serializes appends to the current segment (and rotation).
	appendMu sync.Mutex

	mu      sync.Mutex // guards everything below
	cond    *sync.Cond // broadcast on any change of state below
	segs    []*segment // open segments, oldest first; the last one is appended to
	pending map[string]*entry
	queue   []string  // keys waiting for an upload worker
	delayed []delayed // keys held back (UploadDelay), oldest first
	drains  int       // Drains running: while any is, nothing is held back
	bytes   int64     // staged bytes not yet uploaded
	memory  int64     // bytes of entries' data kept in memory
	paused  bool
	closing bool
	failed  error // a failed fsync: nothing staged since can be trusted

	uploaded atomic.Uint64 // objects uploaded since open
	direct   atomic.Uint64 // objects put straight to the backend (DirectFrom)
	retries  atomic.Uint64 // failed upload attempts since open

	progressAt    atomic.Int64  // when an upload last finished, or uploads got work after none (UnixNano)
	spaceWaits    atomic.Uint64 // Puts that waited for uploads to free space
	spaceRefused  atomic.Uint64 // of which failed all the same
	spaceWaiting  int           // Puts waiting for space now (under mu)
	spaceWarned   time.Time     // when the log last said so (under mu)
	refusalWarned time.Time     // when it last said it refused one (under mu)
	admitted      int           // Puts Admit let through, not yet returned (under mu)

	wg     sync.WaitGroup
	cancel context.CancelFunc
	wake   chan struct{} // makes the releaser look again (a Drain began, room is short)
}

// delayed is a staged object held back until due (Options.UploadDelay).
type delayed struct {
	key string
	due time.Time
}

type segment struct {
	id      uint64
	f       *os.File
	written int64 // bytes appended and complete (under appendMu; read under mu via atomic)
	synced  int64 // bytes known durable (under mu)
	syncing bool  // an fsync is running (under mu)
	live    int   // pending entries whose record is in this segment (under mu)
	closed  bool
}

type entry struct {
	seg       *segment
	off       int64 // offset of the data in seg
	size      int
	end       int64  // offset just past the record, for durability waits
	data      []byte // the object, while kept in memory (else read from the log)
	uploading bool
	retry     time.Duration
}

var _ objstore.Store = (*Store)(nil)

// Open opens (creating if needed) the staging log in dir in front of
// backend, replays what an earlier run left staged and starts uploading it.
// The caller must hold the volume exclusively: two processes must never
// share a log.
func Open(dir string, backend objstore.Store, opts Options) (*Store, error) {
	opts.defaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("staging: create %s: %w", dir, err)
	}
	s := &Store{backend: backend, dir: dir, opts: opts, log: opts.Logger,
		pending: map[string]*entry{}, paused: opts.Paused, wake: make(chan struct{}, 1)}
	s.cond = sync.NewCond(&s.mu)
	s.progressAt.Store(time.Now().UnixNano())
	if err := s.replay(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.rotate(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.mu.Lock()
	s.dropDoneSegments()
	s.mu.Unlock()
	if n := len(s.pending); n > 0 {
		s.log.Info("staging: uploading objects staged before the last shutdown", "objects", n, "bytes", s.bytes)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for range opts.Uploaders {
		s.wg.Add(1)
		go s.uploader(ctx)
	}
	if opts.UploadDelay > 0 {
		s.wg.Add(1)
		go s.releaser(ctx)
	}
	return s, nil
}

// String describes the backend; staging is an implementation detail.
func (s *Store) String() string { return s.backend.String() }

// Backend returns the store that staged objects are uploaded to.
func (s *Store) Backend() objstore.Store { return s.backend }

// Stats is a snapshot of the log's state.
type Stats struct {
	Objects  int    // staged objects not yet uploaded
	Bytes    int64  // their size
	Queued   int    // of which waiting for an upload worker
	Delayed  int    // of which held back (Options.UploadDelay)
	Segments int    // segment files on disk
	Uploaded uint64 // objects uploaded since open
	Direct   uint64 // objects written straight to the backend since open
	Retries  uint64 // failed upload attempts since open
	// SpaceWaits counts the Puts since open that Admit refused and that
	// waited for uploads to free space (Options.SpaceWait); SpaceRefused
	// those of them that failed all the same.
	SpaceWaits, SpaceRefused uint64
}

// Stats returns the current counts.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Objects: len(s.pending), Bytes: s.bytes, Queued: len(s.queue), Delayed: len(s.delayed),
		Segments: len(s.segs), Uploaded: s.uploaded.Load(), Direct: s.direct.Load(), Retries: s.retries.Load(),
		SpaceWaits: s.spaceWaits.Load(), SpaceRefused: s.spaceRefused.Load()}
}

// Put stages data under key and returns once it is durable in the log.
// With Options.MemBytes, the store keeps a reference to data until it is
// uploaded.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	if !objstore.ValidKey(key) || len(key) > 0xffff {
		return fmt.Errorf("staging: put: invalid key %q", key)
	}
	if uint64(len(data)) > 0xffffffff-headerLen {
		return fmt.Errorf("staging: put %q: object too large (%d bytes)", key, len(data))
	}
	if s.opts.Admit != nil {
		done, err := s.admit(ctx, int64(len(data)))
		if err != nil {
			return fmt.Errorf("staging: put %q: %w", key, err)
		}
		s.mu.Lock()
		s.admitted++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.admitted--
			s.mu.Unlock()
			done()
		}()
	}
	if s.opts.DirectFrom > 0 && len(data) >= s.opts.DirectFrom {
		if err := s.failedErr(); err != nil {
			return fmt.Errorf("staging: put %q: %w", key, err)
		}
		s.direct.Add(1)
		return s.backend.Put(ctx, key, data)
	}
	if err := s.waitForRoom(ctx, int64(len(data))); err != nil {
		return fmt.Errorf("staging: put %q: %w", key, err)
	}
	s.mu.Lock()
	if e := s.pending[key]; e != nil {
		// Already staged (same content: keys name content): only its
		// durability is left to wait for.
		seg, end := e.seg, e.end
		s.mu.Unlock()
		return s.waitDurable(ctx, seg, end)
	}
	s.mu.Unlock()

	seg, end, err := s.appendRecord(kindObject, key, data)
	if err != nil {
		return fmt.Errorf("staging: put %q: %w", key, err)
	}
	return s.waitDurable(ctx, seg, end)
}

// admit asks Options.Admit for room for n bytes. With SpaceWait, a
// refusal for lack of space waits for uploads to give the log's space back
// and asks again, while they make progress.
func (s *Store) admit(ctx context.Context, n int64) (done func(), err error) {
	done, err = s.opts.Admit(n)
	if err == nil || s.opts.SpaceWait <= 0 || !errors.Is(err, syscall.ENOSPC) {
		return done, err
	}
	s.spaceWaits.Add(1)
	s.mu.Lock()
	s.spaceWaiting++
	if now := time.Now(); s.spaceWaiting == 1 && now.Sub(s.spaceWarned) > time.Minute {
		s.spaceWarned = now
		s.log.Warn("staging: the log's disk is short of space: writes wait for uploads to free it", "dir", s.dir, "staged_bytes", s.bytes, "err", err)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.spaceWaiting--
		if err == nil {
			return
		}
		s.spaceRefused.Add(1)
		// With the store down every write is refused: say so once a
		// minute, with the count (Stats has it too).
		if now := time.Now(); now.Sub(s.refusalWarned) > time.Minute {
			s.refusalWarned = now
			s.log.Warn("staging: writes refused: uploads freed no space for them", "dir", s.dir, "refused_since_open", s.spaceRefused.Load(), "err", err)
		}
	}()
	tick := time.NewTicker(spacePoll)
	defer tick.Stop()
	for {
		more := s.releasable()
		if done, err = s.opts.Admit(n); err == nil || !errors.Is(err, syscall.ENOSPC) {
			return done, err
		}
		if !more {
			return nil, err // nothing of the log's left to give back
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for uploads to free space: %w", ctx.Err())
		case <-tick.C:
		}
		if s.closingNow() {
			return nil, fmt.Errorf("staging log closed while waiting for uploads to free space: %w", err)
		}
		if s.stalled() {
			return nil, fmt.Errorf("no upload to %s finished for %v to free space: %w", s.backend, s.opts.SpaceWait, err)
		}
	}
}

// stalled reports whether no upload has finished for SpaceWait while
// uploads had work. It is the log's, not one Put's, so that with the store
// down each Put after the first fails at once, rather than each waiting in
// turn (a commit stores its blocks one after another).
func (s *Store) stalled() bool {
	return time.Since(time.Unix(0, s.progressAt.Load())) > s.opts.SpaceWait
}

// spacePoll is how often a Put waiting for space asks Admit again.
const spacePoll = 50 * time.Millisecond

// Release gives back the disk space of what is already uploaded, for a
// caller short of space: a current segment with nothing left in it to
// upload is closed (a new one takes the appends) and deleted with the
// other segments that are done. It returns the bytes freed.
func (s *Store) Release(int64) int64 {
	freed, _ := s.release(false)
	return freed
}

// releasable reports whether uploads can give more of the log's disk space
// back, after dropping what they already freed: staged objects, or objects
// being staged (Admit counts them against the space until they are).
func (s *Store) releasable() bool {
	_, more := s.release(true)
	return more
}

// release deletes the segments that are done and returns their bytes, and
// whether more will be freed once uploads finish. Segments are deleted
// whole, so the current one is closed first when it holds more than a
// little (rotateForSpace) and nothing left to upload, or, with uploading
// (a writer waits for uploads), objects still to upload; not when it
// holds less, so that waiting writers do not make a segment of every few
// blocks.
func (s *Store) release(uploading bool) (freed int64, more bool) {
	s.appendMu.Lock()
	s.mu.Lock()
	if s.closing || len(s.segs) == 0 {
		s.mu.Unlock()
		s.appendMu.Unlock()
		return 0, false
	}
	seg := s.segs[len(s.segs)-1]
	rotate := seg.written >= rotateForSpace && (seg.live == 0 || uploading)
	s.mu.Unlock()
	if rotate {
		if err := s.rotate(); err != nil {
			s.log.Debug("staging: new segment to free space", "err", err)
		}
	}
	s.appendMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	freed = s.dropDoneSegments()
	return freed, len(s.segs) > 1 || s.admitted > 0
}

// rotateForSpace is the size from which a segment with nothing left to
// upload is closed, so that it can be deleted, when space is short.
const rotateForSpace = 64 << 10

// closingNow reports whether Close has begun.
func (s *Store) closingNow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// waitForRoom blocks while the staged bytes are over the limit (and
// something is staged: an object larger than the limit still goes alone).
func (s *Store) waitForRoom(ctx context.Context, n int64) error {
	defer s.wakeWhenDone(ctx)()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.delayed) > 0 && !s.holdingBack() {
		s.nudge() // what is held back must go now
	}
	for s.bytes > 0 && s.bytes+n > s.opts.MaxBytes {
		if s.closing {
			return errors.New("staging log closed")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		s.cond.Wait()
	}
	if s.failed != nil {
		return s.failed
	}
	return nil
}

// wakeWhenDone makes the end of ctx wake every waiter on s.cond, so that
// waits under mu can notice it; call the returned func when done waiting.
func (s *Store) wakeWhenDone(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
}

// appendRecord writes one record at the end of the current segment,
// starting a new segment when it is full, and returns the segment and the
// offset just past the record. An object record becomes pending in the same
// step, so its segment can never be dropped as done in between.
func (s *Store) appendRecord(kind byte, key string, data []byte) (*segment, int64, error) {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	seg := s.current()
	if seg.written > 0 && seg.written+headerLen+int64(len(key)+len(data)) > s.opts.SegmentBytes {
		if err := s.rotate(); err != nil {
			return nil, 0, err
		}
		seg = s.current()
	}
	rec := make([]byte, headerLen+len(key))
	binary.LittleEndian.PutUint32(rec[0:], recMagic)
	rec[4] = kind
	binary.LittleEndian.PutUint16(rec[5:], uint16(len(key)))
	binary.LittleEndian.PutUint32(rec[7:], uint32(len(data)))
	copy(rec[headerLen:], key)
	crc := crc32.Update(0, castagnoli, rec[4:11])
	crc = crc32.Update(crc, castagnoli, rec[headerLen:])
	crc = crc32.Update(crc, castagnoli, data)
	binary.LittleEndian.PutUint32(rec[11:], crc)
	off := seg.written
	// Two writes rather than one copy of a multi-MiB block; a crash
	// between them leaves a torn record, which replay cuts off.
	_, err := seg.f.WriteAt(rec, off)
	if err == nil && len(data) > 0 {
		_, err = seg.f.WriteAt(data, off+int64(len(rec)))
	}
	if err != nil {
		err = fmt.Errorf("append to %s: %w", seg.f.Name(), err)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			// A full disk: the tail past seg.written is cut off
			// again, so the log is as it was and takes the next
			// append once there is room.
			if terr := seg.f.Truncate(off); terr == nil {
				return nil, 0, err
			}
		}
		return nil, 0, s.fail(err)
	}
	end := off + int64(len(rec)+len(data))
	s.mu.Lock()
	seg.written = end
	if kind == kindObject && s.pending[key] == nil {
		e := &entry{seg: seg, off: off + int64(len(rec)), size: len(data), end: end}
		if s.memory+int64(len(data)) <= s.opts.MemBytes {
			e.data = data
			s.memory += int64(len(data))
		}
		if len(s.pending) == 0 {
			s.progressAt.Store(time.Now().UnixNano()) // uploads have work again
		}
		s.pending[key] = e
		seg.live++
		s.bytes += int64(len(data))
		switch {
		case s.opts.UploadDelay > 0 && s.holdingBack():
			s.delayed = append(s.delayed, delayed{key: key, due: time.Now().Add(s.opts.UploadDelay)})
		default:
			// Past half of MaxBytes, what is held back goes first, in
			// order, here rather than when the releaser next looks: by
			// then this object's upload may have brought the log back
			// to half, and older objects would stay held back behind
			// newer ones that went.
			for _, d := range s.delayed {
				s.queue = append(s.queue, d.key)
			}
			s.delayed = s.delayed[:0]
			s.queue = append(s.queue, key)
			s.cond.Broadcast()
		}
	}
	s.mu.Unlock()
	return seg, end, nil
}

// current returns the segment being appended to (appendMu held).
func (s *Store) current() *segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.segs[len(s.segs)-1]
}

// rotate starts a new segment file and makes its name durable. The
// segment it replaces is synced first, so that records in the new one are
// never durable while older ones are not (replay stops at the first gap).
func (s *Store) rotate() error {
	var id uint64 = 1
	s.mu.Lock()
	var prev *segment
	if n := len(s.segs); n > 0 {
		prev = s.segs[n-1]
		id = prev.id + 1
	}
	s.mu.Unlock()
	if prev != nil {
		if err := s.waitDurable(context.Background(), prev, prev.written); err != nil {
			return err
		}
	}
	name := filepath.Join(s.dir, fmt.Sprintf("%016x%s", id, segSuffix))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		// Nothing changed: the current segment takes appends on.
		return fmt.Errorf("create segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		_ = f.Close()
		return s.fail(fmt.Errorf("create segment: %w", err))
	}
	s.mu.Lock()
	s.segs = append(s.segs, &segment{id: id, f: f})
	s.mu.Unlock()
	return nil
}

// waitDurable returns once seg is synced up to end. Concurrent waiters
// share fsyncs: whoever finds no fsync running starts one covering
// everything written so far, the others wait for it (group commit).
func (s *Store) waitDurable(ctx context.Context, seg *segment, end int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for seg.synced < end {
		if s.failed != nil {
			return s.failed
		}
		if seg.closed {
			// Closed only when all of it was synced and done.
			return nil
		}
		if seg.syncing {
			s.cond.Wait()
			continue
		}
		seg.syncing = true
		target := seg.written
		s.mu.Unlock()
		err := syscall.Fdatasync(int(seg.f.Fd()))
		s.mu.Lock()
		seg.syncing = false
		if err != nil {
			s.failed = fmt.Errorf("staging log fsync %s: %w (the log refuses writes until restarted)", seg.f.Name(), err)
			s.log.Error("staging log fsync failed", "segment", seg.f.Name(), "err", err)
		} else {
			seg.synced = max(seg.synced, target)
		}
		s.cond.Broadcast()
	}
	return ctx.Err()
}

// failedErr returns the log's write error, if any.
func (s *Store) failedErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// fail records a write error of the log: after it, Puts fail until restart,
// because the log's tail may no longer be what replay expects.
func (s *Store) fail(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = fmt.Errorf("staging log: %w (the log refuses writes until restarted)", err)
		s.log.Error("staging log write failed", "err", err)
		s.cond.Broadcast()
	}
	return s.failed
}

// Get returns a staged object from the log, or asks the backend.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	return s.GetInto(ctx, key, nil)
}

// GetInto implements objstore.IntoGetter: an object that is not staged (any
// more) is read into buf when the backend can; a staged one comes from the
// log as Get would.
func (s *Store) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
	data, _, err := s.GetVerified(ctx, key, buf)
	return data, err
}

// GetVerified implements objstore.VerifyingGetter: a staged object, from
// the log, is not verified (the log checks only that its record is whole);
// one from the backend is as the backend says.
func (s *Store) GetVerified(ctx context.Context, key string, buf []byte) ([]byte, bool, error) {
	s.mu.Lock()
	e := s.pending[key]
	var seg *segment
	var off int64
	var size int
	var data []byte
	if e != nil {
		seg, off, size, data = e.seg, e.off, e.size, e.data
	}
	s.mu.Unlock()
	if data != nil {
		return data, false, nil
	}
	if e != nil {
		data, err := readRecordData(seg.f, off, key, size)
		if err == nil {
			return data, false, nil
		}
		// Uploaded and its segment closed meanwhile, or damaged: the
		// backend has it, or says why not.
		s.log.Debug("staging: read staged object", "key", key, "err", err)
	}
	return objstore.GetVerified(ctx, s.backend, key, buf)
}

// readRecordData reads and checks the record whose data starts at off.
func readRecordData(f *os.File, off int64, key string, size int) ([]byte, error) {
	rec, err := readRecordInto(nil, f, off, key, size)
	if err != nil {
		return nil, err
	}
	return rec[headerLen+len(key):], nil
}

// uploadBufs recycles the buffers uploads read staged objects into:
// touching fresh memory costs a page fault per 4 KiB, which made uploads
// use more CPU than the rest of the write path.
var uploadBufs sync.Pool

// readRecordInto reads and checks the whole record whose data starts at
// off, into buf when it is big enough.
func readRecordInto(buf []byte, f *os.File, off int64, key string, size int) ([]byte, error) {
	start := off - headerLen - int64(len(key))
	n := headerLen + len(key) + size
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := f.ReadAt(buf, start); err != nil {
		return nil, err
	}
	if _, _, err := parseRecord(buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// parseRecord checks the record at the start of buf and returns its kind and
// total length.
func parseRecord(buf []byte) (kind byte, n int, err error) {
	if len(buf) < headerLen {
		return 0, 0, io.ErrUnexpectedEOF
	}
	if binary.LittleEndian.Uint32(buf) != recMagic {
		return 0, 0, errors.New("bad record magic")
	}
	kind = buf[4]
	klen := int(binary.LittleEndian.Uint16(buf[5:]))
	dlen := int(binary.LittleEndian.Uint32(buf[7:]))
	n = headerLen + klen + dlen
	if len(buf) < n {
		return 0, 0, io.ErrUnexpectedEOF
	}
	crc := crc32.Update(0, castagnoli, buf[4:11])
	crc = crc32.Update(crc, castagnoli, buf[headerLen:n])
	if crc != binary.LittleEndian.Uint32(buf[11:]) {
		return 0, 0, errors.New("record checksum mismatch")
	}
	if kind != kindObject && kind != kindDone {
		return 0, 0, fmt.Errorf("unknown record kind %d", kind)
	}
	return kind, n, nil
}

// Delete forgets a staged object (waiting out an upload of it in progress)
// and deletes it from the backend.
func (s *Store) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	for s.pending[key] != nil && s.pending[key].uploading {
		s.cond.Wait()
	}
	e := s.pending[key]
	if e != nil {
		s.forgetLocked(key, e)
	}
	s.mu.Unlock()
	if e != nil {
		if _, _, err := s.appendRecord(kindDone, key, nil); err != nil {
			return fmt.Errorf("staging: delete %q: %w", key, err)
		}
	}
	return s.backend.Delete(ctx, key)
}

// forgetLocked drops a pending entry (mu held). Its key may stay queued:
// workers skip keys that are no longer pending.
func (s *Store) forgetLocked(key string, e *entry) {
	delete(s.pending, key)
	e.seg.live--
	s.bytes -= int64(e.size)
	if e.data != nil {
		s.memory -= int64(len(e.data))
		e.data = nil
	}
	s.cond.Broadcast()
}

// List merges the backend's listing with the staged objects, so that a
// staged object is never mistaken for a missing one.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	type kv struct {
		key  string
		size int64
	}
	s.mu.Lock()
	var staged []kv
	for k, e := range s.pending {
		if strings.HasPrefix(k, prefix) {
			staged = append(staged, kv{k, int64(e.size)})
		}
	}
	s.mu.Unlock()
	sort.Slice(staged, func(i, j int) bool { return staged[i].key < staged[j].key })
	i := 0
	err := s.backend.List(ctx, prefix, func(key string, size int64) error {
		for i < len(staged) && staged[i].key < key {
			if err := fn(staged[i].key, staged[i].size); err != nil {
				return err
			}
			i++
		}
		if i < len(staged) && staged[i].key == key {
			i++
		}
		return fn(key, size)
	})
	if err != nil {
		return err
	}
	for ; i < len(staged); i++ {
		if err := fn(staged[i].key, staged[i].size); err != nil {
			return err
		}
	}
	return nil
}

// Pause stops starting uploads; Resume starts them again.
func (s *Store) Pause() {
	s.mu.Lock()
	s.paused = true
	s.mu.Unlock()
}

// Resume lets the upload workers go on.
func (s *Store) Resume() {
	s.mu.Lock()
	s.paused = false
	s.cond.Broadcast()
	s.mu.Unlock()
}

// releaser queues the objects held back (Options.UploadDelay) for upload
// as they fall due, and all at once while a Drain runs or while the log
// holds more than half of Options.MaxBytes.
func (s *Store) releaser(ctx context.Context) {
	defer s.wg.Done()
	timer := time.NewTimer(s.opts.UploadDelay)
	defer timer.Stop()
	for {
		s.mu.Lock()
		now := time.Now()
		n := 0
		for n < len(s.delayed) && (!s.holdingBack() || !s.delayed[n].due.After(now)) {
			// A key deleted meanwhile is no longer pending; the workers
			// skip it.
			s.queue = append(s.queue, s.delayed[n].key)
			n++
		}
		if n > 0 {
			s.delayed = slices.Delete(s.delayed, 0, n)
			s.cond.Broadcast()
		}
		next := s.opts.UploadDelay
		if len(s.delayed) > 0 {
			next = s.delayed[0].due.Sub(now)
		}
		s.mu.Unlock()
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// holdingBack reports whether new objects may be held back now (mu held):
// not while a Drain runs, nor past half of MaxBytes, where held-back
// objects would make writers wait for room that only uploads can free.
func (s *Store) holdingBack() bool {
	return s.drains == 0 && s.bytes <= s.opts.MaxBytes/2
}

// nudge makes the releaser look at the objects held back now.
func (s *Store) nudge() {
	select {
	case s.wake <- struct{}{}:
	default: // already told
	}
}

// Drain waits until nothing is left to upload, holding nothing back
// meanwhile (Options.UploadDelay). It fails when ctx ends, when uploads
// are paused, or, with stall > 0, when no upload has finished for stall
// (the store takes nothing), naming what is left.
func (s *Store) Drain(ctx context.Context, stall time.Duration) error {
	s.mu.Lock()
	s.drains++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.drains--
		s.mu.Unlock()
	}()
	s.nudge()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	progress, lastDone := time.Now(), s.uploaded.Load()
	for {
		s.mu.Lock()
		objects, bytes, paused := len(s.pending), s.bytes, s.paused
		s.mu.Unlock()
		done := s.uploaded.Load()
		switch {
		case objects == 0:
			return nil
		case paused:
			return errors.New("staging: uploads are paused")
		case done != lastDone:
			progress, lastDone = time.Now(), done
		case stall > 0 && time.Since(progress) > stall:
			return fmt.Errorf("staging: %d blocks (%d bytes) not uploaded: no upload to %s finished for %v", objects, bytes, s.backend, stall)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("staging: %d blocks (%d bytes) not uploaded: %w", objects, bytes, ctx.Err())
		case <-tick.C:
		}
	}
}

// uploader is one background upload worker.
func (s *Store) uploader(ctx context.Context) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		for !s.closing && (s.paused || len(s.queue) == 0) {
			s.cond.Wait()
		}
		if s.closing {
			s.mu.Unlock()
			return
		}
		key := s.queue[0]
		s.queue = s.queue[1:]
		e := s.pending[key]
		if e == nil || e.uploading {
			s.mu.Unlock()
			continue
		}
		e.uploading = true
		seg, off, size, data := e.seg, e.off, e.size, e.data
		s.mu.Unlock()

		err := s.upload(ctx, seg, off, key, size, data)

		s.mu.Lock()
		e.uploading = false
		if err == nil {
			s.forgetLocked(key, e)
			s.uploaded.Add(1)
			s.progressAt.Store(time.Now().UnixNano())
			s.mu.Unlock()
			if _, _, aerr := s.appendRecord(kindDone, key, nil); aerr != nil {
				s.log.Warn("staging: record upload", "key", key, "err", aerr)
			}
			s.mu.Lock()
			s.dropDoneSegments()
			s.mu.Unlock()
			continue
		}
		s.cond.Broadcast()
		e.retry = min(max(2*e.retry, 100*time.Millisecond), s.opts.RetryMax)
		wait := e.retry/2 + rand.N(e.retry/2+1)
		s.mu.Unlock()
		s.retries.Add(1)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("staging: upload failed; will retry", "key", key, "store", s.backend.String(), "retry_in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		s.mu.Lock()
		if s.pending[key] == e {
			s.queue = append(s.queue, key)
			s.cond.Broadcast()
		}
		s.mu.Unlock()
	}
}

// upload puts one staged object to the backend. Stores do not keep data
// after Put returns (objstore.Store), so the read buffer is recycled.
func (s *Store) upload(ctx context.Context, seg *segment, off int64, key string, size int, data []byte) error {
	if data == nil {
		var buf []byte
		if p, ok := uploadBufs.Get().(*[]byte); ok {
			buf = *p
		}
		defer func() { uploadBufs.Put(&buf) }()
		rec, err := readRecordInto(buf, seg.f, off, key, size)
		if err != nil {
			return fmt.Errorf("read staged object: %w", err)
		}
		buf = rec[:0]
		data = rec[headerLen+len(key):]
	}
	if s.opts.AdmitUpload != nil {
		done, err := s.opts.AdmitUpload(int64(len(data)))
		if err != nil {
			return err
		}
		defer done()
	}
	return s.backend.Put(ctx, key, data)
}

// dropDoneSegments deletes the oldest segments while they hold nothing
// pending, and returns their bytes; the segment being appended to stays
// (mu held).
func (s *Store) dropDoneSegments() (freed int64) {
	for len(s.segs) > 1 && s.segs[0].live == 0 && !s.segs[0].syncing {
		seg := s.segs[0]
		seg.closed = true
		s.segs = s.segs[1:]
		name := seg.f.Name()
		_ = seg.f.Close()
		if err := os.Remove(name); err != nil {
			s.log.Warn("staging: remove uploaded segment", "segment", name, "err", err)
			continue
		}
		freed += seg.written
	}
	return freed
}

// Close stops the upload workers (what is not uploaded stays staged and is
// uploaded after the next Open), syncs the log and closes it. Call Drain
// first to upload everything.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	var errs []error
	s.mu.Lock()
	segs := slices.Clone(s.segs)
	s.mu.Unlock()
	// Done records need no fsync for safety, but a clean shutdown should
	// not make the next start upload again.
	if n := len(segs); n > 0 {
		if err := s.waitDurable(context.Background(), segs[n-1], segs[n-1].written); err != nil {
			errs = append(errs, err)
		}
	}
	s.mu.Lock()
	if len(s.pending) == 0 {
		// Everything uploaded: the whole log can go.
		for _, seg := range s.segs {
			seg.closed = true
			_ = seg.f.Close()
			if err := os.Remove(seg.f.Name()); err != nil {
				errs = append(errs, fmt.Errorf("staging: remove segment: %w", err))
			}
		}
		s.segs = nil
	}
	s.mu.Unlock()
	s.closeFiles()
	return errors.Join(append(errs, s.backend.Close())...)
}

func (s *Store) closeFiles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seg := range s.segs {
		if !seg.closed {
			seg.closed = true
			_ = seg.f.Close()
		}
	}
}

// replay reads every segment left in dir, oldest first, and rebuilds the
// pending set. A torn or damaged tail is cut off.
func (s *Store) replay() error {
	names, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("staging: read %s: %w", s.dir, err)
	}
	var ids []uint64
	for _, de := range names {
		n := de.Name()
		if !strings.HasSuffix(n, segSuffix) {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(n, segSuffix), 16, 64)
		if err != nil || id == 0 {
			return fmt.Errorf("staging: unexpected file %s in %s", n, s.dir)
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := s.replaySegment(id); err != nil {
			return err
		}
	}
	for k := range s.pending {
		s.queue = append(s.queue, k)
	}
	sort.Strings(s.queue)
	return nil
}

func (s *Store) replaySegment(id uint64) error {
	name := filepath.Join(s.dir, fmt.Sprintf("%016x%s", id, segSuffix))
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("staging: open segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("staging: open segment: %w", err)
	}
	seg := &segment{id: id, f: f}
	s.segs = append(s.segs, seg)
	var off int64
	hdr := make([]byte, headerLen)
	for off < st.Size() {
		if _, err := f.ReadAt(hdr, off); err != nil {
			break
		}
		klen := int64(binary.LittleEndian.Uint16(hdr[5:]))
		dlen := int64(binary.LittleEndian.Uint32(hdr[7:]))
		if binary.LittleEndian.Uint32(hdr) != recMagic || off+headerLen+klen+dlen > st.Size() {
			break
		}
		rec := make([]byte, headerLen+klen+dlen)
		if _, err := f.ReadAt(rec, off); err != nil {
			break
		}
		kind, n, err := parseRecord(rec)
		if err != nil {
			break
		}
		key := string(rec[headerLen : headerLen+klen])
		if old := s.pending[key]; old != nil {
			delete(s.pending, key)
			old.seg.live--
			s.bytes -= int64(old.size)
		}
		if kind == kindObject {
			s.pending[key] = &entry{seg: seg, off: off + headerLen + klen, size: int(dlen), end: off + int64(n)}
			seg.live++
			s.bytes += dlen
		}
		off += int64(n)
	}
	if off < st.Size() {
		s.log.Warn("staging: cutting off a torn or damaged tail (written after the last fsync)",
			"segment", name, "at", off, "size", st.Size())
		if err := f.Truncate(off); err != nil {
			return fmt.Errorf("staging: truncate torn segment: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("staging: truncate torn segment: %w", err)
		}
	}
	seg.written, seg.synced = off, off
	return nil
}

// syncDir fsyncs a directory so that entries created or removed in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
