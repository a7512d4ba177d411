package meta

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLogMappings(t *testing.T) {
	const dir = "/v/meta"
	maps := strings.Join([]string{
		"7f0000000000-7f0010000000 rw-s 00000000 fd:01 11 /v/meta/000001.vlog",
		"7f0010000000-7f0014000000 rw-s 00000000 fd:01 12                  /v/meta/00003.mem",
		"7f0020000000-7f0021000000 r--s 00000000 fd:01 13 /v/meta/000004.sst",      // a table: read, not logged
		"7f0030000000-7f0031000000 rw-p 00000000 fd:01 14 /v/meta/000002.vlog",     // private: not Badger's
		"7f0040000000-7f0041000000 rw-s 00000000 fd:01 15 /v/meta/sub/000005.vlog", // another directory
		"7f0050000000-7f0051000000 rw-s 00000000 fd:01 16 /v/meta2/000006.vlog",
		"7f0060000000-7f0061000000 rw-s 00000000 fd:01 17 /v/meta/000007.vlog (deleted)",
		"7f0070000000-7f0071000000 rw-p 00000000 00:00 0 ",
		"7f0080000000-7f0081000000 rw-p 00000000 00:00 0 [heap]",
		"garbage",
		"zz-7f0091000000 rw-s 00000000 fd:01 18 /v/meta/000008.vlog",
		"7f00a0000000-7f00a0000000 rw-s 00000000 fd:01 19 /v/meta/000009.vlog", // empty
		"7f00b0000000-7f00b1000000 rw-s 00000000 fd:01 20 /v/meta/with space.mem",
	}, "\n")
	got := logMappings(strings.NewReader(maps), dir)
	want := []mapping{
		{0x7f0000000000, 0x7f0010000000, "/v/meta/000001.vlog"},
		{0x7f0010000000, 0x7f0014000000, "/v/meta/00003.mem"},
		{0x7f00b0000000, 0x7f00b1000000, "/v/meta/with space.mem"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mappings %v, want %v", len(got), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mapping %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestLogFilesGrew: the adviser reads the memory map only after Badger
// made a log file, which it finds by the next number of each kind.
func TestLogFilesGrew(t *testing.T) {
	dir := t.TempDir()
	touch := func(names ...string) {
		t.Helper()
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	touch("00003.mem", "00002.mem", "000002.vlog", "000010.sst", "MANIFEST", "x.mem", "000009.vlog.tmp")
	l := newLogFiles(dir)
	if l.mem != 3 || l.vlog != 2 {
		t.Fatalf("newLogFiles found mem %d, vlog %d; want 3, 2", l.mem, l.vlog)
	}
	steps := []struct {
		name   string
		create []string
		remove []string
		want   bool
	}{
		{"nothing new", nil, nil, false},
		{"a table", []string{"000011.sst"}, nil, false},
		{"a memtable", []string{"00004.mem"}, nil, true},
		{"seen already", nil, nil, false},
		{"old ones flushed", nil, []string{"00002.mem", "00003.mem"}, false},
		{"two value logs at once", []string{"000003.vlog", "000004.vlog"}, nil, true},
		{"past the widths", []string{"00005.mem", "00006.mem"}, nil, true},
	}
	for _, s := range steps {
		touch(s.create...)
		for _, n := range s.remove {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				t.Fatal(err)
			}
		}
		if got := l.grew(); got != s.want {
			t.Errorf("%s: grew() = %v, want %v", s.name, got, s.want)
		}
	}
	if l.mem != 6 || l.vlog != 4 {
		t.Errorf("after all steps: mem %d, vlog %d; want 6, 4", l.mem, l.vlog)
	}
	// Numbers wider than Badger's padding still follow.
	l.mem = 99999
	touch("100000.mem")
	if !l.grew() || l.mem != 100000 {
		t.Errorf("memtable 100000 not found (mem %d)", l.mem)
	}
}
