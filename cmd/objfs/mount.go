package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/fuse"
)

// readyFdEnv names the descriptor on which a background child reports
// that it mounted (a line "ok") or why it failed.
const readyFdEnv = "OBJFS_READY_FD"

type mountOptions struct {
	background bool
	debug      bool
	allowOther bool // every user may use the mount (FUSE allow_other)
	kernelPerm bool // the kernel checks permissions even on a root-only mount
	data       dataFlags
	nfs        nfsFlags // nfs.listen empty: no NFS server
	pprof      string   // loopback address for Go's profiling endpoints
	metrics    string   // address for Prometheus metrics
}

func init() { register(mountCmd) }

func mountCmd() *cobra.Command {
	var o mountOptions
	cmd := &cobra.Command{
		Use:   "mount [flags] VOLUME_DIR MOUNTPOINT",
		Short: "Mount a volume with FUSE",
		Long: `mount serves VOLUME_DIR at MOUNTPOINT. It runs in the foreground until
unmounted (umount, fusermount3 -u) or sent SIGINT/SIGTERM, which unmount
cleanly; --background returns once the volume is mounted, logging to
VOLUME_DIR/objfs.log.`,
		Example: `  objfs mount /var/lib/objfs/vol /mnt/objfs
  objfs mount --background /var/lib/objfs/vol /mnt/objfs && ls /mnt/objfs
  fusermount3 -u /mnt/objfs
  # FUSE and NFSv3 from one process (NFS options: see objfs nfs --help)
  objfs mount --nfs 127.0.0.1:2049 /var/lib/objfs/vol /mnt/objfs`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.background && os.Getenv(readyFdEnv) == "" {
				return mountBackground(args[0], args[1])
			}
			return mount(args[0], args[1], o)
		},
	}
	cmd.Flags().BoolVar(&o.background, "background", false, "return once mounted; keep serving in the background")
	cmd.Flags().BoolVar(&o.debug, "debug", false, "log every FUSE request")
	cmd.Flags().BoolVar(&o.allowOther, "allow-other", false, "let every user use the mount, not only the one who mounted it (permissions are checked per caller; a mount by a user other than root needs user_allow_other in /etc/fuse.conf)")
	cmd.Flags().BoolVar(&o.kernelPerm, "kernel-permissions", false, "have the kernel check permissions (default_permissions) also on a mount by root without --allow-other, where objfs alone checks them otherwise; needed when a root process that switches its filesystem uid (knfsd, NFS-Ganesha) re-exports the mount")
	o.data.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.nfs.listen, "nfs", "", "also serve the volume over NFSv3 on this TCP address (e.g. "+defaultNFSListen+"), from the same process and POSIX layer")
	o.nfs.addFlags(cmd.Flags(), "nfs-")
	cmd.Flags().StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (FUSE and NFS operations, object store requests, cache, buffered bytes, volume totals)")
	cmd.Flags().StringVar(&o.pprof, "pprof", "", "serve Go profiling endpoints (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060")
	return cmd
}

// checkMountpoint refuses what the kernel would refuse, with a clear message.
func checkMountpoint(mnt string) error {
	st, err := os.Stat(mnt)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return deadMount(mnt)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist", mnt)
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	case !st.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	if isMounted(mnt) {
		// stat may be answered from the kernel's cache; statfs is not.
		var sfs syscall.Statfs_t
		if err := syscall.Statfs(mnt, &sfs); errors.Is(err, syscall.ENOTCONN) {
			return deadMount(mnt)
		}
		return fmt.Errorf("mountpoint %s is already a mount point", mnt)
	}
	return nil
}

// fuseConf is where fusermount3 looks for user_allow_other.
const fuseConf = "/etc/fuse.conf"

// checkUserMount says up front what fusermount3 would refuse a mount by
// a user other than root (euid) for, in words of what to do, rather than
// after the volume is open with "fusermount exited with code 256".
func checkUserMount(euid int, allowOther bool, conf, dev string) error {
	if euid == 0 {
		return nil
	}
	if err := unix.Access(dev, unix.R_OK|unix.W_OK); err != nil {
		return fmt.Errorf("%s: %w: a mount by a user other than root needs read and write access to it (it is mode 0666 on most systems)", dev, err)
	}
	if allowOther && !userAllowOther(conf) {
		return fmt.Errorf("--allow-other: a mount by a user other than root needs a line \"user_allow_other\" in %s", conf)
	}
	return nil
}

// userAllowOther reports whether the fuse.conf at path allows non-root
// mounts with allow_other.
func userAllowOther(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line, _, _ = strings.Cut(line, "#"); strings.TrimSpace(line) == "user_allow_other" {
			return true
		}
	}
	return false
}

func deadMount(mnt string) error {
	return fmt.Errorf("mountpoint %s is a dead FUSE mount (its server process died); detach it with `fusermount3 -u -z %s` and mount again", mnt, mnt)
}

// isMounted reports whether path is a mount point, from /proc/self/mountinfo.
func isMounted(path string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && unescapeMount(fields[4]) == path {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

func mount(dir, mnt string, o mountOptions) (err error) {
	sigs, stopSigs := catchStopSignals()
	closing := func() {} // set once serving ends; see exitOnStopSignal
	defer func() { closing(); stopSigs() }()
	ready := backgroundReady()
	defer func() {
		if err != nil {
			ready(err)
		}
	}()
	mnt, err = filepath.Abs(mnt)
	if err != nil {
		return err
	}
	if err := checkMountpoint(mnt); err != nil {
		return err
	}
	if err := checkUserMount(os.Geteuid(), o.allowOther, fuseConf, "/dev/fuse"); err != nil {
		return err
	}
	ctx := context.Background()
	log := slog.Default()
	if o.pprof != "" {
		stopPprof, _, err := startPprof(o.pprof, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	reg := newRegistry(o.metrics)
	fo, so, err := o.data.options(log)
	if err != nil {
		return err
	}
	v, f, err := openFS(ctx, dir, fo, so, o.data.diskCache(), uint64(o.data.reserve), reg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeFS(ctx, v, f); cerr != nil && err == nil {
			err = cerr
		}
	}()
	srv, inval, err := fuse.Mount(f, mnt, fuse.MountOptions{Debug: o.debug, AllowOther: o.allowOther, KernelPermissions: o.kernelPerm}, log, opsFor(reg, "fuse", "FUSE requests"))
	if err != nil {
		return err
	}
	if o.nfs.listen != "" {
		// NFS clients' changes drop the mount's kernel caches, so both
		// front ends see each other's changes at once.
		o.nfs.watcher = inval
		o.nfs.ops = opsFor(reg, "nfs", "NFS procedures")
		stopNFS, addr, err := startNFS(ctx, f, o.nfs)
		if err != nil {
			_ = srv.Unmount()
			return err
		}
		defer func() {
			if err := stopNFS(); err != nil {
				log.Error("stop NFS server", "err", err)
			}
		}()
		log.Info("serving NFSv3", "addr", addr)
	}
	if reg != nil {
		stopMetrics, _, err := serveMetrics(o.metrics, reg, log)
		if err != nil {
			_ = srv.Unmount()
			return err
		}
		defer stopMetrics()
	}
	stopInfo := publishMountInfo(v, f, mnt)
	defer stopInfo()
	log.Info("mounted", "volume", v.dir, "mountpoint", mnt, "pid", os.Getpid())
	ready(nil)

	// SIGUSR1 drops the block cache (objfs bench, between phases).
	serveUntilUnmounted(srv, log, sigs, func() {
		f.DropCaches()
		log.Info("dropped block cache", "signal", syscall.SIGUSR1.String())
	})
	log.Info("unmounted", "mountpoint", mnt)
	closing = exitOnStopSignal(sigs, log)
	return nil
}

// catchStopSignals starts catching SIGINT, SIGTERM and SIGUSR1 for a
// server about to mount, before anything else: a signal that arrives while
// it opens the volume and mounts waits for serveUntilUnmounted, which
// unmounts cleanly, instead of killing the process halfway (and leaving a
// mount nothing serves). stop ends the catching.
func catchStopSignals() (sigs chan os.Signal, stop func()) {
	sigs = make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1)
	return sigs, func() { signal.Stop(sigs) }
}

// exitOnStopSignal is for a server that has stopped serving and is
// closing the volume, which can take long: pending uploads (up to a
// minute), or for ever when Badger cannot write its last table (a full or
// failing disk; it retries without end). From then on a stop signal from
// sigs exits the process at once, with status 1 and a log line saying so:
// what is committed is in Badger's log, so this is what kill -9 would do,
// and the next start recovers from it. SIGUSR1 is ignored. stop ends the
// watch; the caller stops the catching after it.
func exitOnStopSignal(sigs <-chan os.Signal, log *slog.Logger) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case s := <-sigs:
				if s == syscall.SIGUSR1 {
					continue
				}
				log.Error("stop signal while closing the volume: exiting without finishing the close (the next start recovers, as after a crash)", "signal", s.String())
				os.Exit(1)
			}
		}
	}()
	return func() { close(quit); <-done }
}

// serveUntilUnmounted returns once the kernel has dropped srv's mount,
// however that happened; SIGINT and SIGTERM (from sigs, see
// catchStopSignals) unmount it, and SIGUSR1 calls usr1 when that is not
// nil. It waits for its goroutine on every path out.
func serveUntilUnmounted(srv *gofuse.Server, log *slog.Logger, sigs <-chan os.Signal, usr1 func()) {
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				if usr1 != nil {
					usr1()
				}
				continue
			}
			log.Info("unmounting", "signal", s.String())
			if err := srv.Unmount(); err != nil {
				log.Error("unmount failed; still serving", "err", err)
			}
		}
	}
}

// publishMountInfo keeps VOLUME_DIR/mount.json current for `objfs status`.
func publishMountInfo(v *volume, f *fs.FS, mnt string) (stop func()) {
	path := filepath.Join(v.dir, mountFile)
	write := func() {
		mi := mountInfo{Pid: os.Getpid(), Mountpoint: mnt, Stats: f.Meta().Stats(), Updated: time.Now().UTC().Format(time.RFC3339),
			BufferedBytes: f.DirtyBytes()}
		mi.CacheHits, mi.CacheMisses, mi.CacheBytes = f.CacheStats()
		ra := f.ReadAheadStats()
		mi.ReadAheadHits, mi.ReadAheadUnread, mi.ReadAheadBytes = ra.Hits, ra.Unread, ra.Bytes
		ds := f.DiskCacheStats()
		mi.DiskCacheBytes, mi.DiskCacheHits, mi.DiskCacheMisses = ds.Bytes, ds.Hits, ds.Misses
		fr := f.FreedStats()
		mi.Reaped, mi.BlocksDeleted, mi.DeleteErrors = fr.Reaped, fr.BlocksDeleted, fr.DeleteErrors
		if v.space != nil {
			mi.MetaFree, mi.MetaReserve, mi.SpaceRefused = v.space.Free(), v.space.Reserve(), v.space.Refused()
		}
		if v.staging != nil {
			st := v.staging.Stats()
			mi.StagedBlocks, mi.StagedBytes, mi.UploadQueue, mi.UploadHeld, mi.Uploaded, mi.UploadErrors = st.Objects, st.Bytes, st.Queued, st.Delayed, st.Uploaded, st.Retries
			mi.SpaceWaits, mi.SpaceWaitsRefused = st.SpaceWaits, st.SpaceRefused
		}
		b, _ := json.Marshal(mi)
		tmp := path + ".tmp"
		if os.WriteFile(tmp, b, 0o644) == nil {
			_ = os.Rename(tmp, path)
		}
	}
	write()
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				write()
			}
		}
	}()
	return func() {
		close(quit)
		<-done
		_ = os.Remove(path)
	}
}

// mountBackground starts a detached copy of this mount and waits until it
// reports that the volume is mounted.
func mountBackground(dir, mnt string) error {
	absDir, err := volumeDir(dir)
	if err != nil {
		return err
	}
	logPath := filepath.Join(absDir, "objfs.log")
	pid, err := startBackground(logPath)
	if err != nil {
		return err
	}
	if abs, err := filepath.Abs(mnt); err == nil {
		mnt = abs // as the mount table shows it, and as umount takes it from anywhere
	}
	fmt.Printf("mounted %s at %s (pid %d, log %s)\n", absDir, mnt, pid, logPath)
	return nil
}

// startBackground re-executes this command (same arguments) as a detached
// process whose output goes to logPath, and waits until it reports through
// backgroundReady that it is serving. It returns the child's pid; the child
// is released, not waited for: it lives until it is unmounted.
func startBackground(logPath string) (pid int, err error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		w.Close()
		return 0, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		w.Close()
		return 0, err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), readyFdEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, fmt.Errorf("start background mount: %w", err)
	}
	w.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if line != "ok" {
		_ = cmd.Wait()
		if line == "" {
			line = "background mount exited; see " + logPath
		}
		return 0, errors.New(line)
	}
	pid = cmd.Process.Pid
	return pid, cmd.Process.Release()
}

// backgroundReady returns how a process started by startBackground reports
// that it is serving (nil) or why it failed; in a process started any other
// way it does nothing. Only the first report counts: the parent reads one
// line.
func backgroundReady() func(error) {
	fdStr := os.Getenv(readyFdEnv)
	if fdStr == "" {
		return func(error) {}
	}
	var fd int
	fmt.Sscan(fdStr, &fd)
	pipe := os.NewFile(uintptr(fd), "ready")
	var once sync.Once
	return func(err error) {
		once.Do(func() {
			if err != nil {
				fmt.Fprintln(pipe, err)
			} else {
				fmt.Fprintln(pipe, "ok")
			}
			pipe.Close()
		})
	}
}
