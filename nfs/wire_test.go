package nfs

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// wireClient speaks RPC over one TCP connection with our own encoder, so
// tests can send exactly the bytes they mean, valid or not.
type wireClient struct {
	t    testing.TB
	c    net.Conn
	xid  uint32
	uid  uint32
	gid  uint32
	auth uint32
}

func dialWire(t testing.TB, addr string) *wireClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &wireClient{t: t, c: c, auth: authSys, uid: 1000, gid: 1000}
}

// callRaw sends one call and returns the accept status and result body.
func (w *wireClient) callRaw(prog, vers, proc uint32, args []byte) (uint32, *xdrReader, error) {
	w.xid++
	x := &xdrWriter{}
	x.u32(w.xid)
	x.u32(msgCall)
	x.u32(2)
	x.u32(prog)
	x.u32(vers)
	x.u32(proc)
	if w.auth == authSys {
		cred := &xdrWriter{}
		cred.u32(0)
		cred.opaque([]byte("test"))
		cred.u32(w.uid)
		cred.u32(w.gid)
		cred.u32(0)
		x.u32(authSys)
		x.opaque(cred.b)
	} else {
		x.u32(authNone)
		x.u32(0)
	}
	x.u32(authNone)
	x.u32(0)
	x.b = append(x.b, args...)
	_ = w.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := w.c.Write(frame(x.b)); err != nil {
		return 0, nil, err
	}
	rec, err := readRecord(w.c)
	if err != nil {
		return 0, nil, err
	}
	r := &xdrReader{b: rec}
	if xid := r.u32(); xid != w.xid {
		return 0, nil, fmt.Errorf("reply xid %d, want %d", xid, w.xid)
	}
	if r.u32() != msgReply {
		return 0, nil, errors.New("not a reply")
	}
	if st := r.u32(); st != replyAccepted {
		return 0, nil, fmt.Errorf("call denied (reject_stat %d)", r.u32())
	}
	r.u32()
	r.opaque(maxAuth)
	stat := r.u32()
	return stat, r, r.err
}

// nfs calls an NFSv3 procedure that must be accepted, and returns the
// nfsstat3 and the rest of the result.
func (w *wireClient) nfs(proc uint32, args *xdrWriter) (uint32, *xdrReader) {
	w.t.Helper()
	stat, r, err := w.callRaw(progNFS, 3, proc, args.b)
	if err != nil {
		w.t.Fatalf("NFS proc %d: %v", proc, err)
	}
	if stat != acceptSuccess {
		w.t.Fatalf("NFS proc %d: accept_stat %d", proc, stat)
	}
	return r.u32(), r
}

// mountRoot returns the root handle through MOUNT MNT (served by go-nfs).
func (w *wireClient) mountRoot() []byte {
	w.t.Helper()
	a := &xdrWriter{}
	a.opaque([]byte("/"))
	stat, r, err := w.callRaw(progMount, 3, mountProcMnt, a.b)
	if err != nil || stat != acceptSuccess {
		w.t.Fatalf("MNT: stat %d err %v", stat, err)
	}
	if st := r.u32(); st != 0 {
		w.t.Fatalf("MNT status %d", st)
	}
	return append([]byte(nil), r.opaque(64)...)
}

// args builds XDR arguments from handles ([]byte), names (string) and numbers.
func args(vals ...any) *xdrWriter {
	w := &xdrWriter{}
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			w.opaque(v)
		case string:
			w.opaque([]byte(v))
		case uint32:
			w.u32(v)
		case int:
			w.u32(uint32(v))
		case uint64:
			w.u64(v)
		case bool:
			w.bool(v)
		case raw:
			w.b = append(w.b, v...)
		default:
			panic(fmt.Sprintf("args: %T", v))
		}
	}
	return w
}

// raw is pre-encoded XDR.
type raw []byte

// noSattr is a sattr3 that sets nothing.
var noSattr = raw(make([]byte, 24))

// sattrMode sets only the mode.
func sattrMode(mode uint32) raw {
	w := &xdrWriter{}
	w.bool(true)
	w.u32(mode)
	w.b = append(w.b, make([]byte, 20)...)
	return raw(w.b)
}

// skipPostOp skips a post_op_attr and returns fileid and size if present.
func skipPostOp(r *xdrReader) (fattr, bool) {
	if !r.bool() {
		return fattr{}, false
	}
	return readFattr(r), true
}

type fattr struct {
	typ, mode, nlink, uid, gid uint32
	size                       uint64
	major, minor               uint32
	fileid                     uint64
	atime, mtime, ctime        [2]uint32
}

func readFattr(r *xdrReader) fattr {
	var a fattr
	a.typ, a.mode, a.nlink, a.uid, a.gid = r.u32(), r.u32(), r.u32(), r.u32(), r.u32()
	a.size = r.u64()
	r.u64()
	a.major, a.minor = r.u32(), r.u32()
	r.u64()
	a.fileid = r.u64()
	for _, t := range []*[2]uint32{&a.atime, &a.mtime, &a.ctime} {
		t[0], t[1] = r.u32(), r.u32()
	}
	return a
}

func skipWcc(r *xdrReader) fattr {
	if r.bool() {
		r.u64()
		r.u64()
		r.u64()
	}
	a, _ := skipPostOp(r)
	return a
}

// Convenience wrappers returning status and, on success, the new handle.
func (w *wireClient) lookup(dir []byte, name string) (uint32, []byte) {
	st, r := w.nfs(3, args(dir, name))
	if st != nfsOK {
		return st, nil
	}
	return st, append([]byte(nil), r.opaque(64)...)
}

func (w *wireClient) createdHandle(st uint32, r *xdrReader) (uint32, []byte) {
	if st != nfsOK {
		return st, nil
	}
	if !r.bool() {
		w.t.Fatal("create returned no handle")
	}
	return st, append([]byte(nil), r.opaque(64)...)
}

func (w *wireClient) create(dir []byte, name string, how uint32) (uint32, []byte) {
	st, r := w.nfs(8, args(dir, name, how, sattrMode(0o644)))
	return w.createdHandle(st, r)
}

func (w *wireClient) mkdir(dir []byte, name string) (uint32, []byte) {
	st, r := w.nfs(9, args(dir, name, sattrMode(0o755)))
	return w.createdHandle(st, r)
}

func (w *wireClient) write(fh []byte, off uint64, data []byte, how uint32) uint32 {
	st, _ := w.nfs(7, args(fh, off, uint32(len(data)), how, data))
	return st
}

func (w *wireClient) read(fh []byte, off uint64, count uint32) (uint32, []byte, bool) {
	st, r := w.nfs(6, args(fh, off, count))
	if st != nfsOK {
		return st, nil, false
	}
	skipPostOp(r)
	r.u32()
	eof := r.bool()
	return st, append([]byte(nil), r.opaque(maxData)...), eof
}

func (w *wireClient) getattr(fh []byte) (uint32, fattr) {
	st, r := w.nfs(1, args(fh))
	if st != nfsOK {
		return st, fattr{}
	}
	return st, readFattr(r)
}
