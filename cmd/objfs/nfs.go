package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/metrics"
	"github.com/objfs/objfs/nfs"
)

// defaultNFSListen is the NFS port on loopback: nothing beyond this host can
// reach the export until --listen and --allow say so.
const defaultNFSListen = "127.0.0.1:2049"

// nfsFlags are the NFS export's options, shared by `objfs nfs` and
// `objfs mount --nfs`.
type nfsFlags struct {
	listen   string
	allow    []string
	readOnly bool
	squash   string
	anonUid  uint32
	anonGid  uint32

	// Set by `objfs mount --nfs`: keeps the FUSE mount's caches true to
	// what NFS clients change.
	watcher nfs.Watcher
	ops     *metrics.Ops
	metrics string // `objfs nfs --metrics`
}

// addFlags registers the export options on fl, each name prefixed with
// prefix ("" for `objfs nfs`, "nfs-" for `objfs mount`). The listen address
// is not among them: each command names it its own way.
func (o *nfsFlags) addFlags(fl *pflag.FlagSet, prefix string) {
	fl.StringArrayVar(&o.allow, prefix+"allow", nil, "client network allowed to connect, as CIDR (repeatable; default: loopback only)")
	fl.BoolVar(&o.readOnly, prefix+"read-only", false, "refuse every change with NFS3ERR_ROFS")
	fl.StringVar(&o.squash, prefix+"squash", "root", "whose identity requests run with: root (uid 0 becomes the anonymous user), all (everyone does), none (trust the client)")
	fl.Uint32Var(&o.anonUid, prefix+"anon-uid", 65534, "uid of the anonymous user")
	fl.Uint32Var(&o.anonGid, prefix+"anon-gid", 65534, "gid of the anonymous user")
}

// options turns the flags into server options, checking them.
func (o *nfsFlags) options(log *slog.Logger) (nfs.Options, error) {
	opts := nfs.Options{ReadOnly: o.readOnly, AnonUid: o.anonUid, AnonGid: o.anonGid, Logger: log,
		Watcher: o.watcher, Ops: o.ops}
	var err error
	if opts.Squash, err = nfs.ParseSquash(o.squash); err != nil {
		return opts, err
	}
	for _, a := range o.allow {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			// A bare address means that one host.
			addr, aerr := netip.ParseAddr(a)
			if aerr != nil {
				return opts, fmt.Errorf("--allow %q: want a CIDR such as 10.0.0.0/8 or an address", a)
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		opts.Allow = append(opts.Allow, p.Masked())
	}
	return opts, nil
}

func init() { register(nfsCmd) }

func nfsCmd() *cobra.Command {
	var o nfsFlags
	var data dataFlags
	cmd := &cobra.Command{
		Use:   "nfs [flags] VOLUME_DIR",
		Short: "Serve a volume over NFSv3",
		Long: `nfs serves VOLUME_DIR to NFSv3 clients: the NFS and MOUNT protocols on one
TCP port (default ` + defaultNFSListen + `; no portmapper is needed when clients
name the port). The export is the volume root "/"; any directory below it can
be mounted too. Every create, write and rename is visible to every client the
moment it is acknowledged. It runs in the foreground until SIGINT or SIGTERM.
To serve a FUSE mount and NFS from one process, use 'objfs mount --nfs ADDR'.

Clients: only addresses in --allow (default: loopback) may connect; others are
disconnected at once. With --read-only every change gets NFS3ERR_ROFS.

Identity (AUTH_SYS): an NFSv3 client states a uid, gid and up to 16 groups
with each request, and nothing proves them. objfs checks permissions against
that identity after --squash maps it: 'root' (default) turns uid 0 into
--anon-uid/--anon-gid, 'all' turns everyone into them, 'none' trusts the
client as is. AUTH_SYS therefore guarantees only what the client machines
guarantee: any host allowed to connect can claim any uid (and, with
--squash none, root). It gives no encryption and no integrity: use it on a
trusted network, restrict --allow to the machines you administer, and
prefer --squash all with --read-only for untrusted readers. Requests without
credentials (AUTH_NONE) run as the anonymous user.`,
		Example: `  # serve on loopback, port 2049
  objfs nfs /var/lib/objfs/vol
  # libnfs tools need no mount
  nfs-ls 'nfs://127.0.0.1/?nfsport=2049&mountport=2049&version=3'
  # the Linux client (as root)
  mount -t nfs -o vers=3,proto=tcp,port=2049,mountport=2049,nolock 127.0.0.1:/ /mnt/nfs
  # a LAN, everyone as nobody, read-only
  objfs nfs --listen 0.0.0.0:2049 --allow 192.168.1.0/24 --squash all --read-only /var/lib/objfs/vol`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return serveNFS(args[0], o, data)
		},
	}
	data.addFlags(cmd.Flags())
	cmd.Flags().StringVar(&o.listen, "listen", defaultNFSListen, "TCP address to serve NFS and MOUNT on")
	cmd.Flags().StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics at http://ADDR/metrics (NFS procedures, object store requests, cache, volume totals)")
	o.addFlags(cmd.Flags(), "")
	return cmd
}

// serveNFS opens the volume and serves it until SIGINT or SIGTERM.
func serveNFS(dir string, o nfsFlags, data dataFlags) (err error) {
	log := slog.Default()
	if _, err := o.options(log); err != nil {
		return err // before opening anything
	}
	fo, so, err := data.options(log)
	if err != nil {
		return err
	}
	ctx := context.Background()
	// Caught from here on: a stop signal while the volume opens waits
	// for the server to start and stops it cleanly.
	sigs, stopSigs := catchStopSignals()
	closing := func() {} // set once serving ends; see exitOnStopSignal
	defer func() { closing(); stopSigs() }()
	serveCtx, stopped := context.WithCancel(ctx) // ends the NFS server
	defer stopped()
	reg := newRegistry(o.metrics)
	v, f, err := openFS(ctx, dir, fo, so, data.diskCache(), uint64(data.reserve), reg)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := closeFS(ctx, v, f); cerr != nil && err == nil {
			err = cerr
		}
	}()
	o.ops = opsFor(reg, "nfs", "NFS procedures")
	if reg != nil {
		stopMetrics, _, err := serveMetrics(o.metrics, reg, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	stop, addr, err := startNFS(serveCtx, f, o)
	if err != nil {
		return err
	}
	stopInfo := publishMountInfo(v, f, "nfs://"+addr)
	defer stopInfo()
	log.Info("serving NFSv3", "volume", v.dir, "addr", addr, "pid", os.Getpid())
	for s := range sigs {
		if s != syscall.SIGUSR1 {
			log.Info("stopping NFS server", "signal", s.String())
			break
		}
		f.DropCaches()
		log.Info("dropped block cache", "signal", s.String())
	}
	stopped()
	closing = exitOnStopSignal(sigs, log)
	return stop()
}

// startNFS serves f over NFSv3 on o.listen until ctx is canceled or stop is
// called. stop waits until every connection is closed and returns the
// server's error, if it failed on its own. addr is the address bound (useful
// with port 0).
func startNFS(ctx context.Context, f *fs.FS, o nfsFlags) (stop func() error, addr string, err error) {
	opts, err := o.options(slog.Default())
	if err != nil {
		return nil, "", err
	}
	listen := o.listen
	if listen == "" {
		listen = defaultNFSListen
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, "", fmt.Errorf("nfs: listen on %s: %w", listen, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- nfs.Serve(ctx, f, l, opts) }()
	var stopErr error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
			if errors.Is(stopErr, context.Canceled) {
				stopErr = nil
			}
		}
		return stopErr
	}
	return stop, l.Addr().String(), nil
}
