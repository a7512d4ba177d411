package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/faulty"
	"github.com/objfs/objfs/objstore/staging"
)

// Drain returns once everything is uploaded, and gives up with an error
// naming what is left when uploads stop making progress.
func TestDrainStalls(t *testing.T) {
	ctx := context.Background()
	dir, err := objstore.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := faulty.New(dir, 1)
	st, err := staging.Open(t.TempDir(), store, staging.Options{RetryMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	store.SetErrorRate(faulty.OpPut, 1) // the store takes nothing
	if err := st.Put(ctx, "blocks/aa/bb/one", []byte("one")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = st.Drain(ctx, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "1 blocks") {
		t.Fatalf("drain with a store that takes nothing: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("gave up after %v, stall limit 300ms", d)
	}

	store.SetErrorRate(faulty.OpPut, 0)
	if err := st.Drain(ctx, 5*time.Second); err != nil {
		t.Fatalf("drain with the store back: %v", err)
	}
	if n := st.Stats().Objects; n != 0 {
		t.Fatalf("%d objects still staged after a successful drain", n)
	}
}
