// Package faulty wraps an objstore.Store and injects failures, latency and
// corruption on demand, so tests can check how the layers above behave when
// an object store misbehaves.
package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/objfs/objfs/objstore"
)

// ErrInjected is wrapped by every error this package makes up.
var ErrInjected = errors.New("injected fault")

// Op names a Store operation whose behaviour can be configured.
type Op int

// The configurable operations.
const (
	OpPut Op = iota
	OpGet
	OpDelete
	OpList
	numOps
)

func (op Op) String() string {
	switch op {
	case OpPut:
		return "put"
	case OpGet:
		return "get"
	case OpDelete:
		return "delete"
	case OpList:
		return "list"
	default:
		return fmt.Sprintf("Op(%d)", int(op))
	}
}

func (op Op) valid() bool { return op >= 0 && op < numOps }

// Store is an objstore.Store that forwards to an inner store, except when
// told to fail. All setters are safe to call at any time, from any goroutine.
type Store struct {
	inner objstore.Store
	calls [numOps]atomic.Int64

	mu          sync.Mutex // guards the fields below
	rng         *rand.Rand
	errorRate   [numOps]float64
	latency     [numOps]time.Duration
	failNext    [numOps]int
	corruptRate float64
	vanished    bool
}

var _ objstore.Store = (*Store)(nil)

// New wraps inner. The seed makes the random choices repeatable for a given
// sequence of calls.
func New(inner objstore.Store, seed int64) *Store {
	return &Store{
		inner: inner,
		rng:   rand.New(rand.NewPCG(uint64(seed), 0)),
	}
}

// clampRate turns any float into a probability; NaN means never.
func clampRate(rate float64) float64 {
	if math.IsNaN(rate) || rate < 0 {
		return 0
	}
	return min(rate, 1)
}

// SetErrorRate makes each call of op fail with probability rate (0..1).
// Unknown ops are ignored.
func (s *Store) SetErrorRate(op Op, rate float64) {
	if !op.valid() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errorRate[op] = clampRate(rate)
}

// SetLatency makes each call of op wait d before doing anything. The wait
// ends early, with the context's error, if the context is cancelled.
func (s *Store) SetLatency(op Op, d time.Duration) {
	if !op.valid() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency[op] = max(d, 0)
}

// SetCorruptRate makes each successful Get return, with probability rate, a
// copy of the object with one byte flipped. The stored object is untouched.
func (s *Store) SetCorruptRate(rate float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.corruptRate = clampRate(rate)
}

// SetVanished makes every Put, Get, Delete and List fail, as if the store had
// disappeared, until called again with false.
func (s *Store) SetVanished(vanished bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vanished = vanished
}

// FailNext makes the next n calls of op fail, before any random errors apply.
// It replaces any count still pending; n <= 0 cancels it.
func (s *Store) FailNext(op Op, n int) {
	if !op.valid() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[op] = max(n, 0)
}

// Calls returns how many times op has been called, including failed calls.
func (s *Store) Calls(op Op) int64 {
	if !op.valid() {
		return 0
	}
	return s.calls[op].Load()
}

// before runs the configured faults for one call of op and returns the error
// to give instead of calling the inner store, or nil.
func (s *Store) before(ctx context.Context, op Op) error {
	s.calls[op].Add(1)

	s.mu.Lock()
	delay := s.latency[op]
	s.mu.Unlock()
	if delay > 0 {
		// The lock is not held while waiting, so a slow op never blocks the
		// setters or other ops.
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("faulty: %s: %w", op, ctx.Err())
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.vanished:
		return fmt.Errorf("faulty: %s: store vanished: %w", op, ErrInjected)
	case s.failNext[op] > 0:
		s.failNext[op]--
		return fmt.Errorf("faulty: %s: forced failure: %w", op, ErrInjected)
	case s.errorRate[op] > 0 && s.rng.Float64() < s.errorRate[op]:
		return fmt.Errorf("faulty: %s: random failure: %w", op, ErrInjected)
	}
	return nil
}

// Put forwards to the inner store unless a fault is injected.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	if err := s.before(ctx, OpPut); err != nil {
		return err
	}
	return s.inner.Put(ctx, key, data)
}

// Get forwards to the inner store unless a fault is injected, and may
// corrupt the returned copy.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	return s.GetInto(ctx, key, nil)
}

// GetInto is Get for callers that pass a buffer (objstore.IntoGetter),
// with the same faults: a corrupted read flips a byte of the caller's
// buffer, or of a copy when the inner store returned a slice of its own.
func (s *Store) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
	if err := s.before(ctx, OpGet); err != nil {
		return nil, err
	}
	data, err := objstore.GetInto(ctx, s.inner, key, buf)
	if err != nil || len(data) == 0 {
		return data, err
	}
	s.mu.Lock()
	corrupt := s.corruptRate > 0 && s.rng.Float64() < s.corruptRate
	pos := 0
	if corrupt {
		pos = s.rng.IntN(len(data))
	}
	s.mu.Unlock()
	if !corrupt {
		return data, nil
	}
	if len(buf) == 0 || &data[0] != &buf[:1][0] {
		data = bytes.Clone(data)
	}
	data[pos] ^= 0xff
	return data, nil
}

// Delete forwards to the inner store unless a fault is injected.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.before(ctx, OpDelete); err != nil {
		return err
	}
	return s.inner.Delete(ctx, key)
}

// List forwards to the inner store unless a fault is injected; faults are
// decided once, before the first key.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	if err := s.before(ctx, OpList); err != nil {
		return err
	}
	return s.inner.List(ctx, prefix, fn)
}

// String names the wrapper and the inner store.
func (s *Store) String() string {
	return "faulty(" + s.inner.String() + ")"
}

// Close closes the inner store; it is never made to fail.
func (s *Store) Close() error {
	return s.inner.Close()
}
