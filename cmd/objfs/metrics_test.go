package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/objstore/staging"
)

// TestMetricsEndpoint opens a volume with metrics on and reads /metrics:
// the volume's totals and the object store instruments are there.
func TestMetricsEndpoint(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "vol")
	if err := format(ctx, dir, "", 1<<20); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := newRegistry("127.0.0.1:0")
	v, f, err := openFS(ctx, dir, fs.Options{Logger: log}, staging.Options{}, diskCacheSpec{}, 0, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := closeFS(ctx, v, f); err != nil {
			t.Error(err)
		}
	}()
	stop, addr, err := serveMetrics("127.0.0.1:0", reg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"objfs_inodes 1", "objfs_directories 1", "objfs_buffered_bytes 0", "objfs_cache_hits_total 0", "objfs_meta_fs_free_bytes ", "objfs_space_refusals_total 0", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if newRegistry("") != nil {
		t.Error("metrics registry created with no address")
	}
}
