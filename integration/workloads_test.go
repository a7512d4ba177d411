package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWorkloads runs what a workstation user runs on a mount, with the
// tools themselves judging the result: git (clone, fsck, commit, gc, which
// rewrites packs and renames them into place), tar (a source tree in,
// compared byte for byte, mode and mtime to the nanosecond), SQLite in
// WAL mode with three writers at once (the -shm file is shared memory
// through mmap) and in rollback-journal mode, and a C program compiled on the mount and run
// from it. Then the volume is unmounted, remounted and checked again, and
// fsck --verify finds it clean.
func TestWorkloads(t *testing.T) {
	requirePrereqs(t)
	git := requireTool(t, "git", "git")
	tar := requireTool(t, "tar", "tar")
	sqlite := requireTool(t, "sqlite3", "sqlite3")
	cc := requireTool(t, "gcc", "gcc")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	v := newVolume(t)
	v.mount(t)
	p := func(name string) string { return filepath.Join(v.mnt, name) }
	run := func(dir, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+v.base,
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
		}
		return string(out)
	}

	// git: a clone of this repository (without its working tree's
	// uncommitted state), checked, changed, committed and repacked.
	start := time.Now()
	run(v.base, git, "clone", "-q", "--no-local", root, p("repo"))
	run(p("repo"), git, "fsck", "--full", "--strict")
	if err := os.WriteFile(p("repo/NEWFILE"), []byte("made on objfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(p("repo"), git, "add", "NEWFILE")
	run(p("repo"), git, "commit", "-q", "-m", "a commit made on objfs")
	run(p("repo"), git, "gc", "-q", "--aggressive", "--prune=now")
	run(p("repo"), git, "fsck", "--full", "--strict")
	head := strings.TrimSpace(run(p("repo"), git, "rev-parse", "HEAD"))
	t.Logf("git: clone, fsck, commit, gc --aggressive, fsck in %v", time.Since(start).Round(time.Millisecond))

	// tar: this repository's Go sources and docs through a pipe, then
	// compared with the originals.
	start = time.Now()
	src := filepath.Join(v.base, "src")
	run(v.base, git, "clone", "-q", "--no-local", root, src)
	if err := os.Mkdir(p("tree"), 0o755); err != nil {
		t.Fatal(err)
	}
	pack := exec.Command(tar, "-C", src, "--exclude=.git", "--format=posix", "-cf", "-", ".") // posix: mtimes to the nanosecond
	unpack := exec.Command(tar, "-C", p("tree"), "-xpf", "-")
	pipe, err := pack.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	unpack.Stdin = pipe
	var unpackOut bytes.Buffer
	unpack.Stdout, unpack.Stderr = &unpackOut, &unpackOut
	if err := unpack.Start(); err != nil {
		t.Fatal(err)
	}
	var packErr bytes.Buffer
	pack.Stderr = &packErr
	if err := pack.Run(); err != nil {
		t.Fatalf("tar -c: %v\n%s", err, packErr.String())
	}
	if err := unpack.Wait(); err != nil {
		t.Fatalf("tar -x on the mount: %v\n%s", err, unpackOut.String())
	}
	n := sameTree(t, src, p("tree"), ".git")
	t.Logf("tar: %d files in and compared in %v", n, time.Since(start).Round(time.Millisecond))

	// SQLite: WAL mode with three writers at once, then rollback journal.
	start = time.Now()
	db := p("wal.db")
	run(v.mnt, sqlite, db, "pragma journal_mode=wal; create table t(id integer primary key, who text, n int);")
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, who := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sql strings.Builder
			sql.WriteString(".timeout 60000\npragma synchronous=full;\n")
			for i := range 300 {
				fmt.Fprintf(&sql, "insert into t(who, n) values ('%s', %d);\n", who, i)
			}
			cmd := exec.Command(sqlite, db)
			cmd.Stdin = strings.NewReader(sql.String())
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("writer %s: %v\n%s", who, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	check := func(db, want string) {
		t.Helper()
		out := run(v.mnt, sqlite, db, "pragma integrity_check; select who, count(*), count(distinct n) from t group by who order by who;")
		if strings.TrimSpace(out) != want {
			t.Fatalf("%s: %q, want %q", db, out, want)
		}
	}
	walWant := "ok\na|300|300\nb|300|300\nc|300|300"
	check(db, walWant)
	journal := p("journal.db")
	var sql strings.Builder
	sql.WriteString("pragma journal_mode=delete; create table t(id integer primary key, who text, n int);\n")
	for i := range 2000 {
		if i%100 == 0 {
			sql.WriteString("begin;\n")
		}
		fmt.Fprintf(&sql, "insert into t(who, n) values ('j', %d);\n", i)
		if i%100 == 99 {
			sql.WriteString("commit;\n")
		}
	}
	sql.WriteString("delete from t where n % 2 = 1; vacuum;\n")
	cmd := exec.Command(sqlite, journal)
	cmd.Stdin = strings.NewReader(sql.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sqlite3 (rollback journal): %v\n%s", err, out)
	}
	journalWant := "ok\nj|1000|1000"
	check(journal, journalWant)
	t.Logf("sqlite: 900 inserts by three WAL writers at once, 2,000 in 20 transactions in rollback-journal mode, in %v", time.Since(start).Round(time.Millisecond))

	// A C program compiled on the mount and executed from it.
	if err := os.WriteFile(p("hello.c"), []byte("#include <stdio.h>\nint main(void) { puts(\"hello from objfs\"); return 0; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(v.mnt, cc, "-O2", "-o", p("hello"), p("hello.c"))
	if out := run(v.mnt, p("hello")); out != "hello from objfs\n" {
		t.Fatalf("the program built on the mount printed %q", out)
	}

	// Everything again after a remount, then fsck.
	v.unmount(t)
	v.mount(t)
	run(p("repo"), git, "fsck", "--full", "--strict")
	if got := strings.TrimSpace(run(p("repo"), git, "rev-parse", "HEAD")); got != head {
		t.Fatalf("after a remount HEAD is %s, was %s", got, head)
	}
	sameTree(t, src, p("tree"), ".git")
	check(db, walWant)
	check(journal, journalWant)
	if out := run(v.mnt, p("hello")); out != "hello from objfs\n" {
		t.Fatalf("after a remount the program printed %q", out)
	}
	v.unmount(t)
	if out, err := runObjfs(5*time.Minute, "fsck", "--verify", v.dir); err != nil || !strings.Contains(out, "; 0 errors") {
		t.Fatalf("fsck --verify: %v\n%s", err, out)
	}
}

// sameTree compares the trees at want and got, skipping the top-level
// entry named skip: the same names and types, contents, symlink targets,
// permission bits and modification times of files. It returns the number
// of regular files compared.
func sameTree(t *testing.T, want, got, skip string) int {
	t.Helper()
	files := 0
	err := filepath.Walk(want, func(path string, wi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, path)
		if rel == skip {
			return filepath.SkipDir
		}
		gi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if gi.Mode() != wi.Mode() {
			return fmt.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode().IsRegular():
			files++
			if !gi.ModTime().Equal(wi.ModTime()) {
				return fmt.Errorf("%s: mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
			}
			a, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(filepath.Join(got, rel))
			if err != nil || !bytes.Equal(a, b) {
				return fmt.Errorf("%s: contents differ (%v)", rel, err)
			}
		case wi.Mode()&os.ModeSymlink != 0:
			a, _ := os.Readlink(path)
			if b, err := os.Readlink(filepath.Join(got, rel)); err != nil || a != b {
				return fmt.Errorf("%s: link to %q, want %q (%v)", rel, b, a, err)
			}
		case wi.IsDir():
			a, _ := os.ReadDir(path)
			b, err := os.ReadDir(filepath.Join(got, rel))
			if err != nil {
				return err
			}
			if rel == "." {
				a = slicesDeleteNamed(a, skip)
			}
			if len(a) != len(b) {
				return fmt.Errorf("%s: %d entries, want %d", rel, len(b), len(a))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("compare %s with %s: %v", got, want, err)
	}
	return files
}

// slicesDeleteNamed returns entries without the one called name.
func slicesDeleteNamed(entries []os.DirEntry, name string) []os.DirEntry {
	out := entries[:0:0]
	for _, e := range entries {
		if e.Name() != name {
			out = append(out, e)
		}
	}
	return out
}
