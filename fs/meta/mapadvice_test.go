package meta

import (
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
