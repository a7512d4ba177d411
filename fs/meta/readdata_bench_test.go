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

// BenchmarkCommitFragmentedChunk: the commit of one fsync'd 4 KiB write
// to a fragmented chunk (500 to 1,012 slices: what compaction, emulated
// here by a truncation every 512 commits, lets a chunk reach), on a volume
// with chunk tails (format 3) and on one without (2, where each commit
// rewrites the whole list, 23 to 46 KiB).
func BenchmarkCommitFragmentedChunk(b *testing.B) {
	for _, version := range []int{2, FormatVersion} {
		b.Run(fmt.Sprintf("version=%d", version), func(b *testing.B) {
			v := newVolume(b, func(f *Format) { f.Version = version; f.BlockSize = 4096; f.ChunkSize = 64 << 20 })
			f := v.mkfile(RootIno, "f")
			for i := 0; i < b.N; i++ {
				if i%512 == 0 {
					b.StopTimer()
					v.truncate(f.Ino, 0)
					for j := range 500 {
						v.writeSlice(f.Ino, uint64(j)*8192, fakeBlock(j, 4096))
					}
					b.StartTimer()
				}
				// 8 KiB apart and past the first 500: no slice is hidden.
				v.writeSlice(f.Ino, uint64(500+i%512)*8192, fakeBlock(1000+i, 4096))
			}
		})
	}
}
