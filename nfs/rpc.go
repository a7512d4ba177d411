package nfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/objfs/objfs/fs/meta"
)

// ONC RPC (RFC 5531) constants used here.
const (
	progNFS   = 100003
	progMount = 100005

	msgCall  = 0
	msgReply = 1

	replyAccepted = 0
	replyDenied   = 1

	acceptSuccess     = 0
	acceptProgUnavail = 1
	acceptProgMisatch = 2
	acceptProcUnavail = 3
	acceptGarbageArgs = 4
	acceptSystemErr   = 5

	rejectRPCMismatch = 0
	rejectAuthError   = 1
	authBadCred       = 1

	authNone = 0
	authSys  = 1

	lastFragment = 1 << 31
)

// Limits on what a client may send. They bound memory per connection:
// one record at a time is held per worker.
const (
	maxData   = 1 << 20          // largest READ/WRITE payload (rtmax, wtmax)
	maxRecord = maxData + 64<<10 // a WRITE of maxData plus its headers
	maxName   = meta.MaxNameLen  // longest name accepted on the wire
	maxPath   = 4096             // longest symlink target
	maxAuth   = 400              // RFC 5531: opaque_auth body<400>
)

// errRecordTooBig closes a connection whose record length exceeds maxRecord.
var errRecordTooBig = errors.New("RPC record larger than the limit")

// readRecord reads one RPC record (RFC 5531 section 11 record marking),
// joining its fragments. A record longer than maxRecord is refused before
// anything is allocated for it.
func readRecord(r io.Reader) ([]byte, error) {
	var rec []byte
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if len(rec) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		marker := binary.BigEndian.Uint32(hdr[:])
		n := int(marker &^ lastFragment)
		if len(rec)+n > maxRecord {
			return nil, fmt.Errorf("%w: %d bytes", errRecordTooBig, len(rec)+n)
		}
		// Grow with what arrives, not with what the marker claims: a
		// client announcing a large record and sending nothing holds
		// little memory.
		buf := bytes.NewBuffer(rec)
		if m, err := io.CopyN(buf, r, int64(n)); err != nil {
			if errors.Is(err, io.EOF) || m < int64(n) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		rec = buf.Bytes()
		if marker&lastFragment != 0 {
			return rec, nil
		}
	}
}

// frame prepends the record marker of a single-fragment record to body.
func frame(body []byte) []byte {
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, lastFragment|uint32(len(body)))
	return append(out, body...)
}

// callHeader is the decoded header of an RPC call.
type callHeader struct {
	xid        uint32
	rpcVers    uint32
	prog, vers uint32
	proc       uint32
	credFlavor uint32
	cred       []byte
}

// parseCall decodes the call header of record rec and returns the reader
// positioned at the procedure's arguments. ok is false when rec is not an
// RPC call at all, in which case the connection is closed: there is no xid
// to answer to that the client would be waiting for.
func parseCall(rec []byte) (h callHeader, args *xdrReader, ok bool) {
	r := &xdrReader{b: rec}
	h.xid = r.u32()
	if mtype := r.u32(); mtype != msgCall {
		return h, nil, false
	}
	h.rpcVers = r.u32()
	h.prog = r.u32()
	h.vers = r.u32()
	h.proc = r.u32()
	h.credFlavor = r.u32()
	h.cred = r.opaque(maxAuth)
	r.u32() // verifier flavor: AUTH_SYS and AUTH_NONE verifiers are empty
	r.opaque(maxAuth)
	if r.err != nil {
		return h, nil, false
	}
	return h, r, true
}

// authSysCred is an AUTH_SYS credential (RFC 5531 appendix A).
type authSysCred struct {
	uid, gid uint32
	gids     []uint32
}

func parseAuthSys(b []byte) (authSysCred, error) {
	r := &xdrReader{b: b}
	var c authSysCred
	r.u32()       // stamp
	r.opaque(255) // machine name
	c.uid = r.u32()
	c.gid = r.u32()
	n := r.u32()
	if n > 16 {
		return c, errGarbage
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		c.gids = append(c.gids, r.u32())
	}
	return c, r.err
}

// replyHeader starts an accepted reply with status stat.
func replyHeader(xid, stat uint32) *xdrWriter {
	w := &xdrWriter{b: make([]byte, 0, 256)}
	w.u32(xid)
	w.u32(msgReply)
	w.u32(replyAccepted)
	w.u32(authNone) // verifier: AUTH_NONE, empty body
	w.u32(0)
	w.u32(stat)
	return w
}

// progMismatch answers a call for a version of a program we do not serve.
func progMismatch(xid, low, high uint32) []byte {
	w := replyHeader(xid, acceptProgMisatch)
	w.u32(low)
	w.u32(high)
	return w.b
}

// denied answers a call we refuse before looking at it: an RPC version
// other than 2, or a credential we cannot decode.
func denied(xid, stat, detail uint32) []byte {
	w := &xdrWriter{}
	w.u32(xid)
	w.u32(msgReply)
	w.u32(replyDenied)
	w.u32(stat)
	if stat == rejectRPCMismatch {
		w.u32(2)
		w.u32(2)
	} else {
		w.u32(detail)
	}
	return w.b
}
