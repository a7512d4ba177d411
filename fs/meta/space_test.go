package meta

import (
	"syscall"
	"testing"
)

// TestSpaceCheckLetsFreeingThrough: with the space check refusing growth
// (a nearly full disk), changes that add to the metadata fail with its
// error, and deletions, renames, attribute changes, reaping and folding
// the statistics still go through, so that the space can be freed (and
// the volume closed).
func TestSpaceCheckLetsFreeingThrough(t *testing.T) {
	v := newVolume(t, nil)
	dir := v.mkdir(RootIno, "d")
	f := v.mkfile(dir.Ino, "f")
	g := v.mkfile(dir.Ino, "g")
	if err := v.m.SetXattr(v.ctx, &Root, f.Ino, "user.x", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	full := true
	var asked, freeing int
	v.kv.SetSpaceCheck(func(fr bool) error {
		asked++
		if fr {
			freeing++
			return nil
		}
		if full {
			return syscall.ENOSPC
		}
		return nil
	})
	grows := []struct {
		name string
		do   func() error
	}{
		{"create", func() error {
			_, err := v.m.Mknod(v.ctx, &Root, dir.Ino, "new", NewNode{Mode: syscall.S_IFREG | 0o644})
			return err
		}},
		{"mkdir", func() error {
			_, err := v.m.Mknod(v.ctx, &Root, dir.Ino, "sub", NewNode{Mode: syscall.S_IFDIR | 0o755})
			return err
		}},
		{"link", func() error { _, err := v.m.Link(v.ctx, &Root, f.Ino, dir.Ino, "hard"); return err }},
		{"setxattr", func() error { return v.m.SetXattr(v.ctx, &Root, f.Ino, "user.y", []byte("v"), 0) }},
		{"write", func() error { _, err := v.m.Write(v.ctx, f.Ino, WriteIn{End: 3, Inline: []byte("abc")}); return err }},
	}
	for _, op := range grows {
		if err := op.do(); err != syscall.ENOSPC {
			t.Errorf("%s on a full disk: %v, want ENOSPC", op.name, err)
		}
	}
	frees := []struct {
		name string
		do   func() error
	}{
		{"chmod", func() error {
			_, err := v.m.SetAttr(v.ctx, &Root, f.Ino, SetAttrIn{Valid: SetMode, Mode: 0o600})
			return err
		}},
		{"truncate", func() error {
			_, err := v.m.SetAttr(v.ctx, &Root, f.Ino, SetAttrIn{Valid: SetSize, Size: 0})
			return err
		}},
		{"removexattr", func() error { return v.m.RemoveXattr(v.ctx, &Root, f.Ino, "user.x") }},
		{"rename", func() error { _, err := v.m.Rename(v.ctx, &Root, dir.Ino, "f", RootIno, "f2", 0); return err }},
		{"unlink", func() error { _, err := v.m.Unlink(v.ctx, &Root, dir.Ino, "g"); return err }},
		{"reap", func() error { return v.m.Reap(v.ctx, g.Ino) }},
		{"fold statistics", func() error { return v.m.FoldStats(v.ctx) }},
		{"rmdir", func() error {
			if _, err := v.m.Unlink(v.ctx, &Root, RootIno, "f2"); err != nil {
				return err
			}
			_, err := v.m.Rmdir(v.ctx, &Root, RootIno, "d")
			return err
		}},
	}
	for _, op := range frees {
		if err := op.do(); err != nil {
			t.Errorf("%s on a full disk: %v", op.name, err)
		}
	}
	if asked == 0 || freeing == 0 {
		t.Fatalf("space check asked %d times, %d of them freeing", asked, freeing)
	}
	full = false
	if _, err := v.m.Mknod(v.ctx, &Root, RootIno, "new", NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
		t.Errorf("create once there is room: %v", err)
	}
}
