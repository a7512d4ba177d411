package nfs

import (
	"encoding/binary"
	"errors"
)

// A file handle is, byte for byte:
//
//	version (1 byte, handleVersion) | inode number (8, big endian) | generation (8, big endian)
//
// It names an inode, never a path, so it survives renames of the file and
// of every directory above it, server restarts and any number of files
// touched by clients: there is no table of handles to lose. Inode numbers
// are never reused and the generation is random per inode, so a handle of a
// deleted file cannot reach another file.
const (
	handleVersion = 1
	handleLen     = 17
)

// errBadHandle is a handle that is not one of ours (wrong length or version).
var errBadHandle = errors.New("malformed file handle")

// encodeHandle returns the handle of inode ino with generation gen.
func encodeHandle(ino, gen uint64) []byte {
	h := make([]byte, handleLen)
	h[0] = handleVersion
	binary.BigEndian.PutUint64(h[1:9], ino)
	binary.BigEndian.PutUint64(h[9:17], gen)
	return h
}

// decodeHandle parses a handle received from a client. It does not check
// that the inode exists: see resolve.
func decodeHandle(h []byte) (ino, gen uint64, err error) {
	if len(h) != handleLen || h[0] != handleVersion {
		return 0, 0, errBadHandle
	}
	ino = binary.BigEndian.Uint64(h[1:9])
	gen = binary.BigEndian.Uint64(h[9:17])
	if ino == 0 {
		return 0, 0, errBadHandle
	}
	return ino, gen, nil
}
