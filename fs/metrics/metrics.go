// Package metrics defines objfs's Prometheus instruments: per-operation
// counts, errors and latencies of a front end (FUSE, NFS) and of object
// store requests. The front ends and stores record into them; cmd/objfs
// registers them and serves /metrics.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// latencyBuckets span a cached metadata answer (tens of µs) to a slow
// object store request (seconds).
var latencyBuckets = prometheus.ExponentialBuckets(20e-6, 4, 11)

// Ops counts the operations of one component by name, with their errors
// and latencies. A nil *Ops records nothing, so instrumented code needs no
// checks when metrics are off.
type Ops struct {
	total   *prometheus.CounterVec
	errors  *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

// NewOps registers objfs_<component>_ops_total, _errors_total and
// _op_seconds (all labelled by op) with reg.
func NewOps(reg prometheus.Registerer, component, help string) *Ops {
	o := &Ops{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "objfs_" + component + "_ops_total", Help: help + ": operations served, by operation.",
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "objfs_" + component + "_errors_total", Help: help + ": operations that failed, by operation.",
		}, []string{"op"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "objfs_" + component + "_op_seconds", Help: help + ": operation latency in seconds, by operation.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
	}
	reg.MustRegister(o.total, o.errors, o.seconds)
	return o
}

// Observe records one operation that started at start.
func (o *Ops) Observe(op string, start time.Time) {
	if o == nil {
		return
	}
	o.total.WithLabelValues(op).Inc()
	o.seconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Failed records that one operation failed.
func (o *Ops) Failed(op string) {
	if o == nil {
		return
	}
	o.errors.WithLabelValues(op).Inc()
}
