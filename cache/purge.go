package cache

// Purge drops every cached block. Benchmarks call it (through the mount's
// SIGUSR1) so that a read phase measures the object store path rather than
// blocks the write phase left in memory; the counters are kept.
func (m *Memory) Purge() {
	if m.lru == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lru.Purge()
	// The eviction callback has subtracted every block already; resetting
	// guards against drift if an entry was ever counted twice.
	m.bytes = 0
}
