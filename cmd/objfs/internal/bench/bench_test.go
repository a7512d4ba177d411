package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
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
		RSS: &PeakRSS{Pid: 42, Bytes: 300 << 20},
	}
	rep.Ratios = Ratios(rep.Runs[0].Results, rep.Runs[1].Results)
	var b bytes.Buffer
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"objfs/raw", "0.850", "0.400", "2000 *", "peak RSS (VmHWM, pid 42)", "300.0",
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

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tobjfs\nVmPeak:\t  999 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n"
	got, err := parseVmHWM(strings.NewReader(status), "status")
	if err != nil || got != 2048<<10 {
		t.Errorf("parseVmHWM = %d, %v; want %d", got, err, 2048<<10)
	}
	if _, err := parseVmHWM(strings.NewReader("Name:\tkthreadd\n"), "status"); err == nil {
		t.Error("parseVmHWM without a VmHWM line: no error")
	}
	if _, err := ReadPeakRSS(os.Getpid()); err != nil {
		t.Errorf("ReadPeakRSS(self): %v", err)
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
	want := []string{SeqWrite, SeqRead, Create, Stat, List, SmallRead, Delete, Rename, RandRead, RandWrite}
	if strings.Join(keys, ",") != strings.Join(want, ",") {
		t.Errorf("rows %v, want %v", keys, want)
	}
	if drops != 3 {
		t.Errorf("caches dropped %d times, want 3 (before seq read, ls -l, random I/O)", drops)
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
