package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/objfs/objfs/objstore"
)

// memStore is a minimal in-memory objstore.Store. Its Get returns the stored
// slice itself, so a wrapper that corrupted in place would be caught.
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func newMem() *memStore { return &memStore{objs: map[string][]byte{}} }

func (m *memStore) Put(_ context.Context, key string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = slices.Clone(data)
	return nil
}

func (m *memStore) Get(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.objs[key]
	if !ok {
		return nil, fmt.Errorf("get %q: %w", key, objstore.ErrNotFound)
	}
	return d, nil
}

func (m *memStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	return nil
}

func (m *memStore) List(_ context.Context, prefix string, fn func(string, int64) error) error {
	m.mu.Lock()
	var keys []string
	for k := range m.objs {
		keys = append(keys, k)
	}
	m.mu.Unlock()
	slices.Sort(keys)
	for _, k := range keys {
		m.mu.Lock()
		n := int64(len(m.objs[k]))
		m.mu.Unlock()
		if err := fn(k, n); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) String() string { return "mem" }
func (m *memStore) Close() error   { return nil }

// call runs op once against s and returns its error.
func call(ctx context.Context, s objstore.Store, op Op) error {
	switch op {
	case OpPut:
		return s.Put(ctx, "k", []byte("v"))
	case OpGet:
		_, err := s.Get(ctx, "k")
		return err
	case OpDelete:
		return s.Delete(ctx, "k")
	case OpList:
		return s.List(ctx, "", func(string, int64) error { return nil })
	}
	return fmt.Errorf("unknown op %v", op)
}

var allOps = []Op{OpPut, OpGet, OpDelete, OpList}

func newStore(t *testing.T) *Store {
	t.Helper()
	s := New(newMem(), 1)
	if err := s.Put(context.Background(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPassThrough(t *testing.T) {
	ctx := context.Background()
	s := New(newMem(), 1)
	if err := s.Put(ctx, "a", []byte("data")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "a")
	if err != nil || string(got) != "data" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	var keys []string
	if err := s.List(ctx, "", func(k string, _ int64) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"a"}) {
		t.Fatalf("List = %v", keys)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if s.String() != "faulty(mem)" {
		t.Fatalf("String = %q", s.String())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCalls(t *testing.T) {
	ctx := context.Background()
	s := New(newMem(), 1)
	s.FailNext(OpGet, 1) // failed calls count too
	for i, op := range allOps {
		for range i + 1 {
			_ = call(ctx, s, op)
		}
	}
	for i, op := range allOps {
		if got := s.Calls(op); got != int64(i+1) {
			t.Errorf("Calls(%v) = %d, want %d", op, got, i+1)
		}
	}
	if got := s.Calls(Op(99)); got != 0 {
		t.Errorf("Calls(unknown) = %d, want 0", got)
	}
}

func TestFailNext(t *testing.T) {
	ctx := context.Background()
	for _, op := range allOps {
		t.Run(op.String(), func(t *testing.T) {
			s := newStore(t)
			s.FailNext(op, 2)
			for i := range 2 {
				if err := call(ctx, s, op); !errors.Is(err, ErrInjected) {
					t.Fatalf("call %d: err = %v, want ErrInjected", i, err)
				}
			}
			if err := call(ctx, s, op); err != nil {
				t.Fatalf("third call: %v", err)
			}
			// Other ops are not affected.
			for _, other := range allOps {
				if other == op {
					continue
				}
				s.FailNext(op, 1)
				if err := call(ctx, s, other); err != nil && !errors.Is(err, objstore.ErrNotFound) {
					t.Fatalf("%v failed while only %v should: %v", other, op, err)
				}
				s.FailNext(op, 0)
			}
		})
	}
}

func TestErrorRate(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		rate     float64
		min, max int // failures out of 1000 calls
	}{
		{0, 0, 0},
		{-1, 0, 0},
		{1, 1000, 1000},
		{2, 1000, 1000},
		{0.5, 400, 600},
	}
	for _, tt := range tests {
		for _, op := range allOps {
			t.Run(fmt.Sprintf("%v/%v", op, tt.rate), func(t *testing.T) {
				s := newStore(t)
				s.SetErrorRate(op, tt.rate)
				failed := 0
				for range 1000 {
					err := call(ctx, s, op)
					if errors.Is(err, ErrInjected) {
						failed++
					} else if err != nil && !errors.Is(err, objstore.ErrNotFound) {
						t.Fatalf("unexpected error: %v", err)
					}
				}
				if failed < tt.min || failed > tt.max {
					t.Fatalf("%d failures, want %d..%d", failed, tt.min, tt.max)
				}
			})
		}
	}
}

func TestErrorRateRepeatable(t *testing.T) {
	ctx := context.Background()
	pattern := func(seed int64) []bool {
		s := New(newMem(), seed)
		s.SetErrorRate(OpPut, 0.5)
		var out []bool
		for range 64 {
			out = append(out, call(ctx, s, OpPut) != nil)
		}
		return out
	}
	if !slices.Equal(pattern(7), pattern(7)) {
		t.Fatal("same seed gave different failure patterns")
	}
}

func TestLatency(t *testing.T) {
	tests := []struct {
		name      string
		latency   time.Duration
		timeout   time.Duration
		wantErr   error
		minLength time.Duration
	}{
		{"delayed", 30 * time.Millisecond, time.Minute, nil, 30 * time.Millisecond},
		{"cancelled while waiting", time.Minute, 20 * time.Millisecond, context.DeadlineExceeded, 0},
	}
	for _, tt := range tests {
		for _, op := range allOps {
			t.Run(tt.name+"/"+op.String(), func(t *testing.T) {
				s := newStore(t)
				s.SetLatency(op, tt.latency)
				ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
				defer cancel()
				start := time.Now()
				err := call(ctx, s, op)
				took := time.Since(start)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if took < tt.minLength || took > 10*time.Second {
					t.Fatalf("call took %v, want at least %v", took, tt.minLength)
				}
			})
		}
	}
}

func TestCorruptRate(t *testing.T) {
	ctx := context.Background()
	orig := []byte("the quick brown fox jumps over the lazy dog")
	tests := []struct {
		name        string
		rate        float64
		wantCorrupt bool
		into        bool // GetInto a buffer, over a store that reads into it
	}{
		{"never", 0, false, false},
		{"always", 1, true, false},
		{"never, into a buffer", 0, false, true},
		{"always, into a buffer", 1, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var inner objstore.Store = newMem()
			if tt.into {
				d, err := objstore.NewDir(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				inner = d
			}
			s := New(inner, 3)
			buf := make([]byte, 100)
			get := s.Get
			if tt.into {
				get = func(ctx context.Context, key string) ([]byte, error) { return s.GetInto(ctx, key, buf) }
			}
			if err := s.Put(ctx, "k", orig); err != nil {
				t.Fatal(err)
			}
			s.SetCorruptRate(tt.rate)
			for range 20 {
				got, err := get(ctx, "k")
				if err != nil {
					t.Fatal(err)
				}
				diff := 0
				for i := range got {
					if got[i] != orig[i] {
						diff++
					}
				}
				if wantDiff := map[bool]int{false: 0, true: 1}[tt.wantCorrupt]; diff != wantDiff || len(got) != len(orig) {
					t.Fatalf("Get returned %d changed bytes (len %d), want %d", diff, len(got), wantDiff)
				}
			}
			// The stored object is never changed.
			s.SetCorruptRate(0)
			if got, err := s.Get(ctx, "k"); err != nil || !bytes.Equal(got, orig) {
				t.Fatalf("stored object changed: %q, %v", got, err)
			}
		})
	}
}

func TestCorruptEmptyObject(t *testing.T) {
	ctx := context.Background()
	s := New(newMem(), 1)
	if err := s.Put(ctx, "empty", nil); err != nil {
		t.Fatal(err)
	}
	s.SetCorruptRate(1)
	if got, err := s.Get(ctx, "empty"); err != nil || len(got) != 0 {
		t.Fatalf("Get(empty) = %q, %v", got, err)
	}
}

func TestVanished(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	s.SetVanished(true)
	for _, op := range allOps {
		if err := call(ctx, s, op); !errors.Is(err, ErrInjected) {
			t.Errorf("%v while vanished: err = %v, want ErrInjected", op, err)
		}
	}
	s.SetVanished(false)
	for _, op := range allOps {
		if err := call(ctx, s, op); err != nil {
			t.Errorf("%v after reappearing: %v", op, err)
		}
	}
}

func TestUnknownOpIgnored(t *testing.T) {
	s := newStore(t)
	// Setters must not panic on out-of-range ops.
	s.SetErrorRate(Op(-1), 1)
	s.SetLatency(Op(42), time.Hour)
	s.FailNext(Op(4), 3)
	for _, op := range allOps {
		if err := call(context.Background(), s, op); err != nil {
			t.Errorf("%v: %v", op, err)
		}
	}
}

func TestConcurrentConfigAndCalls(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				op := allOps[(i+j)%len(allOps)]
				_ = call(ctx, s, op)
			}
		})
	}
	wg.Go(func() {
		for j := range 200 {
			s.SetErrorRate(allOps[j%4], float64(j%3)/3)
			s.SetCorruptRate(float64(j%2) / 2)
			s.FailNext(allOps[j%4], j%2)
			s.SetVanished(j%5 == 0)
		}
	})
	wg.Wait()
	var total int64
	for _, op := range allOps {
		total += s.Calls(op)
	}
	if total != 4*200+1 { // +1 for the Put in newStore
		t.Fatalf("total calls = %d, want %d", total, 4*200+1)
	}
}
