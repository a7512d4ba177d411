package metered

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/faulty"
)

func TestMeteredStore(t *testing.T) {
	ctx := context.Background()
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inner := faulty.New(dir, 1)
	reg := prometheus.NewRegistry()
	s := New(inner, reg)
	if err := s.Put(ctx, "blocks/aa/bb/x", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "blocks/aa/bb/x"); err != nil || string(got) != "hello" {
		t.Fatalf("get: %q %v", got, err)
	}
	// GetInto is counted as a get, and reaches the store beneath (a
	// faulty wrapper of a directory, both of which read into buffers).
	buf := make([]byte, 16)
	if got, err := s.GetInto(ctx, "blocks/aa/bb/x", buf); err != nil || string(got) != "hello" || &got[0] != &buf[0] {
		t.Fatalf("get into a buffer: %q %v", got, err)
	}
	// A missing object is an answer, not an error.
	if _, err := s.Get(ctx, "blocks/aa/bb/missing"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	inner.FailNext(faulty.OpPut, 1)
	if err := s.Put(ctx, "blocks/aa/bb/y", []byte("x")); err == nil {
		t.Fatal("injected put failure not returned")
	}
	want := `
# HELP objfs_store_errors_total Object store requests: operations that failed, by operation.
# TYPE objfs_store_errors_total counter
objfs_store_errors_total{op="put"} 1
# HELP objfs_store_ops_total Object store requests: operations served, by operation.
# TYPE objfs_store_ops_total counter
objfs_store_ops_total{op="get"} 3
objfs_store_ops_total{op="put"} 2
# HELP objfs_store_read_bytes_total Bytes read from the object store.
# TYPE objfs_store_read_bytes_total counter
objfs_store_read_bytes_total 10
# HELP objfs_store_written_bytes_total Bytes written to the object store.
# TYPE objfs_store_written_bytes_total counter
objfs_store_written_bytes_total 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"objfs_store_errors_total", "objfs_store_ops_total", "objfs_store_read_bytes_total", "objfs_store_written_bytes_total"); err != nil {
		t.Error(err)
	}
}
