package fs

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestBufferMatchesFlatModel(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		r := rand.New(rand.NewPCG(seed, 1))
		var b buffer
		model := make([]byte, 4096)
		written := make([]bool, 4096)
		for i := 0; i < 200; i++ {
			off := r.IntN(4000)
			n := r.IntN(min(96, 4096-off))
			data := make([]byte, n)
			for k := range data {
				data[k] = byte(r.IntN(255) + 1)
			}
			if r.IntN(20) == 0 {
				size := r.IntN(4096)
				b.truncate(uint64(size))
				for k := size; k < len(model); k++ {
					model[k], written[k] = 0, false
				}
				continue
			}
			b.write(uint64(off), data)
			copy(model[off:], data)
			for k := off; k < off+n; k++ {
				written[k] = true
			}
		}
		got := make([]byte, 4096)
		b.overlay(0, got)
		if !bytes.Equal(got, model) {
			t.Fatalf("seed %d: overlay differs from model", seed)
		}
		total := 0
		for k, w := range written {
			if w {
				total++
			}
			_ = k
		}
		// Extents may hold written bytes only, merged: bytes == count of written.
		if b.bytes != total {
			t.Fatalf("seed %d: buffer counts %d bytes, model has %d", seed, b.bytes, total)
		}
		for k := 1; k < len(b.extents); k++ {
			if b.extents[k-1].end() >= b.extents[k].off {
				t.Fatalf("seed %d: extents %d and %d overlap or touch", seed, k-1, k)
			}
		}
	}
}
