package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestCrashAcknowledgedWritesSurvive: NFS WRITEs and FUSE fsyncs are
// acknowledged, then the server gets SIGKILL, then it restarts: every
// acknowledged byte must be there.
//
// Each round mounts the volume with --nfs on a fresh loopback port and runs,
// for a random 0.5-3 s, 2-3 FUSE writers and 2 NFS writers, each on its own
// files in the round's directory: new files of varied sizes (empty to 16 KiB,
// stored inline; about 100 KiB; 5-12 MiB, crossing the 4 MiB block size),
// overwrites at random (also unaligned) offsets, writes past EOF that leave
// holes, and (FUSE) truncations. Then the server is killed with SIGKILL in
// the middle of that, restarted, and every file of every round so far is
// read back through FUSE and compared with an in-memory model.
//
// What counts as acknowledged follows the README's durability promise:
//   - a name, once open(O_CREAT) (FUSE) or CREATE (NFS) returned: "a
//     namespace change returns ... survives kill -9"; the file is then at
//     least the empty file;
//   - FUSE data and truncations, once fsync(fd) returned 0;
//   - NFS data, once the reply of a FILE_SYNC WRITE said OK and committed
//     FILE_SYNC (per WRITE: a large write is acknowledged chunk by chunk), or
//     for UNSTABLE writes, once the COMMIT that follows them returned OK with
//     the verifier the WRITEs returned.
//
// A change in flight at the kill may have been applied in part: its file
// must hold the acknowledged bytes everywhere outside the changed range, and
// inside it, and between the old and new size, each byte may be old or new
// (or zero where the file had no byte); the size may be anything between the
// old and the new size. A file with nothing in flight must be exact.
//
// FUSE writers keep some descriptors open across changes: every close()
// commits in objfs, so a change followed by close would hide an fsync that
// does not make data durable by itself.
//
// After each verified restart, a file whose change was in flight and now
// reads as wholly old or wholly new is fsynced and that content becomes its
// acknowledged one, so later rounds check it exactly.
//
// Once per round one NFS-written file is also read back through a new
// go-nfs-client connection, and after the last round the volume is unmounted
// cleanly and `objfs fsck` must report 0 errors.
//
// OBJFS_ACK_CRASH_ROUNDS sets the number of rounds (default 4),
// OBJFS_ACK_CRASH_SEED the seed of sizes, offsets, operations and kill
// delays (the interleaving of the writers with the kill is timing, not
// seed).
func TestCrashAcknowledgedWritesSurvive(t *testing.T) {
	requirePrereqs(t)
	testAckCrash(t, newVolume(t), 4)
}

// TestCrashAcknowledgedWritesSurviveS3SmallDisk is the same on a volume
// whose store is S3 (MinIO) and whose directory (metadata and staging log)
// is on a 64 MiB disk that the rounds' writes overfill: writers wait for
// uploads, the log starts segments early to free space, and the kills land
// in the middle of that.
func TestCrashAcknowledgedWritesSurviveS3SmallDisk(t *testing.T) {
	_, v, _ := s3VolumeOnSmallDisk(t, "64m")
	testAckCrash(t, v, 3)
	logs, _ := filepath.Glob(filepath.Join(v.base, "mount-*.log"))
	waited := 0
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		waited += strings.Count(string(b), "writes wait for uploads to free it")
	}
	if waited == 0 {
		t.Errorf("no writer waited for uploads to free the disk in %d mounts: the test no longer fills it", len(logs))
	}
}

// testAckCrash runs the rounds of TestCrashAcknowledgedWritesSurvive on v
// (formatted, not mounted), rounds of them unless OBJFS_ACK_CRASH_ROUNDS
// says otherwise.
func testAckCrash(t *testing.T, v *volume, rounds int) {
	rounds = envCount(t, "OBJFS_ACK_CRASH_ROUNDS", rounds)
	seed := envSeed(t, "OBJFS_ACK_CRASH_SEED")
	rerun := fmt.Sprintf("OBJFS_ACK_CRASH_SEED=%d OBJFS_ACK_CRASH_ROUNDS=%d go test -count=1 -run '%s$' -v ./integration/", seed, rounds, t.Name())
	t.Logf("seed %d, %d rounds; rerun with: %s", seed, rounds, rerun)
	rng := rand.New(rand.NewPCG(seed, 0xac4c7a54))

	m := &ackModel{files: map[string]*ackEntry{}}
	addr := freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")
	start := time.Now()
	for round := range rounds {
		addr = ackCrashRound(t, v, addr, m, rng, seed, round, rerun)
	}

	v.unmount(t)
	v.fsck(t)
	files, size := m.totals()
	t.Logf("all %d rounds passed in %v: %d files, %d bytes acknowledged and verified; fsck clean",
		rounds, time.Since(start).Round(time.Millisecond), files, size)
}

// ackCrashRound runs the writers of one round, kills the server, restarts
// it (NFS on a new address, returned) and verifies every acknowledged file
// of every round so far. addr is where the running server serves NFS.
func ackCrashRound(t *testing.T, v *volume, addr string, m *ackModel, rng *rand.Rand, seed uint64, round int, rerun string) string {
	dir := fmt.Sprintf("r%d", round)
	if err := os.Mkdir(filepath.Join(v.mnt, dir), 0o755); err != nil {
		t.Fatalf("round %d: mkdir %s: %v", round, dir, err)
	}
	if err := fsyncPath(v.mnt); err != nil {
		t.Fatalf("round %d: fsync of the mount root: %v", round, err)
	}

	var killed atomic.Bool
	var writers []*ackWriter
	nfuse := 2 + rng.IntN(2)
	for i := range nfuse + 2 {
		w := &ackWriter{
			round: round, dir: dir, model: m, killed: &killed,
			rng: rand.New(rand.NewPCG(seed, uint64(round)<<8|uint64(i))),
		}
		if i < nfuse {
			w.name = fmt.Sprintf("fuse%d", i)
			w.mnt = v.mnt
		} else {
			w.name = fmt.Sprintf("nfs%d", i-nfuse)
			// The NFS server may still be starting (FUSE is up first).
			w.nfs, w.dirFH = dialWireMount(t, v, addr, "/"+dir)
		}
		writers = append(writers, w)
	}

	var wg sync.WaitGroup
	for _, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run()
		}()
	}
	allDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(allDone)
	}()

	delay := 500*time.Millisecond + time.Duration(rng.Int64N(int64(2500*time.Millisecond)))
	time.Sleep(delay)
	killed.Store(true)
	killedPID := v.proc.cmd.Process.Pid
	v.kill9(t)
	killAt := time.Now()
	// Nothing may reach the next server: close the NFS connections (the
	// FUSE writers' descriptors belong to the dead connection) and wait
	// for every writer before mounting again.
	for _, w := range writers {
		if w.nfs != nil {
			w.nfs.Close()
		}
	}
	select {
	case <-allDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("round %d: writers did not stop within 30s of the kill", round)
	}
	var st ackStats
	var per []string
	for _, w := range writers {
		if w.preKillErr != nil {
			t.Errorf("round %d: writer %s failed while the server was still alive: %v", round, w.name, w.preKillErr)
		}
		st.add(w.stats)
		per = append(per, fmt.Sprintf("%s %d files/%d changes/%d B", w.name, w.stats.files, w.stats.changes, w.stats.bytes))
	}
	inFlight := m.inFlight()
	t.Logf("round %d: SIGKILL (pid %d) %v after the writers started; acknowledged this round: %d new files, %d changes, %d bytes (%s); %d files with a change in flight at the kill; writers stopped %v after the kill",
		round, killedPID, delay.Round(time.Millisecond), st.files, st.changes, st.bytes, strings.Join(per, ", "), inFlight, time.Since(killAt).Round(time.Millisecond))
	killedLog := filepath.Join(v.base, fmt.Sprintf("mount-%d.log", v.nmount))
	if t.Failed() {
		t.Fatalf("log of the killed server:\n%s\nrerun with: %s", ackLogTail(killedLog), rerun)
	}

	t0 := time.Now()
	addr = freeAddr(t)
	v.mount(t, "--nfs", addr, "--nfs-squash", "none")
	remount := time.Since(t0)
	stop := v.stallWatchdog(t, fmt.Sprintf("round %d verification", round), 3*time.Minute)
	t0 = time.Now()
	errs, outcomes := m.verify(v.mnt)
	if len(errs) == 0 {
		if err := m.readBackNFS(t, v, addr, round); err != nil {
			errs = append(errs, err.Error())
		}
	}
	stop()
	files, size := m.totals()
	if len(errs) > 0 {
		t.Fatalf("round %d: after SIGKILL and restart, acknowledged data is wrong (%d files in the model):\n  %s\nlog of the killed server:\n%s\nrerun with: %s",
			round, files, strings.Join(errs, "\n  "), ackLogTail(killedLog), rerun)
	}
	settled, err := m.settle(v.mnt, outcomes)
	if err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	t.Logf("round %d: restart %v; verified %d files, %d bytes through FUSE in %v; of the %d changes in flight, %s",
		round, remount.Round(time.Millisecond), files, size, time.Since(t0).Round(time.Millisecond), len(outcomes), settled)
	return addr
}

// ackLogTail returns the end of a mount log (the test's temporary directory,
// which holds it, is removed after the test).
func ackLogTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if len(data) > 4000 {
		data = append([]byte("..."), data[len(data)-4000:]...)
	}
	if len(data) == 0 {
		return "(empty)"
	}
	return string(data)
}

// --- what the writers write ---

const (
	ackBlock   = 4 << 20  // the volume's block size (objfs format default)
	ackInline  = 16 << 10 // files up to this size are stored inline
	ackMaxFile = 24 << 20 // writers keep their files below this size
	// Bounds on what one writer acknowledges per round, so that verifying
	// every file after every round stays quick.
	ackBigBudget   = 16 << 20
	ackRoundBudget = 32 << 20
)

// ackLen picks the length of a new file or of an overwrite: tiny (inline),
// around 100 KiB, or multi-block; done is what the writer acknowledged
// this round: past ackBigBudget no multi-block writes, past ackRoundBudget
// tiny ones only.
func ackLen(rng *rand.Rand, done int64) int64 {
	switch x := rng.Float64(); {
	case x < 0.45 || done >= ackRoundBudget:
		edges := []int64{0, 1, ackInline - 1, ackInline, ackInline + 1}
		if rng.IntN(4) == 0 {
			return edges[rng.IntN(len(edges))]
		}
		return rng.Int64N(ackInline + 1)
	case x < 0.8 || done >= ackBigBudget:
		return 80<<10 + rng.Int64N(48<<10)
	default:
		return 5<<20 + rng.Int64N(7<<20+1)
	}
}

// ackOffset picks where an overwrite of n bytes starts in a file of size
// bytes: anywhere (mostly unaligned), near a block boundary, or past EOF
// (leaving a hole).
func ackOffset(rng *rand.Rand, size, n int64) int64 {
	var off int64
	switch x := rng.Float64(); {
	case x < 0.15 && size >= ackBlock:
		off = ackBlock*(1+rng.Int64N(size/ackBlock)) + rng.Int64N(7) - 3
	case x < 0.85:
		off = rng.Int64N(size + 1)
	default:
		off = size + 1 + rng.Int64N(1<<20)
	}
	if off+n > ackMaxFile {
		off = rng.Int64N(max(1, ackMaxFile-n))
	}
	return max(off, 0)
}

// ackTruncSize picks the new size of a truncation.
func ackTruncSize(rng *rand.Rand, size int64) int64 {
	switch x := rng.Float64(); {
	case x < 0.45:
		return rng.Int64N(size + 1)
	case x < 0.7:
		edges := []int64{ackInline, ackBlock, 2 * ackBlock}
		return edges[rng.IntN(len(edges))] + rng.Int64N(3) - 1
	default:
		return min(size+1+rng.Int64N(6<<20), ackMaxFile)
	}
}

// ackLayer is n bytes generated from seed, written at off.
type ackLayer struct {
	off, n int64
	seed   uint64
}

// ackFill fills b with the first len(b) bytes generated from seed; a
// shorter b gets a prefix of what a longer one gets.
func ackFill(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 0x1a7e))
	var w [8]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
}

// ackContent is a file's content as its size and the writes that made it, so
// that the model holds no file data.
type ackContent struct {
	size   int64
	layers []ackLayer // applied in order; each lies within [0, size)
}

// write returns c with data generated from seed written at [off, off+n).
func (c ackContent) write(off, n int64, seed uint64) ackContent {
	if n == 0 {
		return c
	}
	return ackContent{size: max(c.size, off+n), layers: append(slices.Clip(c.layers), ackLayer{off, n, seed})}
}

// truncate returns c cut or extended (with zeros) to size.
func (c ackContent) truncate(size int64) ackContent {
	out := ackContent{size: size}
	for _, l := range c.layers {
		if l.off >= size {
			continue
		}
		l.n = min(l.n, size-l.off)
		out.layers = append(out.layers, l)
	}
	return out
}

func (c ackContent) bytes() []byte {
	b := make([]byte, c.size)
	for _, l := range c.layers {
		ackFill(b[l.off:l.off+l.n], l.seed)
	}
	return b
}

// --- the model of acknowledged state ---

// ackEntry is what one file must hold after a crash: the acknowledged
// content, and, while a change is in flight, the content it would leave
// and the range it changes.
type ackEntry struct {
	via     string // "fuse" or "nfs"
	round   int    // the round that created the file
	acked   ackContent
	next    *ackContent
	lo, hi  int64    // the range the change in flight writes
	history []string // the last few events, for failure messages
}

func (e *ackEntry) note(s string) {
	e.history = append(e.history, s)
	if len(e.history) > 4 {
		e.history = slices.Delete(e.history, 0, len(e.history)-4)
	}
}

type ackModel struct {
	mu    sync.Mutex
	files map[string]*ackEntry
}

// created acknowledges a new, empty file.
func (m *ackModel) created(rel, via string, round int, event string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := &ackEntry{via: via, round: round}
	e.note(event + " (acknowledged)")
	m.files[rel] = e
}

// begin records a change in flight: rel will hold next once it is
// acknowledged, and until then [lo, hi) may be old or new.
func (m *ackModel) begin(rel string, next ackContent, lo, hi int64, event string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.files[rel]
	e.next, e.lo, e.hi = &next, lo, hi
	e.note(event + " (in flight)")
}

// ack acknowledges the change in flight.
func (m *ackModel) ack(rel string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.files[rel]
	e.acked, e.next = *e.next, nil
	e.history[len(e.history)-1] = strings.TrimSuffix(e.history[len(e.history)-1], " (in flight)") + " (acknowledged)"
}

func (m *ackModel) inFlight() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, e := range m.files {
		if e.next != nil {
			n++
		}
	}
	return n
}

func (m *ackModel) totals() (files int, size int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.files {
		size += e.acked.size
	}
	return len(m.files), size
}

// snapshot copies the model (contents are never changed in place).
func (m *ackModel) snapshot() ([]string, map[string]ackEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	paths := make([]string, 0, len(m.files))
	snap := make(map[string]ackEntry, len(m.files))
	for p, e := range m.files {
		paths = append(paths, p)
		c := *e
		c.history = slices.Clone(e.history)
		snap[p] = c
	}
	sort.Strings(paths)
	return paths, snap
}

// Outcomes of a change that was in flight at a crash.
const (
	ackKeptOld = "kept the acknowledged content"
	ackTookNew = "took the new content"
	ackMixed   = "left a mix of both"
)

// verify reads every file of the model under mnt and returns what is
// wrong and, for each change in flight, what became of it.
func (m *ackModel) verify(mnt string) (errs []string, outcomes map[string]string) {
	paths, snap := m.snapshot()
	outcomes = map[string]string{}
	for _, p := range paths {
		e := snap[p]
		got, err := ackReadFile(filepath.Join(mnt, p))
		if err == nil {
			err = e.check(got)
		}
		if err == nil && e.next != nil {
			switch {
			case bytes.Equal(got, e.acked.bytes()):
				outcomes[p] = ackKeptOld
			case bytes.Equal(got, e.next.bytes()):
				outcomes[p] = ackTookNew
			default:
				outcomes[p] = ackMixed
			}
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s (written through %s; %s): %v", p, e.via, strings.Join(e.history, "; "), err))
		}
		if len(errs) >= 20 {
			errs = append(errs, "...")
			break
		}
	}
	return errs, outcomes
}

// settle fsyncs each file whose change was in flight at the crash and now
// reads as entirely old or entirely new, and makes that content its
// acknowledged one, so later rounds check it exactly. Mixed files stay
// lenient. It returns a summary of the outcomes.
func (m *ackModel) settle(mnt string, outcomes map[string]string) (string, error) {
	count := map[string]int{}
	for p, o := range outcomes {
		count[o]++
		if o == ackMixed {
			continue
		}
		if err := fsyncPath(filepath.Join(mnt, p)); err != nil {
			return "", fmt.Errorf("fsync of %s after the restart: %w", p, err)
		}
		m.mu.Lock()
		e := m.files[p]
		if o == ackTookNew {
			e.acked = *e.next
		}
		e.next = nil
		e.note(fmt.Sprintf("crash %s; fsynced after the restart", o))
		m.mu.Unlock()
	}
	return fmt.Sprintf("%d %s, %d %s, %d %s", count[ackKeptOld], ackKeptOld, count[ackTookNew], ackTookNew, count[ackMixed], ackMixed), nil
}

// check compares what a file holds after the crash with what it may hold.
func (e *ackEntry) check(got []byte) error {
	old := e.acked.bytes()
	if e.next == nil {
		if bytes.Equal(got, old) {
			return nil
		}
		return fmt.Errorf("nothing was in flight, want exactly the acknowledged content: %s", ackFirstDiff(got, old))
	}
	next := e.next.bytes()
	if bytes.Equal(got, old) || bytes.Equal(got, next) {
		return nil
	}
	lo, hi := int64(min(len(old), len(next))), int64(max(len(old), len(next)))
	if n := int64(len(got)); n < lo || n > hi {
		return fmt.Errorf("size %d, want between %d (acknowledged) and %d (in flight)", n, len(old), len(next))
	}
	at := func(b []byte, i int) byte {
		if i < len(b) {
			return b[i]
		}
		return 0
	}
	for i := range got {
		o, n := at(old, i), at(next, i)
		if got[i] == o || (got[i] == n && (int64(i) >= lo || (int64(i) >= e.lo && int64(i) < e.hi))) {
			continue
		}
		return fmt.Errorf("size %d (acknowledged %d, in flight %d, in-flight range [%d,%d)): byte %d is %#02x, want the acknowledged %#02x or, inside the in-flight range, %#02x",
			len(got), len(old), len(next), e.lo, e.hi, i, got[i], o, n)
	}
	return nil
}

// ackFirstDiff describes where got and want first differ.
func ackFirstDiff(got, want []byte) string {
	n := min(len(got), len(want))
	for i := range n {
		if got[i] != want[i] {
			j := i
			for j < n && got[j] != want[j] {
				j++
			}
			zeros := bytes.Count(got[i:j], []byte{0}) == j-i
			return fmt.Sprintf("size %d (want %d); bytes differ from offset %d (%d bytes in that run, all zero: %v; block %d)", len(got), len(want), i, j-i, zeros, i/ackBlock)
		}
	}
	return fmt.Sprintf("size %d, want %d (the common prefix matches)", len(got), len(want))
}

// ackReadFile reads a file and checks that its size matches what was read.
func ackReadFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errors.New("missing: the acknowledged name is gone")
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read after %d bytes: %w", len(b), err)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != int64(len(b)) {
		return nil, fmt.Errorf("stat size %d but read %d bytes", st.Size(), len(b))
	}
	return b, nil
}

// readBackNFS reads one NFS-written file with nothing in flight (the
// largest of the newest round that has one) through a new go-nfs-client
// connection and compares it with the model.
func (m *ackModel) readBackNFS(t *testing.T, v *volume, addr string, round int) error {
	paths, snap := m.snapshot()
	best := ""
	for _, p := range paths {
		e := snap[p]
		if e.via != "nfs" || e.next != nil || e.acked.size == 0 {
			continue
		}
		if b := snap[best]; best == "" || e.round > b.round || (e.round == b.round && e.acked.size > b.acked.size) {
			best = p
		}
	}
	if best == "" {
		t.Logf("round %d: no NFS-written file with acknowledged content to read back through NFS yet", round)
		return nil
	}
	target := dialNFS(t, v, addr)
	defer target.Close()
	f, err := target.Open(best)
	if err != nil {
		return fmt.Errorf("%s: NFS read-back: open: %w", best, err)
	}
	want := snap[best].acked.bytes()
	got := make([]byte, 0, len(want))
	buf := make([]byte, 1<<20)
	for {
		n, err := f.ReadAt(buf, int64(len(got)))
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: NFS read-back: read at %d: %w", best, len(got), err)
		}
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: NFS read-back through a new client: %s", best, ackFirstDiff(got, want))
	}
	t.Logf("round %d: read %s (%d bytes) back through a new NFS client: ok", round, best, len(got))
	return nil
}

// --- writers ---

type ackStats struct {
	files, changes int
	bytes          int64
}

func (s *ackStats) add(o ackStats) {
	s.files += o.files
	s.changes += o.changes
	s.bytes += o.bytes
}

// ackFile is a file one writer created and alone changes.
type ackFile struct {
	rel  string
	cur  ackContent // acknowledged
	fh   []byte     // NFS file handle
	fd   int        // FUSE descriptor, while open
	open bool
}

// ackWriter changes its own files in dir, through FUSE (mnt set) or NFS
// (nfs set), until killed is set or an operation fails.
type ackWriter struct {
	name       string
	round      int
	dir        string
	mnt        string
	nfs        *wireNFS
	dirFH      []byte
	model      *ackModel
	rng        *rand.Rand
	killed     *atomic.Bool // set just before the server is killed
	files      []*ackFile
	nopen      int // FUSE descriptors open
	stats      ackStats
	preKillErr error // an error seen while the server was alive
}

func (w *ackWriter) run() {
	defer func() {
		for _, f := range w.files {
			_ = w.closeFD(f) // after the kill: the error says so
		}
	}()
	for i := 0; !w.killed.Load(); i++ {
		var err error
		x := w.rng.Float64()
		switch {
		case len(w.files) == 0 || x < 0.35:
			err = w.create(i)
		case w.nfs != nil || x < 0.8:
			f := w.files[w.rng.IntN(len(w.files))]
			n := ackLen(w.rng, w.stats.bytes)
			err = w.write(f, ackOffset(w.rng, f.cur.size, n), n)
		default:
			err = w.truncate(w.files[w.rng.IntN(len(w.files))])
		}
		if err != nil {
			if !w.killed.Load() {
				w.preKillErr = err
			}
			return
		}
	}
}

func (w *ackWriter) event(format string, args ...any) string {
	return fmt.Sprintf("round %d %s: ", w.round, w.name) + fmt.Sprintf(format, args...)
}

func (w *ackWriter) create(i int) error {
	name := fmt.Sprintf("%s-%d", w.name, i)
	f := &ackFile{rel: w.dir + "/" + name}
	if w.nfs != nil {
		fh, err := w.nfs.create(w.dirFH, name, createGuarded, 0o644)
		if err != nil {
			return fmt.Errorf("NFS CREATE %s: %w", f.rel, err)
		}
		f.fh = fh
		w.model.created(f.rel, "nfs", w.round, w.event("CREATE"))
	} else {
		fd, err := syscall.Open(filepath.Join(w.mnt, f.rel), syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", f.rel, err)
		}
		f.fd, f.open = fd, true
		w.nopen++
		w.model.created(f.rel, "fuse", w.round, w.event("open(O_CREAT)"))
	}
	w.files = append(w.files, f)
	w.stats.files++
	return w.write(f, 0, ackLen(w.rng, w.stats.bytes))
}

// write writes n bytes at off and waits for their acknowledgement.
func (w *ackWriter) write(f *ackFile, off, n int64) error {
	if n == 0 {
		return w.release(f)
	}
	seed := w.rng.Uint64()
	data := make([]byte, n)
	ackFill(data, seed)
	if w.nfs != nil {
		if w.rng.IntN(10) < 3 {
			return w.writeUnstable(f, off, data, seed)
		}
		return w.writeFileSync(f, off, data, seed)
	}
	fd, err := w.fuseFD(f)
	if err != nil {
		return err
	}
	next := f.cur.write(off, n, seed)
	w.model.begin(f.rel, next, off, off+n, w.event("pwrite [%d,%d) + fsync", off, off+n))
	rest := data
	for pieces := 1 + w.rng.IntN(4); len(rest) > 0; pieces-- {
		k := len(rest)
		if pieces > 1 {
			k = w.rng.IntN(len(rest) + 1)
		}
		at := off + n - int64(len(rest))
		if _, err := pwriteFull(fd, rest[:k], at); err != nil {
			return fmt.Errorf("pwrite %s [%d,%d): %w", f.rel, at, at+int64(k), err)
		}
		rest = rest[k:]
	}
	if err := syscall.Fsync(fd); err != nil {
		return fmt.Errorf("fsync %s: %w", f.rel, err)
	}
	w.acked(f, next, n)
	return w.release(f)
}

// fuseFD returns the open descriptor of f, opening f if it has none.
func (w *ackWriter) fuseFD(f *ackFile) (int, error) {
	if f.open {
		return f.fd, nil
	}
	fd, err := syscall.Open(filepath.Join(w.mnt, f.rel), syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", f.rel, err)
	}
	f.fd, f.open = fd, true
	w.nopen++
	return fd, nil
}

// release closes f's descriptor after an acknowledged change, or keeps it
// for later changes (at most 4 per writer). Every close commits in objfs,
// so only changes made through a descriptor that stays open show that
// fsync alone made them durable.
func (w *ackWriter) release(f *ackFile) error {
	if w.nopen <= 4 && w.rng.IntN(2) == 0 {
		return nil
	}
	return w.closeFD(f)
}

func (w *ackWriter) closeFD(f *ackFile) error {
	if !f.open {
		return nil
	}
	f.open = false
	w.nopen--
	if err := syscall.Close(f.fd); err != nil {
		return fmt.Errorf("close %s: %w", f.rel, err)
	}
	return nil
}

func (w *ackWriter) acked(f *ackFile, next ackContent, n int64) {
	w.model.ack(f.rel)
	f.cur = next
	w.stats.changes++
	w.stats.bytes += n
}

// truncate changes a file's size (FUSE only) and fsyncs it.
func (w *ackWriter) truncate(f *ackFile) error {
	size := ackTruncSize(w.rng, f.cur.size)
	fd, err := w.fuseFD(f)
	if err != nil {
		return err
	}
	next := f.cur.truncate(size)
	w.model.begin(f.rel, next, min(size, f.cur.size), max(size, f.cur.size), w.event("ftruncate %d->%d + fsync", f.cur.size, size))
	if err := syscall.Ftruncate(fd, size); err != nil {
		return fmt.Errorf("ftruncate %s to %d: %w", f.rel, size, err)
	}
	if err := syscall.Fsync(fd); err != nil {
		return fmt.Errorf("fsync %s: %w", f.rel, err)
	}
	w.acked(f, next, 0)
	return w.release(f)
}

// nfsChunk picks the payload of one WRITE: mostly the 1 MiB maximum,
// sometimes an odd size.
func (w *ackWriter) nfsChunk(left int) int {
	c := wireMaxWrite
	if w.rng.IntN(3) == 0 {
		c = 1 + w.rng.IntN(wireMaxWrite)
	}
	return min(c, left)
}

// writeFileSync sends FILE_SYNC WRITEs; each reply acknowledges its chunk.
func (w *ackWriter) writeFileSync(f *ackFile, off int64, data []byte, seed uint64) error {
	base := f.cur
	for done := 0; done < len(data); {
		c := w.nfsChunk(len(data) - done)
		at := off + int64(done)
		next := base.write(off, int64(done+c), seed)
		w.model.begin(f.rel, next, at, at+int64(c), w.event("FILE_SYNC WRITE [%d,%d) of [%d,%d)", at, at+int64(c), off, off+int64(len(data))))
		n, committed, _, err := w.nfs.write(f.fh, at, data[done:done+c], stableFileSync)
		if err != nil {
			return fmt.Errorf("NFS WRITE FILE_SYNC %s [%d,%d): %w", f.rel, at, at+int64(c), err)
		}
		if committed != stableFileSync {
			return fmt.Errorf("NFS WRITE FILE_SYNC %s [%d,%d): reply says committed=%d, RFC 1813 requires FILE_SYNC (2)", f.rel, at, at+int64(c), committed)
		}
		if n == 0 || n > c {
			return fmt.Errorf("NFS WRITE FILE_SYNC %s [%d,%d): reply count %d", f.rel, at, at+int64(c), n)
		}
		if n < c {
			next = base.write(off, int64(done+n), seed)
			w.model.begin(f.rel, next, at, at+int64(n), w.event("FILE_SYNC WRITE [%d,%d) (short)", at, at+int64(n)))
		}
		w.acked(f, next, int64(n))
		done += n
	}
	return nil
}

// writeUnstable sends UNSTABLE WRITEs and then a COMMIT, whose reply
// acknowledges them all if its verifier is the one the WRITEs returned.
func (w *ackWriter) writeUnstable(f *ackFile, off int64, data []byte, seed uint64) error {
	next := f.cur.write(off, int64(len(data)), seed)
	end := off + int64(len(data))
	w.model.begin(f.rel, next, off, end, w.event("UNSTABLE WRITEs [%d,%d) + COMMIT", off, end))
	var verf uint64
	for done := 0; done < len(data); {
		c := w.nfsChunk(len(data) - done)
		at := off + int64(done)
		n, _, v, err := w.nfs.write(f.fh, at, data[done:done+c], stableUnstable)
		if err != nil {
			return fmt.Errorf("NFS WRITE UNSTABLE %s [%d,%d): %w", f.rel, at, at+int64(c), err)
		}
		if n == 0 || n > c {
			return fmt.Errorf("NFS WRITE UNSTABLE %s [%d,%d): reply count %d", f.rel, at, at+int64(c), n)
		}
		if done > 0 && v != verf {
			return fmt.Errorf("NFS WRITE UNSTABLE %s [%d,%d): the write verifier changed from %#x to %#x without a restart", f.rel, at, at+int64(c), verf, v)
		}
		verf = v
		done += n
	}
	v, err := w.nfs.commit(f.fh)
	if err != nil {
		return fmt.Errorf("NFS COMMIT %s after [%d,%d): %w", f.rel, off, end, err)
	}
	if v != verf {
		return fmt.Errorf("NFS COMMIT %s after [%d,%d): verifier %#x, the WRITEs got %#x (the server lost them without a restart)", f.rel, off, end, v, verf)
	}
	w.acked(f, next, int64(len(data)))
	return nil
}
