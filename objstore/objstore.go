// Package objstore stores immutable blobs under flat string keys, behind one
// small interface that every backend (a local directory here, S3-compatible
// stores in objstore/s3) and every wrapper (replicated, staging, metered,
// faulty) implements.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// ErrNotFound is returned (wrapped) by Get when the object does not exist.
// Callers test with errors.Is.
var ErrNotFound = errors.New("object not found")

// Store is a flat namespace of immutable blobs.
type Store interface {
	// Put stores data under key. When it returns nil the object is durable
	// (it survives a crash of the process and of the machine). Overwriting an
	// existing key with the same bytes is safe and idempotent; concurrent
	// Puts of the same key are safe. Put does not keep data after it
	// returns: the caller may reuse the buffer.
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

// IntoGetter is implemented by stores that can read an object into a
// buffer their caller recycles, sparing a fresh allocation per read (for a
// cold stream of 4 MiB blocks, faulting in fresh memory cost as much as
// reading it). Wrappers forward it; see GetInto.
type IntoGetter interface {
	// GetInto returns the whole object, or an error wrapping ErrNotFound,
	// like Get. The result is buf[:size] when the object fits in buf and
	// the store reads it there; otherwise (too large, held in memory) it
	// is a slice of the store's own, which the caller must not modify.
	// Either way buf stays the caller's once GetInto returns.
	GetInto(ctx context.Context, key string, buf []byte) ([]byte, error)
}

// GetInto reads key into buf when s is an IntoGetter, else with s.Get.
func GetInto(ctx context.Context, s Store, key string, buf []byte) ([]byte, error) {
	if g, ok := s.(IntoGetter); ok && buf != nil {
		return g.GetInto(ctx, key, buf)
	}
	return s.Get(ctx, key)
}

// VerifyingGetter is implemented by stores that check what they read
// against what the key names (a replicated store must, to tell a good copy
// from a corrupt one), so that their caller need not check it again.
// Wrappers forward it; see GetVerified.
type VerifyingGetter interface {
	// GetVerified is GetInto that also reports whether the returned
	// bytes passed the store's check. A store reports false for what it
	// did not check (a wrapper's own copy, say).
	GetVerified(ctx context.Context, key string, buf []byte) (data []byte, verified bool, err error)
}

// GetVerified reads key into buf (see GetInto) and reports whether s checked
// the content (see VerifyingGetter); a store that cannot say did not.
func GetVerified(ctx context.Context, s Store, key string, buf []byte) ([]byte, bool, error) {
	if g, ok := s.(VerifyingGetter); ok {
		return g.GetVerified(ctx, key, buf)
	}
	data, err := GetInto(ctx, s, key, buf)
	return data, false, err
}

// MaxKeyLen is the longest key ValidKey accepts, in bytes.
const MaxKeyLen = 512

// Opener opens the store named by u, a URL of a scheme it was registered
// for. create is set by Create (`objfs format`); an opener decides what it
// means for its backend (an S3 store, for one, never creates its bucket).
// Errors must not quote credentials.
type Opener func(ctx context.Context, u *url.URL, create bool) (Store, error)

// openers holds the backends registered with Register, by URL scheme.
// Backends live in packages of their own that import this one (for Store
// and ErrNotFound), so this package cannot import them; each registers in
// its init function instead, and a program imports the backends it serves
// (cmd/objfs: a blank import of objstore/s3).
var (
	openersMu sync.RWMutex
	openers   = map[string]Opener{}
)

// Register makes Open and Create hand URLs of scheme to open. It fails for
// "file" (built in), an empty or non-lower-case scheme, and a scheme that
// is already registered.
func Register(scheme string, open Opener) error {
	if scheme == "" || scheme == "file" || strings.ToLower(scheme) != scheme || open == nil {
		return fmt.Errorf("objstore: cannot register store URL scheme %q", scheme)
	}
	openersMu.Lock()
	defer openersMu.Unlock()
	if _, dup := openers[scheme]; dup {
		return fmt.Errorf("objstore: store URL scheme %q is already registered", scheme)
	}
	openers[scheme] = open
	return nil
}

// opener returns the registered opener of scheme, if any.
func opener(scheme string) (Opener, bool) {
	openersMu.RLock()
	defer openersMu.RUnlock()
	o, ok := openers[scheme]
	return o, ok
}

// supportedSchemes lists the schemes Open accepts, for errors about others:
// "file" and the registered ones, sorted.
func supportedSchemes() string {
	openersMu.RLock()
	defer openersMu.RUnlock()
	schemes := []string{"file"}
	for s := range openers {
		schemes = append(schemes, s)
	}
	slices.Sort(schemes)
	return strings.Join(schemes, ", ")
}

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
// directory store, which must already exist (see Create); other schemes go
// to the backend registered for them (see Register), e.g.
// "s3://bucket/prefix?endpoint=host:port" once objstore/s3 is imported.
func Open(ctx context.Context, rawURL string) (Store, error) {
	return open(ctx, rawURL, false)
}

// Create is like Open but first creates the directory of a file:// store
// (used by `objfs format`). Registered backends get create set and decide
// what it means: an s3:// store never creates its bucket.
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
		return nil, fmt.Errorf("objstore: store URL %q has no scheme (supported: %s; e.g. file:///abs/dir)", redact(u), supportedSchemes())
	}
	if o, ok := opener(u.Scheme); ok {
		return o(ctx, u, create)
	}
	return nil, fmt.Errorf("objstore: unsupported store URL scheme %q in %q (supported: %s)", u.Scheme, redact(u), supportedSchemes())
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
