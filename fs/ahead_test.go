package fs

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

func aheadID(n byte) meta.BlockID { return meta.BlockID{n} }

// fill settles b with bufSize bytes of n, read into its recycled buffer.
func fillAhead(a *ahead, b *aheadBlock, n byte) {
	data := b.buf[:a.bufSize]
	for i := range data {
		data[i] = n
	}
	a.finish(b, data, nil)
}

// The life of a block read ahead: held until its bytes have been read,
// its buffer recycled only after the last reader is done with it.
func TestAheadLifecycle(t *testing.T) {
	tests := []struct {
		name      string
		done      int   // read before the fetch started
		reads     []int // bytes copied by successive readers
		wantHeld  bool  // still held afterwards
		wantFreed bool  // buffer back on the free list
	}{
		{"unread", 0, nil, true, false},
		{"partly read", 0, []int{100, 200}, true, false},
		{"read in full, in pieces", 0, []int{300, 500, 224}, false, true},
		{"rest read after the stream was inside it", 1000, []int{24}, false, true},
		{"rest not yet read", 1000, []int{23}, true, false},
		{"reader found it unusable", 0, []int{-1}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAhead(4, 1024)
			b := a.start(aheadID(1), tc.done, true)
			if b == nil || len(b.buf) != 1024 {
				t.Fatalf("start: %+v", b)
			}
			fillAhead(a, b, 7)
			for _, n := range tc.reads {
				r := a.acquire(aheadID(1))
				if r == nil {
					t.Fatal("acquire: block not held")
				}
				a.release(r, n)
			}
			if got := a.contains(aheadID(1)); got != tc.wantHeld {
				t.Errorf("held = %v, want %v", got, tc.wantHeld)
			}
			if got := len(a.free) == 1; got != tc.wantFreed {
				t.Errorf("buffer recycled = %v, want %v", got, tc.wantFreed)
			}
		})
	}
}

// A buffer is never handed out again while a reader still copies from it,
// even after its block left; the next fetch then gets a fresh one.
func TestAheadRecyclesOnlyAfterTheLastReader(t *testing.T) {
	a := newAhead(4, 16)
	b := a.start(aheadID(1), 0, true)
	fillAhead(a, b, 1)
	r := a.acquire(aheadID(1))
	a.drop()
	if a.contains(aheadID(1)) {
		t.Fatal("held after drop")
	}
	c := a.start(aheadID(2), 0, true)
	if &c.buf[0] == &b.buf[0] {
		t.Fatal("the buffer of a block being read was handed to another fetch")
	}
	if !bytes.Equal(r.data, bytes.Repeat([]byte{1}, 16)) {
		t.Fatal("a reader's block changed under it")
	}
	bufs := map[*byte]bool{&r.buf[0]: true, &c.buf[0]: true}
	a.release(r, 16)
	fillAhead(a, c, 2)
	a.release(a.acquire(aheadID(2)), 16)
	if len(a.free) != 2 {
		t.Fatalf("%d buffers free, want both", len(a.free))
	}
	if d := a.start(aheadID(3), 0, true); d == nil || !bufs[&d.buf[0]] {
		t.Fatal("released buffers were not recycled")
	}
	// Dropping caches gives the memory back.
	a.drop()
	if len(a.free) != 0 {
		t.Fatalf("%d buffers kept after drop", len(a.free))
	}
}

// With every place taken, the oldest settled block nobody reads leaves for
// a new one; blocks in flight or being read never do.
func TestAheadEviction(t *testing.T) {
	a := newAhead(3, 8)
	b1 := a.start(aheadID(1), 0, true)
	b2 := a.start(aheadID(2), 0, true)
	b3 := a.start(aheadID(3), 0, true)
	if a.start(aheadID(1), 0, true) != nil {
		t.Fatal("a block already held was started again")
	}
	if a.start(aheadID(4), 0, true) != nil {
		t.Fatal("a block was started with every place in flight")
	}
	fillAhead(a, b1, 1)
	fillAhead(a, b2, 2)
	r := a.acquire(aheadID(1)) // being read: stays
	if a.start(aheadID(4), 0, true) == nil {
		t.Fatal("no place made for a new block")
	}
	if !a.contains(aheadID(1)) || a.contains(aheadID(2)) {
		t.Fatal("evicted the wrong block: want the oldest unread settled one (2)")
	}
	if a.start(aheadID(5), 0, true) != nil {
		t.Fatal("evicted a block being read or in flight")
	}
	a.release(r, 0)
	fillAhead(a, b3, 3)
	if a.start(aheadID(5), 0, true) == nil || a.contains(aheadID(1)) {
		t.Fatal("block 1, read and released, should have made way")
	}
}

// A failed fetch leaves at once; a reader waiting for it gets the error and
// a context ends a wait.
func TestAheadFailureAndCancel(t *testing.T) {
	a := newAhead(2, 8)
	b := a.start(aheadID(1), 0, true)
	r := a.acquire(aheadID(1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled context: %v", err)
	}
	boom := errors.New("boom")
	a.finish(b, nil, boom)
	if _, err := r.wait(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("wait: %v, want the fetch's error", err)
	}
	if a.contains(aheadID(1)) || a.acquire(aheadID(1)) != nil {
		t.Fatal("a failed block is still held")
	}
	a.release(r, -1)
	if len(a.free) != 1 {
		t.Fatalf("%d buffers free after the failed block's reader left, want 1", len(a.free))
	}
}

// Readers, fetches, evictions and drops at once (run with -race): every
// reader sees the content its block was filled with.
func TestAheadConcurrent(t *testing.T) {
	a := newAhead(4, 4096)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				id := byte((i + w) % 8)
				if b := a.start(aheadID(id), 0, true); b != nil {
					fillAhead(a, b, id)
				}
				if r := a.acquire(aheadID(id)); r != nil {
					data, err := r.wait(context.Background())
					if err != nil || len(data) != 4096 || data[0] != id || data[4095] != id {
						t.Errorf("block %d: read %d bytes, not all %d: %v", id, len(data), id, err)
					}
					a.release(r, 1024)
				}
				if i%97 == 0 {
					a.drop()
				}
			}
		}()
	}
	wg.Wait()
}
