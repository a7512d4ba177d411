package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/objfs/objfs/cmd/objfs/internal/bench"
)

// defaultDropCaches flushes dirty pages and empties the kernel's page,
// dentry and inode caches; only root may.
const defaultDropCaches = "sync; echo 3 > /proc/sys/vm/drop_caches"

type benchOptions struct {
	scale      float64
	seed       uint64
	json       bool
	dropCaches string
	compare    string
	loopback   string // a loopback mount (objfs loopback) run between raw and objfs
	rssPid     int
	rounds     int // workload repetitions; rows report medians
}

func init() { register(benchCmd) }

func benchCmd() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench [flags] DIR",
		Short: "Run a fixed file system workload on a directory and print one table",
		Long: `bench runs a fixed workload in a fresh subdirectory of DIR (any file system,
objfs or not) and removes it afterwards:

  - sequential write of a 1 GiB file in 1 MiB requests, fsync at the end;
    caches dropped; sequential read of it (MiB/s)
  - create (create+write+close), stat, read, delete of 10,000 4 KiB files
    (ops/s), with caches dropped before an ls -l of their directory (readdir
    + lstat of each entry, entries/s) and the reads
  - 1,000 renames across directories (ops/s)
  - 4 KiB random read, then random write (+ fsync), then random write with
    an fsync after each (a database's pattern) IOPS on a 256 MiB file, 10 s
    each, seeded; O_DIRECT where the file system allows it, otherwise
    buffered with a note under the table

--scale scales every size, count and duration. At the start of each group and
between phases, --drop-caches runs a shell command (default, as root:
"` + defaultDropCaches + `").
--compare RAW_DIR runs the workload on RAW_DIR too and adds a DIR/RAW_DIR
ratio per row; every row is a rate, so higher is better. The directories
take turns group by group (sequential I/O, small files, renames, random
I/O; RAW_DIR first), so that each ratio compares measurements taken
seconds apart. --rounds N repeats the whole workload, each round starting
with the next directory, and reports each row's median.
--loopback LOOP_DIR (with --compare) also runs it on LOOP_DIR, a mount of
"objfs loopback" (go-fuse's passthrough file system) of a directory on the
same disk, between the two, and adds a loopback/raw column: the best any
go-fuse file system does on this machine, measured in the same run.`,
		Example: `  objfs bench /mnt/objfs
  objfs bench --scale 0.1 --json /mnt/objfs
  # objfs against the disk beneath it, dropping objfs's block cache too
  objfs bench --compare /var/tmp/raw --rss-pid 1234 \
      --drop-caches 'sync; echo 3 > /proc/sys/vm/drop_caches; kill -USR1 1234' /mnt/objfs
  # and against go-fuse's passthrough file system, the FUSE ceiling
  objfs loopback --background /var/tmp/lraw /var/tmp/lmnt
  objfs bench --compare /var/tmp/raw --loopback /var/tmp/lmnt /mnt/objfs`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("drop-caches") {
				o.dropCaches = ""
				if os.Geteuid() == 0 {
					o.dropCaches = defaultDropCaches
				}
			}
			if o.rounds < 1 {
				return fmt.Errorf("--rounds must be at least 1, not %d", o.rounds)
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runBench(ctx, args[0], o)
		},
	}
	cmd.Flags().Float64Var(&o.scale, "scale", 1.0, "scale sizes, counts and durations (e.g. 0.01 for a quick run)")
	cmd.Flags().Uint64Var(&o.seed, "seed", 1, "seed of the data and of the random offsets")
	cmd.Flags().IntVar(&o.rounds, "rounds", 1, "repeat the workload `N` times; each row reports the median")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON instead of a table")
	cmd.Flags().StringVar(&o.dropCaches, "drop-caches", defaultDropCaches, "shell command run to drop caches between phases (default as root; empty: keep caches)")
	cmd.Flags().StringVar(&o.compare, "compare", "", "also run on `RAW_DIR` first and print DIR/RAW_DIR per row")
	cmd.Flags().StringVar(&o.loopback, "loopback", "", "with --compare, also run on `LOOP_DIR` (an objfs loopback mount) and print LOOP_DIR/RAW_DIR per row")
	cmd.Flags().IntVar(&o.rssPid, "rss-pid", 0, "report the peak RSS (VmHWM) of this `PID` (e.g. the objfs mount) after the runs")
	return cmd
}

func runBench(ctx context.Context, dir string, o benchOptions) error {
	if o.scale <= 0 {
		return fmt.Errorf("--scale must be positive, not %g", o.scale)
	}
	if o.rssPid < 0 {
		return fmt.Errorf("--rss-pid must be a process id, not %d", o.rssPid)
	}
	if o.loopback != "" && o.compare == "" {
		return fmt.Errorf("--loopback %s needs --compare RAW_DIR: its column is a ratio to the raw directory", o.loopback)
	}
	dirs := []string{dir}
	labels := []string{filepath.Base(filepath.Clean(dir))}
	switch {
	case o.loopback != "":
		dirs = []string{o.compare, o.loopback, dir}
		labels = []string{"raw", "loopback", "objfs"}
	case o.compare != "":
		dirs = []string{o.compare, dir}
		labels = []string{"raw", "objfs"}
	}
	for i, d := range dirs {
		abs, err := checkBenchDir(d)
		if err != nil {
			return err
		}
		dirs[i] = abs
	}
	last := len(dirs) - 1
	if len(dirs) > 1 && dirs[0] == dirs[last] {
		return fmt.Errorf("--compare %s is DIR itself; give the directory to compare with", o.compare)
	}
	if len(dirs) == 3 {
		if dirs[1] == dirs[last] {
			return fmt.Errorf("--loopback %s is DIR itself; give the loopback mount of another directory", o.loopback)
		}
		if dirs[1] == dirs[0] {
			return fmt.Errorf("--loopback %s is the --compare directory; give the loopback mount of another directory", o.loopback)
		}
	}
	if o.rssPid > 0 {
		// Fail now, not after minutes of benchmarking.
		if _, err := bench.ReadPeakRSS(o.rssPid); err != nil {
			return err
		}
	}

	rep := &bench.Report{Scale: o.scale, Seed: o.seed, Rounds: o.rounds, Sizes: bench.SizesFor(o.scale), Dropped: o.dropCaches != ""}
	cfg := bench.Config{Sizes: rep.Sizes, Seed: o.seed, Log: slog.Default(), Rounds: o.rounds}
	if o.dropCaches != "" {
		cfg.DropCaches = func(ctx context.Context) error { return runShell(ctx, o.dropCaches) }
	} else {
		slog.Warn("caches are not dropped between phases (not root and no --drop-caches): read rows may measure memory, not the file system")
		rep.Notes = append(rep.Notes, "caches were NOT dropped between phases: cold-read rows may be served from memory")
	}
	for i, d := range dirs {
		slog.Info("bench directory", "label", labels[i], "dir", d)
	}
	var sampler *bench.RSSSampler
	if o.rssPid > 0 {
		sampler = bench.StartRSSSampler(o.rssPid, 100*time.Millisecond)
	}
	res, err := bench.RunAll(ctx, dirs, cfg)
	var sampled bench.RSSParts
	if sampler != nil {
		sampled = sampler.Stop()
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	for i, d := range dirs {
		rep.Runs = append(rep.Runs, bench.RunResult{Label: labels[i], Dir: d, Results: res[i]})
	}
	if n := len(rep.Runs); n > 1 {
		rep.Ratios = bench.Ratios(rep.Runs[0].Results, rep.Runs[n-1].Results)
	}
	if len(rep.Runs) == 3 {
		rep.LoopbackRatios = bench.Ratios(rep.Runs[0].Results, rep.Runs[1].Results)
	}
	if o.rssPid > 0 {
		b, err := bench.ReadPeakRSS(o.rssPid)
		if err != nil {
			return err
		}
		rep.RSS = &bench.PeakRSS{Pid: o.rssPid, Bytes: b, Sampled: &sampled}
	}
	if o.json {
		return rep.WriteJSON(os.Stdout)
	}
	return rep.WriteTable(os.Stdout)
}

func checkBenchDir(d string) (string, error) {
	abs, err := filepath.Abs(d)
	if err != nil {
		return "", fmt.Errorf("bench directory %s: %w", d, err)
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("bench directory %s does not exist", abs)
	case err != nil:
		return "", fmt.Errorf("bench directory %s: %w", abs, err)
	case !st.IsDir():
		return "", fmt.Errorf("bench directory %s is not a directory", abs)
	}
	return abs, nil
}

// runShell runs a --drop-caches command; its output goes to stderr so that
// stdout stays the table (or JSON).
func runShell(ctx context.Context, command string) error {
	c := exec.CommandContext(ctx, "sh", "-c", command)
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%q: %w", command, err)
	}
	return nil
}
