package meta

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkReadDataSmallFile: the layout read of a small file's reads and
// commits (chunk 0 of a file among many).
func BenchmarkReadDataSmallFile(b *testing.B) {
	v := newVolume(b, nil)
	var inos []uint64
	for i := range 150000 {
		f := v.mkfile(RootIno, fmt.Sprintf("f%d", i))
		if _, err := v.m.Write(v.ctx, f.Ino, WriteIn{End: 10, Mtime: time.Now().UnixNano(),
			Chunks: []ChunkWrite{{Index: 0, Slices: []Slice{{Pos: 0, Len: 10, Blocks: []BlockRef{fakeBlock(i, 10)}}}}}}); err != nil {
			b.Fatal(err)
		}
		inos = append(inos, f.Ino)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := v.m.ReadData(v.ctx, inos[i%len(inos)], 0, 0); err != nil {
			b.Fatal(err)
		}
	}
}
