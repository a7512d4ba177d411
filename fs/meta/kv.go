package meta

import (
	"context"
	"errors"
)

// ErrKeyNotFound is returned by Txn.Get for a missing key.
var ErrKeyNotFound = errors.New("key not found")

// ErrTxnTooBig is returned when one transaction holds more changes than the
// store can commit atomically. Callers fail the operation cleanly instead of
// splitting it: a split namespace change could be seen half done.
var ErrTxnTooBig = errors.New("transaction too big")

// KV is the narrow transactional key-value interface the metadata layer is
// written against. Badger implements it; a distributed transactional store
// (TiKV, FoundationDB) can take its place without touching anything above.
type KV interface {
	// Update runs fn in a read-write, serializable transaction and commits
	// it. On a conflict with a concurrent transaction fn is run again on a
	// fresh transaction, so fn must have no side effects outside txn.
	Update(ctx context.Context, fn func(Txn) error) error
	// View runs fn in a read-only snapshot transaction.
	View(ctx context.Context, fn func(Txn) error) error
	// Sync makes every committed transaction durable against power loss.
	Sync() error
	Close() error
}

// Txn is one transaction. Values returned by Get and Scan are owned by the
// caller only until the transaction ends; copy what must outlive it.
type Txn interface {
	Get(key []byte) ([]byte, error)
	Set(key, value []byte) error
	Delete(key []byte) error
	// Scan calls fn for each key with the given prefix that is >= start
	// (start nil: from the beginning of the prefix), in key order, until fn
	// returns false or an error.
	Scan(prefix, start []byte, fn func(key, value []byte) (more bool, err error)) error
}
