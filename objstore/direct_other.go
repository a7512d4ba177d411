//go:build !linux

package objstore

import "os"

// setDirect never enables direct I/O outside Linux.
func setDirect(*os.File, []byte) bool { return false }

func clearDirect(*os.File) error { return nil }

func roundDirect(n int64) int64 { return n }
