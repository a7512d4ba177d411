package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBenchCompareTiny(t *testing.T) {
	raw, dir := t.TempDir(), t.TempDir()
	o := benchOptions{scale: 0.001, seed: 1, compare: raw, rssPid: os.Getpid(), json: true}
	if err := runBench(context.Background(), dir, o); err != nil {
		t.Fatal(err)
	}
}

func TestBenchErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		o    benchOptions
		want string
	}{
		{dir, benchOptions{scale: 0}, "--scale must be positive"},
		{filepath.Join(dir, "nope"), benchOptions{scale: 1}, "does not exist"},
		{file, benchOptions{scale: 1}, "is not a directory"},
		{dir, benchOptions{scale: 1, compare: dir}, "is DIR itself"},
		{dir, benchOptions{scale: 1, rssPid: 1 << 30}, "peak RSS of pid"},
		{dir, benchOptions{scale: 0.001, dropCaches: "exit 3"}, "drop caches"},
	} {
		err := runBench(context.Background(), tc.dir, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("runBench(%s, %+v) = %v, want an error with %q", tc.dir, tc.o, err, tc.want)
		}
	}
}
