package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RSSParts splits a process's resident set as /proc/PID/status does: its
// anonymous memory (for objfs, the Go heap and stacks) and the pages of
// files it has mapped (its binary, Badger's memory-mapped tables and
// logs: page cache the kernel may reclaim, counted while mapped).
type RSSParts struct {
	Anon int64 `json:"anon_bytes"`
	File int64 `json:"file_bytes"`
}

// ReadRSSParts reads the RssAnon and RssFile lines of /proc/PID/status.
func ReadRSSParts(pid int) (RSSParts, error) {
	kb, err := readStatusKB(pid, "resident set", "RssAnon", "RssFile")
	if err != nil {
		return RSSParts{}, err
	}
	return RSSParts{Anon: kb["RssAnon"] << 10, File: kb["RssFile"] << 10}, nil
}

// readStatusKB is statusKB of /proc/PID/status; what names the reading in
// errors.
func readStatusKB(pid int, what string, keys ...string) (map[string]int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s of pid %d: %w", what, pid, err)
	}
	defer f.Close()
	return statusKB(f, path, keys...)
}

// statusKB reads the "Key: N kB" lines named by keys from a
// /proc/PID/status file; every key must be there.
func statusKB(r io.Reader, name string, keys ...string) (map[string]int64, error) {
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	out := map[string]int64{}
	s := bufio.NewScanner(r)
	for s.Scan() {
		k, rest, ok := strings.Cut(s.Text(), ":")
		if !ok || !want[k] {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return nil, fmt.Errorf("%s: unexpected %s line %q", name, k, s.Text())
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", name, k, err)
		}
		out[k] = v
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("%s: no %s line (a kernel thread?)", name, k)
		}
	}
	return out, nil
}

// RSSSampler reads a process's resident set every interval and keeps the
// highest anonymous and file-backed parts seen (each at its own moment:
// VmHWM alone says how high the sum went, not what it was made of).
type RSSSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	mu   sync.Mutex
	peak RSSParts
}

// StartRSSSampler samples pid every interval until Stop.
func StartRSSSampler(pid int, interval time.Duration) *RSSSampler {
	s := &RSSSampler{stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if p, err := ReadRSSParts(pid); err == nil {
				s.mu.Lock()
				s.peak.Anon = max(s.peak.Anon, p.Anon)
				s.peak.File = max(s.peak.File, p.File)
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the peaks seen.
func (s *RSSSampler) Stop() RSSParts {
	close(s.stop)
	s.done.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}
