// Package cache keeps recently used immutable blocks close at hand, so that
// reads do not go back to the object store for data they fetched a moment ago.
package cache

import (
	"math"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Memory is a byte-bounded LRU of immutable blocks keyed by their name (a hex
// hash), safe for concurrent use.
//
// Blocks are shared, not copied: a slice passed to Add or returned by Get
// must never be modified afterwards by anyone. Copying would double the
// memory traffic of every cached read, and blocks are immutable anyway.
type Memory struct {
	maxBytes int64

	mu     sync.Mutex // guards the fields below
	lru    *simplelru.LRU[string, []byte]
	bytes  int64
	hits   uint64
	misses uint64
}

// NewMemory returns a cache holding at most maxBytes of block data.
// maxBytes <= 0 means the cache holds nothing.
func NewMemory(maxBytes int64) *Memory {
	m := &Memory{maxBytes: maxBytes}
	// The byte budget, not the entry count, bounds this cache, so the count
	// limit is set out of reach. NewLRU only fails for a non-positive size.
	lru, err := simplelru.NewLRU(math.MaxInt, func(_ string, data []byte) {
		// Called with m.mu held, from Add, Remove and RemoveOldest.
		m.bytes -= int64(len(data))
	})
	if err != nil {
		// Unreachable with a positive size; fall back to caching nothing
		// rather than panicking.
		m.maxBytes = 0
		return m
	}
	m.lru = lru
	return m
}

// Get returns the block stored under key and marks it recently used. The
// returned slice is shared with the cache and must not be modified.
func (m *Memory) Get(key string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lru != nil {
		if data, ok := m.lru.Get(key); ok {
			m.hits++
			return data, true
		}
	}
	m.misses++
	return nil, false
}

// Add caches data under key, evicting the least recently used blocks until
// the total fits in the budget. A block larger than the whole budget is not
// cached, since it would evict everything else and then itself. The cache
// keeps data itself, so the caller must not modify it afterwards.
func (m *Memory) Add(key string, data []byte) {
	size := int64(len(data))
	if m.lru == nil || m.maxBytes <= 0 || size > m.maxBytes {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Removing first keeps the byte count right if a key is ever re-added
	// with a different length (the LRU's own update does not call back).
	m.lru.Remove(key)
	m.lru.Add(key, data)
	m.bytes += size
	for m.bytes > m.maxBytes {
		if _, _, ok := m.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// Contains reports whether key is cached, without counting a hit or a
// miss or changing its recency.
func (m *Memory) Contains(key string) bool {
	if m.lru == nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Contains(key)
}

// Remove drops key from the cache, if present.
func (m *Memory) Remove(key string) {
	if m.lru == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lru.Remove(key)
}

// Len returns the number of cached blocks.
func (m *Memory) Len() int {
	if m.lru == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lru.Len()
}

// Bytes returns the total size of the cached blocks.
func (m *Memory) Bytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

// Stats returns how many Gets found their block and how many did not.
func (m *Memory) Stats() (hits, misses uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits, m.misses
}
