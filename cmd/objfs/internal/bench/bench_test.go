package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRatios(t *testing.T) {
	raw := []Result{{Key: SeqWrite, Value: 200}, {Key: Create, Value: 0}, {Key: Stat, Value: 1000}}
	objfs := []Result{{Key: SeqWrite, Value: 100}, {Key: Create, Value: 5}, {Key: Rename, Value: 7}, {Key: Stat, Value: 1500}}
	got := Ratios(raw, objfs)
	// A zero baseline and a row missing from the baseline are skipped.
	want := []Ratio{{Key: SeqWrite, Ratio: 0.5}, {Key: Stat, Ratio: 1.5}}
	if len(got) != len(want) {
		t.Fatalf("Ratios = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Ratios[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestSizesFor(t *testing.T) {
	full := SizesFor(1)
	if full.SeqBytes != 1<<30 || full.Files != 10000 || full.Renames != 1000 || full.RandBytes != 256<<20 || full.RandPeriod != 10*time.Second {
		t.Errorf("SizesFor(1) = %+v", full)
	}
	tiny := SizesFor(1e-6)
	if tiny.SeqBytes != mib || tiny.Files != 1 || tiny.Renames != 1 || tiny.RandBytes != mib || tiny.RandPeriod <= 0 {
		t.Errorf("SizesFor(1e-6) = %+v: every row needs at least one op", tiny)
	}
}

func TestWriteTable(t *testing.T) {
	rep := &Report{Scale: 1, Seed: 1, Sizes: SizesFor(1),
		Runs: []RunResult{
			{Label: "raw", Dir: "/r", Results: []Result{{Key: SeqWrite, Value: 1000, Unit: unitMiBps}, {Key: RandRead, Value: 5000, Unit: unitIOPS}}},
			{Label: "objfs", Dir: "/o", Results: []Result{{Key: SeqWrite, Value: 850, Unit: unitMiBps}, {Key: RandRead, Value: 2000, Unit: unitIOPS, Note: "buffered: O_DIRECT open refused"}}},
		},
		RSS: &PeakRSS{Pid: 42, Bytes: 300 << 20, Sampled: &RSSParts{Anon: 200 << 20, File: 120 << 20}},
	}
	rep.Ratios = Ratios(rep.Runs[0].Results, rep.Runs[1].Results)
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"objfs/raw", "0.850", "0.400", "2000 *", "peak RSS (VmHWM, pid 42)", "300.0",
		"anonymous, highest sampled", "200.0", "mapped files, highest sampled", "120.0",
		"* objfs, random read 4 KiB: buffered: O_DIRECT open refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Rows follow the workload's order.
	if strings.Index(out, "seq write") > strings.Index(out, "random read") {
		t.Errorf("rows out of order:\n%s", out)
	}
}

// twoRuns is raw and objfs: the report of make bench before the loopback
// column existed.
func twoRuns() *Report {
	rep := &Report{Scale: 1, Seed: 1, Sizes: SizesFor(1),
		Runs: []RunResult{
			{Label: "raw", Dir: "/r", Results: []Result{{Key: SeqWrite, Value: 1000, Unit: unitMiBps}, {Key: Stat, Value: 264257.4, Unit: unitOps}, {Key: RandRead, Value: 5000, Unit: unitIOPS}}},
			{Label: "objfs", Dir: "/o", Results: []Result{{Key: SeqWrite, Value: 850, Unit: unitMiBps}, {Key: Stat, Value: 21268.2, Unit: unitOps}, {Key: RandRead, Value: 2000, Unit: unitIOPS, Note: "buffered: O_DIRECT open refused"}}},
		},
		RSS: &PeakRSS{Pid: 42, Bytes: 300 << 20}, Notes: []string{"a note"},
	}
	rep.Ratios = Ratios(rep.Runs[0].Results, rep.Runs[1].Results)
	return rep
}

// threeRuns is twoRuns with a loopback run between raw and objfs, as
// objfs bench --loopback builds it.
func threeRuns() *Report {
	rep := twoRuns()
	loop := RunResult{Label: "loopback", Dir: "/l", Results: []Result{{Key: SeqWrite, Value: 900, Unit: unitMiBps}, {Key: Stat, Value: 26425.7, Unit: unitOps}}}
	rep.Runs = []RunResult{rep.Runs[0], loop, rep.Runs[1]}
	rep.LoopbackRatios = Ratios(rep.Runs[0].Results, rep.Runs[1].Results)
	return rep
}

// The two-run table is byte for byte what it was before three-run reports
// existed: scripts and the README's figures read it.
func TestWriteTableTwoRunsUnchanged(t *testing.T) {
	want := `objfs bench: scale 1, seed 1: 1024 MiB sequential, 10000 files, 1000 renames, 256 MiB random file, 10s per random phase
  raw: /r
  objfs: /o

                                     unit     raw   objfs  objfs/raw
  seq write (1 MiB req, fsync)      MiB/s    1000     850      0.850
  stat                              ops/s  264257   21268      0.080
  random read 4 KiB                  IOPS    5000  2000 *      0.400
  peak RSS (VmHWM, pid 42)            MiB           300.0           

a note
* objfs, random read 4 KiB: buffered: O_DIRECT open refused
`
	var b bytes.Buffer
	if err := twoRuns().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if b.String() != want {
		t.Errorf("two-run table changed:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestWriteTableRuns(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rep    *Report
		header []string // the header's cells, in order
		rows   map[string][]string
		absent []string
	}{
		{
			name:   "raw and objfs",
			rep:    twoRuns(),
			header: []string{"unit", "raw", "objfs", "objfs/raw"},
			rows: map[string][]string{
				"seq write":   {"MiB/s", "1000", "850", "0.850"},
				"random read": {"IOPS", "5000", "2000 *", "0.400"},
			},
			absent: []string{"loopback"},
		},
		{
			name:   "raw, loopback and objfs",
			rep:    threeRuns(),
			header: []string{"unit", "raw", "loopback", "objfs", "loopback/raw", "objfs/raw"},
			rows: map[string][]string{
				"seq write": {"MiB/s", "1000", "900", "850", "0.900", "0.850"},
				"stat":      {"ops/s", "264257", "26426", "21268", "0.100", "0.080"},
				// The loopback run lacks this row: its cells say so,
				// objfs/raw is still there.
				"random read": {"IOPS", "5000", "-", "2000 *", "-", "0.400"},
				// The peak RSS is the objfs mount's, under its column.
				"peak RSS": {"MiB", "300.0"},
			},
		},
		{
			name:   "one run",
			rep:    &Report{Scale: 1, Sizes: SizesFor(1), Runs: []RunResult{{Label: "mnt", Dir: "/m", Results: []Result{{Key: Stat, Value: 10, Unit: unitOps}}}}},
			header: []string{"unit", "mnt"},
			rows:   map[string][]string{"stat": {"ops/s", "10.0"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tc.rep.WriteTable(&b); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			lines := map[string][]string{}
			for _, l := range strings.Split(out, "\n") {
				f := strings.Fields(l)
				if len(f) > 0 && f[0] == "unit" {
					lines["header"] = f
				}
				for title := range tc.rows {
					if strings.HasPrefix(strings.TrimSpace(l), title) {
						// The row title has spaces; the cells follow
						// the 32-column title.
						lines[title] = strings.Fields(strings.ReplaceAll(strings.TrimSpace(l)[32:], " *", "_*"))
					}
				}
			}
			if got := strings.Join(lines["header"], " "); got != strings.Join(tc.header, " ") {
				t.Errorf("header %q, want %q:\n%s", got, strings.Join(tc.header, " "), out)
			}
			for title, want := range tc.rows {
				got := strings.ReplaceAll(strings.Join(lines[title], " "), "_*", " *")
				if got != strings.Join(want, " ") {
					t.Errorf("row %s: %q, want %q:\n%s", title, got, strings.Join(want, " "), out)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out, a) {
					t.Errorf("table has %q:\n%s", a, out)
				}
			}
		})
	}
}

func TestWriteJSONRuns(t *testing.T) {
	for _, tc := range []struct {
		name         string
		rep          *Report
		labels       []string
		ratios       map[string]float64 // objfs/raw
		loopback     map[string]float64 // loopback/raw; nil: no such field
		wantLoopback bool
	}{
		{"raw and objfs", twoRuns(), []string{"raw", "objfs"},
			map[string]float64{SeqWrite: 0.85, Stat: 21268.2 / 264257.4, RandRead: 0.4}, nil, false},
		{"raw, loopback and objfs", threeRuns(), []string{"raw", "loopback", "objfs"},
			map[string]float64{SeqWrite: 0.85, Stat: 21268.2 / 264257.4, RandRead: 0.4},
			map[string]float64{SeqWrite: 0.9, Stat: 26425.7 / 264257.4}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tc.rep.WriteJSON(&b); err != nil {
				t.Fatal(err)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(b.Bytes(), &raw); err != nil {
				t.Fatal(err)
			}
			if _, ok := raw["loopback_ratios"]; ok != tc.wantLoopback {
				t.Errorf("loopback_ratios present: %v, want %v:\n%s", ok, tc.wantLoopback, b.String())
			}
			var got Report
			if err := json.Unmarshal(b.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			var labels []string
			for _, r := range got.Runs {
				labels = append(labels, r.Label)
			}
			if strings.Join(labels, ",") != strings.Join(tc.labels, ",") {
				t.Errorf("runs %v, want %v", labels, tc.labels)
			}
			check := func(name string, rs []Ratio, want map[string]float64) {
				t.Helper()
				if len(rs) != len(want) {
					t.Errorf("%s: %+v, want %v", name, rs, want)
				}
				for _, r := range rs {
					if w, ok := want[r.Key]; !ok || math.Abs(r.Ratio-w) > 1e-9 {
						t.Errorf("%s[%s] = %g, want %g", name, r.Key, r.Ratio, w)
					}
				}
			}
			check("ratios", got.Ratios, tc.ratios)
			check("loopback_ratios", got.LoopbackRatios, tc.loopback)
		})
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tobjfs\nVmPeak:\t  999 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n"
	got, err := statusKB(strings.NewReader(status), "status", "VmHWM")
	if err != nil || got["VmHWM"] != 2048 {
		t.Errorf("VmHWM = %d, %v; want 2048", got["VmHWM"], err)
	}
	if _, err := statusKB(strings.NewReader("Name:\tkthreadd\n"), "status", "VmHWM"); err == nil {
		t.Error("no VmHWM line: no error")
	}
	if _, err := ReadPeakRSS(os.Getpid()); err != nil {
		t.Errorf("ReadPeakRSS(self): %v", err)
	}
}

func TestStatusKB(t *testing.T) {
	const status = "Name:\tobjfs\nVmHWM:\t   2048 kB\nRssAnon:\t  1500 kB\nRssFile:\t    300 kB\nRssShmem:\t 0 kB\n"
	tests := []struct {
		name, status string
		keys         []string
		want         map[string]int64
		wantErr      string
	}{
		{"both parts", status, []string{"RssAnon", "RssFile"}, map[string]int64{"RssAnon": 1500, "RssFile": 300}, ""},
		{"missing line", "Name:\tkthreadd\nRssAnon:\t 0 kB\n", []string{"RssAnon", "RssFile"}, nil, "no RssFile line"},
		{"not in kB", "RssAnon:\t 12 MB\n", []string{"RssAnon"}, nil, "unexpected RssAnon line"},
		{"not a number", "RssAnon:\t x kB\n", []string{"RssAnon"}, nil, "RssAnon"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := statusKB(strings.NewReader(tc.status), "status", tc.keys...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d", k, got[k], v)
				}
			}
		})
	}
}

// TestRSSSampler: the sampler sees memory that came and went between the
// start and the end of a run.
func TestRSSSampler(t *testing.T) {
	s := StartRSSSampler(os.Getpid(), 5*time.Millisecond)
	const size = 64 << 20
	buf := make([]byte, size)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1 // make it resident
	}
	time.Sleep(50 * time.Millisecond)
	runtime.KeepAlive(buf)
	buf = nil
	runtime.GC()
	debug.FreeOSMemory()
	peak := s.Stop()
	if peak.Anon < size {
		t.Errorf("highest anonymous RSS sampled %d MiB, want at least the 64 MiB buffer", peak.Anon>>20)
	}
	if now, err := ReadRSSParts(os.Getpid()); err != nil || now.Anon >= size {
		t.Logf("anonymous RSS after freeing the buffer %d MiB (%v): this run proves less", now.Anon>>20, err)
	}
	if peak.File <= 0 {
		t.Errorf("highest file-backed RSS sampled %d: the test binary itself is mapped", peak.File)
	}
}

// TestRunTiny runs the whole workload at a tiny scale: every row is
// measured, caches are dropped where they should be, nothing is left behind.
func TestRunTiny(t *testing.T) {
	dir := t.TempDir()
	drops := 0
	cfg := Config{Sizes: SizesFor(0.001), Seed: 7, DropCaches: func(context.Context) error { drops++; return nil }}
	res, err := Run(context.Background(), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range res {
		keys = append(keys, r.Key)
		if r.Value <= 0 || r.Ops <= 0 {
			t.Errorf("%s: value %g after %d ops", r.Key, r.Value, r.Ops)
		}
	}
	want := []string{SeqWrite, SeqRead, Create, Stat, List, SmallRead, Delete, Rename, RandRead, RandWrite, RandSync}
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("rows %v, want %v", keys, want)
	}
	if drops != 7 {
		t.Errorf("caches dropped %d times, want 7 (before each of the 4 groups, before seq read, ls -l, random I/O)", drops)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if _, err := json.Marshal(res); err != nil {
		t.Error(err)
	}
}

// TestRunCancelled stops at once and still cleans up.
func TestRunCancelled(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, dir, Config{Sizes: SizesFor(0.001)}); err == nil {
		t.Error("cancelled run: no error")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// phaseLog records the "bench phase" log lines: phase and directory.
type phaseLog struct {
	mu    *sync.Mutex
	attrs []slog.Attr
	lines *[]string
}

func (h *phaseLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *phaseLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &phaseLog{mu: h.mu, attrs: append(slices.Clone(h.attrs), as...), lines: h.lines}
}
func (h *phaseLog) WithGroup(string) slog.Handler { return h }
func (h *phaseLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "bench phase" {
		return nil
	}
	var phase, dir string
	for _, a := range h.attrs {
		if a.Key == "dir" {
			dir = filepath.Base(a.Value.String())
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "phase" {
			phase = a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	*h.lines = append(*h.lines, phase+"@"+dir)
	h.mu.Unlock()
	return nil
}

// twoDirs returns two empty directories named a and b.
func twoDirs(t *testing.T) (string, string) {
	t.Helper()
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// TestRunAllInterleaves: the directories take turns group by group, the
// first directory first, so their rows are measured close together.
func TestRunAllInterleaves(t *testing.T) {
	a, b := twoDirs(t)
	var lines []string
	cfg := Config{Sizes: SizesFor(0.001), Seed: 3, Log: slog.New(&phaseLog{mu: new(sync.Mutex), lines: &lines})}
	res, err := RunAll(context.Background(), []string{a, b}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || len(res[0]) != 11 || len(res[1]) != 11 {
		t.Fatalf("results: %d directories", len(res))
	}
	want := []string{
		"seq_write@a", "seq_read@a", "seq_write@b", "seq_read@b",
		"create@a", "stat@a", "ls_l@a", "small_read@a", "delete@a",
		"create@b", "stat@b", "ls_l@b", "small_read@b", "delete@b",
		"rename@a", "rename@b",
		"rand_read@a", "rand_write@a", "rand_write_fsync@a",
		"rand_read@b", "rand_write@b", "rand_write_fsync@b",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("phase order\n%v\nwant\n%v", lines, want)
	}
	for _, d := range []string{a, b} {
		if left, _ := os.ReadDir(d); len(left) != 0 {
			t.Errorf("left behind in %s: %v", d, left)
		}
	}
}

// TestRunAllRounds: with several rounds each row is the median of its
// rounds, with every round's value and the operations of all, and each
// round starts with the next directory.
func TestRunAllRounds(t *testing.T) {
	a, b := twoDirs(t)
	var lines []string
	cfg := Config{Sizes: SizesFor(0.001), Seed: 5, Rounds: 3, Log: slog.New(&phaseLog{mu: new(sync.Mutex), lines: &lines})}
	res, err := RunAll(context.Background(), []string{a, b}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var firsts []string
	for _, l := range lines {
		if strings.HasPrefix(l, "seq_write@") {
			firsts = append(firsts, l)
		}
	}
	if want := []string{"seq_write@a", "seq_write@b", "seq_write@b", "seq_write@a", "seq_write@a", "seq_write@b"}; !slices.Equal(firsts, want) {
		t.Errorf("seq write order over the rounds %v, want %v", firsts, want)
	}
	for _, r := range append(res[0], res[1]...) {
		if len(r.Values) != 3 {
			t.Errorf("%s: %d values, want 3", r.Key, len(r.Values))
			continue
		}
		if s := slices.Sorted(slices.Values(r.Values)); r.Value != s[1] {
			t.Errorf("%s: value %g, want the median of %v", r.Key, r.Value, r.Values)
		}
	}
	for _, d := range []string{a, b} {
		if left, _ := os.ReadDir(d); len(left) != 0 {
			t.Errorf("left behind in %s: %v", d, left)
		}
	}
}

func TestMedians(t *testing.T) {
	row := func(v float64, ops int64, note string) []Result {
		return []Result{{Key: Create, Value: v, Ops: ops, Seconds: 1, Note: note}}
	}
	for _, tc := range []struct {
		name   string
		rounds [][]Result
		want   Result
	}{
		{"one round is kept as is", [][]Result{row(5, 10, "")}, Result{Key: Create, Value: 5, Ops: 10, Seconds: 1}},
		{"two rounds: the mean of both", [][]Result{row(4, 10, ""), row(8, 20, "")},
			Result{Key: Create, Value: 6, Ops: 30, Seconds: 2, Values: []float64{4, 8}}},
		{"three rounds: the middle one", [][]Result{row(9, 1, ""), row(1, 1, "buffered"), row(5, 1, "")},
			Result{Key: Create, Value: 5, Ops: 3, Seconds: 3, Values: []float64{9, 1, 5}, Note: "buffered"}},
	} {
		got := medians(tc.rounds)
		if len(got) != 1 || !reflect.DeepEqual(got[0], tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
