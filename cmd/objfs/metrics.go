package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/objfs/objfs/cmd/objfs/internal/space"
	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/metrics"
	"github.com/objfs/objfs/objstore/staging"
)

// newRegistry returns a registry with the Go runtime and process
// collectors, or nil when metrics are off (addr empty).
func newRegistry(addr string) *prometheus.Registry {
	if addr == "" {
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// opsFor returns the per-operation instruments of a component, nil (record
// nothing) when reg is nil.
func opsFor(reg *prometheus.Registry, component, help string) *metrics.Ops {
	if reg == nil {
		return nil
	}
	return metrics.NewOps(reg, component, help)
}

// registerFS exposes what the POSIX layer and the metadata already count:
// the volume's totals, buffered bytes and the block cache.
func registerFS(reg *prometheus.Registry, f *fs.FS) {
	stat := func(name, help string, get func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, get))
	}
	counter := func(name, help string, get func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, get))
	}
	stat("objfs_inodes", "Live inodes in the volume.", func() float64 { return float64(f.Meta().Stats().Inodes) })
	stat("objfs_files", "Regular files in the volume.", func() float64 { return float64(f.Meta().Stats().Files) })
	stat("objfs_directories", "Directories in the volume.", func() float64 { return float64(f.Meta().Stats().Dirs) })
	stat("objfs_file_bytes", "Sum of the sizes of regular files.", func() float64 { return float64(f.Meta().Stats().Bytes) })
	stat("objfs_blocks", "Distinct blocks referenced.", func() float64 { return float64(f.Meta().Stats().Blocks) })
	stat("objfs_stored_bytes", "Bytes of the referenced blocks (one copy).", func() float64 { return float64(f.Meta().Stats().BlockBytes) })
	stat("objfs_buffered_bytes", "Bytes written to files but not yet committed.", func() float64 { return float64(f.DirtyBytes()) })
	stat("objfs_cache_bytes", "Bytes of blocks in the memory cache.", func() float64 { _, _, b := f.CacheStats(); return float64(b) })
	counter("objfs_cache_hits_total", "Block reads served by the memory cache.", func() float64 { h, _, _ := f.CacheStats(); return float64(h) })
	counter("objfs_cache_misses_total", "Block reads the memory cache did not have.", func() float64 { _, m, _ := f.CacheStats(); return float64(m) })
	stat("objfs_readahead_bytes", "Bytes of blocks fetched ahead of sequential readers, held until read.", func() float64 { return float64(f.ReadAheadStats().Bytes) })
	counter("objfs_readahead_hits_total", "Block reads served by blocks fetched ahead.", func() float64 { return float64(f.ReadAheadStats().Hits) })
	counter("objfs_readahead_unread_total", "Blocks fetched ahead that left before their reader read them all (wasted fetches).", func() float64 { return float64(f.ReadAheadStats().Unread) })
	counter("objfs_readahead_buffers_total", "Buffers allocated for read-ahead (the others were recycled).", func() float64 { return float64(f.ReadAheadStats().Buffers) })
	stat("objfs_disk_cache_bytes", "Bytes of the disk block cache's files.", func() float64 { return float64(f.DiskCacheStats().Bytes) })
	counter("objfs_disk_cache_hits_total", "Block reads served by the disk cache.", func() float64 { return float64(f.DiskCacheStats().Hits) })
	counter("objfs_disk_cache_misses_total", "Block reads the disk cache did not have.", func() float64 { return float64(f.DiskCacheStats().Misses) })
	counter("objfs_disk_cache_corrupt_total", "Disk cache entries found damaged (dropped, read from the store instead).", func() float64 { return float64(f.DiskCacheStats().Corrupt) })
	counter("objfs_inodes_reaped_total", "Unlinked inodes freed in the background (open when unlinked, directories, large files).", func() float64 { return float64(f.FreedStats().Reaped) })
	counter("objfs_blocks_deleted_total", "Unreferenced blocks deleted from the object store.", func() float64 { return float64(f.FreedStats().BlocksDeleted) })
	counter("objfs_block_delete_failures_total", "Failed deletes of unreferenced blocks (each queued again for a later pass).", func() float64 { return float64(f.FreedStats().DeleteErrors) })
	counter("objfs_disk_cache_dropped_total", "Blocks not written to the disk cache because its queue was full.", func() float64 { return float64(f.DiskCacheStats().Dropped) })
}

// registerSpace publishes the space guard's view of the file system under
// the metadata.
func registerSpace(reg *prometheus.Registry, g *space.Guard) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "objfs_meta_fs_free_bytes", Help: "Bytes available on the file system under the volume's metadata."},
			func() float64 { return float64(g.Free()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "objfs_meta_fs_reserve_bytes", Help: "Bytes kept free there (--reserve): below it new data and files get ENOSPC."},
			func() float64 { return float64(g.Reserve()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "objfs_space_refusals_total", Help: "Writes and changes refused with ENOSPC to keep the reserve."},
			func() float64 { return float64(g.Refused()) }),
	)
}

// registerStaging exports the staging log's state: what is acknowledged
// but not yet in the object store, and how uploads go.
func registerStaging(reg *prometheus.Registry, st *staging.Store) {
	gauge := func(name, help string, get func(staging.Stats) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return get(st.Stats()) }))
	}
	counter := func(name, help string, get func(staging.Stats) float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return get(st.Stats()) }))
	}
	gauge("objfs_staged_blocks", "Blocks durable in the local staging log, not yet uploaded.", func(s staging.Stats) float64 { return float64(s.Objects) })
	gauge("objfs_staged_bytes", "Bytes of blocks in the staging log not yet uploaded.", func(s staging.Stats) float64 { return float64(s.Bytes) })
	gauge("objfs_upload_queue", "Staged blocks waiting for an upload worker.", func(s staging.Stats) float64 { return float64(s.Queued) })
	gauge("objfs_upload_held", "Staged blocks held back before their upload (small blocks on a volume of local directory stores, 30 s).", func(s staging.Stats) float64 { return float64(s.Delayed) })
	gauge("objfs_staging_segments", "Segment files of the staging log.", func(s staging.Stats) float64 { return float64(s.Segments) })
	counter("objfs_uploads_total", "Staged blocks uploaded to the object store.", func(s staging.Stats) float64 { return float64(s.Uploaded) })
	counter("objfs_direct_puts_total", "Whole blocks written straight to local directory stores, not through the staging log.", func(s staging.Stats) float64 { return float64(s.Direct) })
	counter("objfs_upload_failures_total", "Failed upload attempts (each is retried).", func(s staging.Stats) float64 { return float64(s.Retries) })
	counter("objfs_staging_space_waits_total", "Blocks that waited for uploads to free the staging log's disk (stores elsewhere).", func(s staging.Stats) float64 { return float64(s.SpaceWaits) })
	counter("objfs_staging_space_refusals_total", "Of those, blocks refused with ENOSPC all the same (no upload finished for 30 s).", func(s staging.Stats) float64 { return float64(s.SpaceRefused) })
}

// serveMetrics serves reg on addr at /metrics until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (stop func(), bound string, err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("--metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return serveHTTP(l, mux, "metrics", log), l.Addr().String(), nil
}
