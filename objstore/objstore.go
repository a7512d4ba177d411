// Package objstore stores immutable blobs under flat string keys, behind one
// small interface that every backend (a local directory, later S3 and
// replicated stores) implements.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotFound is returned (wrapped) by Get when the object does not exist.
// Callers test with errors.Is.
var ErrNotFound = errors.New("object not found")

// Store is a flat namespace of immutable blobs.
type Store interface {
	// Put stores data under key. When it returns nil the object is durable
	// (it survives a crash of the process and of the machine). Overwriting an
	// existing key with the same bytes is safe and idempotent; concurrent
	// Puts of the same key are safe.
	Put(ctx context.Context, key string, data []byte) error
	// Get returns the whole object, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every object whose key starts with prefix, in
	// lexical key order, streaming: memory does not grow with the number of
	// objects. If fn returns an error, List stops and returns it.
	List(ctx context.Context, prefix string, fn func(key string, size int64) error) error
	// String describes the store (its URL, never credentials).
	String() string
	Close() error
}

// MaxKeyLen is the longest key ValidKey accepts, in bytes.
const MaxKeyLen = 512

// supportedSchemes is listed in errors about unknown URL schemes.
const supportedSchemes = "file"

// ValidKey reports whether key is acceptable: non-empty, at most MaxKeyLen
// bytes, made only of [a-z0-9._/-], no leading '/', no empty path element and
// no "." or ".." element. The rules keep every key a safe relative path on any
// backend, so a key can never name something outside its store.
func ValidKey(key string) bool {
	if key == "" || len(key) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		ok := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '/' || c == '-'
		if !ok {
			return false
		}
	}
	// Splitting also catches a leading or trailing '/' and "a//b": each
	// yields an empty element.
	for elem := range strings.SplitSeq(key, "/") {
		if elem == "" || elem == "." || elem == ".." {
			return false
		}
	}
	return true
}

// Open opens the existing store named by rawURL. "file:///abs/dir" is a local
// directory store, which must already exist (see Create).
func Open(ctx context.Context, rawURL string) (Store, error) {
	return open(ctx, rawURL, false)
}

// Create is like Open but first creates the directory of a file:// store
// (used by `objfs format`).
func Create(ctx context.Context, rawURL string) (Store, error) {
	return open(ctx, rawURL, true)
}

func open(ctx context.Context, rawURL string, create bool) (Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("objstore: open: %w", err)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse quotes the whole input in its error, which could hold
		// credentials, so only the parse problem is reported.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("objstore: invalid store URL: %w", err)
	}
	switch u.Scheme {
	case "file":
		root, err := fileURLPath(u)
		if err != nil {
			return nil, err
		}
		if create {
			if err := createDir(root); err != nil {
				return nil, err
			}
		}
		return NewDir(root)
	case "":
		return nil, fmt.Errorf("objstore: store URL %q has no scheme (supported: %s; e.g. file:///abs/dir)", redact(u), supportedSchemes)
	default:
		return nil, fmt.Errorf("objstore: unsupported store URL scheme %q in %q (supported: %s)", u.Scheme, redact(u), supportedSchemes)
	}
}

// redact returns u without its user information, so that neither a user
// name (often an access key id) nor a password ends up in an error message.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// fileURLPath returns the absolute directory named by a file:// URL. Only the
// plain "file:///abs/path" form is accepted, so that a typo never silently
// points the store somewhere unexpected.
func fileURLPath(u *url.URL) (string, error) {
	switch {
	case u.Opaque != "":
		return "", fmt.Errorf("objstore: file URL %q: path must be absolute, as in file:///abs/dir", redact(u))
	case u.User != nil:
		return "", fmt.Errorf("objstore: file URL %q: user information is not allowed", redact(u))
	case u.Host != "" && u.Host != "localhost":
		return "", fmt.Errorf("objstore: file URL %q: host %q is not allowed (use file:///abs/dir for a local directory)", redact(u), u.Host)
	case u.RawQuery != "" || u.ForceQuery:
		return "", fmt.Errorf("objstore: file URL %q: query strings are not allowed", redact(u))
	case u.Fragment != "":
		return "", fmt.Errorf("objstore: file URL %q: fragments are not allowed", redact(u))
	case u.Path == "" || !filepath.IsAbs(u.Path):
		return "", fmt.Errorf("objstore: file URL %q: path must be absolute, as in file:///abs/dir", redact(u))
	}
	return filepath.Clean(u.Path), nil
}

// createDir creates root (and missing parents) and makes the new directory
// entries durable, because `objfs format` is followed by writes that assume the
// store exists after a crash.
func createDir(root string) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("objstore: create store directory: %w", err)
	}
	if err := syncDir(root); err != nil {
		return fmt.Errorf("objstore: create store directory: %w", err)
	}
	if err := syncDir(filepath.Dir(root)); err != nil {
		return fmt.Errorf("objstore: create store directory: %w", err)
	}
	return nil
}
