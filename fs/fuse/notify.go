package fuse

import (
	"slices"
	"sync"
	"sync/atomic"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// Invalidator drops what the kernel caches for this mount (attributes, file
// pages, names) about inodes that another front end of the same process
// (NFS) changed, so that the mount sees those changes at once instead of
// after its cache timeouts. Changes made through the mount itself need no
// notice: the kernel already knows them. It is an nfs.Watcher.
type Invalidator struct {
	srv notifier
	fs  *FS
}

// notifier is what an Invalidator needs of a go-fuse server.
type notifier interface {
	EntryNotify(parent uint64, name string) gofuse.Status
	InodeNotify(node uint64, off int64, length int64) gofuse.Status
}

// Changed drops ino's cached attributes and data. ENOENT (the kernel does
// not know the inode) is the common, harmless answer.
func (i *Invalidator) Changed(ino uint64) {
	i.srv.InodeNotify(ino, 0, 0)
}

// EntryChanged drops the cached lookup of name in directory parent (and
// the directory's cached listing and attributes). The kernel takes the
// directory's lock for it, so it waits for system calls at work in that
// directory. A hold on the name (Renaming) takes its new state.
func (i *Invalidator) EntryChanged(parent uint64, name string) {
	i.notifyEntry(parent, name)
	i.fs.holds.refresh(parent, name)
}

func (i *Invalidator) notifyEntry(parent uint64, name string) {
	i.srv.EntryNotify(parent, name)
	i.srv.InodeNotify(parent, 0, 0)
}

// Renaming holds both names of a rename another front end is about to
// make at what they name now until done: meanwhile the mount answers
// lookups of them from the hold, and tells the kernel not to keep the
// answer. done(true) tells the kernel that both names changed and then
// lets the new state show, at once for both.
//
// Without the hold, between the rename's commit and the kernel's hearing
// of it, a process on the mount could find the file under both names (the
// old one still cached, the new one looked up afresh) or, looking in the
// other order, under neither: a pipeline's observer would see an item in
// two places.
func (i *Invalidator) Renaming(fromDir uint64, fromName string, toDir uint64, toName string) (done func(renamed bool)) {
	h := &i.fs.holds
	a := h.add(fromDir, fromName)
	b := h.add(toDir, toName)
	return func(renamed bool) {
		if renamed {
			i.notifyEntry(fromDir, fromName)
			i.notifyEntry(toDir, toName)
		}
		h.release(renamed, a, b)
	}
}

// nameHolds are the names held by Invalidator.Renaming. Each hold keeps
// what its name named (an inode, 0 for nothing) when it was taken, or when
// a later change of the name that the kernel knows of refreshed it.
type nameHolds struct {
	n  atomic.Int64 // holds in place: lookups skip the map when 0
	mu sync.Mutex   // also orders reads of the names with refreshes
	m  map[heldName][]*nameHold
	// lookup says what name names now, 0 for nothing. It runs under mu,
	// so it must not wait for a file's commit (fs.Named, not fs.Lookup).
	lookup func(dir uint64, name string) uint64
}

type heldName struct {
	dir  uint64
	name string
}

type nameHold struct {
	name heldName
	ino  uint64
}

// add takes a hold of name in dir at what it names now.
func (h *nameHolds) add(dir uint64, name string) *nameHold {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[heldName][]*nameHold{}
	}
	k := heldName{dir, name}
	hd := &nameHold{name: k, ino: h.lookup(dir, name)}
	h.m[k] = append(h.m[k], hd)
	h.n.Add(1)
	return hd
}

// release drops holds, all at once: a lookup sees all of them or none, so
// the two names of a rename never show one the new state and the other
// the old. When their rename was made (changed), the other holds of the
// same names take the names' new state, which the kernel now knows.
func (h *nameHolds) release(changed bool, holds ...*nameHold) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, hd := range holds {
		k := hd.name
		list := slices.DeleteFunc(h.m[k], func(x *nameHold) bool { return x == hd })
		h.n.Add(-1)
		if len(list) == 0 {
			delete(h.m, k)
			continue
		}
		h.m[k] = list
		if changed {
			h.refreshLocked(k)
		}
	}
}

// refresh gives the holds of name in dir its current state, after a change
// the kernel knows of: one made through the mount, or one another front
// end reported (EntryChanged). Holding the old state then would show the
// kernel a name as it no longer is, and as it never will be again.
func (h *nameHolds) refresh(dir uint64, name string) {
	if h.n.Load() == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refreshLocked(heldName{dir, name})
}

func (h *nameHolds) refreshLocked(k heldName) {
	list := h.m[k]
	if len(list) == 0 {
		return
	}
	ino := h.lookup(k.dir, k.name)
	for _, hd := range list {
		hd.ino = ino
	}
}

// get returns what a held name names for the mount: the oldest hold's
// state, since the changes the newer ones cover are not reported yet.
func (h *nameHolds) get(dir uint64, name string) (ino uint64, held bool) {
	if h.n.Load() == 0 {
		return 0, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if list := h.m[heldName{dir, name}]; len(list) > 0 {
		return list[0].ino, true
	}
	return 0, false
}
