package meta

import (
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
)

const canAdvise = true

// adviseLogs marks the current mappings of dir's log files MADV_RANDOM.
func adviseLogs(dir string) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		slog.Debug("cannot read the memory map to advise Badger's logs", "err", err)
		return
	}
	defer f.Close()
	for _, m := range logMappings(f, dir) {
		// The range may have been unmapped since the map was read: the
		// call then fails, or advises whatever is there now, harmlessly.
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_RANDOM)
	}
}
