// Package metered wraps an object store with request metrics: counts,
// errors and latencies of put, get, delete and list, and bytes moved.
package metered

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/objfs/objfs/fs/metrics"
	"github.com/objfs/objfs/objstore"
)

// Store is an objstore.Store that records its requests.
type Store struct {
	objstore.Store
	ops     *metrics.Ops
	read    prometheus.Counter
	written prometheus.Counter
}

// New wraps s; its instruments are registered with reg.
func New(s objstore.Store, reg prometheus.Registerer) *Store {
	m := &Store{
		Store: s,
		ops:   metrics.NewOps(reg, "store", "Object store requests"),
		read: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "objfs_store_read_bytes_total", Help: "Bytes read from the object store.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "objfs_store_written_bytes_total", Help: "Bytes written to the object store.",
		}),
	}
	reg.MustRegister(m.read, m.written)
	return m
}

// done records one request; a missing object is an answer, not an error.
func (m *Store) done(op string, start time.Time, err error) {
	m.ops.Observe(op, start)
	if err != nil && !errors.Is(err, objstore.ErrNotFound) {
		m.ops.Failed(op)
	}
}

// Put implements objstore.Store.
func (m *Store) Put(ctx context.Context, key string, data []byte) error {
	start := time.Now()
	err := m.Store.Put(ctx, key, data)
	m.done("put", start, err)
	if err == nil {
		m.written.Add(float64(len(data)))
	}
	return err
}

// Get implements objstore.Store.
func (m *Store) Get(ctx context.Context, key string) ([]byte, error) {
	return m.GetInto(ctx, key, nil)
}

// GetInto implements objstore.IntoGetter (when the wrapped store does not,
// it reads with Get).
func (m *Store) GetInto(ctx context.Context, key string, buf []byte) ([]byte, error) {
	data, _, err := m.GetVerified(ctx, key, buf)
	return data, err
}

// GetVerified implements objstore.VerifyingGetter (false when the wrapped
// store does not check).
func (m *Store) GetVerified(ctx context.Context, key string, buf []byte) ([]byte, bool, error) {
	start := time.Now()
	data, verified, err := objstore.GetVerified(ctx, m.Store, key, buf)
	m.done("get", start, err)
	m.read.Add(float64(len(data)))
	return data, verified, err
}

// Delete implements objstore.Store.
func (m *Store) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := m.Store.Delete(ctx, key)
	m.done("delete", start, err)
	return err
}

// List implements objstore.Store.
func (m *Store) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	start := time.Now()
	err := m.Store.List(ctx, prefix, fn)
	m.done("list", start, err)
	return err
}
