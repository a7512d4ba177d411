package fs

// DropCaches empties the in-memory block cache and drops the blocks read
// ahead with their buffers, so that the next reads go to the object store
// and the memory goes back. It is the objfs half of "drop caches" between
// benchmark phases (the kernel half is /proc/sys/vm/drop_caches); data,
// open files and write buffers are untouched, so it is safe at any time.
func (f *FS) DropCaches() {
	f.blocks.cache.Purge()
	f.blocks.ahead.drop()
}
