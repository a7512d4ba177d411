package meta

import (
	"slices"
	"sync"
)

// dirLocks serializes, within this process, the transactions that change
// the same directory. They would conflict in the KV anyway (each writes the
// directory's inode); without the lock, many clients creating in one
// directory turn into storms of retried transactions that can exhaust
// their retries. Directories are spread over a fixed set of stripes.
type dirLocks [256]sync.Mutex

// lock locks the stripes of dirs in a fixed order (no deadlock between two
// operations on the same pair) and returns the unlock function.
func (l *dirLocks) lock(dirs ...uint64) (unlock func()) {
	idx := make([]int, 0, len(dirs))
	for _, d := range dirs {
		idx = append(idx, int(d*0x9E3779B97F4A7C15>>56))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	for _, i := range idx {
		l[i].Lock()
	}
	return func() {
		for j := len(idx) - 1; j >= 0; j-- {
			l[idx[j]].Unlock()
		}
	}
}
