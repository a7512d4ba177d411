package cache

import "testing"

func TestPurge(t *testing.T) {
	m := NewMemory(1 << 20)
	m.Add("a", make([]byte, 100))
	m.Add("b", make([]byte, 200))
	m.Purge()
	if m.Len() != 0 || m.Bytes() != 0 {
		t.Fatalf("after Purge: %d blocks, %d bytes", m.Len(), m.Bytes())
	}
	if _, ok := m.Get("a"); ok {
		t.Error("purged block still cached")
	}
	// The cache keeps working, and keeps its byte count right.
	m.Add("c", make([]byte, 300))
	if m.Len() != 1 || m.Bytes() != 300 {
		t.Errorf("after re-adding: %d blocks, %d bytes", m.Len(), m.Bytes())
	}
	NewMemory(0).Purge() // a cache that holds nothing purges without fault
}
