package meta

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

// allRecords returns every key and value of kv.
func allRecords(t *testing.T, kv KV) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := kv.View(context.Background(), func(txn Txn) error {
		return txn.Scan(nil, nil, func(k, v []byte) (bool, error) {
			out[string(k)] = string(v)
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDumpLoadRoundTrip(t *testing.T) {
	fx := newFixture(t)
	v := fx.v
	var buf bytes.Buffer
	info, err := Dump(v.ctx, v.kv, &buf, nil)
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	want := allRecords(t, v.kv)
	if info.Records != int64(len(want)) || info.Header.UUID != v.m.Format().UUID {
		t.Errorf("dump info %+v, volume has %d records", info, len(want))
	}

	kv2, err := OpenBadger(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer kv2.Close()
	if empty, err := IsEmpty(v.ctx, kv2); err != nil || !empty {
		t.Fatalf("new database empty: %v %v", empty, err)
	}
	if _, err := Load(v.ctx, bytes.NewReader(buf.Bytes()), kv2, nil); err != nil {
		t.Fatalf("load: %v", err)
	}
	got := allRecords(t, kv2)
	if len(got) != len(want) {
		t.Errorf("loaded %d records, want %d", len(got), len(want))
	}
	for k, val := range want {
		if got[k] != val {
			t.Errorf("key %x: loaded %x, want %x", k, got[k], val)
		}
	}
	// The loaded volume opens and reads the same.
	m2, err := Open(v.ctx, kv2)
	if err != nil {
		t.Fatalf("open loaded volume: %v", err)
	}
	v2 := &testVolume{t: t, ctx: v.ctx, kv: kv2, m: m2}
	if p := v2.path(fx.g.Ino); p != "/d/g" {
		t.Errorf("path of g: %q", p)
	}
	if x, err := m2.GetXattr(v.ctx, &Root, fx.f.Ino, "user.k"); err != nil || string(x) != "v" {
		t.Errorf("xattr: %q %v", x, err)
	}
	a1, a2 := v.attr(fx.f.Ino), v2.attr(fx.f.Ino)
	if *a1 != *a2 {
		t.Errorf("attributes differ: %+v vs %+v", a1, a2)
	}
	if r := v2.runCheck(false); len(r.Problems) != 0 {
		t.Errorf("loaded volume check:\n%s", problems(r))
	}
}

func TestLoadRefusesDamagedDumps(t *testing.T) {
	fx := newFixture(t)
	var buf bytes.Buffer
	if _, err := Dump(fx.v.ctx, fx.v.kv, &buf, nil); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	// An uncompressed body with one byte changed, re-compressed, shows that
	// the checksum (not only gzip's CRC) catches damage.
	tests := []struct {
		name string
		dump []byte
	}{
		{"empty", nil},
		{"not gzip", []byte("hello world, not a dump")},
		{"truncated to half", good[:len(good)/2]},
		{"truncated by one byte", good[:len(good)-1]},
		{"flipped byte", flip(good, len(good)/2)},
		{"flipped byte under valid gzip", regzip(t, good, func(raw []byte) []byte { return flip(raw, len(raw)-40) })},
		{"record dropped under valid gzip", regzip(t, good, func(raw []byte) []byte { return append(raw[:30:30], raw[60:]...) })},
		{"length overflowing 64 bits under valid gzip", regzip(t, good, func(raw []byte) []byte {
			// Right after the header, where the first record's key length is.
			p := len(dumpMagic)
			n, k := binary.Uvarint(raw[p:])
			p += k + int(n)
			return append(append(raw[:p:p], bytes.Repeat([]byte{0xff}, 10)...), raw[p:]...)
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kv2, err := OpenBadger(t.TempDir(), false)
			if err != nil {
				t.Fatal(err)
			}
			defer kv2.Close()
			if _, err := Load(context.Background(), bytes.NewReader(tc.dump), nil, nil); !errors.Is(err, ErrBadDump) {
				t.Errorf("verify: got %v, want an invalid dump error", err)
			}
			if _, err := Load(context.Background(), bytes.NewReader(tc.dump), kv2, nil); !errors.Is(err, ErrBadDump) {
				t.Errorf("load: got %v, want an invalid dump error", err)
			}
			// Whatever was written, no format record: it does not open.
			if _, err := Open(context.Background(), kv2); err == nil {
				t.Errorf("a volume loaded from a damaged dump opens")
			}
		})
	}
}

// regzip decompresses a dump, changes it and compresses it again, so that
// only the dump's own checksum and count can notice.
func regzip(t *testing.T, dump []byte, change func([]byte) []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(dump))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(change(raw)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x40
	return c
}
