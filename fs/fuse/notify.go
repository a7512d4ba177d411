package fuse

import (
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// Invalidator drops what the kernel caches for this mount (attributes, file
// pages, names) about inodes that another front end of the same process
// (NFS) changed, so that the mount sees those changes at once instead of
// after its cache timeouts. Changes made through the mount itself need no
// notice: the kernel already knows them.
type Invalidator struct {
	srv *gofuse.Server
}

// NewInvalidator returns an Invalidator for the mount served by srv.
func NewInvalidator(srv *gofuse.Server) *Invalidator { return &Invalidator{srv: srv} }

// Inode drops ino's cached attributes and data. ENOENT (the kernel does not
// know the inode) is the common, harmless answer.
func (i *Invalidator) Inode(ino uint64) {
	i.srv.InodeNotify(ino, 0, 0)
}

// Entry drops the cached lookup of name in directory parent (and the
// directory's cached listing and attributes).
func (i *Invalidator) Entry(parent uint64, name string) {
	i.srv.EntryNotify(parent, name)
	i.srv.InodeNotify(parent, 0, 0)
}
