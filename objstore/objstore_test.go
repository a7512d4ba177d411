package objstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidKey(t *testing.T) {
	tests := []struct {
		key  string
		want bool
	}{
		{"a", true},
		{"blocks/ab/cd/abcdef0123456789", true},
		{"a.b_c-d/e", true},
		{"..a/b..", true},
		{strings.Repeat("a", MaxKeyLen), true},
		{strings.Repeat("a", MaxKeyLen+1), false},
		{strings.Repeat("a", 600), false},
		{"", false},
		{"../x", false},
		{"a/..", false},
		{"/abs", false},
		{"a/", false},
		{"a//b", false},
		{"a/./b", false},
		{".", false},
		{"A", false},
		{"a b", false},
		{"a\\b", false},
		{"a\x00b", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := ValidKey(tt.key); got != tt.want {
			t.Errorf("ValidKey(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

func TestOpenCreate(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	existing := filepath.Join(base, "existing")
	if err := os.Mkdir(existing, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		url     string
		create  bool
		wantErr string // substring of the error; "" means success
	}{
		{"open existing", "file://" + existing, false, ""},
		{"open localhost", "file://localhost" + existing, false, ""},
		{"open missing", "file://" + filepath.Join(base, "missing"), false, "no such file"},
		{"create new nested", "file://" + filepath.Join(base, "new", "store"), true, ""},
		{"create existing", "file://" + existing, true, ""},
		{"relative path", "file:rel/dir", false, "absolute"},
		{"host", "file://server/dir", false, "host \"server\""},
		{"query", "file://" + existing + "?x=1", false, "query"},
		{"fragment", "file://" + existing + "#frag", false, "fragment"},
		{"no path", "file://", false, "absolute"},
		{"user info", "file://user:secret@localhost/dir", false, "user information"},
		{"unknown scheme", "s3://bucket/x", false, "unsupported store URL scheme \"s3\""},
		{"no scheme", "/abs/dir", false, "no scheme"},
		{"unparsable", "file://%zz", false, "invalid store URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			open := Open
			if tt.create {
				open = Create
			}
			s, err := open(ctx, tt.url)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("open(%q): %v", tt.url, err)
				}
				defer s.Close()
				if err := s.Put(ctx, "probe", []byte("x")); err != nil {
					t.Fatalf("Put on opened store: %v", err)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("open(%q) succeeded, want error containing %q", tt.url, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("open(%q) error %q does not contain %q", tt.url, err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("error leaks credentials: %v", err)
			}
		})
	}
}

func TestOpenUnknownSchemeHidesCredentials(t *testing.T) {
	_, err := Open(context.Background(), "s3://AKIAKEY:topsecret@host/bucket")
	if err == nil {
		t.Fatal("Open succeeded")
	}
	if strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "AKIAKEY") {
		t.Fatalf("error leaks credentials: %v", err)
	}
	if !strings.Contains(err.Error(), "supported: file") {
		t.Fatalf("error does not list supported schemes: %v", err)
	}
}
