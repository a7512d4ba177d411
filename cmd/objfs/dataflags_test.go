package main

import (
	"strings"
	"testing"
)

// Bad data path flags are refused with a message naming the flag, before
// anything is opened.
func TestDataFlags(t *testing.T) {
	ok := dataFlags{cacheMem: 128 << 20, cacheSize: 1 << 30, stagingSize: 1 << 30}
	for _, tc := range []struct {
		name    string
		change  func(*dataFlags)
		wantErr string // empty: accepted
	}{
		{"defaults", func(*dataFlags) {}, ""},
		{"no memory cache", func(d *dataFlags) { d.cacheMem = 0 }, ""},
		{"no disk cache", func(d *dataFlags) { d.cacheSize = 0 }, ""},
		{"negative memory cache", func(d *dataFlags) { d.cacheMem = -1 }, "--cache-mem"},
		{"negative disk cache", func(d *dataFlags) { d.cacheSize = -5 }, "--cache-size"},
		{"staging smaller than a block", func(d *dataFlags) { d.stagingSize = 1 << 20 }, "--staging-size"},
		{"negative memory limit", func(d *dataFlags) { d.memoryLimit = -1 }, "--memory-limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := ok
			tc.change(&d)
			fo, so, err := d.options(nil)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an error naming %s", err, tc.wantErr)
			case tc.wantErr == "" && so.MaxBytes != d.stagingSize:
				t.Fatalf("staging limit %d, want %d", so.MaxBytes, d.stagingSize)
			case tc.wantErr == "" && d.cacheMem == 0 && fo.MemCacheBytes >= 0:
				t.Fatalf("--cache-mem 0 gave MemCacheBytes %d: the fs default, not none", fo.MemCacheBytes)
			}
		})
	}
}

func TestByteSizeFlag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true}, {"4096", 4096, true}, {"4GiB", 4 << 30, true}, {"128MiB", 128 << 20, true},
		{"1.5GiB", 3 << 29, true}, {"2GB", 2_000_000_000, true},
		{"", 0, false}, {"-1", 0, false}, {"10x", 0, false}, {"GiB", 0, false},
	} {
		var b byteSize
		err := b.Set(tc.in)
		if (err == nil) != tc.ok || (tc.ok && int64(b) != tc.want) {
			t.Errorf("Set(%q) = %d, %v; want %d, ok %v", tc.in, b, err, tc.want, tc.ok)
		}
	}
}
