package main

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/objfs/objfs/fs"
	"github.com/objfs/objfs/nfs"
)

func TestNFSFlags(t *testing.T) {
	tests := []struct {
		name    string
		flags   nfsFlags
		wantErr string
		allow   []netip.Prefix
		squash  nfs.Squash
	}{
		{"defaults", nfsFlags{squash: "root"}, "", nil, nfs.SquashRoot},
		{"cidr and host", nfsFlags{squash: "all", allow: []string{"10.1.2.3/8", "192.168.1.7"}}, "",
			[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}, nfs.SquashAll},
		{"bad squash", nfsFlags{squash: "some"}, "squash", nil, 0},
		{"bad cidr", nfsFlags{squash: "none", allow: []string{"10.0.0.0/99"}}, "--allow", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.flags.options(nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Squash != tc.squash || len(o.Allow) != len(tc.allow) {
				t.Fatalf("options %+v", o)
			}
			for i := range o.Allow {
				if o.Allow[i] != tc.allow[i] {
					t.Errorf("allow[%d] = %v, want %v", i, o.Allow[i], tc.allow[i])
				}
			}
		})
	}
}

// TestStartNFS serves a formatted volume with startNFS, as `objfs mount
// --nfs` does, and uses it from an NFS client.
func TestStartNFS(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "vol")
	if err := format(ctx, dir, "", 1<<20); err != nil {
		t.Fatal(err)
	}
	v, err := openVolume(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	f, err := fs.New(ctx, v.meta, v.store, fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(ctx)
	o := nfsFlags{listen: "127.0.0.1:0", squash: "none"}
	stop, addr, err := startNFS(ctx, f, o)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	c, err := rpc.DialTCP("tcp", addr, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	target, err := (&nfsc.Mount{Client: c}).Mount("/", rpc.NewAuthUnix("t", 0, 0).Auth())
	if err != nil {
		t.Fatal(err)
	}
	w, err := target.OpenFile("hello", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("hi there")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := target.Open("hello")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, []byte("hi there")) {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func TestNFSHelp(t *testing.T) {
	cmd := nfsCmd()
	for _, want := range []string{"AUTH_SYS", "--allow", "--squash", "2049", "mount -t nfs"} {
		if !strings.Contains(cmd.Long+cmd.Example+cmd.Flags().FlagUsages(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}
