package nfs

import (
	"github.com/objfs/objfs/fs/meta"
)

// Cookies are the POSIX layer's per-directory sequence numbers, which stay
// valid while the directory changes; 1 and 2 are "." and "..". So a
// listing in pages never misses or repeats an entry that exists throughout,
// and the cookie verifier can stay zero (RFC 1813 lets a server that does
// not need it ignore it).
const (
	cookieDot    = 1
	cookieDotDot = 2
)

// dirEntry is one entry to send.
type dirEntry struct {
	name   string
	ino    uint64
	cookie uint64
}

// xdrLen is the encoded size of opaque data of n bytes.
func xdrLen(n int) int { return 4 + (n+3)&^3 }

// listDir collects entries of dir after cookie while fits says the next one
// fits. more reports whether entries remain after the last one returned.
func (rq *request) listDir(dir *meta.Attr, cookie uint64, fits func(dirEntry) bool) (ents []dirEntry, more bool, err error) {
	add := func(e dirEntry) bool {
		if !fits(e) {
			more = true
			return false
		}
		ents = append(ents, e)
		return true
	}
	if cookie < cookieDot && !add(dirEntry{".", dir.Ino, cookieDot}) {
		return ents, more, nil
	}
	if cookie < cookieDotDot {
		parent := dir.Parent
		if dir.Ino == meta.RootIno || parent == 0 {
			parent = meta.RootIno
		}
		if !add(dirEntry{"..", parent, cookieDotDot}) {
			return ents, more, nil
		}
	}
	err = rq.s.f.ReadDir(rq.ctx, rq.c, dir.Ino, max(cookie, cookieDotDot), func(d meta.Dirent) bool {
		return add(dirEntry{d.Name, d.Ino, d.Cookie})
	})
	return ents, more, err
}

// readdirCommon checks the arguments READDIR and READDIRPLUS share.
func (rq *request) openDir(h []byte) (*meta.Attr, bool) {
	dir, st := rq.resolveDir(h)
	if st != nfsOK {
		rq.fail(st, 1)
		return nil, false
	}
	if err := rq.s.f.OpenDir(rq.ctx, rq.c, dir.Ino); err != nil {
		rq.failErr(err, 0)
		rq.s.putPostOp(rq.w, dir)
		return nil, false
	}
	return dir, true
}

// listReply lists dir from cookie while fits accepts entries and, if that
// worked, writes the head of the reply (status, the directory's attributes,
// the cookie verifier); otherwise it answers with the error and reports
// false. An entry too big for the client's buffer is NFS3ERR_TOOSMALL.
func (rq *request) listReply(dir *meta.Attr, cookie uint64, fits func(dirEntry) bool) (ents []dirEntry, more, ok bool) {
	ents, more, err := rq.listDir(dir, cookie, fits)
	switch {
	case err != nil:
		rq.failErr(err, 0)
	case len(ents) == 0 && more:
		rq.fail(errTooSmall, 0)
	default:
		rq.w.u32(nfsOK)
		rq.s.putPostOp(rq.w, dir)
		rq.w.u64(0)
		return ents, more, true
	}
	rq.s.putPostOp(rq.w, dir)
	return nil, false, false
}

func (rq *request) readdir() {
	h := rq.handle()
	cookie := rq.args.u64()
	rq.args.fixed(8) // cookie verifier: see cookieDot
	count := rq.args.u32()
	if !rq.argsOK() {
		return
	}
	dir, ok := rq.openDir(h)
	if !ok {
		return
	}
	// Fixed part: status, post_op_attr, verifier, list end, eof.
	size := 4 + 4 + 84 + 8 + 4 + 4
	limit := int(min(count, maxData))
	ents, more, ok := rq.listReply(dir, cookie, func(e dirEntry) bool {
		n := 4 + 8 + xdrLen(len(e.name)) + 8
		if size+n > limit {
			return false
		}
		size += n
		return true
	})
	if !ok {
		return
	}
	for _, e := range ents {
		rq.w.bool(true)
		rq.w.u64(e.ino)
		rq.w.opaque([]byte(e.name))
		rq.w.u64(e.cookie)
	}
	rq.w.bool(false)
	rq.w.bool(!more)
}

func (rq *request) readdirplus() {
	h := rq.handle()
	cookie := rq.args.u64()
	rq.args.fixed(8)
	dircount := rq.args.u32()
	maxcount := rq.args.u32()
	if !rq.argsOK() {
		return
	}
	dir, ok := rq.openDir(h)
	if !ok {
		return
	}
	// dircount bounds the names and cookies, maxcount the whole reply, in
	// which each entry also carries attributes (4+84) and a handle (4+4+17+3).
	size := 4 + 4 + 84 + 8 + 4 + 4
	limit := int(min(maxcount, maxData))
	dirSize, dirLimit := 0, int(dircount)
	if dirLimit == 0 {
		dirLimit = limit
	}
	ents, more, ok := rq.listReply(dir, cookie, func(e dirEntry) bool {
		d := 8 + xdrLen(len(e.name)) + 8
		n := 4 + d + 88 + 28
		if size+n > limit || (dirSize > 0 && dirSize+d > dirLimit) {
			return false
		}
		size += n
		dirSize += d
		return true
	})
	if !ok {
		return
	}
	for _, e := range ents {
		rq.w.bool(true)
		rq.w.u64(e.ino)
		rq.w.opaque([]byte(e.name))
		rq.w.u64(e.cookie)
		// The entry may have been removed since it was listed: then it
		// goes without attributes and handle, which the protocol allows.
		a := rq.attr(e.ino)
		if a != nil && a.Nlink == 0 {
			a = nil
		}
		rq.s.putPostOp(rq.w, a)
		if a == nil {
			rq.w.bool(false)
			continue
		}
		rq.w.bool(true)
		rq.w.opaque(encodeHandle(a.Ino, a.Gen))
	}
	rq.w.bool(false)
	rq.w.bool(!more)
}
