package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/objfs/objfs/fs/fuse"
	"github.com/spf13/cobra"
)

// loopbackTimeout is how long the kernel may cache entries (also missing
// ones) and attributes of the loopback mount: the minute objfs's own mount
// grants (fs/fuse), so both pay for the same FUSE requests.
const loopbackTimeout = time.Minute

type loopbackOptions struct {
	background bool
	log        string // the background process's log
}

func init() { register(loopbackCmd) }

func loopbackCmd() *cobra.Command {
	var o loopbackOptions
	cmd := &cobra.Command{
		Use:    "loopback [--background] [--log FILE] SRC_DIR MOUNTPOINT",
		Short:  "Mount go-fuse's passthrough file system (the benchmark's FUSE reference)",
		Hidden: true,
		Long: `loopback mounts go-fuse's own passthrough file system of SRC_DIR at
MOUNTPOINT, with the kernel-facing settings of objfs mount (1 MiB writes and
read-ahead, 64 background requests, the kernel's permission checks where
objfs mount asks for them, entries, missing entries and attributes cached for
a minute). It exists as the FUSE reference
of objfs bench (make bench): a file system that does no work of its own but
pays every FUSE round trip, so its rate is the best any go-fuse file system
reaches on the machine.

It runs in the foreground until unmounted (umount, fusermount3 -u) or sent
SIGINT/SIGTERM, which unmount cleanly; --background returns once mounted and
prints the pid, like objfs mount --background, logging to --log.`,
		Example: `  objfs loopback --background /var/tmp/lraw /var/tmp/lmnt
  objfs bench --compare /var/tmp/raw --loopback /var/tmp/lmnt /mnt/objfs
  fusermount3 -u /var/tmp/lmnt`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.background && os.Getenv(readyFdEnv) == "" {
				return loopbackBackground(args[0], args[1], o.log)
			}
			return loopback(args[0], args[1])
		},
	}
	cmd.Flags().BoolVar(&o.background, "background", false, "return once mounted; keep serving in the background")
	cmd.Flags().StringVar(&o.log, "log", filepath.Join(os.TempDir(), "objfs-loopback.log"), "with --background, append the server's log to this `FILE`")
	return cmd
}

// loopbackDirs makes both paths absolute and refuses what cannot work: a
// source that is not a directory, and a mountpoint that is the source or
// inside it (the mount would contain itself).
func loopbackDirs(src, mnt string) (string, string, error) {
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return "", "", fmt.Errorf("source directory %s: %w", src, err)
	}
	absMnt, err := filepath.Abs(mnt)
	if err != nil {
		return "", "", fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	st, err := os.Stat(absSrc)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", "", fmt.Errorf("source directory %s does not exist", absSrc)
	case err != nil:
		return "", "", fmt.Errorf("source directory %s: %w", absSrc, err)
	case !st.IsDir():
		return "", "", fmt.Errorf("source directory %s is not a directory", absSrc)
	}
	if absMnt == absSrc || strings.HasPrefix(absMnt, absSrc+string(filepath.Separator)) {
		return "", "", fmt.Errorf("mountpoint %s is inside the source directory %s; the mount would contain itself", absMnt, absSrc)
	}
	if err := checkMountpoint(absMnt); err != nil {
		return "", "", err
	}
	return absSrc, absMnt, nil
}

// loopbackBackground starts a detached copy of this command, as
// mountBackground does for objfs mount, and prints the same line shape so
// that scripts find the pid the same way.
func loopbackBackground(src, mnt, logPath string) error {
	absSrc, absMnt, err := loopbackDirs(src, mnt)
	if err != nil {
		return err
	}
	if logPath, err = filepath.Abs(logPath); err != nil {
		return fmt.Errorf("log %s: %w", logPath, err)
	}
	pid, err := startBackground(logPath)
	if err != nil {
		return err
	}
	fmt.Printf("mounted loopback of %s at %s (pid %d, log %s)\n", absSrc, absMnt, pid, logPath)
	return nil
}

// loopback serves the passthrough file system until it is unmounted.
func loopback(src, mnt string) (err error) {
	sigs, stopSigs := catchStopSignals()
	closing := func() {} // set once serving ends; see exitOnStopSignal
	defer func() { closing(); stopSigs() }()
	ready := backgroundReady()
	defer func() {
		if err != nil {
			ready(err)
		}
	}()
	src, mnt, err = loopbackDirs(src, mnt)
	if err != nil {
		return err
	}
	log := slog.Default()
	root, err := gofs.NewLoopbackRoot(src)
	if err != nil {
		return fmt.Errorf("loopback of %s: %w", src, err)
	}
	timeout := loopbackTimeout
	opts := &gofs.Options{
		// The same kernel-facing settings as fs/fuse.Mount: any difference
		// would show up as a difference between the two columns that is
		// not objfs's own cost.
		MountOptions: gofuse.MountOptions{
			FsName:        src,
			Name:          "objfs-loopback",
			MaxWrite:      1 << 20,
			MaxReadAhead:  1 << 20,
			MaxBackground: 64,
			EnableLocks:   false,
			Options:       fuse.PermissionOptions(false, false, os.Geteuid()),
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
	}
	srv, err := gofs.Mount(mnt, root, opts)
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	log.Info("mounted loopback", "source", src, "mountpoint", mnt, "pid", os.Getpid())
	ready(nil)

	serveUntilUnmounted(srv, log, sigs, nil)
	closing = exitOnStopSignal(sigs, log)
	log.Info("unmounted loopback", "mountpoint", mnt)
	return nil
}
