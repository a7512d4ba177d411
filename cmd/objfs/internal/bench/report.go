package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// labels are the row titles of the table, by key.
var labels = map[string]string{
	SeqWrite:  "seq write (1 MiB req, fsync)",
	SeqRead:   "seq read (1 MiB req, cold)",
	Create:    "create 4 KiB files",
	Stat:      "stat",
	List:      "ls -l (readdir + lstat, cold)",
	SmallRead: "read 4 KiB files",
	Delete:    "delete",
	Rename:    "rename across dirs",
	RandRead:  "random read 4 KiB",
	RandWrite: "random write 4 KiB (+fsync)",
	RandSync:  "random write 4 KiB, fsync each",
}

// Run is the results of the workload on one directory.
type RunResult struct {
	Label   string   `json:"label"`
	Dir     string   `json:"dir"`
	Results []Result `json:"results"`
}

// Report is everything `objfs bench` prints.
type Report struct {
	Scale  float64     `json:"scale"`
	Seed   uint64      `json:"seed"`
	Rounds int         `json:"rounds,omitempty"` // workload repetitions; values are medians
	Sizes  Sizes       `json:"sizes"`
	Runs   []RunResult `json:"runs"`
	Ratios []Ratio     `json:"ratios,omitempty"` // last run (objfs) / first run (raw)
	// LoopbackRatios, with three runs (raw, loopback, objfs), is the
	// middle run over the first: what a go-fuse file system that does no
	// work of its own reaches, the ceiling for the objfs/raw ratios.
	LoopbackRatios []Ratio  `json:"loopback_ratios,omitempty"`
	RSS            *PeakRSS `json:"peak_rss,omitempty"`
	Notes          []string `json:"notes,omitempty"`
	Dropped        bool     `json:"caches_dropped"`
}

// Ratio compares one row of two runs.
type Ratio struct {
	Key   string  `json:"key"`
	Ratio float64 `json:"ratio"` // 0 when the baseline is 0
}

// PeakRSS is the peak resident set of a process (VmHWM), and the highest
// of each of its parts seen by sampling (Sampled, when taken).
type PeakRSS struct {
	Pid     int       `json:"pid"`
	Bytes   int64     `json:"bytes"`
	Sampled *RSSParts `json:"sampled_peaks,omitempty"`
}

// Ratios divides each row of run b by the same row of run a. Every row is a
// rate, so a ratio above 1 means b is faster. Rows missing from either run,
// or with a zero baseline, are skipped rather than reported as infinite.
func Ratios(a, b []Result) []Ratio {
	base := map[string]float64{}
	for _, r := range a {
		base[r.Key] = r.Value
	}
	var out []Ratio
	for _, r := range b {
		if v, ok := base[r.Key]; ok && v > 0 {
			out = append(out, Ratio{Key: r.Key, Ratio: r.Value / v})
		}
	}
	return out
}

// WriteJSON writes the report for machines.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// ratioColumn is one ratio column of the table: its title and its values.
type ratioColumn struct {
	title  string
	ratios map[string]float64
}

// ratioColumns lists the table's ratio columns: for two runs, the second
// over the first; for three (raw, loopback, objfs), loopback/raw then
// objfs/raw, each over the first run.
func (rep *Report) ratioColumns() []ratioColumn {
	n := len(rep.Runs)
	if n < 2 {
		return nil
	}
	col := func(run int, rs []Ratio) ratioColumn {
		c := ratioColumn{title: rep.Runs[run].Label + "/" + rep.Runs[0].Label, ratios: map[string]float64{}}
		for _, r := range rs {
			c.ratios[r.Key] = r.Ratio
		}
		return c
	}
	var cols []ratioColumn
	if n == 3 {
		cols = append(cols, col(1, rep.LoopbackRatios))
	}
	return append(cols, col(n-1, rep.Ratios))
}

// WriteTable writes the report as one aligned table: a value column per run
// and, for two or three runs, the ratios to the first (see ratioColumns).
func (rep *Report) WriteTable(w io.Writer) error {
	s := rep.Sizes
	rounds := ""
	if rep.Rounds > 1 {
		rounds = fmt.Sprintf(", medians of %d rounds", rep.Rounds)
	}
	fmt.Fprintf(w, "objfs bench: scale %g, seed %d%s: %d MiB sequential, %d files, %d renames, %d MiB random file, %s per random phase\n",
		rep.Scale, rep.Seed, rounds, s.SeqBytes/mib, s.Files, s.Renames, s.RandBytes/mib, s.RandPeriod)
	for _, run := range rep.Runs {
		fmt.Fprintf(w, "  %s: %s\n", run.Label, run.Dir)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{"", "unit"}
	for _, run := range rep.Runs {
		header = append(header, run.Label)
	}
	cols := rep.ratioColumns()
	for _, c := range cols {
		header = append(header, c.title)
	}
	row(tw, header)
	for _, key := range keys(rep.Runs) {
		cells := []string{labels[key], ""}
		for _, run := range rep.Runs {
			cell := "-"
			for _, r := range run.Results {
				if r.Key == key {
					cells[1] = r.Unit
					cell = formatValue(r.Value)
					if r.Note != "" {
						cell += " *"
					}
				}
			}
			cells = append(cells, cell)
		}
		for _, c := range cols {
			if v, ok := c.ratios[key]; ok {
				cells = append(cells, strconv.FormatFloat(v, 'f', 3, 64))
			} else {
				cells = append(cells, "-")
			}
		}
		row(tw, cells)
	}
	if rep.RSS != nil {
		// Under the last run's column: the process measured is its.
		rssRow := func(title string, bytes int64) {
			cells := []string{title, "MiB"}
			for i := range rep.Runs {
				if i == len(rep.Runs)-1 {
					cells = append(cells, strconv.FormatFloat(float64(bytes)/mib, 'f', 1, 64))
				} else {
					cells = append(cells, "")
				}
			}
			for range cols {
				cells = append(cells, "")
			}
			row(tw, cells)
		}
		rssRow(fmt.Sprintf("peak RSS (VmHWM, pid %d)", rep.RSS.Pid), rep.RSS.Bytes)
		if p := rep.RSS.Sampled; p != nil {
			rssRow("  anonymous, highest sampled", p.Anon)
			rssRow("  mapped files, highest sampled", p.File)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	notes := rep.Notes
	for _, run := range rep.Runs {
		for _, r := range run.Results {
			if r.Note != "" {
				notes = append(notes, fmt.Sprintf("* %s, %s: %s", run.Label, labels[r.Key], r.Note))
			}
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	return nil
}

func row(w io.Writer, cells []string) {
	// tabwriter right-aligns every column; the row titles read better
	// left-aligned, so they are padded here.
	cells[0] = fmt.Sprintf("%-32s", cells[0])
	fmt.Fprintln(w, strings.Join(cells, "\t")+"\t")
}

// keys lists the row keys present in any run, in the workload's order.
func keys(runs []RunResult) []string {
	var out []string
	seen := map[string]bool{}
	for _, run := range runs {
		for _, r := range run.Results {
			if !seen[r.Key] {
				seen[r.Key] = true
				out = append(out, r.Key)
			}
		}
	}
	return out
}

func formatValue(v float64) string {
	if v >= 100 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// ReadPeakRSS returns the peak resident set size of process pid, from the
// VmHWM line of /proc/PID/status.
func ReadPeakRSS(pid int) (int64, error) {
	kb, err := readStatusKB(pid, "peak RSS", "VmHWM")
	if err != nil {
		return 0, err
	}
	return kb["VmHWM"] << 10, nil
}
