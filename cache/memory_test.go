package cache

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

func block(n int) []byte { return make([]byte, n) }

func TestMemoryEviction(t *testing.T) {
	tests := []struct {
		name      string
		maxBytes  int64
		sizes     []int // added in order under keys k0, k1, ...
		wantKeys  []string
		wantBytes int64
	}{
		{"fits", 100, []int{10, 20, 30}, []string{"k0", "k1", "k2"}, 60},
		{"exactly full", 60, []int{10, 20, 30}, []string{"k0", "k1", "k2"}, 60},
		{"evicts oldest", 50, []int{10, 20, 30}, []string{"k1", "k2"}, 50},
		{"evicts several", 40, []int{10, 10, 10, 35}, []string{"k3"}, 35},
		{"oversized not cached", 40, []int{10, 41, 20}, []string{"k0", "k2"}, 30},
		{"zero budget", 0, []int{0, 1}, nil, 0},
		{"negative budget", -5, []int{0, 1}, nil, 0},
		{"empty blocks", 10, []int{0, 0}, []string{"k0", "k1"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMemory(tt.maxBytes)
			for i, n := range tt.sizes {
				m.Add(fmt.Sprintf("k%d", i), block(n))
				if m.Bytes() > max(tt.maxBytes, 0) {
					t.Fatalf("after adding k%d: Bytes() = %d > max %d", i, m.Bytes(), tt.maxBytes)
				}
			}
			var got []string
			for i := range tt.sizes {
				k := fmt.Sprintf("k%d", i)
				if _, ok := m.Get(k); ok {
					got = append(got, k)
				}
			}
			if !slices.Equal(got, tt.wantKeys) {
				t.Errorf("cached keys = %v, want %v", got, tt.wantKeys)
			}
			if m.Bytes() != tt.wantBytes {
				t.Errorf("Bytes() = %d, want %d", m.Bytes(), tt.wantBytes)
			}
			if m.Len() != len(tt.wantKeys) {
				t.Errorf("Len() = %d, want %d", m.Len(), len(tt.wantKeys))
			}
		})
	}
}

func TestMemoryLRUOrder(t *testing.T) {
	m := NewMemory(30)
	m.Add("a", block(10))
	m.Add("b", block(10))
	m.Add("c", block(10))
	// Touching "a" makes "b" the least recently used.
	if _, ok := m.Get("a"); !ok {
		t.Fatal("a missing")
	}
	m.Add("d", block(10))
	tests := []struct {
		key  string
		want bool
	}{
		{"a", true},
		{"b", false},
		{"c", true},
		{"d", true},
	}
	for _, tt := range tests {
		if _, ok := m.Get(tt.key); ok != tt.want {
			t.Errorf("Get(%q) present = %v, want %v", tt.key, ok, tt.want)
		}
	}
}

func TestMemoryReAddAndRemove(t *testing.T) {
	m := NewMemory(100)
	m.Add("a", block(10))
	m.Add("a", block(10)) // the same block again must not be counted twice
	if m.Len() != 1 || m.Bytes() != 10 {
		t.Fatalf("after re-add: Len %d Bytes %d, want 1 and 10", m.Len(), m.Bytes())
	}
	m.Add("a", block(25)) // a different length keeps the byte count right
	if m.Bytes() != 25 {
		t.Fatalf("after re-add with new length: Bytes %d, want 25", m.Bytes())
	}
	m.Remove("a")
	m.Remove("missing")
	if m.Len() != 0 || m.Bytes() != 0 {
		t.Fatalf("after Remove: Len %d Bytes %d, want 0 and 0", m.Len(), m.Bytes())
	}
	if _, ok := m.Get("a"); ok {
		t.Fatal("removed key still cached")
	}
}

func TestMemoryReturnsSameData(t *testing.T) {
	m := NewMemory(100)
	m.Add("a", []byte("hello"))
	got, ok := m.Get("a")
	if !ok || string(got) != "hello" {
		t.Fatalf("Get = %q, %v", got, ok)
	}
}

func TestMemoryStats(t *testing.T) {
	m := NewMemory(100)
	m.Add("a", block(1))
	ops := []struct {
		key string
		hit bool
	}{
		{"a", true},
		{"b", false},
		{"a", true},
		{"c", false},
		{"d", false},
	}
	var wantHits, wantMisses uint64
	for _, op := range ops {
		if _, ok := m.Get(op.key); ok != op.hit {
			t.Fatalf("Get(%q) hit = %v, want %v", op.key, ok, op.hit)
		}
		if op.hit {
			wantHits++
		} else {
			wantMisses++
		}
	}
	if hits, misses := m.Stats(); hits != wantHits || misses != wantMisses {
		t.Fatalf("Stats() = %d, %d; want %d, %d", hits, misses, wantHits, wantMisses)
	}
}

func TestMemoryZeroValue(t *testing.T) {
	// A zero Memory must behave as an empty, disabled cache, not panic.
	var m Memory
	m.Add("a", block(1))
	m.Remove("a")
	if _, ok := m.Get("a"); ok || m.Len() != 0 || m.Bytes() != 0 {
		t.Fatal("zero Memory cached something")
	}
}

func TestMemoryConcurrent(t *testing.T) {
	const maxBytes = 1000
	m := NewMemory(maxBytes)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				k := fmt.Sprintf("k%d", (g*7+i)%50)
				switch i % 4 {
				case 0, 1:
					m.Add(k, block(10+i%90))
				case 2:
					m.Get(k)
				case 3:
					if i%20 == 3 {
						m.Remove(k)
					}
					m.Stats()
				}
				if b := m.Bytes(); b > maxBytes {
					t.Errorf("Bytes() = %d > %d", b, maxBytes)
					return
				}
			}
		})
	}
	wg.Wait()
	// The byte count must match what is actually cached.
	var sum int64
	for i := range 50 {
		if d, ok := m.Get(fmt.Sprintf("k%d", i)); ok {
			sum += int64(len(d))
		}
	}
	if sum != m.Bytes() {
		t.Fatalf("sum of cached blocks %d != Bytes() %d", sum, m.Bytes())
	}
}
