package replicated

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/objfs/objfs/objstore"
)

// A journal keeps the repair queue across restarts. Without it a crash (or
// a close with repairs left) lost the queue, and the copies it named stayed
// missing until someone ran scrub.
//
// It is a text file of lines, appended as repairs are queued and done:
//
//	A 0,2 blocks/ab/cd/abcd...   copies on stores 0 and 2 need rewriting
//	D 0 blocks/ab/cd/abcd...     the copy on store 0 was rewritten
//
// (keys are objstore.ValidKey: no spaces, no newlines). Replaying the lines
// in order gives what is still to repair; a torn last line (a crash during
// the write) and a damaged line are skipped, which can only lose a repair,
// and scrub finds every missing copy anyway. Lines are written at once (so
// they survive the process being killed) but not fsynced (a power loss
// may lose the last few). At open the file is rewritten with what is still
// to repair, and again whenever it has grown to several times that.
type journal struct {
	mu     sync.Mutex
	path   string
	f      *os.File // nil once a write failed: repairs go on from memory only
	size   int64    // bytes in f
	live   map[string][]int
	failed bool
	log    *slog.Logger
}

const (
	// maxJournaled bounds the repairs a journal keeps (those the queue
	// gave up on stay in it, for the next start, beside the queued ones).
	maxJournaled = 2 * maxQueued
	// journalCompactMin: below this size the journal is never rewritten.
	journalCompactMin = 1 << 20
)

// openJournal replays the journal at path (missing: empty), rewrites it
// with what is left, and returns it open for appending, with that.
func openJournal(path string, log *slog.Logger) (*journal, map[string][]int, error) {
	j := &journal{path: path, live: map[string][]int{}, log: log}
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, nil, fmt.Errorf("replicated: open repair journal: %w", err)
	default:
		bad, err := j.replay(f)
		_ = f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("replicated: read repair journal %s: %w", path, err)
		}
		if bad > 0 {
			log.Warn("replicated: skipped damaged lines of the repair journal (scrub restores what they named)", "path", path, "lines", bad)
		}
	}
	if err := j.rewrite(); err != nil {
		return nil, nil, err
	}
	return j, maps.Clone(j.live), nil
}

// replay applies the lines of r to j.live and counts those it skipped.
func (j *journal) replay(r *os.File) (bad int, err error) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if errors.Is(err, io.EOF) {
			if line != "" {
				bad++ // torn by a crash during the write
			}
			return bad, nil
		}
		if err != nil {
			return bad, err
		}
		op, targets, key, ok := parseJournalLine(strings.TrimSuffix(line, "\n"))
		if !ok {
			bad++
			continue
		}
		if op == 'A' {
			j.live[key] = mergeTargets(j.live[key], targets)
		} else {
			j.live[key] = removeTargets(j.live[key], targets)
			if len(j.live[key]) == 0 {
				delete(j.live, key)
			}
		}
	}
}

// parseJournalLine parses "A|D targets key".
func parseJournalLine(line string) (op byte, targets []int, key string, ok bool) {
	f := strings.Split(line, " ")
	if len(f) != 3 || len(f[0]) != 1 || (f[0][0] != 'A' && f[0][0] != 'D') || !objstore.ValidKey(f[2]) {
		return 0, nil, "", false
	}
	for t := range strings.SplitSeq(f[1], ",") {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > 255 {
			return 0, nil, "", false
		}
		targets = append(targets, n)
	}
	return f[0][0], targets, f[2], true
}

func journalLine(op byte, targets []int, key string) string {
	var b strings.Builder
	b.WriteByte(op)
	b.WriteByte(' ')
	for i, t := range targets {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(t))
	}
	b.WriteByte(' ')
	b.WriteString(key)
	b.WriteByte('\n')
	return b.String()
}

// mergeTargets adds to have the targets of add it lacks.
func mergeTargets(have, add []int) []int {
	for _, t := range add {
		if !slices.Contains(have, t) {
			have = append(have, t)
		}
	}
	return have
}

// removeTargets returns have without the targets of done (have is kept).
func removeTargets(have, done []int) []int {
	return slices.DeleteFunc(slices.Clone(have), func(t int) bool { return slices.Contains(done, t) })
}

// rewrite replaces the file with one "A" line per live key (written to a
// temporary file, synced, then renamed over it) and opens it for appending.
func (j *journal) rewrite() error {
	if j.f != nil {
		_ = j.f.Close()
		j.f = nil
	}
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("replicated: rewrite repair journal: %w", err)
	}
	w := bufio.NewWriter(f)
	var size int64
	for _, key := range slices.Sorted(maps.Keys(j.live)) {
		n, _ := w.WriteString(journalLine('A', j.live[key], key))
		size += int64(n)
	}
	err = w.Flush()
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replicated: rewrite repair journal: %w", err)
	}
	j.f, err = os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("replicated: reopen repair journal: %w", err)
	}
	j.size = size
	return nil
}

// add records that key's copies on targets need rewriting. It reports
// false when the journal is full (the repair then lives in memory only).
func (j *journal) add(key string, targets []int) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	have, ok := j.live[key]
	if !ok && len(j.live) >= maxJournaled {
		return false
	}
	merged := mergeTargets(slices.Clone(have), targets)
	if ok && len(merged) == len(have) {
		return true
	}
	j.live[key] = merged
	j.append(journalLine('A', targets, key))
	return true
}

// done records that key's copies on targets were rewritten (or need no
// rewriting any more).
func (j *journal) done(key string, targets []int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	have, ok := j.live[key]
	if !ok {
		return
	}
	if left := removeTargets(have, targets); len(left) > 0 {
		j.live[key] = left
	} else {
		delete(j.live, key)
	}
	j.append(journalLine('D', targets, key))
	// Rewritten when mostly dead lines: each live key is one line of
	// about the same length as this key's (keys are block names).
	if j.size > journalCompactMin && j.size > 8*int64(len(j.live)+1)*int64(len(key)+8) {
		if err := j.rewrite(); err != nil {
			j.fail(err)
		}
	}
}

// append writes one line; the caller holds j.mu.
func (j *journal) append(line string) {
	if j.f == nil {
		return
	}
	n, err := j.f.WriteString(line)
	j.size += int64(n)
	if err != nil {
		j.fail(err)
	}
}

// fail stops journaling after an error: repairs go on from memory, and
// the next start replays what the file holds.
func (j *journal) fail(err error) {
	if j.f != nil {
		_ = j.f.Close()
		j.f = nil
	}
	if !j.failed {
		j.failed = true
		j.log.Error("replicated: the repair journal failed; repairs queued from now on are lost at a restart (scrub restores them)", "path", j.path, "err", err)
	}
}

// close syncs and closes the journal.
func (j *journal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Sync()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.f = nil
	if err != nil {
		return fmt.Errorf("replicated: close repair journal: %w", err)
	}
	return nil
}
