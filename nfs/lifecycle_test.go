package nfs

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestServeStopsEverything checks that canceling Serve ends every goroutine
// it started, including go-nfs's, with clients still connected.
func TestServeStopsEverything(t *testing.T) {
	f, _ := newTestVolume(t).open(t)
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	addr, stop := startServer(t, f, Options{Squash: SquashNone})
	for range 5 {
		w := dialWire(t, addr)
		root := w.mountRoot()
		w.getattr(root)
		if st, _, err := w.callRaw(progNFS, 3, 0, nil); err != nil || st != acceptSuccess {
			t.Fatalf("NULL (served by go-nfs): %d %v", st, err)
		}
	}
	stop()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left running after Serve returned, %d before:\n%s",
				runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeReportsListenerFailure: a listener that fails on its own (not a
// cancel) ends Serve with an error.
func TestServeReportsListenerFailure(t *testing.T) {
	f, _ := newTestVolume(t).open(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(context.Background(), f, l, Options{Logger: testLog()}) }()
	time.Sleep(50 * time.Millisecond)
	_ = l.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Serve returned nil after its listener failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its listener failed")
	}
}
