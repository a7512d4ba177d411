// Package integration holds objfs's end-to-end tests: it builds the objfs
// binary, formats volumes, mounts them with real FUSE mounts, and checks the
// mounted filesystem from the outside (POSIX conformance, a differential test
// against a local reference directory, crash survival of fsynced data, and
// the stress-ng and fio exercisers).
//
// Run with:
//
//	go test ./integration/ -v -timeout 15m
//
// Useful environment variables: OBJFS_BIN (test this binary instead of
// building ./cmd/objfs), OBJFS_DIFF_SEED, OBJFS_DIFF_OPS,
// OBJFS_CRASH_ROUNDS, OBJFS_CRASH_SEED, OBJFS_STRESS_SECONDS,
// OBJFS_MOUNT_DEBUG=1 (passes --debug to every mount; the FUSE log lands in
// the mount's stderr file) and CI=true
// (missing FUSE prerequisites, stress-ng or fio fail the tests instead of
// skipping them).
package integration
