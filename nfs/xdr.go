package nfs

import (
	"encoding/binary"
	"errors"
)

// errGarbage is a request whose arguments do not decode: the reply is
// GARBAGE_ARGS, as RFC 5531 asks.
var errGarbage = errors.New("malformed XDR arguments")

// xdrReader decodes XDR (RFC 4506) from one received record. The first
// error sticks, so decoders read every field and check once at the end;
// every length is bounded by the bytes actually present, so no input can
// make it allocate more than the record it came in.
type xdrReader struct {
	b   []byte
	err error
}

func (r *xdrReader) fail() { r.err = errGarbage; r.b = nil }

func (r *xdrReader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *xdrReader) u64() uint64 {
	hi := uint64(r.u32())
	return hi<<32 | uint64(r.u32())
}

func (r *xdrReader) bool() bool { return r.u32() != 0 }

// opaque reads variable-length opaque data of at most max bytes. The
// result aliases the record.
func (r *xdrReader) opaque(max int) []byte {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(max) {
		r.fail()
		return nil
	}
	return r.fixed(int(n))
}

// fixed reads n bytes plus padding to a multiple of four.
func (r *xdrReader) fixed(n int) []byte {
	padded := (n + 3) &^ 3
	if r.err != nil || n < 0 || len(r.b) < padded {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[padded:]
	return v
}

// xdrWriter encodes XDR into a growing buffer.
type xdrWriter struct{ b []byte }

func (w *xdrWriter) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *xdrWriter) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }

func (w *xdrWriter) bool(v bool) {
	if v {
		w.u32(1)
	} else {
		w.u32(0)
	}
}

func (w *xdrWriter) opaque(v []byte) {
	w.u32(uint32(len(v)))
	w.b = append(w.b, v...)
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
}
