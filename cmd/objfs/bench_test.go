package main

import (
	"context"
	"io"
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

// With --loopback the workload runs on three directories, raw first.
func TestBenchLoopbackTiny(t *testing.T) {
	raw, loop, dir := t.TempDir(), t.TempDir(), t.TempDir()
	o := benchOptions{scale: 0.001, seed: 1, compare: raw, loopback: loop, json: true}
	if err := runBench(context.Background(), dir, o); err != nil {
		t.Fatal(err)
	}
}

func TestBenchErrors(t *testing.T) {
	dir, raw, loop := t.TempDir(), t.TempDir(), t.TempDir()
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
		// --loopback: a third column, read against --compare.
		{dir, benchOptions{scale: 1, loopback: loop}, "--loopback " + loop + " needs --compare RAW_DIR"},
		{dir, benchOptions{scale: 1, compare: raw, loopback: dir}, "--loopback " + dir + " is DIR itself"},
		{dir, benchOptions{scale: 1, compare: raw, loopback: dir + "/."}, "is DIR itself; give the loopback mount"},
		{dir, benchOptions{scale: 1, compare: raw, loopback: raw}, "--loopback " + raw + " is the --compare directory"},
		{dir, benchOptions{scale: 1, compare: dir, loopback: loop}, "--compare " + dir + " is DIR itself"},
		{dir, benchOptions{scale: 1, compare: raw, loopback: filepath.Join(loop, "nope")}, "does not exist"},
		{dir, benchOptions{scale: 1, compare: raw, loopback: file}, "is not a directory"},
	} {
		err := runBench(context.Background(), tc.dir, tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("runBench(%s, %+v) = %v, want an error with %q", tc.dir, tc.o, err, tc.want)
		}
	}
}

// The flag reaches runBench through cobra: the checks above hold for the
// command line too, before any workload runs.
func TestBenchLoopbackFlag(t *testing.T) {
	dir, raw := t.TempDir(), t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--loopback", raw, dir}, "needs --compare RAW_DIR"},
		{[]string{"bench", "--compare", raw, "--loopback", raw, dir}, "is the --compare directory"},
		{[]string{"bench", "--compare", raw, "--loopback", dir, dir}, "is DIR itself; give the loopback mount"},
	} {
		root := rootCmd()
		root.SetArgs(tc.args)
		root.SetOut(io.Discard)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("objfs %s: %v, want an error with %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
