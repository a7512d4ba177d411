package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/objfs/objfs/objstore"
	"github.com/objfs/objfs/objstore/s3/s3test"
)

// One MinIO serves every test of the package that does not kill it; each
// test uses buckets of its own.
var (
	sharedOnce   sync.Once
	sharedServer *s3test.Server
	sharedErr    error
	sharedDir    string
	bucketSeq    atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedServer != nil {
		if err := sharedServer.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop minio:", err)
			code = 1
		}
	}
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

// minioServer returns the shared MinIO (skipping or failing the test when
// there is none) with its credentials in the environment.
func minioServer(t *testing.T) *s3test.Server {
	t.Helper()
	bin := s3test.RequireBinary(t)
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "objfs-s3-test-")
		if sharedErr == nil {
			sharedServer, sharedErr = s3test.StartIn(bin, sharedDir+"/data")
		}
	})
	if sharedErr != nil {
		t.Fatalf("start minio: %v", sharedErr)
	}
	sharedServer.SetEnv(t)
	return sharedServer
}

// newBucket creates a fresh bucket on srv and returns its name.
func newBucket(t *testing.T, srv *s3test.Server) string {
	t.Helper()
	name := fmt.Sprintf("objfs-test-%d", bucketSeq.Add(1))
	srv.MakeBucket(t, name)
	return name
}

// openStore opens rawURL, failing the test on error, and closes it at the
// end of the test.
func openStore(t *testing.T, rawURL string) *Store {
	t.Helper()
	s, err := Open(context.Background(), rawURL)
	if err != nil {
		t.Fatalf("Open(%s): %v", rawURL, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fastRetry keeps retry tests quick; the policy's shape is what is tested.
var fastRetry = retryPolicy{attempts: 4, base: time.Millisecond, max: 5 * time.Millisecond}

func listAll(t *testing.T, s objstore.Store, prefix string) []string {
	t.Helper()
	var got []string
	err := s.List(context.Background(), prefix, func(key string, size int64) error {
		got = append(got, fmt.Sprintf("%s:%d", key, size))
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

func TestPutGetOverwriteDelete(t *testing.T) {
	srv := minioServer(t)
	ctx := context.Background()
	s := openStore(t, srv.URL(newBucket(t, srv), "vol"))
	tests := []struct {
		name string
		key  string
		data []byte
	}{
		{"flat", "format", []byte("v1")},
		{"nested", "blocks/ab/cd/abcdef0123", []byte("block data")},
		{"empty object", "blocks/00/00/empty", []byte{}},
		{"dots and dashes", "a.b/c-d_e", []byte("x")},
		{"one MiB", "blocks/big", bytes.Repeat([]byte("0123456789abcdef"), 1<<16)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Put(ctx, tt.key, tt.data); err != nil {
				t.Fatalf("Put: %v", err)
			}
			got, err := s.Get(ctx, tt.key)
			if err != nil || !bytes.Equal(got, tt.data) || got == nil {
				t.Fatalf("Get = %d bytes (nil: %v), %v; want %d bytes", len(got), got == nil, err, len(tt.data))
			}
			// Overwriting with the same bytes is idempotent.
			if err := s.Put(ctx, tt.key, tt.data); err != nil {
				t.Fatalf("second Put: %v", err)
			}
			if got, err := s.Get(ctx, tt.key); err != nil || !bytes.Equal(got, tt.data) {
				t.Fatalf("Get after overwrite = %d bytes, %v", len(got), err)
			}
			if err := s.Delete(ctx, tt.key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := s.Get(ctx, tt.key); !errors.Is(err, objstore.ErrNotFound) {
				t.Fatalf("Get after Delete: err = %v, want ErrNotFound", err)
			}
			// Deleting a missing object is not an error.
			if err := s.Delete(ctx, tt.key); err != nil {
				t.Fatalf("second Delete: %v", err)
			}
		})
	}
}

func TestConcurrentPutsOfOneKey(t *testing.T) {
	srv := minioServer(t)
	ctx := context.Background()
	s := openStore(t, srv.URL(newBucket(t, srv), ""))
	data := bytes.Repeat([]byte("same"), 10000)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() { errs <- s.Put(ctx, "blocks/k", data) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Put: %v", err)
		}
	}
	if got, err := s.Get(ctx, "blocks/k"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %d bytes, %v", len(got), err)
	}
}

func TestGetNotFound(t *testing.T) {
	srv := minioServer(t)
	ctx := context.Background()
	s := openStore(t, srv.URL(newBucket(t, srv), "p"))
	if err := s.Put(ctx, "blocks/ab/obj", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"blocks/ab/other", "nothing/here", "blocks/ab", "blocks/ab/obj/x"} {
		t.Run(key, func(t *testing.T) {
			_, err := s.Get(ctx, key)
			if !errors.Is(err, objstore.ErrNotFound) {
				t.Fatalf("Get(%q) err = %v, want ErrNotFound", key, err)
			}
			if err := s.Delete(ctx, key); err != nil {
				t.Fatalf("Delete(%q) = %v, want nil", key, err)
			}
		})
	}
	if _, err := s.Get(ctx, "blocks/ab/obj"); err != nil {
		t.Fatalf("object lost: %v", err)
	}
}

func TestInvalidKeys(t *testing.T) {
	srv := minioServer(t)
	ctx := context.Background()
	bucket := newBucket(t, srv)
	s := openStore(t, srv.URL(bucket, "p"))
	for _, key := range []string{"../x", "a/../../x", "/abs", "a//b", "a/", "A", "", "a/./b", strings.Repeat("a", 600), "a b", "a?b", "a%2fb"} {
		t.Run(key, func(t *testing.T) {
			if err := s.Put(ctx, key, []byte("x")); err == nil {
				t.Errorf("Put(%q) succeeded", key)
			}
			if _, err := s.Get(ctx, key); err == nil || errors.Is(err, objstore.ErrNotFound) {
				t.Errorf("Get(%q) err = %v, want an invalid-key error", key, err)
			}
			if err := s.Delete(ctx, key); err == nil {
				t.Errorf("Delete(%q) succeeded", key)
			}
		})
	}
	if objs := srv.Objects(t, bucket); len(objs) != 0 {
		t.Fatalf("invalid keys wrote objects: %v", objs)
	}
}

func TestList(t *testing.T) {
	srv := minioServer(t)
	ctx := context.Background()
	bucket := newBucket(t, srv)
	s := openStore(t, srv.URL(bucket, "vol"))
	keys := []string{"a/x", "a-b", "a.c", "a/y/z", "b", "blocks/ab/cd/1", "blocks/ab/ce/2", "blocks/b", "c_d"}
	for i, k := range keys {
		if err := s.Put(ctx, k, bytes.Repeat([]byte("x"), i)); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	// Objects objfs did not write: names that are not keys, inside the
	// prefix, and objects outside it.
	admin, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vol/blocks/UPPER", "vol/blocks/a b", "other/blocks/x", "vol-b/x", "volx"} {
		if _, err := admin.PutObject(ctx, bucket, name, strings.NewReader("junk"), 4, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-b:1", "a.c:2", "a/x:0", "a/y/z:3", "b:4", "blocks/ab/cd/1:5", "blocks/ab/ce/2:6", "blocks/b:7", "c_d:8"}},
		{"blocks/", []string{"blocks/ab/cd/1:5", "blocks/ab/ce/2:6", "blocks/b:7"}},
		{"blocks/ab/c", []string{"blocks/ab/cd/1:5", "blocks/ab/ce/2:6"}},
		{"a", []string{"a-b:1", "a.c:2", "a/x:0", "a/y/z:3"}},
		{"a/", []string{"a/x:0", "a/y/z:3"}},
		{"zzz", nil},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			if got := listAll(t, s, tt.prefix); !slices.Equal(got, tt.want) {
				t.Fatalf("List(%q) = %v, want %v", tt.prefix, got, tt.want)
			}
		})
	}

	// An error from fn stops the listing and comes back as is.
	stop := errors.New("stop")
	n := 0
	err = s.List(ctx, "", func(string, int64) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if err != stop || n != 3 {
		t.Fatalf("List with fn failing at 3: err = %v after %d calls, want the fn's error after 3", err, n)
	}
	// fn may use the store while listing, even with one request slot.
	one := openStore(t, srv.URL(bucket, "vol", "max-inflight=1"))
	err = one.List(ctx, "blocks/", func(key string, size int64) error {
		data, err := one.Get(ctx, key)
		if err != nil || int64(len(data)) != size {
			return fmt.Errorf("Get(%q) during List: %d bytes, %v; listed size %d", key, len(data), err, size)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPrefixIsolation(t *testing.T) {
	srv := minioServer(t)
	ctx := context.Background()
	bucket := newBucket(t, srv)
	stores := map[string]*Store{}
	// Sibling prefixes, some sorting right before and after "a/". (A prefix
	// nested in another, like "a/b" in "a", is inside it by definition,
	// as file:///x/y is inside file:///x.)
	for _, p := range []string{"a", "a-b", "a.b", "ab"} {
		stores[p] = openStore(t, srv.URL(bucket, p))
		if err := stores[p].Put(ctx, "blocks/k", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	for p, s := range stores {
		if got := listAll(t, s, ""); !slices.Equal(got, []string{fmt.Sprintf("blocks/k:%d", len(p))}) {
			t.Errorf("store %s lists %v, want only its own blocks/k", s, got)
		}
		if got, err := s.Get(ctx, "blocks/k"); err != nil || string(got) != p {
			t.Errorf("store %s: Get = %q, %v; want %q", s, got, err, p)
		}
	}
	// Deleting in one store leaves the others alone.
	if err := stores["a"].Delete(ctx, "blocks/k"); err != nil {
		t.Fatal(err)
	}
	want := []string{"a-b/blocks/k", "a.b/blocks/k", "ab/blocks/k"}
	if got := srv.Objects(t, bucket); !slices.Equal(got, want) {
		t.Fatalf("bucket holds %v, want %v", got, want)
	}
}

func TestOpenThroughObjstore(t *testing.T) {
	srv := minioServer(t)
	ctx := context.Background()
	bucket := newBucket(t, srv)
	for _, openFn := range []func(context.Context, string) (objstore.Store, error){objstore.Open, objstore.Create} {
		s, err := openFn(ctx, srv.URL(bucket, "x"))
		if err != nil {
			t.Fatalf("objstore open: %v", err)
		}
		if _, ok := s.(*Store); !ok {
			t.Fatalf("objstore open returned %T, want *s3.Store", s)
		}
		s.Close()
	}
	// Create never creates a bucket.
	_, err := objstore.Create(ctx, srv.URL("objfs-never-created", ""))
	if !errors.Is(err, ErrNoBucket) {
		t.Fatalf("Create of a missing bucket: %v, want ErrNoBucket", err)
	}
	if err := objstore.Register("s3", open); err == nil {
		t.Fatal("registering s3 twice succeeded")
	}
	if _, err := objstore.Open(ctx, "gopher://x"); err == nil || !strings.Contains(err.Error(), "supported: file, s3") {
		t.Fatalf("unknown scheme: %v, want the supported list with s3", err)
	}
}

// TestOpenErrors: every problem is named at Open, and nothing is written.
func TestOpenErrors(t *testing.T) {
	srv := minioServer(t)
	bucket := newBucket(t, srv)
	closedPort := func() string {
		l := httptest.NewServer(http.NotFoundHandler())
		addr := l.Listener.Addr().String()
		l.Close()
		return addr
	}()
	noCredsFile := t.TempDir() + "/none"
	tests := []struct {
		name    string
		url     string
		env     map[string]string
		want    error
		wantMsg []string
	}{
		{"missing bucket", srv.URL("objfs-no-such-bucket", "p"), nil, ErrNoBucket,
			[]string{`bucket "objfs-no-such-bucket" does not exist at ` + srv.Addr()}},
		{"wrong secret", srv.URL(bucket, "p"), map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong-secret-123"}, ErrAccessDenied,
			[]string{"access denied", bucket, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}},
		{"unknown key id", srv.URL(bucket, "p"), map[string]string{"AWS_ACCESS_KEY_ID": "nobody-at-all"}, ErrAccessDenied,
			[]string{"access denied", "AWS_ACCESS_KEY_ID"}},
		{"no credentials", srv.URL(bucket, "p"), map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SHARED_CREDENTIALS_FILE": noCredsFile,
			"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:1/none"}, ErrNoCredentials,
			[]string{"no credentials found", "AWS_ACCESS_KEY_ID", "AWS_SHARED_CREDENTIALS_FILE", "IAM"}},
		{"unreachable endpoint", "s3://" + bucket + "?endpoint=" + closedPort + "&tls=false", nil, ErrUnreachable,
			[]string{"endpoint unreachable", closedPort, "connection refused"}},
		{"tls against plain http", "s3://" + bucket + "?endpoint=" + srv.Addr(), nil, ErrUnreachable,
			[]string{"endpoint unreachable", srv.Addr(), "tls=false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			start := time.Now()
			s, err := Open(context.Background(), tt.url)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open error %q does not wrap %v", err, tt.want)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open error %q does not mention %q", err, w)
				}
			}
			for _, secret := range []string{s3test.Password, "wrong-secret-123"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("Open error leaks a secret: %v", err)
				}
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("Open took %v to fail", d)
			}
		})
	}
	if objs := srv.Objects(t, bucket); len(objs) != 0 {
		t.Fatalf("failed opens wrote objects: %v", objs)
	}
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.BucketExists(context.Background(), "objfs-no-such-bucket"); err != nil || ok {
		t.Fatalf("missing bucket exists after Open: %v, %v", ok, err)
	}
}

// proxy sits between a store and MinIO: it counts requests and requests in
// flight, and lets a test answer some requests itself.
type proxy struct {
	srv         *httptest.Server
	inflight    atomic.Int64
	maxInflight atomic.Int64
	delay       time.Duration
	mu          sync.Mutex
	counts      map[string]int // "METHOD kind" -> requests
	intercept   func(w http.ResponseWriter, r *http.Request, n int) bool
}

func newProxy(t *testing.T, target string, delay time.Duration) *proxy {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	// The Host header is passed on unchanged: it is covered by the
	// request signature, made for the proxy's address.
	rp := httputil.NewSingleHostReverseProxy(u)
	p := &proxy{counts: map[string]int{}, delay: delay}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur := p.inflight.Add(1)
		defer p.inflight.Add(-1)
		for {
			m := p.maxInflight.Load()
			if cur <= m || p.maxInflight.CompareAndSwap(m, cur) {
				break
			}
		}
		kind := r.Method + " " + requestKind(r)
		p.mu.Lock()
		p.counts[kind]++
		n := p.counts[kind]
		intercept := p.intercept
		p.mu.Unlock()
		if p.delay > 0 {
			time.Sleep(p.delay)
		}
		if intercept != nil && intercept(w, r, n) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// requestKind is "object", "list", "location" or "bucket".
func requestKind(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case q.Has("location"):
		return "location"
	case q.Get("list-type") == "2":
		return "list"
	case strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1:
		return "object"
	}
	return "bucket"
}

func (p *proxy) addr() string { return p.srv.Listener.Addr().String() }

func (p *proxy) count(kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[kind]
}

func (p *proxy) setIntercept(f func(w http.ResponseWriter, r *http.Request, n int) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.intercept = f
	p.counts = map[string]int{}
}

// s3Error answers like S3 does.
func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by the test</Message><RequestId>test</RequestId></Error>`, code)
}

// storeVia opens bucket on srv through p, with the fast retry policy.
func storeVia(t *testing.T, p *proxy, bucket string, extra ...string) *Store {
	t.Helper()
	u := "s3://" + bucket + "?" + strings.Join(append([]string{"endpoint=" + p.addr(), "tls=false"}, extra...), "&")
	s := openStore(t, u)
	s.retry = fastRetry
	return s
}

func TestRetries(t *testing.T) {
	srv := minioServer(t)
	bucket := newBucket(t, srv)
	p := newProxy(t, srv.Addr(), 0)
	s := storeVia(t, p, bucket)
	ctx := context.Background()
	if err := s.Put(ctx, "blocks/there", []byte("there")); err != nil {
		t.Fatal(err)
	}
	failFirst := func(method string, k int, status int, code string) func(http.ResponseWriter, *http.Request, int) bool {
		return func(w http.ResponseWriter, r *http.Request, n int) bool {
			if r.Method != method || requestKind(r) != "object" || n > k {
				return false
			}
			s3Error(w, status, code)
			return true
		}
	}
	tests := []struct {
		name      string
		method    string
		intercept func(http.ResponseWriter, *http.Request, int) bool
		op        func() error
		wantErr   bool
		attempts  int
	}{
		{"put after 3 SlowDown", "PUT", failFirst("PUT", 3, 503, "SlowDown"),
			func() error { return s.Put(ctx, "blocks/a", []byte("a")) }, false, 4},
		{"get after 2 InternalError", "GET", failFirst("GET", 2, 500, "InternalError"),
			func() error { _, err := s.Get(ctx, "blocks/there"); return err }, false, 3},
		{"delete after 1 throttle", "DELETE", failFirst("DELETE", 1, 429, "TooManyRequests"),
			func() error { return s.Delete(ctx, "blocks/a") }, false, 2},
		{"put always throttled", "PUT", failFirst("PUT", 1000, 503, "SlowDown"),
			func() error { return s.Put(ctx, "blocks/b", []byte("b")) }, true, fastRetry.attempts},
		{"put forbidden: no retry", "PUT", failFirst("PUT", 1000, 403, "AccessDenied"),
			func() error { return s.Put(ctx, "blocks/c", []byte("c")) }, true, 1},
		{"get bad request: no retry", "GET", failFirst("GET", 1000, 400, "InvalidRequest"),
			func() error { _, err := s.Get(ctx, "blocks/there"); return err }, true, 1},
		{"get missing: no retry", "GET", nil,
			func() error {
				_, err := s.Get(ctx, "blocks/missing")
				if !errors.Is(err, objstore.ErrNotFound) {
					return fmt.Errorf("want ErrNotFound, got %w", err)
				}
				return nil
			}, false, 1},
		{"get truncated body once", "GET", func(w http.ResponseWriter, r *http.Request, n int) bool {
			if r.Method != "GET" || requestKind(r) != "object" || n > 1 {
				return false
			}
			// Promise 5 bytes, send 2, and drop the connection.
			w.Header().Set("Content-Length", "5")
			w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(200)
			io.WriteString(w, "th")
			panic(http.ErrAbortHandler)
		}, func() error {
			got, err := s.Get(ctx, "blocks/there")
			if err == nil && string(got) != "there" {
				return fmt.Errorf("Get = %q, want %q", got, "there")
			}
			return err
		}, false, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p.setIntercept(tt.intercept)
			defer p.setIntercept(nil)
			err := tt.op()
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if got := p.count(tt.method + " object"); got != tt.attempts {
				t.Fatalf("%d %s requests, want %d (err %v)", got, tt.method, tt.attempts, err)
			}
		})
	}
}

func TestAttemptTimeout(t *testing.T) {
	srv := minioServer(t)
	bucket := newBucket(t, srv)
	p := newProxy(t, srv.Addr(), 0)
	s := storeVia(t, p, bucket, "timeout=300ms")
	ctx := context.Background()
	if err := s.Put(ctx, "blocks/k", []byte("data")); err != nil {
		t.Fatal(err)
	}
	// The first GET hangs until its client gives up; the retry succeeds.
	p.setIntercept(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.Method != "GET" || requestKind(r) != "object" || n > 1 {
			return false
		}
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return true
	})
	start := time.Now()
	got, err := s.Get(ctx, "blocks/k")
	if err != nil || string(got) != "data" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Fatalf("Get took %v; want one 300ms timeout and a retry", d)
	}
	if n := p.count("GET object"); n != 2 {
		t.Fatalf("%d GETs, want 2", n)
	}

	// Every attempt hangs: the error says so, after the bounded attempts.
	p.setIntercept(func(w http.ResponseWriter, r *http.Request, n int) bool {
		if r.Method != "GET" || requestKind(r) != "object" {
			return false
		}
		<-r.Context().Done()
		return true
	})
	_, err = s.Get(ctx, "blocks/k")
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") || !strings.Contains(err.Error(), fmt.Sprintf("gave up after %d attempts", fastRetry.attempts)) {
		t.Fatalf("Get against a hung server: %v", err)
	}
	// The caller's own deadline ends the retries.
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	s.retry = retryPolicy{attempts: 100, base: 100 * time.Millisecond, max: time.Second}
	start = time.Now()
	if _, err := s.Get(cctx, "blocks/k"); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Fatalf("Get with a 500ms caller deadline: %v after %v", err, time.Since(start))
	}
}

func TestBoundedConcurrency(t *testing.T) {
	srv := minioServer(t)
	bucket := newBucket(t, srv)
	p := newProxy(t, srv.Addr(), 30*time.Millisecond)
	s := storeVia(t, p, bucket, "max-inflight=4")
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			key := fmt.Sprintf("blocks/%02d", i)
			if err := s.Put(ctx, key, []byte(key)); err != nil {
				errs <- err
				return
			}
			if _, err := s.Get(ctx, key); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := p.maxInflight.Load(); m > 4 || m < 2 {
		t.Fatalf("at most %d requests were in flight, want 4 (max-inflight=4, 64 concurrent callers)", m)
	}
}

func TestListPagination(t *testing.T) {
	srv := minioServer(t)
	bucket := newBucket(t, srv)
	p := newProxy(t, srv.Addr(), 0)
	s := storeVia(t, p, bucket)
	ctx := context.Background()
	const n = 2100
	var want []string
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var failed atomic.Value
	for i := range n {
		key := fmt.Sprintf("blocks/%02x/%06d", i%256, i)
		want = append(want, key+":"+fmt.Sprint(len(key)))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.Put(ctx, key, []byte(key)); err != nil {
				failed.Store(err)
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	p.setIntercept(nil)
	if got := listAll(t, s, "blocks/"); !slices.Equal(got, want) {
		t.Fatalf("List returned %d keys, want %d (first difference matters)", len(got), len(want))
	}
	if pages := p.count("GET list"); pages < 3 {
		t.Fatalf("%d list requests for %d keys, want at least 3 pages", pages, n)
	}

	// A page that fails (twice) is retried, resuming after the last key
	// delivered: nothing is lost or repeated.
	p.setIntercept(func(w http.ResponseWriter, r *http.Request, k int) bool {
		if requestKind(r) != "list" || (k != 2 && k != 3) {
			return false
		}
		s3Error(w, 503, "SlowDown")
		return true
	})
	if got := listAll(t, s, "blocks/"); !slices.Equal(got, want) {
		t.Fatalf("List across failing pages returned %d keys, want %d", len(got), len(want))
	}
	if pages := p.count("GET list"); pages < 5 {
		t.Fatalf("%d list requests, want the failed pages retried", pages)
	}
	// A listing that never makes progress gives up.
	p.setIntercept(func(w http.ResponseWriter, r *http.Request, k int) bool {
		if requestKind(r) != "list" {
			return false
		}
		s3Error(w, 503, "SlowDown")
		return true
	})
	err := s.List(ctx, "", func(string, int64) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "gave up after") {
		t.Fatalf("List against a throttling server: %v", err)
	}
}
