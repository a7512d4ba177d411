package staging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/faulty"
)

// counting wraps a store and counts Puts per key.
type counting struct {
	objstore.Store
	mu   sync.Mutex
	puts map[string]int
}

func (c *counting) Put(ctx context.Context, key string, data []byte) error {
	err := c.Store.Put(ctx, key, data)
	if err == nil {
		c.mu.Lock()
		c.puts[key]++
		c.mu.Unlock()
	}
	return err
}

func (c *counting) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.puts[key]
}

func (c *counting) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.puts {
		n += v
	}
	return n
}

// Close leaves the backend usable: the tests reopen logs over it.
func (c *counting) Close() error { return nil }

func newBackend(t *testing.T) *counting {
	t.Helper()
	d, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &counting{Store: d, puts: map[string]int{}}
}

func obj(i int, size int) (string, []byte) {
	data := bytes.Repeat([]byte{byte(i), byte(i >> 8), 0x5a}, size/3+1)[:size]
	sum := sha256.Sum256(append(data, byte(i)))
	return "blocks/" + hex.EncodeToString(sum[:]), data
}

func open(t *testing.T, dir string, backend objstore.Store, o Options) *Store {
	t.Helper()
	s, err := Open(dir, backend, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func drain(t *testing.T, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Drain(ctx, 0); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// A staged object is readable at once, before any upload, and reaches the
// backend once uploads run.
func TestStagedReadableBeforeUpload(t *testing.T) {
	for _, mem := range []int64{0, 64 << 20} {
		t.Run(fmt.Sprintf("MemBytes=%d", mem), func(t *testing.T) { testStagedReadable(t, mem) })
	}
}

// testStagedReadable runs with staged data read back from the log (0: the
// default) or kept in memory.
func testStagedReadable(t *testing.T, mem int64) {
	ctx := context.Background()
	be := newBackend(t)
	s := open(t, t.TempDir(), be, Options{Paused: true, MemBytes: mem})
	sizes := []int{0, 1, 4096, 4 << 20}
	for i, n := range sizes {
		key, data := obj(i, n)
		if err := s.Put(ctx, key, data); err != nil {
			t.Fatalf("Put %d bytes: %v", n, err)
		}
		got, err := s.Get(ctx, key)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get staged %d bytes: err %v, equal %v", n, err, bytes.Equal(got, data))
		}
		if _, err := be.Get(ctx, key); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("backend has %s while uploads are paused (err %v)", key, err)
		}
	}
	if st := s.Stats(); st.Objects != len(sizes) {
		t.Fatalf("Stats.Objects = %d, want %d", st.Objects, len(sizes))
	}
	s.Resume()
	drain(t, s)
	for i, n := range sizes {
		key, data := obj(i, n)
		got, err := be.Get(ctx, key)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("backend after drain, %d bytes: err %v", n, err)
		}
		if c := be.count(key); c != 1 {
			t.Fatalf("%d-byte object uploaded %d times, want 1", n, c)
		}
	}
}

// Objects left staged by a shutdown without uploads are uploaded after the
// next open exactly once, and a further open uploads nothing.
func TestReplayUploadsExactlyOnce(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	dir := t.TempDir()
	s, err := Open(dir, be, Options{Paused: true, SegmentBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		key, data := obj(i, 100_000)
		if err := s.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if be.total() != 0 {
		t.Fatalf("%d uploads while paused", be.total())
	}
	if got := len(segFiles(t, dir)); got < 2 {
		t.Fatalf("%d segment files, want several (rotation at 1 MiB)", got)
	}

	s, err = Open(dir, be, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Objects > n {
		t.Fatalf("replay found %d objects, staged %d", st.Objects, n)
	}
	drain(t, s)
	for i := range n {
		key, data := obj(i, 100_000)
		if c := be.count(key); c != 1 {
			t.Fatalf("object %d uploaded %d times after replay, want 1", i, c)
		}
		got, err := be.Get(ctx, key)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("object %d in backend: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if files := segFiles(t, dir); len(files) != 0 {
		t.Fatalf("segments left after everything was uploaded: %v", files)
	}
	s = open(t, dir, be, Options{})
	drain(t, s)
	if be.total() != n {
		t.Fatalf("%d uploads in all after a second reopen, want %d", be.total(), n)
	}
}

// A crash in the middle of an append leaves a torn record at the tail. The
// records before it survive, the torn one is cut off, and the log takes
// new writes afterwards.
func TestCrashMidAppend(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		tear func(t *testing.T, seg string, size int64)
	}{
		{"half a header", func(t *testing.T, seg string, size int64) { appendBytes(t, seg, []byte{0x73, 0x6a, 0x62}) }},
		{"header without data", func(t *testing.T, seg string, size int64) {
			hdr := make([]byte, headerLen+10)
			copy(hdr, []byte{0x73, 0x6a, 0x62, 0x6f, kindObject, 10, 0, 0, 0, 1, 0})
			appendBytes(t, seg, hdr)
		}},
		{"last record cut short", func(t *testing.T, seg string, size int64) { truncate(t, seg, size-1000) }},
		{"last record's data damaged", func(t *testing.T, seg string, size int64) { flipByte(t, seg, size-10) }},
		{"zeros after the tail", func(t *testing.T, seg string, size int64) { appendBytes(t, seg, make([]byte, 8192)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := newBackend(t)
			dir := t.TempDir()
			s, err := Open(dir, be, Options{Paused: true})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				key, data := obj(i, 50_000)
				if err := s.Put(ctx, key, data); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			if len(files) != 1 {
				t.Fatalf("segments %v, want one", files)
			}
			st, err := os.Stat(files[0])
			if err != nil {
				t.Fatal(err)
			}
			tc.tear(t, files[0], st.Size())
			torn := tc.name == "last record cut short" || tc.name == "last record's data damaged"

			s = open(t, dir, be, Options{Paused: true})
			want := 3
			if torn {
				want = 2
			}
			if got := s.Stats().Objects; got != want {
				t.Fatalf("replay found %d objects, want %d", got, want)
			}
			for i := range want {
				key, data := obj(i, 50_000)
				got, err := s.Get(ctx, key)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("object %d after replay: %v", i, err)
				}
			}
			if torn {
				key, _ := obj(2, 50_000)
				if _, err := s.Get(ctx, key); !errors.Is(err, objstore.ErrNotFound) {
					t.Fatalf("torn object: Get err %v, want not found", err)
				}
			}
			key, data := obj(99, 70_000)
			if err := s.Put(ctx, key, data); err != nil {
				t.Fatalf("Put after replay: %v", err)
			}
			s.Resume()
			drain(t, s)
			if got, err := be.Get(ctx, key); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("new object in backend: %v", err)
			}
		})
	}
}

func appendBytes(t *testing.T, name string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, name string, size int64) {
	t.Helper()
	if err := os.Truncate(name, size); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, name string, off int64) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// With DirectFrom, big objects go straight to the backend and small ones
// through the log.
func TestDirectFrom(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	dir := t.TempDir()
	s := open(t, dir, be, Options{Paused: true, DirectFrom: 64 << 10})
	bigKey, big := obj(1, 64<<10)
	smallKey, small := obj(2, 64<<10-1)
	for _, o := range []struct {
		k string
		d []byte
	}{{bigKey, big}, {smallKey, small}} {
		if err := s.Put(ctx, o.k, o.d); err != nil {
			t.Fatal(err)
		}
	}
	if be.count(bigKey) != 1 {
		t.Fatalf("big object: %d backend puts while uploads are paused, want 1 (direct)", be.count(bigKey))
	}
	if be.count(smallKey) != 0 {
		t.Fatal("small object reached the backend while uploads are paused")
	}
	if st := s.Stats(); st.Objects != 1 || st.Direct != 1 {
		t.Fatalf("Stats: %d staged, %d direct; want 1 and 1", st.Objects, st.Direct)
	}
	for _, o := range []struct {
		k string
		d []byte
	}{{bigKey, big}, {smallKey, small}} {
		if got, err := s.Get(ctx, o.k); err != nil || !bytes.Equal(got, o.d) {
			t.Fatalf("Get %s: %v", o.k, err)
		}
	}
}

// Deleting a staged object cancels its upload, also across a reopen.
func TestDeleteStaged(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	dir := t.TempDir()
	s, err := Open(dir, be, Options{Paused: true})
	if err != nil {
		t.Fatal(err)
	}
	keep, gone := putTwoDeleteOne(t, s, 1, 2)
	if _, err := s.Get(ctx, gone); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("deleted staged object: Get err %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, be, Options{})
	drain(t, s)
	if be.count(gone) != 0 || be.count(keep) != 1 {
		t.Fatalf("uploads: deleted object %d (want 0), kept object %d (want 1)", be.count(gone), be.count(keep))
	}
}

// putTwoDeleteOne stages objects keep and gone (see obj), then deletes
// gone.
func putTwoDeleteOne(t *testing.T, s *Store, keepIdx, goneIdx int) (keep, gone string) {
	t.Helper()
	ctx := context.Background()
	for _, i := range []int{keepIdx, goneIdx} {
		key, data := obj(i, 10_000)
		if err := s.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	keep, _ = obj(keepIdx, 10_000)
	gone, _ = obj(goneIdx, 10_000)
	if err := s.Delete(ctx, gone); err != nil {
		t.Fatal(err)
	}
	return keep, gone
}

// List shows staged objects merged in key order with the backend's, each
// once.
func TestListMergesStaged(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	var keys []string
	for i := range 6 {
		key, data := obj(i, 100)
		keys = append(keys, key)
		if i%2 == 0 {
			if err := be.Put(ctx, key, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := open(t, t.TempDir(), be, Options{Paused: true})
	for i, key := range keys {
		if i%3 == 0 || i%2 == 1 {
			_, data := obj(i, 100)
			if err := s.Put(ctx, key, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	var got []string
	if err := s.List(ctx, "blocks/", func(k string, size int64) error {
		if size != 100 {
			return fmt.Errorf("%s: size %d", k, size)
		}
		got = append(got, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := append([]string(nil), keys...)
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List:\n got %v\nwant %v", got, want)
	}
}

// A writer faster than the store waits once the staged bytes reach the
// limit instead of growing the log without bound.
func TestBackPressure(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	s := open(t, t.TempDir(), be, Options{Paused: true, MaxBytes: 1 << 20})
	for i := range 4 {
		key, data := obj(i, 256<<10)
		if err := s.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	key, data := obj(10, 256<<10)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := s.Put(short, key, data); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put over the limit: err %v, want to wait until the deadline", err)
	}
	if st := s.Stats(); st.Bytes > 1<<20 {
		t.Fatalf("staged %d bytes, limit %d", st.Bytes, 1<<20)
	}
	done := make(chan error, 1)
	go func() { done <- s.Put(ctx, key, data) }()
	select {
	case err := <-done:
		t.Fatalf("Put returned (%v) while the log is full and uploads paused", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.Resume()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Put still blocked after uploads resumed")
	}
}

// Uploads that fail are retried with backoff until they succeed; the
// object stays readable from the log meanwhile.
func TestUploadRetries(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	fs := faulty.New(be, 1)
	fs.FailNext(faulty.OpPut, 3)
	s := open(t, t.TempDir(), fs, Options{RetryMax: 50 * time.Millisecond})
	key, data := obj(1, 5000)
	if err := s.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	drain(t, s)
	if got := s.Stats().Retries; got != 3 {
		t.Fatalf("Retries = %d, want 3", got)
	}
	if be.count(key) != 1 {
		t.Fatalf("uploaded %d times", be.count(key))
	}
}

// Many concurrent Puts share fsyncs and all become durable and uploaded.
func TestConcurrentPuts(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	dir := t.TempDir()
	s, err := Open(dir, be, Options{SegmentBytes: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				key, data := obj(w*100+i, 30_000+i)
				if err := s.Put(ctx, key, data); err != nil {
					errs <- err
					return
				}
				if i%5 == 0 {
					if got, err := s.Get(ctx, key); err != nil || !bytes.Equal(got, data) {
						errs <- fmt.Errorf("get %s: %v", key, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	drain(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for w := range 16 {
		for i := range 20 {
			key, data := obj(w*100+i, 30_000+i)
			got, err := be.Get(ctx, key)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: %v", key, err)
			}
		}
	}
	if files := segFiles(t, dir); len(files) != 0 {
		t.Fatalf("segments left: %v", files)
	}
}

func TestInvalidInput(t *testing.T) {
	ctx := context.Background()
	be := newBackend(t)
	s := open(t, t.TempDir(), be, Options{})
	for _, key := range []string{"", "../x", "/abs", "UPPER"} {
		if err := s.Put(ctx, key, []byte("x")); err == nil {
			t.Errorf("Put(%q) accepted", key)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "zz.seg"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, be, Options{}); err == nil {
		t.Error("Open accepted a directory with a stray segment name")
	}
}

func BenchmarkPut4MiB(b *testing.B) {
	ctx := context.Background()
	d, err := objstore.NewDir(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(b.TempDir(), d, Options{Paused: true, MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := bytes.Repeat([]byte("x"), 4<<20)
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		sum := sha256.Sum256(fmt.Appendf(nil, "%d", i))
		if err := s.Put(ctx, "blocks/"+hex.EncodeToString(sum[:]), data); err != nil {
			b.Fatal(err)
		}
	}
}

// GetInto serves a staged object from the log and one that is not staged
// from the backend, into the caller's buffer when the backend can.
func TestGetInto(t *testing.T) {
	ctx := context.Background()
	be, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, t.TempDir(), be, Options{Paused: true, DirectFrom: 64 << 10})
	bigKey, big := obj(1, 64<<10)
	smallKey, small := obj(2, 100)
	for k, d := range map[string][]byte{bigKey: big, smallKey: small} {
		if err := s.Put(ctx, k, d); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 128<<10)
	got, err := s.GetInto(ctx, bigKey, buf)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("GetInto of a direct object: %d bytes, %v", len(got), err)
	}
	if &got[0] != &buf[0] {
		t.Error("an object read from the backend did not go into the buffer")
	}
	if got, err := s.GetInto(ctx, smallKey, buf); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("GetInto of a staged object: %d bytes, %v", len(got), err)
	}
	if _, err := s.GetInto(ctx, "blocks/none", buf); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("GetInto of a missing object: %v, want ErrNotFound", err)
	}
}

// verifyingStore reports every read of its store verified, as a replicated
// store with a verifier does.
type verifyingStore struct{ objstore.Store }

func (v verifyingStore) GetVerified(ctx context.Context, key string, buf []byte) ([]byte, bool, error) {
	data, err := objstore.GetInto(ctx, v.Store, key, buf)
	return data, err == nil, err
}

// TestGetVerified: a staged object, read from the log, is never reported
// verified (the log checks only that its record is whole); once uploaded,
// the backend's answer is passed on.
func TestGetVerified(t *testing.T) {
	ctx := context.Background()
	be, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := open(t, t.TempDir(), verifyingStore{be}, Options{Paused: true})
	key, data := obj(3, 1000)
	if err := s.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	got, verified, err := objstore.GetVerified(ctx, s, key, nil)
	if err != nil || verified || !bytes.Equal(got, data) {
		t.Errorf("staged: %d bytes, verified %v, %v; want the data, not verified", len(got), verified, err)
	}
	s.Resume()
	drain(t, s)
	got, verified, err = objstore.GetVerified(ctx, s, key, make([]byte, 4096))
	if err != nil || !verified || !bytes.Equal(got, data) {
		t.Errorf("uploaded: %d bytes, verified %v, %v; want the data, verified by the backend", len(got), verified, err)
	}
}

// With UploadDelay an object is uploaded only once it has been staged
// that long; one deleted before then is never uploaded; Drain and a full
// log let the held-back objects go at once.
func TestUploadDelay(t *testing.T) {
	ctx := context.Background()
	const delay = 300 * time.Millisecond

	t.Run("held back, then uploaded", func(t *testing.T) {
		be := newBackend(t)
		s := open(t, t.TempDir(), be, Options{UploadDelay: delay})
		key, data := obj(1, 10_000)
		start := time.Now()
		if err := s.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Delayed != 1 || st.Queued != 0 {
			t.Fatalf("after Put: %d held back, %d queued; want 1, 0", st.Delayed, st.Queued)
		}
		if got, err := s.Get(ctx, key); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("held-back object not readable: %v", err)
		}
		for be.count(key) == 0 {
			if time.Since(start) > 10*time.Second {
				t.Fatal("never uploaded")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if waited := time.Since(start); waited < delay {
			t.Fatalf("uploaded after %v, before the delay of %v", waited, delay)
		}
	})

	t.Run("deleted while held back: never uploaded", func(t *testing.T) {
		be := newBackend(t)
		dir := t.TempDir()
		s := open(t, dir, be, Options{UploadDelay: delay})
		keep, gone := putTwoDeleteOne(t, s, 3, 2)
		time.Sleep(2 * delay)
		drain(t, s)
		if be.count(gone) != 0 || be.count(keep) != 1 {
			t.Fatalf("uploads: deleted object %d (want 0), kept object %d (want 1)", be.count(gone), be.count(keep))
		}
	})

	t.Run("Drain does not wait", func(t *testing.T) {
		be := newBackend(t)
		s := open(t, t.TempDir(), be, Options{UploadDelay: time.Hour})
		key, data := obj(4, 10_000)
		if err := s.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
		drain(t, s) // fails after 20 s if it waits for the hour
		if be.count(key) != 1 {
			t.Fatalf("%d uploads after Drain, want 1", be.count(key))
		}
		// After the Drain, objects are held back again.
		key2, data2 := obj(5, 10_000)
		if err := s.Put(ctx, key2, data2); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Delayed != 1 {
			t.Fatalf("after the Drain: %d held back, want 1", st.Delayed)
		}
	})

	t.Run("a log past half full lets them go", func(t *testing.T) {
		be := newBackend(t)
		s := open(t, t.TempDir(), be, Options{UploadDelay: time.Hour, MaxBytes: 1 << 20})
		keys := make([]string, 4)
		for i := range keys {
			var data []byte
			keys[i], data = obj(10+i, 256<<10)
			short, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := s.Put(short, keys[i], data)
			cancel()
			if err != nil {
				t.Fatalf("Put %d of 256 KiB into a 1 MiB log holding back for an hour: %v", i, err)
			}
		}
		// Over half of 1 MiB staged: they go without waiting the hour.
		deadline := time.Now().Add(10 * time.Second)
		for be.count(keys[0]) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("nothing uploaded with %d bytes staged of 1 MiB", s.Stats().Bytes)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// TestFullDisk: the log's disk filling up fails a Put with ENOSPC and
// leaves the log as it was: once there is room again it takes Puts, and
// every object it acknowledged is read back, then and after a restart.
// (Before, the first failed append refused every write until restart.)
// Admit refuses a Put before anything is written. Needs root, for a small
// tmpfs to fill.
func TestFullDisk(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=2m"); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	logDir := filepath.Join(dir, "log")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	refuse := false
	var admitted, done int
	o := Options{Paused: true, Admit: func(n int64) (func(), error) {
		if refuse {
			return nil, fmt.Errorf("no room: %w", syscall.ENOSPC)
		}
		admitted++
		return func() { done++ }, nil
	}}
	s, err := Open(logDir, newBackend(t), o)
	if err != nil {
		t.Fatal(err)
	}
	var acked []int
	full := false
	for i := range 40 {
		key, data := obj(i, 100_000)
		err := s.Put(ctx, key, data)
		if errors.Is(err, syscall.ENOSPC) {
			full = true
			break
		}
		if err != nil {
			t.Fatalf("put %d: %v, want nil or ENOSPC", i, err)
		}
		acked = append(acked, i)
	}
	if !full {
		t.Fatal("the tmpfs never filled")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i := 100; i < 103; i++ {
		key, data := obj(i, 100_000)
		if err := s.Put(ctx, key, data); err != nil {
			t.Fatalf("put after room was made: %v", err)
		}
		acked = append(acked, i)
	}
	refuse = true
	if key, data := obj(200, 10); !errors.Is(s.Put(ctx, key, data), syscall.ENOSPC) {
		t.Error("a Put Admit refuses did not fail with its ENOSPC")
	}
	if admitted != done || admitted != len(acked)+1 {
		t.Errorf("Admit: %d admitted, %d done, for %d Puts and one that failed on the disk", admitted, done, len(acked))
	}
	check := func(s *Store, when string) {
		for _, i := range acked {
			key, data := obj(i, 100_000)
			got, err := s.Get(ctx, key)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: object %d: %v (%d bytes)", when, i, err, len(got))
			}
		}
	}
	check(s, "before a restart")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	o.Admit = nil
	s = open(t, logDir, newBackend(t), Options{Paused: true})
	check(s, "after a restart")
}
