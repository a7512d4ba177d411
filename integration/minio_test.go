package integration

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/objfs/objfs/objstore/s3/s3test"
)

// startMinIO runs a MinIO server for the test (stopped by t.Cleanup, by
// PID, also on failure) and puts its credentials in the environment that
// the objfs processes inherit. Without the MinIO binary the test is
// skipped, or fails under CI=true.
func startMinIO(t *testing.T) *s3test.Server {
	t.Helper()
	requirePrereqs(t)
	srv := s3test.Start(t)
	srv.SetEnv(t)
	return srv
}

// bucketObjects lists the object names in bucket below prefix.
func bucketObjects(t *testing.T, srv *s3test.Server, bucket, prefix string) []string {
	t.Helper()
	var out []string
	for _, name := range srv.Objects(t, bucket) {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out
}

// closedLoopbackPort returns a loopback address nothing listens on.
func closedLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// removeBucket deletes bucket and everything in it behind objfs's back.
func removeBucket(t *testing.T, srv *s3test.Server, bucket string) {
	t.Helper()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.RemoveBucketWithOptions(ctx, bucket, minio.RemoveBucketOptions{ForceDelete: true}); err != nil {
		t.Fatalf("remove bucket %s: %v", bucket, err)
	}
}
