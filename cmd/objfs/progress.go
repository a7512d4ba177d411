package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress reports how far a long command (fsck, gc, dump, load, scrub) is.
// On a terminal it draws a bar on stderr; otherwise (a log, a pipe, a test)
// it prints a plain line now and then, so that a log shows the command is
// alive without filling up with redraws. Stdout is left to the command's
// results.
//
//	p := newProgress("checking blocks", total) // total <= 0: unknown
//	p.Add(1)
//	p.Done()
type progress struct {
	what  string
	total int64
	done  atomic.Int64
	bar   *progressbar.ProgressBar // nil when not on a terminal
	out   io.Writer
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// progressInterval is how often plain progress lines are printed.
var progressInterval = 10 * time.Second

func newProgress(what string, total int64) *progress {
	return newProgressOn(os.Stderr, term.IsTerminal(int(os.Stderr.Fd())), what, total)
}

// newProgressOn reports to out, as a bar if tty.
func newProgressOn(out io.Writer, tty bool, what string, total int64) *progress {
	p := &progress{what: what, total: total, out: out, stop: make(chan struct{})}
	if tty {
		max := total
		if max <= 0 {
			max = -1 // a spinner with a count
		}
		p.bar = progressbar.NewOptions64(max,
			progressbar.OptionSetWriter(out),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(progressInterval)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
				p.line()
			}
		}
	}()
	return p
}

func (p *progress) line() {
	n := p.done.Load()
	if p.total > 0 {
		fmt.Fprintf(p.out, "%s: %d/%d (%d%%)\n", p.what, n, p.total, n*100/p.total)
	} else {
		fmt.Fprintf(p.out, "%s: %d\n", p.what, n)
	}
}

// Add records n more items done. Safe for concurrent use.
func (p *progress) Add(n int64) {
	p.done.Add(n)
	if p.bar != nil {
		_ = p.bar.Add64(n)
	}
}

// Done ends the report; call it once the work is over (or abandoned).
func (p *progress) Done() {
	p.once.Do(func() {
		if p.bar != nil {
			_ = p.bar.Finish()
			return
		}
		close(p.stop)
		p.wg.Wait()
	})
}
