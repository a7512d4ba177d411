package meta

import (
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
)

// TestReadDirCookiesUnderChange lists a directory of 1,000 entries in pages
// of 37, resuming from the last cookie, while entries are deleted and
// created between pages: every entry present for the whole listing must
// appear exactly once, and no name may appear twice.
func TestReadDirCookiesUnderChange(t *testing.T) {
	v := newVolume(t, nil)
	d := v.mkdir(RootIno, "d")
	present := map[string]bool{}
	for i := range 1000 {
		name := fmt.Sprintf("e%04d", i)
		v.mkfile(d.Ino, name)
		present[name] = true
	}
	stable := map[string]bool{} // present for the whole listing
	for n := range present {
		stable[n] = true
	}
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[string]int{}
	var cookie uint64
	created := 0
	pages := 0
	for {
		var page []Dirent
		err := v.m.ReadDir(v.ctx, d.Ino, cookie, func(e Dirent) bool {
			page = append(page, e)
			return len(page) < 37
		})
		if err != nil {
			t.Fatalf("readdir page %d: %v", pages, err)
		}
		pages++
		if len(page) == 0 {
			break
		}
		for i, e := range page {
			seen[e.Name]++
			if i > 0 && e.Cookie <= page[i-1].Cookie {
				t.Errorf("cookies not increasing: %d after %d", e.Cookie, page[i-1].Cookie)
			}
			if e.Cookie <= cookie {
				t.Errorf("entry %q has cookie %d, not after the resume cookie %d", e.Name, e.Cookie, cookie)
			}
		}
		cookie = page[len(page)-1].Cookie
		// Between pages: delete a few (some already listed, some not) and
		// create new ones.
		for range 5 {
			var victim string
			for n := range present {
				victim = n
				break
			}
			if victim == "" {
				break
			}
			if _, err := v.m.Unlink(v.ctx, &Root, d.Ino, victim); err != nil {
				t.Fatalf("unlink %s: %v", victim, err)
			}
			delete(present, victim)
			delete(stable, victim)
		}
		for range r.IntN(8) {
			name := fmt.Sprintf("new%04d", created)
			created++
			v.mkfile(d.Ino, name)
			present[name] = true
		}
		if pages > 1000 {
			t.Fatalf("listing does not end")
		}
	}
	for n := range stable {
		if seen[n] != 1 {
			t.Errorf("entry %q present throughout was listed %d times", n, seen[n])
		}
	}
	for n, c := range seen {
		if c > 1 {
			t.Errorf("entry %q listed %d times", n, c)
		}
	}
	if len(stable) < 500 {
		t.Fatalf("test deleted too much: only %d stable entries", len(stable))
	}
	// A fresh listing shows exactly the present entries.
	got := v.names(d.Ino)
	if len(got) != len(present) {
		t.Errorf("fresh listing has %d entries, want %d", len(got), len(present))
	}
	for _, n := range got {
		if !present[n] {
			t.Errorf("fresh listing shows %q, which does not exist", n)
		}
	}
}

func TestReadDirEntries(t *testing.T) {
	v := newVolume(t, nil)
	d := v.mkdir(RootIno, "d")
	f := v.mkfile(d.Ino, "f")
	sub := v.mkdir(d.Ino, "sub")
	l := v.mknod(Root, d.Ino, "l", syscall.S_IFLNK|0o777)
	var got []Dirent
	if err := v.m.ReadDir(v.ctx, d.Ino, 0, func(e Dirent) bool { got = append(got, e); return true }); err != nil {
		t.Fatal(err)
	}
	want := []Dirent{{Name: "f", Ino: f.Ino, Type: syscall.S_IFREG}, {Name: "sub", Ino: sub.Ino, Type: syscall.S_IFDIR}, {Name: "l", Ino: l.Ino, Type: syscall.S_IFLNK}}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].Name != want[i].Name || got[i].Ino != want[i].Ino || got[i].Type != want[i].Type {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
		if got[i].Cookie < 3 {
			t.Errorf("entry %d has cookie %d, which collides with . or ..", i, got[i].Cookie)
		}
	}
	// Resuming after the last cookie gives nothing; after the first gives the rest.
	n := 0
	_ = v.m.ReadDir(v.ctx, d.Ino, got[2].Cookie, func(Dirent) bool { n++; return true })
	if n != 0 {
		t.Errorf("after the last cookie: %d entries, want 0", n)
	}
	var rest []string
	_ = v.m.ReadDir(v.ctx, d.Ino, got[0].Cookie, func(e Dirent) bool { rest = append(rest, e.Name); return true })
	if fmt.Sprint(rest) != "[sub l]" {
		t.Errorf("after the first cookie: %v, want [sub l]", rest)
	}
	// Cookies 1 and 2 (. and ..) resume at the start.
	var all []string
	_ = v.m.ReadDir(v.ctx, d.Ino, 2, func(e Dirent) bool { all = append(all, e.Name); return true })
	if fmt.Sprint(all) != "[f sub l]" {
		t.Errorf("after cookie 2: %v", all)
	}
	wantErrno(t, "readdir of a file", v.m.ReadDir(v.ctx, f.Ino, 0, func(Dirent) bool { return true }), syscall.ENOTDIR)
	wantErrno(t, "readdir of a missing inode", v.m.ReadDir(v.ctx, 424242, 0, func(Dirent) bool { return true }), syscall.ENOENT)
}
