package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestOps(t *testing.T) {
	reg := prometheus.NewRegistry()
	o := NewOps(reg, "test", "Test operations")
	for _, op := range []string{"lookup", "lookup", "write"} {
		o.Observe(op, time.Now().Add(-time.Millisecond))
	}
	o.Failed("lookup")
	for _, tc := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{o.total.WithLabelValues("lookup"), 2},
		{o.total.WithLabelValues("write"), 1},
		{o.errors.WithLabelValues("lookup"), 1},
		{o.errors.WithLabelValues("write"), 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("counter = %v, want %v", got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(o.seconds, "objfs_test_op_seconds"); n != 2 {
		t.Errorf("latency histograms for %d ops, want 2", n)
	}
}

func TestNilOpsRecordsNothing(t *testing.T) {
	var o *Ops
	o.Observe("lookup", time.Now()) // must not panic
	o.Failed("lookup")
}
