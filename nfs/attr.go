package nfs

import (
	"syscall"

	"github.com/objfs/objfs/fs/meta"
)

// NFSv3 file types (ftype3).
const (
	nf3Reg  = 1
	nf3Dir  = 2
	nf3Blk  = 3
	nf3Chr  = 4
	nf3Lnk  = 5
	nf3Sock = 6
	nf3Fifo = 7
)

func ftype(mode uint32) uint32 {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return nf3Dir
	case syscall.S_IFBLK:
		return nf3Blk
	case syscall.S_IFCHR:
		return nf3Chr
	case syscall.S_IFLNK:
		return nf3Lnk
	case syscall.S_IFSOCK:
		return nf3Sock
	case syscall.S_IFIFO:
		return nf3Fifo
	}
	return nf3Reg
}

// Device numbers are stored as the kernel's 32-bit encoding (what FUSE
// passes to mknod): minor bits 0-7 and 20-31, major bits 8-19.
func mkdev(major, minor uint32) uint32 {
	return minor&0xff | (major&0xfff)<<8 | (minor&^0xff)<<12
}

func devMajor(d uint32) uint32 { return (d >> 8) & 0xfff }
func devMinor(d uint32) uint32 { return d&0xff | (d>>12)&0xfff00 }

// putTime encodes nanoseconds since the epoch as nfstime3. Times before
// 1970 or after 2106 do not fit the unsigned seconds and are clamped.
func putTime(w *xdrWriter, ns int64) {
	sec := ns / 1e9
	nsec := ns % 1e9
	if nsec < 0 {
		sec--
		nsec += 1e9
	}
	switch {
	case sec < 0:
		sec, nsec = 0, 0
	case sec > 1<<32-1:
		sec, nsec = 1<<32-1, 999999999
	}
	w.u32(uint32(sec))
	w.u32(uint32(nsec))
}

// putAttr encodes fattr3.
func (s *server) putAttr(w *xdrWriter, a *meta.Attr) {
	w.u32(ftype(a.Mode))
	w.u32(a.Mode & 0o7777)
	w.u32(a.Nlink)
	w.u32(a.Uid)
	w.u32(a.Gid)
	w.u64(a.Size)
	w.u64(a.Blocks() * 512) // used: what the file stores (its size, for files made before format 4)
	w.u32(devMajor(a.Rdev))
	w.u32(devMinor(a.Rdev))
	w.u64(s.fsid)
	w.u64(a.Ino)
	putTime(w, a.Atime)
	putTime(w, a.Mtime)
	putTime(w, a.Ctime)
}

// putPostOp encodes post_op_attr: a may be nil (no attributes).
func (s *server) putPostOp(w *xdrWriter, a *meta.Attr) {
	if a == nil {
		w.bool(false)
		return
	}
	w.bool(true)
	s.putAttr(w, a)
}

// sattr is a decoded sattr3.
type sattr struct {
	in meta.SetAttrIn
}

const (
	timeDontChange = 0
	timeServer     = 1
	timeClient     = 2
)

func readTime(r *xdrReader) int64 {
	sec := r.u32()
	nsec := r.u32()
	if nsec >= 1e9 {
		r.fail()
	}
	return int64(sec)*1e9 + int64(nsec)
}

func readSattr(r *xdrReader) sattr {
	var s sattr
	if r.bool() {
		s.in.Valid |= meta.SetMode
		s.in.Mode = r.u32() & 0o7777
	}
	if r.bool() {
		s.in.Valid |= meta.SetUid
		s.in.Uid = r.u32()
	}
	if r.bool() {
		s.in.Valid |= meta.SetGid
		s.in.Gid = r.u32()
	}
	if r.bool() {
		s.in.Valid |= meta.SetSize
		s.in.Size = r.u64()
	}
	for _, t := range []struct {
		set, now uint32
		field    *int64
	}{{meta.SetAtime, meta.SetAtimeNow, &s.in.Atime}, {meta.SetMtime, meta.SetMtimeNow, &s.in.Mtime}} {
		switch how := r.u32(); how {
		case timeDontChange:
		case timeServer:
			s.in.Valid |= t.now
		case timeClient:
			s.in.Valid |= t.set
			*t.field = readTime(r)
		default:
			r.fail()
		}
	}
	return s
}

// mode returns the permission bits to create with, def when unset.
func (s sattr) mode(def uint32) uint32 {
	if s.in.Valid&meta.SetMode != 0 {
		return s.in.Mode
	}
	return def
}

// rest is what is left to apply after a create that set the mode.
func (s sattr) rest() meta.SetAttrIn {
	in := s.in
	in.Valid &^= meta.SetMode
	return in
}
