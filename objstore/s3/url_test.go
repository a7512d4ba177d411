package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/objfs/objfs/objstore/s3/s3test"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url     string
		want    string // canonical String(); "" when an error is expected
		wantErr string // substring of the error
	}{
		{"s3://bucket", "s3://bucket", ""},
		{"s3://bucket/", "s3://bucket", ""},
		{"s3://bucket/vol1", "s3://bucket/vol1", ""},
		{"s3://bucket/a/b-c/d.e_f/", "s3://bucket/a/b-c/d.e_f", ""},
		{"s3://my.bucket-1?endpoint=127.0.0.1:9000&tls=false", "s3://my.bucket-1?endpoint=127.0.0.1:9000&tls=false", ""},
		{"s3://b12?endpoint=minio.example.com&region=eu-west-1&tls=true", "s3://b12?endpoint=minio.example.com&region=eu-west-1", ""},
		{"s3://b12?endpoint=[::1]:9000", "s3://b12?endpoint=[::1]:9000", ""},
		{"s3://b12?max-inflight=4&timeout=1m30s", "s3://b12?max-inflight=4&timeout=1m30s", ""},
		{"s3://b12?max-inflight=32&timeout=60s", "s3://b12", ""},

		{"s3://key:secret@bucket", "", "credentials are never taken from the URL"},
		{"s3://key@bucket", "", "user information is not allowed"},
		{"s3://bucket?foo=1", "", `unknown query parameter "foo" (known: endpoint, region, tls, max-inflight, timeout)`},
		{"s3://bucket?access_key=x", "", `unknown query parameter "access_key"`},
		{"s3://bucket?tls=false&tls=true", "", `"tls" is given 2 times`},
		{"s3://Bucket", "", `invalid bucket name "Bucket"`},
		{"s3://bu", "", `invalid bucket name "bu"`},
		{"s3://my_bucket", "", `invalid bucket name "my_bucket"`},
		{"s3://bucket..x", "", `invalid bucket name`},
		{"s3://192.168.1.1", "", `invalid bucket name`},
		{"s3://-bucket", "", `invalid bucket name`},
		{"s3://" + strings.Repeat("a", 64), "", `invalid bucket name`},
		{"s3://localhost:9000/bucket", "", "the server goes in ?endpoint=HOST:PORT"},
		{"s3:///prefix", "", "no bucket"},
		{"s3:bucket", "", "want s3://BUCKET[/PREFIX]"},
		{"s3://bucket/a//b", "", "invalid prefix"},
		{"s3://bucket/../x", "", "invalid prefix"},
		{"s3://bucket/a/./b", "", "invalid prefix"},
		{"s3://bucket/UPPER", "", "invalid prefix"},
		{"s3://bucket/" + strings.Repeat("a", 600), "", "invalid prefix"},
		{"s3://bucket#frag", "", "fragments are not allowed"},
		{"s3://bucket?endpoint=http://host:9000", "", "without a scheme (tls=false for plain http)"},
		{"s3://bucket?endpoint=host:9000/path", "", "want HOST or HOST:PORT"},
		{"s3://bucket?endpoint=", "", "want HOST or HOST:PORT"},
		{"s3://bucket?endpoint=host:99999", "", "invalid port"},
		{"s3://bucket?endpoint=:9000", "", "no host"},
		{"s3://bucket?tls=maybe", "", "want true or false"},
		{"s3://bucket?region=EU", "", "invalid region"},
		{"s3://bucket?max-inflight=0", "", "max-inflight"},
		{"s3://bucket?max-inflight=5000", "", "max-inflight"},
		{"s3://bucket?timeout=-1s", "", "positive duration"},
		{"s3://bucket?timeout=soon", "", "positive duration"},
		{"s3://bucket?a=%zz", "", "invalid query"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			if err != nil {
				t.Fatalf("url.Parse: %v", err)
			}
			c, err := parseURL(u)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("parseURL succeeded (%s), want error containing %q", c, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q does not contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the URL's password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseURL: %v", err)
			}
			if got := c.String(); got != tt.want {
				t.Fatalf("String() = %q, want %q", got, tt.want)
			}
			// The canonical form parses to the same configuration.
			u2, err := url.Parse(c.String())
			if err != nil {
				t.Fatal(err)
			}
			if c2, err := parseURL(u2); err != nil || c2 != c {
				t.Fatalf("canonical URL %q parses to %+v, %v; want %+v", c.String(), c2, err, c)
			}
		})
	}
}

func TestParseURLDefaults(t *testing.T) {
	u, _ := url.Parse("s3://bucket/p")
	c, err := parseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	want := config{bucket: "bucket", prefix: "p/", endpoint: "s3.amazonaws.com", tls: true, maxInflight: 32, timeout: 60 * time.Second}
	if c != want {
		t.Fatalf("parseURL(%s) = %+v, want %+v", u, c, want)
	}
}

func TestRetryable(t *testing.T) {
	live := context.Background()
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"503 SlowDown", live, minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}, true},
		{"500 InternalError", live, minio.ErrorResponse{Code: "InternalError", StatusCode: 500}, true},
		{"502 no code", live, minio.ErrorResponse{StatusCode: 502}, true},
		{"429", live, minio.ErrorResponse{Code: "TooManyRequests", StatusCode: 429}, true},
		{"400 Throttling", live, minio.ErrorResponse{Code: "Throttling", StatusCode: 400}, true},
		{"408", live, minio.ErrorResponse{Code: "RequestTimeout", StatusCode: 408}, true},
		{"403 AccessDenied", live, minio.ErrorResponse{Code: "AccessDenied", StatusCode: 403}, false},
		{"403 SignatureDoesNotMatch", live, minio.ErrorResponse{Code: "SignatureDoesNotMatch", StatusCode: 403}, false},
		{"404 NoSuchKey", live, minio.ErrorResponse{Code: "NoSuchKey", StatusCode: 404}, false},
		{"404 NoSuchBucket", live, minio.ErrorResponse{Code: "NoSuchBucket", StatusCode: 404}, false},
		{"400 BadDigest", live, minio.ErrorResponse{Code: "BadDigest", StatusCode: 400}, false},
		{"clock skew", live, minio.ErrorResponse{Code: "RequestTimeTooSkewed", StatusCode: 403}, false},
		{"wrapped 503", live, fmt.Errorf("put: %w", minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}), true},
		{"connection refused", live, opErr, true},
		{"connection reset", live, fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"unexpected EOF", live, io.ErrUnexpectedEOF, true},
		{"short body", live, fmt.Errorf("%w: got 3", errShortBody), true},
		{"attempt deadline", live, context.DeadlineExceeded, true},
		{"caller gone", dead, opErr, false},
		{"caller gone, 503", dead, minio.ErrorResponse{Code: "SlowDown", StatusCode: 503}, false},
		{"other error", live, errors.New("invalid key"), false},
		{"nil", live, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryable(tt.ctx, tt.err); got != tt.want {
				t.Fatalf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestRetryWait(t *testing.T) {
	p := retryPolicy{attempts: 6, base: 100 * time.Millisecond, max: time.Second}
	for n, bound := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		bound *= time.Millisecond
		var maxSeen time.Duration
		distinct := map[time.Duration]bool{}
		for range 200 {
			w := p.wait(n)
			if w < 0 || w > bound {
				t.Fatalf("wait(%d) = %v, want within [0, %v]", n, w, bound)
			}
			maxSeen = max(maxSeen, w)
			distinct[w] = true
		}
		// Full jitter: the waits spread over the range.
		if maxSeen < bound/2 || len(distinct) < 50 {
			t.Fatalf("wait(%d): max %v over 200 draws, %d distinct values: not jittered over [0, %v]", n, maxSeen, len(distinct), bound)
		}
	}
	if w := p.wait(100); w > time.Second {
		t.Fatalf("wait(100) = %v: the cap does not hold for large attempt numbers", w)
	}
}

// TestSetupInstallsThisMinIO keeps .ci/setup and s3test on one version.
func TestSetupInstallsThisMinIO(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", ".ci", "setup"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "github.com/minio/minio@"+s3test.MinIOVersion) {
		t.Fatalf(".ci/setup does not install github.com/minio/minio@%s", s3test.MinIOVersion)
	}
}
