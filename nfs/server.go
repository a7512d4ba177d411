// Package nfs serves an objfs volume over NFSv3 (and the MOUNT protocol) on
// one TCP port: the NFS front end of the POSIX layer in package fs.
//
// The RPC server of github.com/willscott/go-nfs runs behind a connection
// wrapper of ours. The wrapper owns every client socket: it frames records
// with a size limit, checks credentials, and answers itself every
// procedure whose go-nfs handler would be wrong for objfs (go-nfs resolves
// each request through a path, maps most failures to NFS3ERR_ACCES, reads
// LINK arguments in the wrong order, does not create devices, and lists
// directories without stable cookies; its MOUNT has no EXPORT and fails on
// an empty path). The rest (NFS NULL, MOUNT NULL and UMNT) goes to go-nfs
// through an in-memory pipe, with a go-billy adapter of fs.FS and a handle
// handler whose handles are inode number + generation.
package nfs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gonfs "github.com/willscott/go-nfs"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/fs/meta"
	"github.com/objfs/objfs/fs/metrics"
)

// Squash says whose identity a request runs with.
type Squash int

const (
	// SquashRoot maps uid 0 to the anonymous user (the NFS default).
	SquashRoot Squash = iota
	// SquashNone trusts every uid and gid the client sends.
	SquashNone
	// SquashAll maps every user to the anonymous user.
	SquashAll
)

// ParseSquash parses "root", "none" or "all".
func ParseSquash(s string) (Squash, error) {
	switch s {
	case "root":
		return SquashRoot, nil
	case "none":
		return SquashNone, nil
	case "all":
		return SquashAll, nil
	}
	return 0, fmt.Errorf("squash %q: want all, root or none", s)
}

// Options configure a server.
type Options struct {
	// Allow lists the client networks that may connect; empty means
	// loopback only. Other clients are disconnected at accept.
	Allow []netip.Prefix
	// ReadOnly refuses every change with NFS3ERR_ROFS.
	ReadOnly bool
	// Squash, AnonUid and AnonGid map client identities (see Squash);
	// AUTH_NONE requests run as AnonUid/AnonGid too. Zero is uid 0: set
	// them (objfs nfs defaults to 65534, "nobody").
	Squash           Squash
	AnonUid, AnonGid uint32
	// Workers bounds the requests served at once per connection (and so
	// the memory a connection holds: Workers records of at most ~1 MiB).
	Workers int
	// MaxConns bounds the client connections served at once (default
	// 1024); more are closed at accept.
	MaxConns int
	Logger   *slog.Logger

	// Watcher, when set, is told of every change a procedure makes (a
	// FUSE mount of the same process, which keeps its kernel's caches
	// true to NFS clients' changes).
	Watcher Watcher

	// Ops, when set, records every NFS procedure (count, failures, latency).
	Ops *metrics.Ops

	// goNFSOnly hands every call to go-nfs (tests that show why the
	// wrapper serves most procedures itself).
	goNFSOnly bool
}

// Serve serves f over NFSv3 on l until ctx is canceled or l fails. It
// closes l and every client connection before it returns, and returns nil
// after a cancel.
func Serve(ctx context.Context, f *fs.FS, l net.Listener, opts Options) error {
	s, err := newServer(f, opts)
	if err != nil {
		return err
	}
	return s.serve(ctx, l)
}

type server struct {
	f    *fs.FS
	opts Options
	log  *slog.Logger
	fsid uint64        // the volume's identity in attributes
	verf atomic.Uint64 // write verifier: changes each start (and see unstable.go)
	h    *handler

	unstable unstableFiles

	pipeL *pipeListener // connections handed to go-nfs

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // every connection goroutine
}

func newServer(f *fs.FS, opts Options) (*server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	if len(opts.Allow) == 0 {
		opts.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	s := &server{f: f, opts: opts, log: opts.Logger, conns: map[net.Conn]struct{}{}}
	sum := sha256.Sum256([]byte(f.Meta().Format().UUID))
	s.fsid = binary.BigEndian.Uint64(sum[:8])
	var v [8]byte
	if _, err := rand.Read(v[:]); err != nil {
		return nil, fmt.Errorf("write verifier: %w", err)
	}
	s.verf.Store(binary.BigEndian.Uint64(v[:]))
	s.unstable.files = map[uint64]*openFile{}
	s.h = &handler{s: s}
	gonfsLogger.Store(opts.Logger)
	return s, nil
}

func (s *server) serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.pipeL = newPipeListener(l.Addr())
	gs := &gonfs.Server{Handler: s.h, ID: [8]byte(s.verifier()), Context: ctx}
	gonfsDone := make(chan struct{})
	go func() {
		defer close(gonfsDone)
		_ = gs.Serve(s.pipeL) // returns once pipeL is closed
	}()
	idleDone := make(chan struct{})
	go s.closeIdleLoop(ctx, idleDone)
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		_ = l.Close()
	}()

	var err error
	backoff := time.Duration(0)
	for {
		var c net.Conn
		c, err = l.Accept()
		if err != nil && ctx.Err() == nil && retryAccept(err) {
			// Out of descriptors or an aborted handshake: existing
			// clients go on; new ones wait a little.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("nfs: accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		if err != nil {
			break
		}
		backoff = 0
		if !s.allowed(c.RemoteAddr()) {
			s.log.Warn("nfs: refused client outside --allow", "remote", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		if !s.track(c, true) {
			s.log.Warn("nfs: refused client: too many connections", "remote", c.RemoteAddr().String(), "max", s.opts.MaxConns)
			_ = c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.track(c, false)
			s.serveConn(ctx, c)
		}()
	}
	canceled := ctx.Err() != nil
	close(stop)
	cancel()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	<-idleDone // after the last request: commits what is still buffered
	_ = s.pipeL.Close()
	<-gonfsDone
	if canceled {
		return nil
	}
	return fmt.Errorf("nfs: accept: %w", err)
}

// retryAccept reports whether an accept error is passing.
func retryAccept(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS)
}

// track adds or removes a live connection; adding fails at MaxConns.
func (s *server) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, c)
		return true
	}
	if len(s.conns) >= s.opts.MaxConns {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *server) allowed(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range s.opts.Allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// caller maps an RPC credential to the identity the request runs with.
func (s *server) caller(h callHeader) (*meta.Caller, bool) {
	anon := &meta.Caller{Uid: s.opts.AnonUid, Gid: s.opts.AnonGid}
	switch h.credFlavor {
	case authNone:
		return anon, true
	case authSys:
		cred, err := parseAuthSys(h.cred)
		if err != nil {
			return nil, false
		}
		switch {
		case s.opts.Squash == SquashAll, s.opts.Squash == SquashRoot && cred.uid == 0:
			return anon, true
		}
		return &meta.Caller{Uid: cred.uid, Gid: cred.gid, Groups: cred.gids}, true
	}
	return nil, false
}

// serveConn serves one client connection: it reads records one at a time
// and runs up to Workers of them at once. Replies may leave in any order,
// which RPC allows (they carry the call's xid).
func (s *server) serveConn(ctx context.Context, c net.Conn) {
	cc := &clientConn{s: s, c: c}
	defer cc.close()
	sem := make(chan struct{}, s.opts.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		rec, err := readRecord(c)
		if err != nil {
			if errors.Is(err, errRecordTooBig) {
				s.log.Warn("nfs: closing connection", "remote", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		h, args, ok := parseCall(rec)
		if !ok {
			s.log.Warn("nfs: closing connection after a malformed RPC call", "remote", c.RemoteAddr().String())
			return
		}
		if cc.forwarded(h) {
			if err := cc.forward(ctx, rec); err != nil {
				return
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			reply := s.dispatch(ctx, h, args)
			if reply != nil {
				_ = cc.send(reply)
			}
		}()
	}
}

// dispatch answers one call. A panic while serving it is logged and
// answered with SYSTEM_ERR: one bad request must not take the server down.
func (s *server) dispatch(ctx context.Context, h callHeader, args *xdrReader) (reply []byte) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("nfs: panic serving request", "prog", h.prog, "proc", h.proc, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			reply = replyHeader(h.xid, acceptSystemErr).b
		}
	}()
	if h.rpcVers != 2 {
		return denied(h.xid, rejectRPCMismatch, 0)
	}
	switch h.prog {
	case progNFS:
		if h.vers != 3 {
			return progMismatch(h.xid, 3, 3)
		}
	case progMount:
		if h.vers != 3 {
			return progMismatch(h.xid, 3, 3)
		}
	default:
		return replyHeader(h.xid, acceptProgUnavail).b
	}
	c, ok := s.caller(h)
	if !ok {
		return denied(h.xid, rejectAuthError, authBadCred)
	}
	if h.prog == progMount {
		switch h.proc {
		case mountProcMnt:
			return s.mnt(ctx, h.xid, c, args)
		case mountProcExport:
			return s.export(h.xid)
		case mountProcDump, mountProcUmntAll:
			// We keep no mount list (NFSv3 is stateless): DUMP lists
			// nothing and UMNTALL has nothing to forget.
			w := replyHeader(h.xid, acceptSuccess)
			if h.proc == mountProcDump {
				w.bool(false)
			}
			return w.b
		}
		return replyHeader(h.xid, acceptProcUnavail).b
	}
	p, ok := procs[h.proc]
	if !ok {
		return replyHeader(h.xid, acceptProcUnavail).b
	}
	w := replyHeader(h.xid, acceptSuccess)
	rq := &request{s: s, ctx: ctx, c: c, args: args, w: w, op: p.name}
	defer s.observe(p.name, time.Now(), w)
	if p.change && s.opts.ReadOnly {
		rq.fail(errROFS, p.failBody)
		return w.b
	}
	p.fn(rq)
	if args.err != nil {
		return replyHeader(h.xid, acceptGarbageArgs).b
	}
	return w.b
}

// replyHeaderLen is the size of an accepted reply's header; every NFSv3
// reply body but NULL's starts with its nfsstat3 there.
const replyHeaderLen = 24

// observe records one procedure in Options.Ops, as failed unless its reply
// carries NFS3_OK.
func (s *server) observe(op string, start time.Time, w *xdrWriter) {
	if s.opts.Ops == nil {
		return
	}
	s.opts.Ops.Observe(op, start)
	if len(w.b) >= replyHeaderLen+4 && binary.BigEndian.Uint32(w.b[replyHeaderLen:]) != nfsOK {
		s.opts.Ops.Failed(op)
	}
}

// clientConn is one client socket and, once needed, its pipe to go-nfs.
type clientConn struct {
	s *server
	c net.Conn

	wmu sync.Mutex // one reply record at a time on the socket

	pipeOnce sync.Once
	pipe     net.Conn // our end of the pipe to go-nfs
	pipeDone chan struct{}
}

// MOUNT procedures. go-nfs answers NULL and UMNT for us: they carry no
// file system semantics. MNT is ours because go-nfs fails on the empty
// path libnfs sends with auto-traverse-mounts=0, EXPORT because go-nfs has
// no handler for it.
const (
	mountProcNull    = 0
	mountProcMnt     = 1
	mountProcDump    = 2
	mountProcUmnt    = 3
	mountProcUmntAll = 4
	mountProcExport  = 5
)

func (cc *clientConn) forwarded(h callHeader) bool {
	if cc.s.opts.goNFSOnly {
		return true
	}
	if h.rpcVers != 2 {
		return false
	}
	if _, ok := cc.s.caller(h); !ok {
		return false // dispatch refuses it
	}
	switch h.prog {
	case progNFS:
		return h.vers == 3 && h.proc == 0
	case progMount:
		return h.vers == 3 && (h.proc == mountProcNull || h.proc == mountProcUmnt)
	}
	return false
}

// forward hands a record to go-nfs; its replies are copied back to the
// client by a goroutine started with the pipe.
func (cc *clientConn) forward(ctx context.Context, rec []byte) error {
	cc.pipeOnce.Do(func() {
		ours, theirs := net.Pipe()
		cc.pipe = ours
		cc.pipeDone = make(chan struct{})
		if err := cc.s.pipeL.hand(ctx, &pipeConn{Conn: theirs, remote: cc.c.RemoteAddr()}); err != nil {
			_ = ours.Close()
			close(cc.pipeDone)
			return
		}
		go func() {
			defer close(cc.pipeDone)
			// Closing our end unblocks go-nfs and the forwarding reader
			// when the client is gone.
			defer ours.Close()
			for {
				rec, err := readRecord(ours)
				if err != nil {
					return
				}
				if cc.send(rec) != nil {
					return
				}
			}
		}()
	})
	if _, err := cc.pipe.Write(frame(rec)); err != nil {
		return fmt.Errorf("forward to go-nfs: %w", err)
	}
	return nil
}

// writeTimeout drops a client that stops reading its replies: otherwise it
// would hold its workers (and their memory) for good.
const writeTimeout = 2 * time.Minute

func (cc *clientConn) send(body []byte) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	_ = cc.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := cc.c.Write(frame(body)); err != nil {
		_ = cc.c.Close() // the reader sees it and ends the connection
		return err
	}
	return nil
}

func (cc *clientConn) close() {
	_ = cc.c.Close()
	if cc.pipe != nil {
		_ = cc.pipe.Close()
		<-cc.pipeDone
	}
}

// pipeConn is go-nfs's end of a pipe, reporting the real client address.
type pipeConn struct {
	net.Conn
	remote net.Addr
}

func (p *pipeConn) RemoteAddr() net.Addr { return p.remote }

// pipeListener hands pipe connections to go-nfs's accept loop.
type pipeListener struct {
	addr  net.Addr
	ch    chan net.Conn
	done  chan struct{}
	close sync.Once
}

func newPipeListener(addr net.Addr) *pipeListener {
	return &pipeListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (p *pipeListener) hand(ctx context.Context, c net.Conn) error {
	select {
	case p.ch <- c:
		return nil
	case <-p.done:
		return net.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.ch:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeListener) Close() error {
	p.close.Do(func() { close(p.done) })
	return nil
}

func (p *pipeListener) Addr() net.Addr { return p.addr }

// A Watcher is told of the changes NFS procedures make. A FUSE mount of
// the same process is one: its kernel caches names and attributes for a
// minute, and must drop what an NFS client changed before that client
// hears that its change is done, so that both front ends see each other's
// changes at once.
type Watcher interface {
	// Changed: ino's attributes or data changed.
	Changed(ino uint64)
	// EntryChanged: name in dir names something else now, or nothing.
	EntryChanged(dir uint64, name string)
	// Renaming is told before a RENAME is made, and returns done, which
	// is called once the rename is made (renamed) or has failed. Until
	// then a FUSE mount answers lookups of the two names as they were
	// before the rename; done tells its kernel of the change, then lets
	// the new state show. A process on the mount thus finds the file
	// under one of the names at any time, never under both or neither.
	Renaming(fromDir uint64, fromName string, toDir uint64, toName string) (done func(renamed bool))
}

// changed reports a change of ino's attributes or data to the Watcher.
func (s *server) changed(ino uint64) {
	if s.opts.Watcher != nil && ino != 0 {
		s.opts.Watcher.Changed(ino)
	}
}

// entryChanged reports a change of name in dir to the Watcher.
func (s *server) entryChanged(dir uint64, name string) {
	if s.opts.Watcher != nil {
		s.opts.Watcher.EntryChanged(dir, name)
	}
}

// renaming tells the Watcher of a rename about to be made; see
// Watcher.Renaming.
func (s *server) renaming(fromDir uint64, fromName string, toDir uint64, toName string) (done func(renamed bool)) {
	if s.opts.Watcher == nil {
		return func(bool) {}
	}
	return s.opts.Watcher.Renaming(fromDir, fromName, toDir, toName)
}
