package nfs

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/objfs/objfs/fs/meta"
)

// needLibnfs makes sure Debian's libnfs-utils is installed, installing it
// if missing (as .ci/setup does).
func needLibnfs(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nfs-cp"); err == nil {
		return
	}
	if os.Geteuid() != 0 {
		t.Fatalf("nfs-cp missing and not root: run .ci/setup (apt-get install -y libnfs-utils)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-qq", "libnfs-utils")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install libnfs-utils: %v\n%s", err, out)
	}
}

// runTool runs a libnfs tool with a deadline, killing it on failure.
func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// TestLibnfs copies files up and down with libnfs's nfs-cp, lists them with
// nfs-ls and reads them with nfs-cat, byte for byte. By default libnfs asks
// MOUNT EXPORT after mounting (go-nfs alone answers PROC_UNAVAIL and every
// tool fails) and mounts the directory of the file a URL names (go-nfs fails
// on the empty path of a root-level file with auto-traverse-mounts=0).
func TestLibnfs(t *testing.T) {
	needLibnfs(t)
	addr, f := newTestServer(t, Options{Squash: SquashNone})
	if _, err := f.Mkdir(context.Background(), &meta.Root, meta.RootIno, "sub", 0o777); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(addr)
	url := func(path string, traverse bool) string {
		u := fmt.Sprintf("nfs://127.0.0.1%s?nfsport=%s&mountport=%s&version=3", path, port, port)
		if !traverse {
			u += "&auto-traverse-mounts=0"
		}
		return u
	}
	local := t.TempDir()
	data := make([]byte, 3<<20+12345) // several WRITEs and READs
	_, _ = rand.Read(data)
	src := filepath.Join(local, "up")
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// libnfs refuses to look for nested exports under an empty export
	// path, so a file at the root needs auto-traverse-mounts=0.
	files := []struct {
		path     string
		traverse bool
	}{{"/sub/up.bin", true}, {"/root.bin", false}}
	for i, fl := range files {
		if out, err := runTool(t, "nfs-cp", src, url(fl.path, fl.traverse)); err != nil {
			t.Fatalf("nfs-cp up %s: %v\n%s", fl.path, err, out)
		}
		dst := filepath.Join(local, fmt.Sprint("down", i))
		if out, err := runTool(t, "nfs-cp", url(fl.path, fl.traverse), dst); err != nil {
			t.Fatalf("nfs-cp down %s: %v\n%s", fl.path, err, out)
		}
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: downloaded %d bytes differ from the %d uploaded", fl.path, len(got), len(data))
		}
		out, err := runTool(t, "nfs-cat", url(fl.path, fl.traverse))
		if err != nil {
			t.Fatalf("nfs-cat %s: %v", fl.path, err)
		}
		if out != string(data) {
			t.Errorf("nfs-cat %s returned %d bytes that differ", fl.path, len(out))
		}
	}
	for _, ls := range []struct {
		path     string
		traverse bool
		want     string
	}{{"/", true, "root.bin"}, {"/", false, "sub"}, {"/sub", true, "up.bin"}} {
		out, err := runTool(t, "nfs-ls", url(ls.path, ls.traverse))
		if err != nil {
			t.Fatalf("nfs-ls %s (auto-traverse-mounts=%v): %v\n%s", ls.path, ls.traverse, err, out)
		}
		if !strings.Contains(out, ls.want) {
			t.Errorf("nfs-ls %s (auto-traverse-mounts=%v) lacks %s:\n%s", ls.path, ls.traverse, ls.want, out)
		}
		if ls.want != "sub" && !strings.Contains(out, fmt.Sprint(len(data))) {
			t.Errorf("nfs-ls %s lacks the size %d:\n%s", ls.path, len(data), out)
		}
	}
}
