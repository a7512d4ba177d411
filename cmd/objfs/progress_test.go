package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the reporting goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProgressPlainLines(t *testing.T) {
	old := progressInterval
	progressInterval = 5 * time.Millisecond
	defer func() { progressInterval = old }()
	tests := []struct {
		name  string
		total int64
		want  string
	}{
		{"known total", 10, "work: 7/10 (70%)"},
		{"unknown total", -1, "work: 7\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out syncBuffer
			p := newProgressOn(&out, false, "work", tc.total)
			p.Add(3)
			p.Add(4)
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(out.String(), tc.want) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			p.Done()
			p.Done() // a second Done is harmless
			if !strings.Contains(out.String(), tc.want) {
				t.Errorf("output %q lacks %q", out.String(), tc.want)
			}
		})
	}
}

func TestProgressBar(t *testing.T) {
	var out syncBuffer
	p := newProgressOn(&out, true, "blocks", 4)
	for range 4 {
		p.Add(1)
	}
	p.Done()
	p.Done()
	if !strings.Contains(out.String(), "blocks") {
		t.Errorf("bar output %q lacks its description", out.String())
	}
}
