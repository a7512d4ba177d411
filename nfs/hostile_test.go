package nfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// A procedure number no client uses, wired to a handler that panics, to
// check that a panic is answered and contained.
const panicProc = 999

func init() {
	procs[panicProc] = proc{"PANIC", func(*request) { panic("handler bug") }, false, 0}
}

// expectClosed checks that the server closes c (after what was sent).
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("connection not closed by the server: %v", err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// TestHostileInput sends malformed traffic on some connections and checks
// that each gets an error reply or a closed connection while a
// well-behaved client on another connection keeps being served.
func TestHostileInput(t *testing.T) {
	addr, _ := newTestServer(t, Options{Squash: SquashNone})
	good := dialWire(t, addr)
	root := good.mountRoot()
	check := func() {
		t.Helper()
		if st, _ := good.getattr(root); st != nfsOK {
			t.Fatalf("well-behaved client: getattr status %d", st)
		}
	}
	marker := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

	closing := []struct {
		name string
		send []byte
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"giant record length", marker(lastFragment | 0x7fffffff)},
		{"giant fragments", append(append(marker(maxRecord), make([]byte, maxRecord)...), marker(lastFragment|64<<10)...)},
		{"reply instead of call", append(marker(lastFragment|8), 0, 0, 0, 1, 0, 0, 0, 1)},
		{"truncated header", append(marker(lastFragment|12), 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2)},
		{"truncated record", append(marker(lastFragment|100), 1, 2, 3)},
	}
	for _, tc := range closing {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.name == "truncated record" {
				// The server waits for the rest; a half-closed client
				// is a truncated record.
				_ = c.(*net.TCPConn).CloseWrite()
			}
			expectClosed(t, c)
			check()
		})
	}

	errorReplies := []struct {
		name       string
		prog, vers uint32
		proc       uint32
		args       []byte
		want       uint32
	}{
		{"unknown program", 123456, 1, 0, nil, acceptProgUnavail},
		{"NFS version 2", progNFS, 2, 1, nil, acceptProgMisatch},
		{"MOUNT version 1", progMount, 1, 1, nil, acceptProgMisatch},
		{"unknown procedure", progNFS, 3, 500, nil, acceptProcUnavail},
		{"truncated arguments", progNFS, 3, 1, nil, acceptGarbageArgs},
		{"oversized handle", progNFS, 3, 1, args(make([]byte, 65)).b, acceptGarbageArgs},
		{"bad stable_how", progNFS, 3, 7, args(root, uint64(0), uint32(1), uint32(9), "x").b, acceptGarbageArgs},
		{"panicking handler", progNFS, 3, panicProc, nil, acceptSystemErr},
	}
	w := dialWire(t, addr)
	for _, tc := range errorReplies {
		t.Run(tc.name, func(t *testing.T) {
			stat, _, err := w.callRaw(tc.prog, tc.vers, tc.proc, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if stat != tc.want {
				t.Errorf("accept_stat %d, want %d", stat, tc.want)
			}
			check()
		})
	}
	t.Run("undecodable credential", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		x := args(uint32(7), uint32(msgCall), uint32(2), uint32(progNFS), uint32(3), uint32(0),
			uint32(authSys), []byte{1, 2, 3}, uint32(authNone), uint32(0))
		if _, err := c.Write(frame(x.b)); err != nil {
			t.Fatal(err)
		}
		rec, err := readRecord(c)
		if err != nil {
			t.Fatal(err)
		}
		r := &xdrReader{b: rec}
		r.u32()
		r.u32()
		if st, rej, why := r.u32(), r.u32(), r.u32(); st != replyDenied || rej != rejectAuthError || why != authBadCred {
			t.Errorf("reply %d/%d/%d, want MSG_DENIED AUTH_ERROR AUTH_BADCRED", st, rej, why)
		}
		check()
	})
}

// TestMaxConns checks that connections beyond MaxConns are closed at once
// while those admitted are served.
func TestMaxConns(t *testing.T) {
	addr, _ := newTestServer(t, Options{MaxConns: 2})
	var ws []*wireClient
	for range 2 {
		w := dialWire(t, addr)
		w.mountRoot()
		ws = append(ws, w)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosed(t, c)
	if st, _ := ws[0].getattr(ws[0].mountRoot()); st != nfsOK {
		t.Errorf("admitted client: %d", st)
	}
}

// TestReadRecordLazy checks that a record announced large but not sent
// costs memory only for what arrived.
func TestReadRecordLazy(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		rd := bytesReader(append(binary.BigEndian.AppendUint32(nil, lastFragment|maxRecord), 1, 2, 3))
		if _, err := readRecord(&rd); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("err %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("10 announced-but-unsent records allocated %d bytes", n)
	}
}

// TestReadRecordBounds checks that a record's length is refused before
// anything is allocated for it.
func TestReadRecordBounds(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		rd := bytesReader(binary.BigEndian.AppendUint32(nil, 0xffffffff))
		if _, err := readRecord(&rd); !errors.Is(err, errRecordTooBig) {
			t.Fatalf("err %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("refusing 10 giant records allocated %d bytes", n)
	}
}

type bytesReader []byte

func (b *bytesReader) Read(p []byte) (int, error) {
	if len(*b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, *b)
	*b = (*b)[n:]
	return n, nil
}

// TestMountExport checks MOUNT EXPORT, which go-nfs does not serve: libnfs
// asks for it before mounting.
func TestMountExport(t *testing.T) {
	addr, _ := newTestServer(t, Options{})
	w := dialWire(t, addr)
	stat, r, err := w.callRaw(progMount, 3, mountProcExport, nil)
	if err != nil || stat != acceptSuccess {
		t.Fatalf("EXPORT: stat %d err %v", stat, err)
	}
	if !r.bool() {
		t.Fatal("no export listed")
	}
	if dir := string(r.opaque(1024)); dir != "/" {
		t.Errorf("export %q", dir)
	}
	if r.bool() || r.bool() || r.err != nil || len(r.b) != 0 {
		t.Errorf("malformed export list (err %v, %d bytes left)", r.err, len(r.b))
	}

	// MNT of the root, of a directory below it, of what is not there.
	if st, err := mountStat(w, "/"); st != nfsOK || err != nil {
		t.Errorf("MNT /: %d %v", st, err)
	}
	if st, err := mountStat(w, "/missing"); st != errNoEnt || err != nil {
		t.Errorf("MNT /missing: %d %v, want NOENT", st, err)
	}
	stat, r, err = w.callRaw(progMount, 3, mountProcDump, nil)
	if err != nil || stat != acceptSuccess || r.bool() {
		t.Errorf("DUMP: stat %d err %v", stat, err)
	}
}

// mountStat calls MOUNT MNT and returns the mountstat3.
func mountStat(w *wireClient, path string) (uint32, error) {
	stat, r, err := w.callRaw(progMount, 3, mountProcMnt, args(path).b)
	if err != nil {
		return 0, err
	}
	if stat != acceptSuccess {
		return 0, fmt.Errorf("accept_stat %d", stat)
	}
	return r.u32(), r.err
}

// TestAllow checks that a client outside --allow is disconnected at once.
func TestAllow(t *testing.T) {
	addr, _ := newTestServer(t, Options{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosed(t, c)
}
