package nfs

import (
	"bytes"
	"context"
	"testing"

	"github.com/objfs/objfs/fs/meta"
)

// FuzzDecodeHandle: any bytes decode to an error or to a handle that
// encodes back to exactly the same bytes.
func FuzzDecodeHandle(f *testing.F) {
	f.Add(encodeHandle(1, 0))
	f.Add(encodeHandle(1<<63, 1<<64-1))
	f.Add([]byte{})
	f.Add([]byte{handleVersion})
	f.Fuzz(func(t *testing.T, h []byte) {
		ino, gen, err := decodeHandle(h)
		if err != nil {
			return
		}
		if ino == 0 {
			t.Fatalf("decoded inode 0 from %x", h)
		}
		if got := encodeHandle(ino, gen); !bytes.Equal(got, h) {
			t.Fatalf("decode(%x) = %d,%d encodes to %x", h, ino, gen, got)
		}
	})
}

// FuzzParseCall: record framing, the call header and AUTH_SYS parse any
// input without panicking or reading past it.
func FuzzParseCall(f *testing.F) {
	w := dialWireless()
	f.Add(frame(w))
	f.Add([]byte{0x80, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stream []byte) {
		for range 4 {
			rec, err := readRecord(bytes.NewReader(stream))
			if err != nil {
				return
			}
			if len(rec) > maxRecord {
				t.Fatalf("record of %d bytes accepted", len(rec))
			}
			h, _, ok := parseCall(rec)
			if ok && h.credFlavor == authSys {
				_, _ = parseAuthSys(h.cred)
			}
			stream = stream[min(len(stream), 4+len(rec)):]
		}
	})
}

// dialWireless is a well-formed GETATTR call of the root, as a seed.
func dialWireless() []byte {
	x := args(uint32(1), uint32(msgCall), uint32(2), uint32(progNFS), uint32(3), uint32(1), uint32(authSys))
	cred := args(uint32(0), "host", uint32(0), uint32(0), uint32(1), uint32(0))
	x.opaque(cred.b)
	x.u32(authNone)
	x.u32(0)
	x.opaque(encodeHandle(meta.RootIno, 0))
	return x.b
}

// FuzzProcArgs runs every NFS procedure on arbitrary argument bytes against
// a real volume, without the panic recovery of dispatch: a panic is a bug.
// Arguments that do not decode must leave the reply to GARBAGE_ARGS.
func FuzzProcArgs(f *testing.F) {
	fsys, _ := newTestVolume(f).open(f)
	s, err := newServer(fsys, Options{Squash: SquashNone, Logger: testLog()})
	if err != nil {
		f.Fatal(err)
	}
	r, err := fsys.GetAttr(context.Background(), meta.RootIno)
	if err != nil {
		f.Fatal(err)
	}
	root := encodeHandle(r.Ino, r.Gen)
	f.Add(uint8(1), args(encodeHandle(1, 0)).b)
	f.Add(uint8(8), args(encodeHandle(1, 0), "new", uint32(createGuarded), noSattr).b)
	f.Add(uint8(7), args(encodeHandle(1, 0), uint64(0), uint32(3), uint32(2), "abc").b)
	f.Add(uint8(17), args(encodeHandle(1, 0), uint64(0), uint64(0), uint32(100), uint32(1000)).b)
	f.Add(uint8(15), args(encodeHandle(1, 0), encodeHandle(1, 0), "l").b)
	f.Add(uint8(11), args(encodeHandle(1, 0), "dev", uint32(nf3Chr), noSattr, uint32(1), uint32(2)).b)
	f.Fuzz(func(t *testing.T, procNum uint8, a []byte) {
		p, ok := procs[uint32(procNum)%22]
		if !ok || p.name == "PANIC" {
			return
		}
		// Let most inputs reach the file system: the root's real handle
		// replaces a zero handle of the right length.
		a = bytes.Replace(a, encodeHandle(1, 0), root, -1)
		rq := &request{s: s, ctx: context.Background(), c: &meta.Root, args: &xdrReader{b: a},
			w: replyHeader(1, acceptSuccess), op: p.name}
		p.fn(rq)
	})
}
