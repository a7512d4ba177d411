package main

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/dustin/go-humanize"

	"github.com/spf13/pflag"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/objstore/staging"
)

// dataFlags are the serving commands' (mount, nfs) settings of the data
// path: caches and the staging log. The disk cache is opened by openFS,
// which knows the volume directory.
type dataFlags struct {
	cacheMem    int64
	cacheDir    string
	cacheSize   int64
	stagingSize int64
	memoryLimit int64
	reserve     int64
}

func (d *dataFlags) addFlags(fl *pflag.FlagSet) {
	// The defaults are a memory budget: a Go heap held near 288 MiB (the
	// memory cache, write buffers up to 128 MiB in all, Badger's
	// memtables and caches, whatever the collector has not reclaimed
	// yet), plus the pages of Badger's memory-mapped files, which grow
	// with its value log (a page cache the kernel can reclaim). objfs
	// bench, 3 rounds on a mount of each (2026-12-03): a peak of 636 MiB
	// with a 128 MiB cache and a 400 MiB limit, the Go heap at its limit;
	// 610 MiB with the cache alone halved; 525 MiB with a 64 MiB cache and
	// a 320 MiB limit. Later the same day, fsync'd writes ran faster and
	// the mapped pages grew to 300-330 MiB: 588-609 MiB with 320, 581 with
	// 288 (the heap's peak 317 -> 273 MiB, no row slower).
	d.cacheMem, d.cacheSize, d.memoryLimit, d.stagingSize = 64<<20, 4<<30, 288<<20, 2<<30
	fl.Var((*byteSize)(&d.cacheMem), "cache-mem", "size of the memory block cache (e.g. 256MiB)")
	fl.StringVar(&d.cacheDir, "cache-dir", "", "directory of the disk block cache (default VOLUME_DIR/cache); it survives restarts, every read is checked")
	fl.Var((*byteSize)(&d.cacheSize), "cache-size", "size the disk block cache may reach (e.g. 4GiB); 0 turns it off")
	fl.Var((*byteSize)(&d.memoryLimit), "memory-limit", "soft limit of the process's Go memory (e.g. 1GiB): the garbage collector works harder as it nears it (GOMEMLIMIT, when set, wins); 0: none")
	fl.Var((*byteSize)(&d.reserve), "reserve", "free space kept on the file system under the volume's metadata: below it new data and files get ENOSPC, deletions go on (default 512MiB, at most a quarter of that file system)")
	fl.Var((*byteSize)(&d.stagingSize), "staging-size", "size of the written blocks the local staging log (VOLUME_DIR/staging) may hold before they are uploaded (e.g. 2GiB); writers wait beyond it")
}

// options returns the fs and staging options the flags ask for, or an
// error naming a bad value. It also sets the process's soft memory limit.
func (d *dataFlags) options(log *slog.Logger) (fs.Options, staging.Options, error) {
	if d.cacheMem < 0 {
		return fs.Options{}, staging.Options{}, fmt.Errorf("--cache-mem %d: must be at least 0", d.cacheMem)
	}
	if d.cacheSize < 0 {
		return fs.Options{}, staging.Options{}, fmt.Errorf("--cache-size %d: must be at least 0", d.cacheSize)
	}
	if d.stagingSize < 4<<20 {
		return fs.Options{}, staging.Options{}, fmt.Errorf("--staging-size %d: must be at least 4 MiB (one block)", d.stagingSize)
	}
	if d.memoryLimit < 0 {
		return fs.Options{}, staging.Options{}, fmt.Errorf("--memory-limit %d: must be at least 0", d.memoryLimit)
	}
	if d.memoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// Without it the heap grows to twice what is live; with the
		// memory cache, Badger's tables and write buffers, peak RSS
		// of make bench went from 851 to 479 MiB at the same speed.
		debug.SetMemoryLimit(d.memoryLimit)
	}
	mem := d.cacheMem
	if mem == 0 {
		mem = -1 // fs reads 0 as "default"; the flag's 0 means none
	}
	return fs.Options{MemCacheBytes: mem, Logger: log},
		staging.Options{MaxBytes: d.stagingSize, Logger: log}, nil
}

// diskCache returns where and how big the disk block cache should be.
func (d *dataFlags) diskCache() diskCacheSpec {
	return diskCacheSpec{dir: d.cacheDir, size: d.cacheSize}
}

// byteSize is a flag value in bytes, written as a plain number or with a
// unit ("4GiB", "512MB", "100k").
type byteSize int64

func (b *byteSize) String() string { return humanize.IBytes(uint64(max(*b, 0))) }

func (b *byteSize) Type() string { return "size" }

func (b *byteSize) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil || n > math.MaxInt64 {
		return fmt.Errorf("%q is not a size (use a number of bytes, or e.g. 512MiB, 4GiB)", s)
	}
	*b = byteSize(n)
	return nil
}
