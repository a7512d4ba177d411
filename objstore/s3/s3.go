// Package s3 is the objstore backend for S3-compatible object stores (AWS
// S3, MinIO, Ceph RGW and the like), named by s3://BUCKET[/PREFIX] URLs;
// importing it registers the s3 scheme with objstore.Open.
//
// Its one job is to make such a store keep the objstore.Store contract
// under real-world conditions: every request has a deadline, throttling and
// transient failures are retried with bounded, jittered exponential
// backoff, requests in flight are bounded per store, and a missing bucket
// or bad credentials are reported by Open, by name, instead of as I/O
// errors later. Credentials come only from minio-go's credentials chain
// (environment, shared credentials file, IAM role), never from the URL.
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/objfs/objfs/objstore"
)

func init() {
	if err := objstore.Register("s3", open); err != nil {
		// Only a second backend claiming "s3" gets here; Open then
		// keeps using the first, and says so.
		slog.Error("objstore/s3: not registered", "err", err)
	}
}

// open is the objstore.Opener of s3:// URLs. create changes nothing: the
// bucket is never created, since who owns it, its region, versioning and
// lifecycle rules are the operator's decisions.
func open(ctx context.Context, u *url.URL, _ bool) (objstore.Store, error) {
	return Open(ctx, u.String())
}

// Store is an objstore.Store in one bucket, below an optional key prefix.
type Store struct {
	cfg       config
	client    *minio.Client
	core      minio.Core
	transport *http.Transport
	creds     *credentials.Credentials
	retry     retryPolicy
	sem       chan struct{} // one slot per request in flight
	log       *slog.Logger
}

var _ objstore.Store = (*Store)(nil)

// Errors Open wraps, so that callers and tests can tell the problems apart.
var (
	ErrNoBucket      = errors.New("no such bucket")
	ErrAccessDenied  = errors.New("access denied")
	ErrNoCredentials = errors.New("no credentials")
	ErrUnreachable   = errors.New("endpoint unreachable")
)

// problem is an error of Open naming what is wrong in its own words, while
// errors.Is still finds its kind (ErrNoBucket...) and its cause.
type problem struct {
	kind  error
	msg   string
	cause error // may be nil
}

func (p *problem) Error() string   { return p.msg }
func (p *problem) Unwrap() []error { return []error{p.kind, p.cause} }

func newProblem(kind, cause error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return &problem{kind: kind, msg: msg, cause: cause}
}

// credentialsHelp says where credentials come from, for errors.
const credentialsHelp = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), " +
	"or a profile in the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials; AWS_PROFILE picks the profile), " +
	"or run on a host with an IAM role"

// Open opens the bucket named by rawURL,
// s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=R&tls=true|false&max-inflight=N&timeout=D,
// and checks that it exists and that the credentials may list it; it
// fails with an error wrapping ErrNoBucket, ErrAccessDenied,
// ErrNoCredentials or ErrUnreachable naming the problem.
func Open(ctx context.Context, rawURL string) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error quotes the whole URL
		}
		return nil, fmt.Errorf("objstore/s3: invalid store URL: %w", err)
	}
	cfg, err := parseURL(u)
	if err != nil {
		return nil, fmt.Errorf("objstore/s3: %w", err)
	}
	s, err := newStore(cfg, defaultRetry, slog.Default())
	if err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("objstore/s3: %w", err)
	}
	return s, nil
}

// newStore builds the client of cfg without sending a request.
func newStore(cfg config, retry retryPolicy, log *slog.Logger) (*Store, error) {
	transport := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          cfg.maxInflight,
		MaxIdleConnsPerHost:   cfg.maxInflight,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Bodies are not compressed in transit, and a gzip-decoding
		// transport would hide the Content-Length Get checks.
		DisableCompression: true,
	}
	// The chain order is the AWS SDKs': environment, then the shared
	// credentials file, then the instance's IAM role. The IAM lookup gets
	// a short timeout of its own, so a host without a metadata service
	// costs seconds, not a TCP timeout.
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{Client: &http.Client{Timeout: 5 * time.Second}},
	})
	client, err := minio.New(cfg.endpoint, &minio.Options{
		Creds:     creds,
		Secure:    cfg.tls,
		Transport: transport,
		Region:    cfg.region,
		// One attempt per call: retries are this package's (see retry.go).
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("objstore/s3: %s: %w", cfg, err)
	}
	return &Store{
		cfg:       cfg,
		client:    client,
		core:      minio.Core{Client: client},
		transport: transport,
		creds:     creds,
		retry:     retry,
		sem:       make(chan struct{}, cfg.maxInflight),
		log:       log,
	}, nil
}

// check verifies at open time what every later request needs: credentials,
// a reachable endpoint, an existing bucket, and permission to list it.
func (s *Store) check(ctx context.Context) error {
	v, err := s.creds.GetWithContext(s.client.CredContext())
	if err != nil || v.SignerType.IsAnonymous() || (v.AccessKeyID == "" && v.SecretAccessKey == "") {
		return newProblem(ErrNoCredentials, nil, "no credentials found: %s", credentialsHelp)
	}
	var exists bool
	err = s.do(ctx, "check bucket", func(ctx context.Context) error {
		var err error
		exists, err = s.client.BucketExists(ctx, s.cfg.bucket)
		return err
	})
	if err != nil {
		return s.explain(err)
	}
	if !exists {
		return s.noBucket()
	}
	// HEAD of the bucket needs little permission; listing is what gc and
	// scrub (and format's check for foreign blocks) need, and it also
	// proves the credentials are accepted where HEAD may not.
	err = s.do(ctx, "check list", func(ctx context.Context) error {
		for obj := range s.client.ListObjectsIter(ctx, s.cfg.bucket, minio.ListObjectsOptions{
			Prefix: s.cfg.prefix, Recursive: true, MaxKeys: 1, FetchOwner: new(bool),
		}) {
			return obj.Err // the first object, or the error, is enough
		}
		return nil
	})
	if err != nil {
		return s.explain(err)
	}
	return nil
}

// explain turns an error from Open's checks into one naming the problem.
func (s *Store) explain(err error) error {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch {
		case er.Code == "NoSuchBucket":
			return s.noBucket()
		case er.StatusCode == http.StatusForbidden, er.Code == "AccessDenied", er.Code == "InvalidAccessKeyId",
			er.Code == "SignatureDoesNotMatch", er.Code == "InvalidToken", er.Code == "ExpiredToken":
			return newProblem(ErrAccessDenied, nil, "access denied to bucket %q at %s (%s): check the credentials: %s", s.cfg.bucket, s.cfg.endpoint, er.Code, credentialsHelp)
		}
		return fmt.Errorf("bucket %q at %s: %w", s.cfg.bucket, s.cfg.endpoint, err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return newProblem(ErrUnreachable, err, "endpoint unreachable: %s speaks plain http (add tls=false to the URL)", s.cfg.endpoint)
	}
	return newProblem(ErrUnreachable, err, "endpoint unreachable: %s", s.cfg.endpoint)
}

// noBucket is the error for a bucket that does not exist.
func (s *Store) noBucket() error {
	return newProblem(ErrNoBucket, nil, "bucket %q does not exist at %s (create it first: objfs never creates buckets)", s.cfg.bucket, s.cfg.endpoint)
}

// netError strips the *url.Error net/http puts around a transport error:
// it quotes the request URL, which is noise in messages that name the
// store already.
func netError(err error) error {
	if uerr, ok := err.(*url.Error); ok {
		return uerr.Err
	}
	return err
}

// String returns the store's URL (which never holds credentials).
func (s *Store) String() string { return s.cfg.String() }

// Close drops the store's idle connections. Requests still running end
// with their contexts.
func (s *Store) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// object returns the bucket's name for key, or an error for a key the
// objstore rules refuse.
func (s *Store) object(key string) (string, error) {
	if !objstore.ValidKey(key) {
		return "", fmt.Errorf("invalid key %q", key)
	}
	return s.cfg.prefix + key, nil
}

// Put uploads data in one PUT request with its MD5 and SHA-256, so the
// server refuses a body damaged in transit. S3 acknowledges a PUT only
// once the object is stored durably, and a PUT replaces an object
// atomically, so overwrites and concurrent Puts of one key are safe.
func (s *Store) Put(ctx context.Context, key string, data []byte) error {
	obj, err := s.object(key)
	if err != nil {
		return fmt.Errorf("objstore/s3: put: %w", err)
	}
	md := md5.Sum(data)
	sha := sha256.Sum256(data)
	md5b64, sha256hex := base64.StdEncoding.EncodeToString(md[:]), hex.EncodeToString(sha[:])
	err = s.do(ctx, "put", func(ctx context.Context) error {
		_, err := s.core.PutObject(ctx, s.cfg.bucket, obj, bytes.NewReader(data), int64(len(data)), md5b64, sha256hex,
			minio.PutObjectOptions{ContentType: "application/octet-stream"})
		return err
	})
	if err != nil {
		return fmt.Errorf("objstore/s3: put %q to %s: %w", key, s, err)
	}
	return nil
}

// Get downloads the whole object and checks that exactly Content-Length
// bytes arrived.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	obj, err := s.object(key)
	if err != nil {
		return nil, fmt.Errorf("objstore/s3: get: %w", err)
	}
	var data []byte
	err = s.do(ctx, "get", func(ctx context.Context) error {
		body, info, _, err := s.core.GetObject(ctx, s.cfg.bucket, obj, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer body.Close()
		if info.Size < 0 {
			return fmt.Errorf("%w: no Content-Length", errShortBody)
		}
		// Grow as bytes arrive rather than trusting the header for one
		// big allocation; read one byte past it to catch a long body.
		var buf bytes.Buffer
		buf.Grow(int(min(info.Size, 64<<20)))
		n, err := io.Copy(&buf, io.LimitReader(body, info.Size+1))
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		if n != info.Size {
			return fmt.Errorf("%w: got %d bytes, Content-Length %d", errShortBody, n, info.Size)
		}
		data = buf.Bytes()
		return nil
	})
	if err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && (er.Code == "NoSuchKey" || er.StatusCode == http.StatusNotFound && er.Code != "NoSuchBucket") {
			return nil, fmt.Errorf("objstore/s3: get %q from %s: %w", key, s, objstore.ErrNotFound)
		}
		return nil, fmt.Errorf("objstore/s3: get %q from %s: %w", key, s, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// Delete removes the object; S3 answers a delete of a missing object with
// success, which is the contract.
func (s *Store) Delete(ctx context.Context, key string) error {
	obj, err := s.object(key)
	if err != nil {
		return fmt.Errorf("objstore/s3: delete: %w", err)
	}
	err = s.do(ctx, "delete", func(ctx context.Context) error {
		return s.client.RemoveObject(ctx, s.cfg.bucket, obj, minio.RemoveObjectOptions{})
	})
	if err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && er.Code == "NoSuchKey" {
			return nil
		}
		return fmt.Errorf("objstore/s3: delete %q from %s: %w", key, s, err)
	}
	return nil
}

// errStop ends a listing attempt from inside the iteration.
var errStop = errors.New("stop listing")

// List pages through ListObjectsV2 (1,000 keys a request, in the bucket's
// lexical order, which is the byte order of our keys), holding one page at
// a time. Each page request holds an in-flight slot and must make progress
// within the store's timeout; fn runs outside both, so it may use the
// store. A failed page is retried like any request, resuming after the
// last key delivered, so fn never sees a key twice. Objects below the
// prefix whose names are not valid keys (not written by objfs) are skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("objstore/s3: list %q: %w", prefix, err)
	}
	last := "" // full object name of the last object delivered
	var fnErr error
	failures := 0
	for {
		done, err := s.listFrom(ctx, prefix, &last, fn, &fnErr)
		if fnErr != nil {
			return fnErr // the caller's own error, as is
		}
		if err == nil && done {
			return nil
		}
		if err == nil {
			continue
		}
		failures++
		if !retryable(ctx, err) || failures >= s.retry.attempts {
			if failures > 1 {
				err = fmt.Errorf("gave up after %d attempts: %w", failures, err)
			}
			return fmt.Errorf("objstore/s3: list %q in %s: %w", prefix, s, err)
		}
		s.log.Debug("objstore/s3: list failed; resuming", "store", s.String(), "after", last, "attempt", failures, "err", err)
		if serr := sleep(ctx, s.retry.wait(failures-1)); serr != nil {
			return fmt.Errorf("objstore/s3: list %q in %s: %w", prefix, s, serr)
		}
	}
}

// listFrom runs one listing attempt starting after *last. It returns done
// when the listing is complete.
func (s *Store) listFrom(ctx context.Context, prefix string, last *string, fn func(string, int64) error, fnErr *error) (done bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The watchdog cancels the attempt when the iterator makes no progress
	// (one page request) within the timeout; it is stopped while fn runs.
	var stalled atomic.Bool
	watchdog := time.AfterFunc(s.cfg.timeout, func() { stalled.Store(true); cancel() })
	defer watchdog.Stop()
	if err := s.acquire(ctx); err != nil {
		return false, err
	}
	held := true
	defer func() {
		if held {
			s.release()
		}
	}()
	opts := minio.ListObjectsOptions{
		Prefix:     s.cfg.prefix + prefix,
		Recursive:  true,
		StartAfter: *last,
		FetchOwner: new(bool),
	}
	for obj := range s.client.ListObjectsIter(actx, s.cfg.bucket, opts) {
		if !watchdog.Stop() {
			// Fired: the attempt is cancelled; the iterator says so next.
			continue
		}
		if obj.Err != nil {
			return false, netError(obj.Err)
		}
		// Between objects: no request is running. Give the slot back
		// while fn runs.
		s.release()
		held = false
		if key, ok := strings.CutPrefix(obj.Key, s.cfg.prefix); ok && objstore.ValidKey(key) && strings.HasPrefix(key, prefix) {
			if err := fn(key, obj.Size); err != nil {
				*fnErr = err
				return false, errStop
			}
		} else {
			s.log.Debug("objstore/s3: skipping object that is not an objfs key", "store", s.String(), "name", obj.Key)
		}
		*last = obj.Key
		if err := s.acquire(ctx); err != nil {
			return false, err
		}
		held = true
		watchdog.Reset(s.cfg.timeout)
	}
	if stalled.Load() {
		return false, fmt.Errorf("no list page within %v (timeout=): %w", s.cfg.timeout, context.DeadlineExceeded)
	}
	if err := actx.Err(); err != nil {
		return false, err
	}
	return true, nil
}
