package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
)

// retryPolicy says how often and how patiently a failed request is tried
// again. minio-go's own retries are switched off (MaxRetries 1), so this is
// the whole policy: attempts are bounded, each one under its own deadline,
// and the waits between them grow exponentially with full jitter
// (a uniformly random wait up to min(max, base·2^n)), so that many clients
// throttled at once do not come back in step.
type retryPolicy struct {
	attempts int           // tries in all, the first included
	base     time.Duration // wait bound after the first failure
	max      time.Duration // cap of the wait bound
}

// defaultRetry waits at most 0.1+0.2+0.4+0.8+1.6 s ≈ 3.1 s (1.55 s on
// average) over six attempts before giving up on a store that is down:
// long enough to ride out throttling and a restarting server, short
// enough that a replicated volume falls back to another copy quickly.
var defaultRetry = retryPolicy{attempts: 6, base: 100 * time.Millisecond, max: 5 * time.Second}

// wait returns the pause before attempt n+1 after attempt n (0-based)
// failed.
func (p retryPolicy) wait(n int) time.Duration {
	bound := p.max
	if n < 32 && p.base<<n > 0 && p.base<<n < p.max {
		bound = p.base << n
	}
	if bound <= 0 {
		return 0
	}
	return rand.N(bound + 1)
}

// sleep pauses for d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryableCodes are S3 error codes worth another try whatever their HTTP
// status: throttling (which some services answer with 400 or 429 rather
// than 503), server-side timeouts, and an expired temporary token, which
// the credentials chain renews before the next attempt.
var retryableCodes = map[string]bool{
	"SlowDown":                   true,
	"SlowDownRead":               true,
	"SlowDownWrite":              true,
	"Throttling":                 true,
	"ThrottlingException":        true,
	"RequestLimitExceeded":       true,
	"RequestThrottled":           true,
	"TooManyRequests":            true,
	"RequestTimeout":             true,
	"RequestTimeTooSkewed":       false, // a clock problem; retrying cannot fix it
	"InternalError":              true,
	"ServiceUnavailable":         true,
	"XMinioServerNotInitialized": true,
	"ExpiredToken":               true,
	"ExpiredTokenException":      true,
}

// retryable reports whether a request that failed with err may succeed if
// sent again. parent is the caller's context: once it has ended nothing is
// retried, while the end of one attempt's own deadline is.
func retryable(parent context.Context, err error) bool {
	if err == nil || parent.Err() != nil {
		return false
	}
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		if r, ok := retryableCodes[er.Code]; ok {
			return r
		}
		switch {
		case er.StatusCode >= 500, er.StatusCode == http.StatusRequestTimeout, er.StatusCode == http.StatusTooManyRequests:
			return true
		case er.StatusCode != 0:
			// 400, 403, 404, 409...: the request itself is refused.
			return false
		}
		// No status: an error minio-go made up before sending anything
		// (invalid argument and the like).
		return false
	}
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr *tls.CertificateVerificationError
	var rerr tls.RecordHeaderError
	switch {
	case errors.As(err, &uerr), errors.As(err, &herr), errors.As(err, &cerr), errors.As(err, &rerr):
		// TLS misconfiguration (or tls=true against a plain http
		// server) stays wrong however often it is tried.
		return false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The attempt's own deadline (the parent is still alive).
		return true
	case errors.Is(err, errShortBody), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return true
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ETIMEDOUT):
		return true
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		// Timeouts, DNS hiccups and the like.
		return true
	}
	var operr *net.OpError
	return errors.As(err, &operr)
}

// errShortBody marks a GET whose body ended before its Content-Length (or
// ran past it): a broken transfer, retried.
var errShortBody = errors.New("object body length differs from its Content-Length")

// do runs one request (attempt) under the retry policy, holding one of the
// store's in-flight slots for each attempt and giving each attempt its own
// deadline. It returns the last error, wrapped with the attempt count when
// retries were spent.
func (s *Store) do(ctx context.Context, op string, attempt func(ctx context.Context) error) error {
	var err error
	for n := 0; n < s.retry.attempts; n++ {
		if n > 0 {
			if serr := sleep(ctx, s.retry.wait(n-1)); serr != nil {
				return fmt.Errorf("%w (while waiting to retry after: %w)", serr, err)
			}
		}
		if err = s.acquire(ctx); err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
		err = netError(attempt(actx))
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("no answer within %v (timeout=): %w", s.cfg.timeout, err)
		}
		cancel()
		s.release()
		if err == nil || !retryable(ctx, err) {
			return err
		}
		s.log.Debug("objstore/s3: request failed; retrying", "store", s.String(), "op", op, "attempt", n+1, "err", err)
	}
	return fmt.Errorf("gave up after %d attempts: %w", s.retry.attempts, err)
}

// acquire takes one of the store's in-flight slots, waiting for one to be
// free unless ctx ends first.
func (s *Store) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) release() { <-s.sem }
