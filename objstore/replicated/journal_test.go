package replicated

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/faulty"
)

// TestJournalReplay: what a journal file replays to, lines torn or damaged
// included, and that opening rewrites it with just that.
func TestJournalReplay(t *testing.T) {
	const k1, k2, k3 = "blocks/aa/k1", "blocks/bb/k2", "blocks/cc/k3"
	tests := []struct {
		name    string
		content *string // nil: no file
		want    map[string][]int
	}{
		{"no file", nil, map[string][]int{}},
		{"empty", ptr(""), map[string][]int{}},
		{"adds merge, dones remove", ptr("A 0,2 " + k1 + "\nA 1 " + k1 + "\nD 0 " + k1 + "\nA 1 " + k2 + "\nD 1 " + k2 + "\n"),
			map[string][]int{k1: {2, 1}}},
		{"done of an unknown key", ptr("D 0 " + k3 + "\nA 2 " + k1 + "\n"), map[string][]int{k1: {2}}},
		{"torn last line", ptr("A 0 " + k1 + "\nA 1 " + k2), map[string][]int{k1: {0}}},
		{"damaged lines skipped", ptr("X 0 " + k1 + "\nA x " + k2 + "\nA 0 Bad Key\nA 0\nA 0 " + k3 + " extra\nA 300 " + k1 + "\nA 1 " + k3 + "\n"),
			map[string][]int{k3: {1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "repairs.log")
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			j, left, err := openJournal(path, quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer j.close()
			if !maps.EqualFunc(left, tc.want, slices.Equal) {
				t.Fatalf("replayed %v, want %v", left, tc.want)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for _, k := range slices.Sorted(maps.Keys(tc.want)) {
				lines = append(lines, strings.TrimSuffix(journalLine('A', tc.want[k], k), "\n"))
			}
			if got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); string(b) != "" && !slices.Equal(got, lines) || string(b) == "" && len(lines) != 0 {
				t.Errorf("rewritten journal %q, want lines %q", b, lines)
			}
		})
	}
}

func ptr(s string) *string { return &s }

// TestJournalStaysSmall: a journal of many repairs done keeps only what is
// left, rewritten as it grows, and replays to it.
func TestJournalStaysSmall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repairs.log")
	j, _, err := openJournal(path, quiet)
	if err != nil {
		t.Fatal(err)
	}
	key := func(i int) string {
		return "blocks/" + strings.Repeat("ab", 32) + "/" + strings.Repeat("0", 8) + string(rune('a'+i%26)) + "-" + strconv.Itoa(i)
	}
	var biggest int64
	for i := range 50000 {
		j.add(key(i), []int{i % 3})
		if i%1000 != 0 { // one in a thousand is left
			j.done(key(i), []int{i % 3})
		}
		biggest = max(biggest, j.size)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	if biggest > 2*journalCompactMin {
		t.Errorf("journal grew to %d bytes for 50 repairs left", biggest)
	}
	j2, left, err := openJournal(path, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.close()
	if len(left) != 50 {
		t.Errorf("replayed %d repairs, want 50", len(left))
	}
	for i := 0; i < 50000; i += 1000 {
		if !slices.Equal(left[key(i)], []int{i % 3}) {
			t.Errorf("repair %d replayed as %v", i, left[key(i)])
		}
	}
}

// TestRepairsResumeAfterRestart: a copy that could not be written before
// the store closed is rewritten after the next start, from the journal,
// and the journal then forgets it.
func TestRepairsResumeAfterRestart(t *testing.T) {
	ctx := context.Background()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	journal := filepath.Join(t.TempDir(), "repairs.log")
	open := func() (*Store, []*faulty.Store) {
		t.Helper()
		var stores []objstore.Store
		var fault []*faulty.Store
		for i, d := range dirs {
			s, err := objstore.NewDir(d)
			if err != nil {
				t.Fatal(err)
			}
			f := faulty.New(s, int64(i))
			fault = append(fault, f)
			stores = append(stores, f)
		}
		s, err := New(stores, 3, 2, verifyBlock, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.OpenJournal(journal); err != nil {
			t.Fatal(err)
		}
		return s, fault
	}

	s, fault := open()
	key, data := block(7)
	bad := s.Placement(key)[2]
	fault[bad].FailNext(faulty.OpPut, 1000) // the write and every repair
	if err := s.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for fault[bad].Calls(faulty.OpPut) < 2 { // the write, then a repair tried
		if time.Now().After(deadline) {
			t.Fatal("no repair was tried")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(journal); !strings.Contains(string(b), key) {
		t.Fatalf("journal after close: %q; want the repair of %s", b, key)
	}

	s, _ = open()
	defer s.Close()
	d, err := objstore.NewDir(dirs[bad])
	if err != nil {
		t.Fatal(err)
	}
	for {
		got, err := d.Get(ctx, key)
		if err == nil && string(got) == string(data) {
			break
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("copy on store %d not restored after the restart: %v", bad, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Done is journaled right after the copy: a third start has nothing.
	for {
		j := s.journal.Load()
		j.mu.Lock()
		n := len(j.live)
		j.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatal("the journal still holds the repair")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRepairSkipsGoodCopies: a repair of a copy that is there and good
// (a scrub restored it before the journal was replayed) writes nothing,
// while a missing one is rewritten.
func TestRepairSkipsGoodCopies(t *testing.T) {
	r := newRig(t, 3, 3, 3)
	key, data := block(11)
	if err := r.s.Put(r.ctx, key, data); err != nil {
		t.Fatal(err)
	}
	place := r.s.Placement(key)
	if err := r.inner[place[1]].Delete(r.ctx, key); err != nil {
		t.Fatal(err)
	}
	before := []int64{r.fault[place[0]].Calls(faulty.OpPut), r.fault[place[1]].Calls(faulty.OpPut)}
	r.s.enqueue(key, []int{place[0], place[1]})
	r.waitCopies(key, data, 3)
	deadline := time.Now().Add(10 * time.Second)
	for r.s.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the repair never finished")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := r.fault[place[0]].Calls(faulty.OpPut) - before[0]; n != 0 {
		t.Errorf("the good copy on store %d was written %d more times", place[0], n)
	}
	if n := r.fault[place[1]].Calls(faulty.OpPut) - before[1]; n != 1 {
		t.Errorf("the missing copy on store %d was written %d times, want 1", place[1], n)
	}
}
