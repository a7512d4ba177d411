package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestCrashFsyncedSurvive kills the mount server (SIGKILL) while a writer is
// busy, remounts, and checks that every file whose fsync had returned is
// there with exactly the content written. Files renamed into place count
// once the directory fsync after the rename has returned.
//
// OBJFS_CRASH_ROUNDS sets the number of rounds (default 6), OBJFS_CRASH_SEED
// the seed of the kill delays and file sizes.
func TestCrashFsyncedSurvive(t *testing.T) {
	requirePrereqs(t)
	rounds := envCount(t, "OBJFS_CRASH_ROUNDS", 6)
	seed := envSeed(t, "OBJFS_CRASH_SEED")
	t.Logf("seed %d, %d rounds (rerun with OBJFS_CRASH_SEED=%d)", seed, rounds, seed)
	rng := rand.New(rand.NewPCG(seed, 0xc4a5))

	v := newVolume(t)
	v.mount(t)
	acks := &ackSet{want: map[string][]string{}}

	for round := range rounds {
		dir := fmt.Sprintf("r%d", round)
		if err := os.Mkdir(filepath.Join(v.mnt, dir), 0o755); err != nil {
			t.Fatalf("round %d: mkdir: %v", round, err)
		}
		if err := fsyncPath(v.mnt); err != nil {
			t.Fatalf("round %d: fsync of the mount root: %v", round, err)
		}
		w := &crashWriter{mnt: v.mnt, dir: dir, acks: acks, done: make(chan struct{}),
			rng: rand.New(rand.NewPCG(seed, uint64(round)+1))}
		go w.run()

		delay := 100*time.Millisecond + time.Duration(rng.Int64N(int64(700*time.Millisecond)))
		time.Sleep(delay)
		w.killed.Store(true)
		v.kill9(t)
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the writer did not stop within 30s of the kill", round)
		}
		if w.preKillErr != nil {
			t.Errorf("round %d: the writer failed while the server was still alive: %v", round, w.preKillErr)
		}
		t.Logf("round %d: killed after %v; writer acknowledged %d files (stopped by: %v); %d names checked in total",
			round, delay.Round(time.Millisecond), w.acked.Load(), w.stopErr, acks.len())

		v.mount(t)
		if errs := acks.verify(v.mnt); len(errs) > 0 {
			t.Fatalf("round %d: after SIGKILL and remount, acknowledged data is wrong:\n  %s", round, strings.Join(errs, "\n  "))
		}
	}

	v.unmount(t)
	v.status(t)
	v.mount(t)
	if errs := acks.verify(v.mnt); len(errs) > 0 {
		t.Fatalf("after a clean unmount and remount, acknowledged data is wrong:\n  %s", strings.Join(errs, "\n  "))
	}
	v.unmount(t)
	v.fsck(t) // the kills left every invariant whole (counts, allocated bytes)
}

func fsyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// ackSet maps a path (relative to the mount) to the contents it may have
// after a crash: "absent" or "<sha256>:<size>".
type ackSet struct {
	mu   sync.Mutex
	want map[string][]string
}

const absent = "absent"

func contentKey(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]) + ":" + strconv.Itoa(len(data))
}

func (a *ackSet) set(path string, keys ...string) {
	a.mu.Lock()
	a.want[path] = keys
	a.mu.Unlock()
}

// pending adds key to what path may hold (before a rename that is not yet
// durable).
func (a *ackSet) pending(path, key string) {
	a.mu.Lock()
	cur, ok := a.want[path]
	if !ok {
		cur = []string{absent}
	}
	a.want[path] = append(append([]string(nil), cur...), key)
	a.mu.Unlock()
}

func (a *ackSet) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.want)
}

// verify checks every acknowledged path under mnt.
func (a *ackSet) verify(mnt string) []string {
	a.mu.Lock()
	paths := make([]string, 0, len(a.want))
	for p := range a.want {
		paths = append(paths, p)
	}
	want := make(map[string][]string, len(a.want))
	for p, k := range a.want {
		want[p] = k
	}
	a.mu.Unlock()
	sort.Strings(paths)
	var errs []string
	for _, p := range paths {
		got, err := fileKey(filepath.Join(mnt, p))
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v (want %s)", p, err, strings.Join(want[p], " or ")))
			continue
		}
		ok := false
		for _, k := range want[p] {
			ok = ok || k == got
		}
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: have %s, want %s", p, got, strings.Join(want[p], " or ")))
		}
		if len(errs) >= 30 {
			errs = append(errs, "...")
			break
		}
	}
	return errs
}

func fileKey(p string) (string, error) {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return absent, nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", fmt.Errorf("reading after %d bytes: %w", n, err)
	}
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	if st.Size() != n {
		return "", fmt.Errorf("stat size %d but read %d bytes", st.Size(), n)
	}
	return hex.EncodeToString(h.Sum(nil)) + ":" + strconv.FormatInt(n, 10), nil
}

// crashWriter writes files into mnt/dir until its first error.
type crashWriter struct {
	mnt, dir   string
	acks       *ackSet
	rng        *rand.Rand
	killed     atomic.Bool // set just before the server is killed
	acked      atomic.Int64
	done       chan struct{}
	preKillErr error // an error seen while the server was alive
	stopErr    error // the error that ended the writer
}

func (w *crashWriter) size() int {
	switch x := w.rng.Float64(); {
	case x < 0.2:
		return w.rng.IntN(200)
	case x < 0.5:
		return w.rng.IntN(64 << 10)
	case x < 0.85:
		return w.rng.IntN(3<<20 + 1)
	default:
		sizes := []int{4<<20 + 1, 4 << 20, 4<<20 - 1, 1<<20 + 1}
		return sizes[w.rng.IntN(len(sizes))]
	}
}

func (w *crashWriter) content() []byte {
	b := make([]byte, w.size())
	for i := 0; i < len(b); i += 8 {
		v := w.rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// writeFsynced creates p, writes data in several write calls, fsyncs and
// closes it.
func (w *crashWriter) writeFsynced(p string, data []byte) error {
	fd, err := syscall.Open(p, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	defer syscall.Close(fd)
	rest := data
	for pieces := 1 + w.rng.IntN(6); len(rest) > 0; pieces-- {
		n := len(rest)
		if pieces > 1 {
			n = w.rng.IntN(len(rest) + 1)
		}
		if _, err := pwriteFull(fd, rest[:n], int64(len(data)-len(rest))); err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
		rest = rest[n:]
	}
	if err := syscall.Fsync(fd); err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	return nil
}

func (w *crashWriter) run() {
	defer close(w.done)
	for i := 0; !w.killed.Load(); i++ {
		var err error
		switch w.rng.IntN(6) {
		case 0, 1, 2:
			err = w.fresh(i)
		case 3, 4:
			err = w.renameIntoPlace(i)
		default:
			err = w.punched(i)
		}
		if err != nil {
			w.stopErr = err
			if !w.killed.Load() {
				w.preKillErr = err
			}
			return
		}
	}
	w.stopErr = errors.New("kill flag")
}

// fresh writes a new file and acknowledges it once fsync has returned.
func (w *crashWriter) fresh(i int) error {
	rel := fmt.Sprintf("%s/f%d", w.dir, i)
	data := w.content()
	if err := w.writeFsynced(filepath.Join(w.mnt, rel), data); err != nil {
		return err
	}
	w.acks.set(rel, contentKey(data))
	w.acked.Add(1)
	return nil
}

// punched writes a new file, fsyncs it, punches a hole in it and fsyncs
// it again: acknowledged with its first content after the first fsync,
// with the punched one after the second (in between, either is fine).
func (w *crashWriter) punched(i int) error {
	rel := fmt.Sprintf("%s/p%d", w.dir, i)
	p := filepath.Join(w.mnt, rel)
	data := w.content()
	if err := w.writeFsynced(p, data); err != nil {
		return err
	}
	w.acks.set(rel, contentKey(data))
	if len(data) == 0 {
		return nil
	}
	off := w.rng.IntN(len(data))
	n := 1 + w.rng.IntN(len(data)-off+(64<<10))
	after := append([]byte(nil), data...)
	clear(after[off:min(off+n, len(after))])
	w.acks.pending(rel, contentKey(after))
	fd, err := syscall.Open(p, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	defer syscall.Close(fd)
	if err := syscall.Fallocate(fd, 0x3, int64(off), int64(n)); err != nil { // FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE
		return fmt.Errorf("punch %s [%d,+%d): %w", p, off, n, err)
	}
	if err := syscall.Fsync(fd); err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	w.acks.set(rel, contentKey(after))
	w.acked.Add(1)
	return nil
}

// renameIntoPlace writes and fsyncs a temporary file, renames it over one of
// a few final names and fsyncs the directory; only then is the final name
// acknowledged (until then either its old or its new content is fine).
func (w *crashWriter) renameIntoPlace(i int) error {
	tmp := filepath.Join(w.mnt, w.dir, fmt.Sprintf("tmp%d", i))
	final := fmt.Sprintf("%s/final%d", w.dir, i%3)
	data := w.content()
	if err := w.writeFsynced(tmp, data); err != nil {
		return err
	}
	key := contentKey(data)
	w.acks.pending(final, key)
	if err := os.Rename(tmp, filepath.Join(w.mnt, final)); err != nil {
		return err
	}
	if err := fsyncPath(filepath.Join(w.mnt, w.dir)); err != nil {
		return fmt.Errorf("fsync of directory %s: %w", w.dir, err)
	}
	w.acks.set(final, key)
	w.acked.Add(1)
	return nil
}
