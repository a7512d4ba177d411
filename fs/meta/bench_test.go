package meta

import (
	"context"
	"fmt"
	"syscall"
	"testing"
)

// Benchmarks of single metadata operations on Badger, to see what one
// transaction costs apart from FUSE and the kernel.
func benchVolume(b *testing.B) *Meta {
	b.Helper()
	ctx := context.Background()
	kv, err := OpenBadger(b.TempDir(), false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = kv.Close() })
	if err := Create(ctx, kv, NewFormat([]string{"local"}, 4<<20)); err != nil {
		b.Fatal(err)
	}
	m, err := Open(ctx, kv)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func BenchmarkMknod(b *testing.B) {
	m := benchVolume(b)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if _, err := m.Mknod(ctx, &Root, RootIno, fmt.Sprintf("f%d", i), NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGetAttr(b *testing.B) {
	m := benchVolume(b)
	ctx := context.Background()
	a, err := m.Mknod(ctx, &Root, RootIno, "f", NewNode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := m.GetAttr(ctx, a.Ino); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenameAcrossDirs(b *testing.B) {
	m := benchVolume(b)
	ctx := context.Background()
	d1, _ := m.Mknod(ctx, &Root, RootIno, "d1", NewNode{Mode: syscall.S_IFDIR | 0o755})
	d2, _ := m.Mknod(ctx, &Root, RootIno, "d2", NewNode{Mode: syscall.S_IFDIR | 0o755})
	if _, err := m.Mknod(ctx, &Root, d1.Ino, "f", NewNode{Mode: syscall.S_IFREG | 0o644}); err != nil {
		b.Fatal(err)
	}
	from, to := d1.Ino, d2.Ino
	for b.Loop() {
		if _, err := m.Rename(ctx, &Root, from, "f", to, "f", 0); err != nil {
			b.Fatal(err)
		}
		from, to = to, from
	}
}

// BenchmarkUnlinkSmallFile deletes closed 4 KiB files (inline data), the
// delete row of objfs bench: the unlink frees the inode in its own
// transaction.
func BenchmarkUnlinkSmallFile(b *testing.B) {
	m := benchVolume(b)
	ctx := context.Background()
	data := make([]byte, 4096)
	closed := func(uint64) bool { return true }
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		name := fmt.Sprintf("f%d", i)
		a, err := m.Mknod(ctx, &Root, RootIno, name, NewNode{Mode: syscall.S_IFREG | 0o644})
		if err == nil {
			_, err = m.Write(ctx, a.Ino, WriteIn{End: uint64(len(data)), Inline: data})
		}
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, freed, err := m.UnlinkFreeing(ctx, &Root, RootIno, name, closed); err != nil || !freed {
			b.Fatal(freed, err)
		}
	}
}

// BenchmarkCreateSmallFile creates a file and commits 4 KiB of data to it,
// as a create, write and close do (less what the FUSE front end adds).
func BenchmarkCreateSmallFile(b *testing.B) {
	m := benchVolume(b)
	ctx := context.Background()
	data := make([]byte, 4096)
	for i := 0; b.Loop(); i++ {
		a, err := m.Mknod(ctx, &Root, RootIno, fmt.Sprintf("f%d", i), NewNode{Mode: syscall.S_IFREG | 0o644})
		if err == nil {
			_, err = m.Write(ctx, a.Ino, WriteIn{End: uint64(len(data)), Inline: data, Mtime: 1})
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
