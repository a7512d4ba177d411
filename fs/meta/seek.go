package meta

import (
	"context"
	"errors"
	"slices"
	"syscall"
)

// Seek answers lseek's SEEK_DATA (hole false) and SEEK_HOLE (hole true) for
// file ino from offset off, as ext4 and XFS do: the first offset at or
// after off that holds data, or that is in a hole, where the end of the
// file counts as a hole. An offset at or past the end is ENXIO, as is a
// SEEK_DATA with no data after off. Data is what some slice covers (an
// inline file is all data); holes are the ranges no slice covers, or a hole
// slice punched out, which read as zeros and take no storage. It reads only the chunk records from
// off on, so a seek over a huge hole costs one lookup, not one per chunk.
func (m *Meta) Seek(ctx context.Context, ino, off uint64, hole bool) (uint64, error) {
	var res uint64
	err := m.view(ctx, func(x *tx) error {
		a, err := x.inode(ino)
		if err != nil {
			return err
		}
		if a.IsDir() {
			return syscall.EISDIR
		}
		if off >= a.Size {
			return syscall.ENXIO
		}
		if !a.IsRegular() {
			return syscall.EINVAL
		}
		if _, err := x.t.Get(keyIno(pInline, ino)); err == nil {
			res = off // an inline file is all data
			if hole {
				res = a.Size
			}
			return nil
		} else if !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		cs := uint64(m.format.ChunkSize)
		pos, found := off, false
		err = x.scanChunks(ino, off/cs, a.Flags&FlagTails != 0, func(idx uint64, ss []Slice, _ int) (bool, error) {
			base := idx * cs
			if base >= a.Size {
				return false, nil
			}
			if hole && pos < base {
				found = true // pos lies in a chunk with no record
				return false, nil
			}
			pos = max(pos, base)
			for _, iv := range coverage(ss) {
				lo, hi := base+iv.lo, min(base+iv.hi, a.Size)
				switch {
				case hi <= pos:
				case hole && pos < lo:
					found = true
					return false, nil
				case hole:
					pos = hi
				default:
					pos, found = max(pos, lo), true
					return false, nil
				}
			}
			if hole && pos < min(base+cs, a.Size) {
				found = true // the rest of the chunk is not covered
				return false, nil
			}
			return true, nil
		})
		switch {
		case err != nil:
			return err
		case found:
			res = pos
		case hole:
			res = min(pos, a.Size) // the hole at the end of the file
		default:
			return syscall.ENXIO
		}
		return nil
	})
	return res, err
}

// interval is a byte range [lo, hi) within a chunk.
type interval struct{ lo, hi uint64 }

// coverage returns the ranges of a chunk that hold data, sorted and merged
// (touching ranges joined): what its slices cover, less what hole slices
// newer than them punched out.
func coverage(ss []Slice) []interval {
	ivs := make([]interval, 0, len(ss))
	for _, s := range ss {
		iv := interval{uint64(s.Pos), uint64(s.Pos) + uint64(s.Len)}
		switch {
		case s.Hole():
			ivs = punch(ivs, iv)
		case iv.lo < iv.hi:
			ivs = append(ivs, iv)
		}
	}
	slices.SortFunc(ivs, func(a, b interval) int {
		switch {
		case a.lo < b.lo:
			return -1
		case a.lo > b.lo:
			return 1
		}
		return 0
	})
	out := ivs[:0]
	for _, iv := range ivs {
		if n := len(out); n > 0 && iv.lo <= out[n-1].hi {
			out[n-1].hi = max(out[n-1].hi, iv.hi)
			continue
		}
		out = append(out, iv)
	}
	return out
}

// punch cuts the bytes of h out of ivs, in place.
func punch(ivs []interval, h interval) []interval {
	n := len(ivs)
	for i := range n {
		iv := ivs[i]
		if iv.hi <= h.lo || iv.lo >= h.hi {
			ivs = append(ivs, iv)
			continue
		}
		if iv.lo < h.lo {
			ivs = append(ivs, interval{iv.lo, h.lo})
		}
		if iv.hi > h.hi {
			ivs = append(ivs, interval{h.hi, iv.hi})
		}
	}
	return append(ivs[:0], ivs[n:]...)
}
