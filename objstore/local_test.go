package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func newTestDir(t *testing.T) (*Dir, string) {
	t.Helper()
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatalf("NewDir: %v", err)
	}
	return d, root
}

// listAll collects List's output so tests can compare it as a whole.
func listAll(t *testing.T, s Store, prefix string) []string {
	t.Helper()
	var got []string
	err := s.List(context.Background(), prefix, func(key string, size int64) error {
		got = append(got, fmt.Sprintf("%s:%d", key, size))
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func TestNewDir(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		root    string
		wantErr bool
	}{
		{"existing directory", root, false},
		{"missing", filepath.Join(root, "missing"), true},
		{"regular file", file, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewDir(tt.root)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewDir(%q) error = %v, wantErr %v", tt.root, err, tt.wantErr)
			}
		})
	}
}

func TestDirPutGetOverwriteDelete(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		key  string
		data []byte
	}{
		{"flat", "format", []byte("v1")},
		{"nested", "blocks/ab/cd/abcdef0123", []byte("block data")},
		{"empty object", "blocks/00/00/empty", []byte{}},
		{"dots and dashes", "a.b/c-d_e", []byte("x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newTestDir(t)
			if err := d.Put(ctx, tt.key, tt.data); err != nil {
				t.Fatalf("Put: %v", err)
			}
			got, err := d.Get(ctx, tt.key)
			if err != nil || !bytes.Equal(got, tt.data) {
				t.Fatalf("Get = %q, %v; want %q", got, err, tt.data)
			}
			// Overwriting with the same bytes is idempotent.
			if err := d.Put(ctx, tt.key, tt.data); err != nil {
				t.Fatalf("second Put: %v", err)
			}
			if got, err := d.Get(ctx, tt.key); err != nil || !bytes.Equal(got, tt.data) {
				t.Fatalf("Get after overwrite = %q, %v; want %q", got, err, tt.data)
			}
			if err := d.Delete(ctx, tt.key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := d.Get(ctx, tt.key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after Delete: err = %v, want ErrNotFound", err)
			}
			// Deleting a missing object is not an error.
			if err := d.Delete(ctx, tt.key); err != nil {
				t.Fatalf("second Delete: %v", err)
			}
		})
	}
}

func TestDirGetNotFound(t *testing.T) {
	ctx := context.Background()
	d, _ := newTestDir(t)
	if err := d.Put(ctx, "blocks/ab/obj", []byte("x")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  string
	}{
		{"missing file", "blocks/ab/other"},
		{"missing directory", "nothing/here"},
		{"directory, not object", "blocks/ab"},
		{"below an object", "blocks/ab/obj/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Get(ctx, tt.key)
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get(%q) err = %v, want ErrNotFound", tt.key, err)
			}
			if err := d.Delete(ctx, tt.key); err != nil {
				t.Fatalf("Delete(%q) = %v, want nil", tt.key, err)
			}
		})
	}
	// Deleting the "directory key" must not have removed the real object.
	if _, err := d.Get(ctx, "blocks/ab/obj"); err != nil {
		t.Fatalf("object lost: %v", err)
	}
}

func TestDirInvalidKeys(t *testing.T) {
	ctx := context.Background()
	d, root := newTestDir(t)
	tests := []struct {
		name string
		key  string
	}{
		{"parent escape", "../x"},
		{"nested parent escape", "a/../../x"},
		{"absolute", "/abs"},
		{"empty element", "a//b"},
		{"trailing slash", "a/"},
		{"upper case", "A"},
		{"empty", ""},
		{"dot element", "a/./b"},
		{"too long", strings.Repeat("a", 600)},
		{"space", "a b"},
		{"temporary file name", "a/.tmp-123"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := d.Put(ctx, tt.key, []byte("x")); err == nil {
				t.Errorf("Put(%q) succeeded", tt.key)
			}
			if _, err := d.Get(ctx, tt.key); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Get(%q) err = %v, want an invalid-key error", tt.key, err)
			}
			if err := d.Delete(ctx, tt.key); err == nil {
				t.Errorf("Delete(%q) succeeded", tt.key)
			}
		})
	}
	// Nothing may have been written anywhere, inside or outside root.
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("root not empty after invalid Puts: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(root), "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file written outside root: %v", err)
	}
}

func TestDirList(t *testing.T) {
	ctx := context.Background()
	d, root := newTestDir(t)
	// "a-b" and "a.c" sort before "a/..." as keys although the directory
	// "a" sorts before them as a file name.
	keys := []string{"a/x", "a-b", "a.c", "a/y/z", "b", "blocks/ab/cd/1", "blocks/ab/ce/2", "blocks/b", "c_d"}
	for i, k := range keys {
		if err := d.Put(ctx, k, bytes.Repeat([]byte("x"), i)); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	// A leftover temporary file (as after a crash) and a stray file whose
	// name is not a valid key are not objects.
	for _, name := range []string{"blocks/ab/.tmp-999", "blocks/UPPER"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sizes := map[string]int{}
	for i, k := range keys {
		sizes[k] = i
	}
	want := func(ks ...string) []string {
		var out []string
		for _, k := range ks {
			out = append(out, fmt.Sprintf("%s:%d", k, sizes[k]))
		}
		return out
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", want(sorted...)},
		{"a", want("a-b", "a.c", "a/x", "a/y/z")},
		{"a/", want("a/x", "a/y/z")},
		{"b", want("b", "blocks/ab/cd/1", "blocks/ab/ce/2", "blocks/b")},
		{"blocks/ab/c", want("blocks/ab/cd/1", "blocks/ab/ce/2")},
		{"blocks/ab/cd/", want("blocks/ab/cd/1")},
		{"blocks/ab/cd/1", want("blocks/ab/cd/1")},
		{"zzz", nil},
		{"../", nil},
	}
	for _, tt := range tests {
		t.Run("prefix="+tt.prefix, func(t *testing.T) {
			got := listAll(t, d, tt.prefix)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("List(%q) = %v, want %v", tt.prefix, got, tt.want)
			}
		})
	}
}

func TestDirListStopsOnCallbackError(t *testing.T) {
	ctx := context.Background()
	d, _ := newTestDir(t)
	for _, k := range []string{"a", "b", "c"} {
		if err := d.Put(ctx, k, nil); err != nil {
			t.Fatal(err)
		}
	}
	stop := errors.New("stop")
	var seen []string
	err := d.List(ctx, "", func(key string, _ int64) error {
		seen = append(seen, key)
		if key == "b" {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Fatalf("List err = %v, want the callback's error unchanged", err)
	}
	if !slices.Equal(seen, []string{"a", "b"}) {
		t.Fatalf("List visited %v after the error, want [a b]", seen)
	}
}

func TestDirCancelledContext(t *testing.T) {
	d, _ := newTestDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		op   func() error
	}{
		{"Put", func() error { return d.Put(ctx, "k", nil) }},
		{"Get", func() error { _, err := d.Get(ctx, "k"); return err }},
		{"Delete", func() error { return d.Delete(ctx, "k") }},
		{"List", func() error { return d.List(ctx, "", func(string, int64) error { return nil }) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.op(); !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
		})
	}
}

func TestDirConcurrentPutSameKey(t *testing.T) {
	ctx := context.Background()
	d, root := newTestDir(t)
	const key = "blocks/ab/cd/abcd"
	data := bytes.Repeat([]byte("block"), 1000)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			if err := d.Put(ctx, key, data); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Put: %v", err)
	}
	got, err := d.Get(ctx, key)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after concurrent Puts: len %d, err %v", len(got), err)
	}
	assertNoTempFiles(t, root)
}

func TestDirNoTempFilesAfterPut(t *testing.T) {
	ctx := context.Background()
	d, root := newTestDir(t)
	for i := range 5 {
		if err := d.Put(ctx, fmt.Sprintf("blocks/%02d/obj", i%2), []byte("data")); err != nil {
			t.Fatal(err)
		}
	}
	assertNoTempFiles(t, root)
	if got := listAll(t, d, ""); len(got) != 2 {
		t.Fatalf("List = %v, want 2 objects", got)
	}
}

func assertNoTempFiles(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDirPutOverDirectoryFails(t *testing.T) {
	ctx := context.Background()
	d, _ := newTestDir(t)
	if err := d.Put(ctx, "a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  string
	}{
		{"key is a directory", "a"},
		{"parent is an object", "a/b/c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := d.Put(ctx, tt.key, []byte("y")); err == nil {
				t.Fatalf("Put(%q) succeeded", tt.key)
			}
		})
	}
	if got, err := d.Get(ctx, "a/b"); err != nil || string(got) != "x" {
		t.Fatalf("existing object changed: %q, %v", got, err)
	}
}

func TestDirString(t *testing.T) {
	d, root := newTestDir(t)
	if got, want := d.String(), "file://"+root; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

// TestPutAfterDirectoriesRemoved: a store whose directories are removed
// under a running process (a lost disk replaced by an empty directory)
// accepts new objects again instead of failing every Put with ENOENT.
func TestPutAfterDirectoriesRemoved(t *testing.T) {
	root := t.TempDir()
	d, err := NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := d.Put(ctx, "blocks/ab/cd/one", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "blocks")); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, "blocks/ab/cd/two", []byte("2")); err != nil {
		t.Fatalf("put after the directories were removed: %v", err)
	}
	if got, err := d.Get(ctx, "blocks/ab/cd/two"); err != nil || string(got) != "2" {
		t.Fatalf("get: %q, %v", got, err)
	}
}

// GetInto reads into the caller's buffer when the object fits, and into a
// fresh slice otherwise, never touching a buffer it does not use.
func TestDirGetInto(t *testing.T) {
	ctx := context.Background()
	d, _ := newTestDir(t)
	obj := bytes.Repeat([]byte("objfs"), 200) // 1000 bytes
	if err := d.Put(ctx, "blocks/ab/obj", obj); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, "blocks/ab/empty", nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     string
		buf     []byte
		want    []byte
		intoBuf bool
		err     error
	}{
		{"larger buffer", "blocks/ab/obj", make([]byte, 4096), obj, true, nil},
		{"exact buffer", "blocks/ab/obj", make([]byte, 1000), obj, true, nil},
		{"spare capacity", "blocks/ab/obj", make([]byte, 0, 1000), obj, true, nil},
		{"buffer too small", "blocks/ab/obj", make([]byte, 999), obj, false, nil},
		{"no buffer", "blocks/ab/obj", nil, obj, false, nil},
		{"empty object", "blocks/ab/empty", make([]byte, 10), []byte{}, false, nil},
		{"missing", "blocks/ab/none", make([]byte, 4096), nil, false, ErrNotFound},
		{"directory, not object", "blocks/ab", make([]byte, 4096), nil, false, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := bytes.Clone(tt.buf)
			got, err := d.GetInto(ctx, tt.key, tt.buf)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("GetInto(%q) err = %v, want %v", tt.key, err, tt.err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) || got == nil {
				t.Fatalf("GetInto(%q) = %d bytes, %v; want %d bytes", tt.key, len(got), err, len(tt.want))
			}
			inBuf := len(got) > 0 && cap(tt.buf) > 0 && &got[0] == &tt.buf[:1][0]
			if inBuf != tt.intoBuf {
				t.Fatalf("read into the caller's buffer: %v, want %v", inBuf, tt.intoBuf)
			}
			if !tt.intoBuf && !bytes.Equal(tt.buf, before) {
				t.Fatal("a buffer too small was written to")
			}
		})
	}
}

// The GetInto helper uses a store's GetInto, and Get for a store without.
func TestGetIntoHelper(t *testing.T) {
	ctx := context.Background()
	d, _ := newTestDir(t)
	if err := d.Put(ctx, "k", []byte("data")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	for _, tc := range []struct {
		name    string
		s       Store
		intoBuf bool
	}{
		{"IntoGetter", d, true},
		{"Get only", struct{ Store }{d}, false},
	} {
		got, err := GetInto(ctx, tc.s, "k", buf)
		if err != nil || string(got) != "data" {
			t.Fatalf("%s: %q, %v", tc.name, got, err)
		}
		if inBuf := &got[0] == &buf[0]; inBuf != tc.intoBuf {
			t.Errorf("%s: read into the buffer: %v, want %v", tc.name, inBuf, tc.intoBuf)
		}
	}
}
