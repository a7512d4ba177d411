package integration

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
	"github.com/willscott/go-nfs-client/nfs/xdr"
)

// wireNFS is one TCP connection to the NFS server that makes one call at a
// time, encoded with go-nfs-client's XDR and types. go-nfs-client's own
// rpc.Client does not suit a crash test: it reconnects by itself and resends
// a call that had no reply, so a WRITE sent before the kill could reach the
// restarted server, and after a kill its calls keep retrying for seconds.
// This one fails at once when the connection breaks and never reconnects.
// It also makes calls go-nfs-client has no method for (LINK, UNSTABLE
// WRITEs, READDIRPLUS without a client-side cache) and returns the server's
// status as it was (wireStatus).
type wireNFS struct {
	mu   sync.Mutex
	conn net.Conn
	br   *bufio.Reader
	xid  uint32
	cred rpc.Auth
}

const (
	wireNFSProg   = 100003
	wireMountProg = 100005
	wireMaxWrite  = 1 << 20 // the server's wtmax

	stableUnstable = 0
	stableFileSync = 2

	wireCallTimeout = 2 * time.Minute
)

func dialWireNFS(addr string) (*wireNFS, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial NFS %s: %w", addr, err)
	}
	return &wireNFS{conn: conn, br: bufio.NewReader(conn), xid: rand.Uint32(),
		cred: rpc.NewAuthUnix("objfs-test", 0, 0).Auth()}, nil
}

// Close breaks the connection; a call in progress fails.
func (c *wireNFS) Close() { c.conn.Close() }

// call sends one RPC and returns the reader positioned at the procedure's
// result, after checking that the call was accepted and, for NFS, that the
// status is NFS3_OK.
func (c *wireNFS) call(prog, proc uint32, args ...any) (io.Reader, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.xid++
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0, 0}) // record mark, set below
	head := struct {
		Xid, Msgtype uint32
		rpc.Header
	}{c.xid, 0, rpc.Header{Rpcvers: 2, Prog: prog, Vers: 3, Proc: proc, Cred: c.cred, Verf: rpc.AuthNull}}
	if err := xdr.Write(&buf, head); err != nil {
		return nil, fmt.Errorf("encoding the call: %w", err)
	}
	for _, a := range args {
		if err := xdr.Write(&buf, a); err != nil {
			return nil, fmt.Errorf("encoding the arguments: %w", err)
		}
	}
	b := buf.Bytes()
	binary.BigEndian.PutUint32(b, uint32(len(b)-4)|1<<31)
	if err := c.conn.SetDeadline(time.Now().Add(wireCallTimeout)); err != nil {
		return nil, err
	}
	if _, err := c.conn.Write(b); err != nil {
		return nil, fmt.Errorf("sending: %w", err)
	}
	var rec []byte
	for {
		var mark [4]byte
		if _, err := io.ReadFull(c.br, mark[:]); err != nil {
			return nil, fmt.Errorf("reading the reply: %w", err)
		}
		n := binary.BigEndian.Uint32(mark[:])
		frag := make([]byte, n&^(1<<31))
		if _, err := io.ReadFull(c.br, frag); err != nil {
			return nil, fmt.Errorf("reading the reply: %w", err)
		}
		rec = append(rec, frag...)
		if n&(1<<31) != 0 {
			break
		}
	}
	r := bytes.NewReader(rec)
	var rh struct{ Xid, Msgtype, Stat uint32 }
	if err := xdr.Read(r, &rh); err != nil {
		return nil, fmt.Errorf("decoding the reply: %w", err)
	}
	if rh.Xid != c.xid || rh.Msgtype != 1 || rh.Stat != 0 {
		return nil, fmt.Errorf("reply xid %d type %d stat %d to call xid %d: not an accepted reply", rh.Xid, rh.Msgtype, rh.Stat, c.xid)
	}
	var acc struct {
		Verf   rpc.Auth
		Accept uint32
	}
	if err := xdr.Read(r, &acc); err != nil {
		return nil, fmt.Errorf("decoding the reply: %w", err)
	}
	if acc.Accept != 0 {
		return nil, fmt.Errorf("call not executed: accept_stat %d", acc.Accept)
	}
	status, err := xdr.ReadUint32(r)
	if err != nil {
		return nil, fmt.Errorf("decoding the status: %w", err)
	}
	if status != 0 {
		return nil, wireStatus(status)
	}
	return r, nil
}

// wireStatus is an NFS status other than NFS3_OK; errors.Is matches it with
// go-nfs-client's errors (os.ErrNotExist for NFS3ERR_NOENT...).
type wireStatus uint32

func (s wireStatus) Error() string {
	return fmt.Sprintf("NFS status %d (%v)", uint32(s), nfsc.NFS3Error(uint32(s)))
}

func (s wireStatus) Unwrap() error { return nfsc.NFS3Error(uint32(s)) }

// mnt asks MOUNT for the handle of dir.
func (c *wireNFS) mnt(dir string) ([]byte, error) {
	r, err := c.call(wireMountProg, 1, dir)
	if err != nil {
		return nil, err
	}
	var res struct{ FH []byte }
	if err := xdr.Read(r, &res); err != nil {
		return nil, fmt.Errorf("decoding MNT: %w", err)
	}
	return res.FH, nil
}

// Modes of CREATE.
const (
	createUnchecked = 0 // an existing file is opened as it is
	createGuarded   = 1 // an existing name is an error
)

// create makes a file of the given mode (createGuarded or createUnchecked).
func (c *wireNFS) create(dir []byte, name string, how, mode uint32) ([]byte, error) {
	args := struct {
		How  uint32
		Attr nfsc.Sattr3
	}{how, nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: mode}}}
	r, err := c.call(wireNFSProg, nfsc.NFSProc3Create, nfsc.Diropargs3{FH: dir, Filename: name}, args)
	if err != nil {
		return nil, err
	}
	var res struct {
		FH   nfsc.PostOpFH3
		Attr nfsc.PostOpAttr
		Wcc  nfsc.WccData
	}
	if err := xdr.Read(r, &res); err != nil {
		return nil, fmt.Errorf("decoding CREATE: %w", err)
	}
	if !res.FH.IsSet {
		return nil, errors.New("CREATE returned no file handle")
	}
	return res.FH.FH, nil
}

// write sends one WRITE and returns the count, committed and verifier of
// the reply.
func (c *wireNFS) write(fh []byte, off int64, data []byte, stable uint32) (int, uint32, uint64, error) {
	args := struct {
		FH     []byte
		Offset uint64
		Count  uint32
		Stable uint32
		Data   []byte
	}{fh, uint64(off), uint32(len(data)), stable, data}
	r, err := c.call(wireNFSProg, nfsc.NFSProc3Write, args)
	if err != nil {
		return 0, 0, 0, err
	}
	var res struct {
		Wcc       nfsc.WccData
		Count     uint32
		Committed uint32
		Verf      uint64
	}
	if err := xdr.Read(r, &res); err != nil {
		return 0, 0, 0, fmt.Errorf("decoding WRITE: %w", err)
	}
	return int(res.Count), res.Committed, res.Verf, nil
}

// commit sends COMMIT for the whole file and returns the verifier.
func (c *wireNFS) commit(fh []byte) (uint64, error) {
	args := struct {
		FH     []byte
		Offset uint64
		Count  uint32
	}{fh, 0, 0}
	r, err := c.call(wireNFSProg, nfsc.NFSProc3Commit, args)
	if err != nil {
		return 0, err
	}
	var res struct {
		Wcc  nfsc.WccData
		Verf uint64
	}
	if err := xdr.Read(r, &res); err != nil {
		return 0, fmt.Errorf("decoding COMMIT: %w", err)
	}
	return res.Verf, nil
}

// lookup finds name in the directory dir: its handle and attributes.
func (c *wireNFS) lookup(dir []byte, name string) ([]byte, nfsc.Fattr, error) {
	r, err := c.call(wireNFSProg, nfsc.NFSProc3Lookup, nfsc.Diropargs3{FH: dir, Filename: name})
	if err != nil {
		return nil, nfsc.Fattr{}, err
	}
	var res struct {
		FH      []byte
		Attr    nfsc.PostOpAttr
		DirAttr nfsc.PostOpAttr
	}
	if err := xdr.Read(r, &res); err != nil {
		return nil, nfsc.Fattr{}, fmt.Errorf("decoding LOOKUP: %w", err)
	}
	if !res.Attr.IsSet {
		return nil, nfsc.Fattr{}, errors.New("LOOKUP returned no attributes")
	}
	return res.FH, res.Attr.Attr, nil
}

// getattr asks for the attributes of fh.
func (c *wireNFS) getattr(fh []byte) (nfsc.Fattr, error) {
	r, err := c.call(wireNFSProg, nfsc.NFSProc3GetAttr, fh)
	if err != nil {
		return nfsc.Fattr{}, err
	}
	var a nfsc.Fattr
	if err := xdr.Read(r, &a); err != nil {
		return nfsc.Fattr{}, fmt.Errorf("decoding GETATTR: %w", err)
	}
	return a, nil
}

// setattr changes what s sets, unguarded.
func (c *wireNFS) setattr(fh []byte, s nfsc.Sattr3) error {
	_, err := c.call(wireNFSProg, nfsc.NFSProc3SetAttr, fh, s, uint32(0))
	return err
}

// mkdir makes a directory of the given mode.
func (c *wireNFS) mkdir(dir []byte, name string, mode uint32) error {
	_, err := c.call(wireNFSProg, nfsc.NFSProc3Mkdir, nfsc.Diropargs3{FH: dir, Filename: name},
		nfsc.Sattr3{Mode: nfsc.SetMode{SetIt: true, Mode: mode}})
	return err
}

// symlink makes a symbolic link to target.
func (c *wireNFS) symlink(dir []byte, name, target string) error {
	_, err := c.call(wireNFSProg, nfsc.NFSProc3Symlink, nfsc.Diropargs3{FH: dir, Filename: name}, nfsc.Sattr3{}, target)
	return err
}

// link gives the file fh the name name in dir.
func (c *wireNFS) link(fh, dir []byte, name string) error {
	_, err := c.call(wireNFSProg, 15, fh, nfsc.Diropargs3{FH: dir, Filename: name})
	return err
}

// remove unlinks a non-directory.
func (c *wireNFS) remove(dir []byte, name string) error {
	_, err := c.call(wireNFSProg, nfsc.NFSProc3Remove, nfsc.Diropargs3{FH: dir, Filename: name})
	return err
}

// rmdir removes an empty directory.
func (c *wireNFS) rmdir(dir []byte, name string) error {
	_, err := c.call(wireNFSProg, nfsc.NFSProc3RmDir, nfsc.Diropargs3{FH: dir, Filename: name})
	return err
}

// rename moves fromDir/from to toDir/to.
func (c *wireNFS) rename(fromDir []byte, from string, toDir []byte, to string) error {
	_, err := c.call(wireNFSProg, nfsc.NFSProc3Rename, nfsc.Diropargs3{FH: fromDir, Filename: from}, nfsc.Diropargs3{FH: toDir, Filename: to})
	return err
}

// readlink returns a symbolic link's target.
func (c *wireNFS) readlink(fh []byte) (string, error) {
	r, err := c.call(wireNFSProg, nfsc.NFSProc3Readlink, fh)
	if err != nil {
		return "", err
	}
	var res struct {
		Attr   nfsc.PostOpAttr
		Target string
	}
	if err := xdr.Read(r, &res); err != nil {
		return "", fmt.Errorf("decoding READLINK: %w", err)
	}
	return res.Target, nil
}

// readAll reads a whole file, one READ of at most 1 MiB at a time, until
// the server says EOF.
func (c *wireNFS) readAll(fh []byte) ([]byte, error) {
	var out []byte
	for {
		r, err := c.call(wireNFSProg, nfsc.NFSProc3Read, fh, uint64(len(out)), uint32(1<<20))
		if err != nil {
			return out, err
		}
		var res struct {
			Attr  nfsc.PostOpAttr
			Count uint32
			EOF   bool
			Data  []byte
		}
		if err := xdr.Read(r, &res); err != nil {
			return out, fmt.Errorf("decoding READ at %d: %w", len(out), err)
		}
		if int(res.Count) != len(res.Data) {
			return out, fmt.Errorf("READ at %d: count %d but %d bytes of data", len(out), res.Count, len(res.Data))
		}
		out = append(out, res.Data...)
		if res.EOF {
			return out, nil
		}
		if res.Count == 0 {
			return out, fmt.Errorf("READ at %d: no data and no EOF", len(out))
		}
	}
}

// wireEntry is one entry of a READDIRPLUS reply.
type wireEntry struct {
	Name string
	FH   []byte      // nil when the server sent none
	Attr *nfsc.Fattr // nil when the server sent none
}

// readdirplus lists a directory (without "." and ".."), following cookies
// until the server says EOF.
func (c *wireNFS) readdirplus(dir []byte) ([]wireEntry, error) {
	var out []wireEntry
	var cookie, verf uint64
	for range 100000 {
		r, err := c.call(wireNFSProg, nfsc.NFSProc3ReadDirPlus, dir, cookie, verf, uint32(4096), uint32(32768))
		if err != nil {
			return out, err
		}
		var head struct {
			DirAttr nfsc.PostOpAttr
			Verf    uint64
		}
		if err := xdr.Read(r, &head); err != nil {
			return out, fmt.Errorf("decoding READDIRPLUS: %w", err)
		}
		verf = head.Verf
		for {
			var item struct {
				IsSet bool           `xdr:"union"`
				Entry nfsc.EntryPlus `xdr:"unioncase=1"`
			}
			if err := xdr.Read(r, &item); err != nil {
				return out, fmt.Errorf("decoding a READDIRPLUS entry: %w", err)
			}
			if !item.IsSet {
				break
			}
			e := item.Entry
			cookie = e.Cookie
			if e.FileName == "." || e.FileName == ".." {
				continue
			}
			we := wireEntry{Name: e.FileName}
			if e.Handle.IsSet {
				we.FH = e.Handle.FH
			}
			if e.Attr.IsSet {
				a := e.Attr.Attr
				we.Attr = &a
			}
			out = append(out, we)
		}
		eof, err := xdr.ReadUint32(r)
		if err != nil {
			return out, fmt.Errorf("decoding READDIRPLUS eof: %w", err)
		}
		if eof != 0 {
			return out, nil
		}
	}
	return out, errors.New("READDIRPLUS: no EOF after 100000 replies")
}

// dialWireRoot connects to the NFS server of v's mount at addr, retrying
// until it answers, and returns the connection (closed when t ends) and
// the handle of the export's root.
func dialWireRoot(t testing.TB, v *volume, addr string) (*wireNFS, []byte) {
	t.Helper()
	return dialWireMount(t, v, addr, "/")
}

// dialWireMount is dialWireRoot for the directory path of the export.
func dialWireMount(t testing.TB, v *volume, addr, path string) (*wireNFS, []byte) {
	t.Helper()
	for deadline := time.Now().Add(mountReadyTimeout); ; time.Sleep(20 * time.Millisecond) {
		c, err := dialWireNFS(addr)
		if err == nil {
			var fh []byte
			if fh, err = c.mnt(path); err == nil {
				t.Cleanup(c.Close)
				return c, fh
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("NFS on %s not ready: %v\n%s", addr, err, v.proc.logTail())
		}
	}
}
