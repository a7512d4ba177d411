package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Badger is the embedded KV implementation.
type Badger struct {
	db         *badger.DB
	adviser    *adviser // nil when read-only
	spaceCheck func(freeing bool) error
}

// OpenBadger opens (creating if needed) the Badger database in dir. Badger
// takes an exclusive lock on the directory, so a second process opening the
// same volume fails here instead of corrupting it.
func OpenBadger(dir string, readOnly bool) (*Badger, error) {
	return openBadger(dir, readOnly, nil)
}

// valueThreshold: values this long or longer go to Badger's value log,
// shorter ones stay in its LSM tree (chunk tails are kept below it).
const valueThreshold = 1 << 10

// openBadger is OpenBadger with the options changed by tweak, when not nil
// (tests use tiny value log files to see them fill up and be collected).
func openBadger(dir string, readOnly bool, tweak func(badger.Options) badger.Options) (*Badger, error) {
	opts := badger.DefaultOptions(dir).
		// Commits reach Badger's write-ahead log (mmapped, so they survive
		// a crash of the process); fsync() and friends call Sync to make
		// them survive a crash of the machine.
		WithSyncWrites(false).
		WithReadOnly(readOnly).
		WithNumVersionsToKeep(1).
		WithMemTableSize(32 << 20).
		WithNumMemtables(3).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(256 << 20).
		WithBlockCacheSize(64 << 20).
		WithIndexCacheSize(32 << 20).
		WithNumCompactors(2).
		WithLogger(badgerLogger{})
	if tweak != nil {
		opts = tweak(opts)
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open metadata database %s: %w", dir, err)
	}
	b := &Badger{db: db}
	if !readOnly {
		b.adviser = startAdviser(dir)
	}
	return b, nil
}

// maxAttempts bounds conflict retries; each retry backs off a little more.
const maxAttempts = 64

// Update implements KV.
func (b *Badger) Update(ctx context.Context, fn func(Txn) error) error {
	if b.spaceCheck != nil {
		if err := b.spaceCheck(isFreeing(ctx)); err != nil {
			return err
		}
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.db.Update(func(t *badger.Txn) error { return fn(badgerTxn{t}) })
		switch {
		case err == nil:
			return nil
		case errors.Is(err, badger.ErrConflict):
			if attempt >= maxAttempts {
				return fmt.Errorf("transaction still conflicting after %d attempts: %w", attempt, err)
			}
			// Exponential backoff with jitter, capped: conflicts come
			// in bursts, and retrying in lock step prolongs them.
			ceiling := min(50*time.Microsecond<<min(attempt, 8), 10*time.Millisecond)
			time.Sleep(time.Duration(rand.Int64N(int64(ceiling))) + time.Microsecond)
		case errors.Is(err, badger.ErrTxnTooBig):
			return fmt.Errorf("%w: %v", ErrTxnTooBig, err)
		default:
			return err
		}
	}
}

// View implements KV.
func (b *Badger) View(ctx context.Context, fn func(Txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(func(t *badger.Txn) error { return fn(badgerTxn{t}) })
}

// gcDiscardRatio: a value log file is rewritten once at least this share
// of it is dead.
const gcDiscardRatio = 0.5

// CollectGarbage reclaims value log files that are mostly dead: values
// above the value threshold (a small file's inline data, a long slice
// list) go to the value log, and deleting or overwriting them leaves dead
// bytes there that only this rewrite frees. It rewrites one file at a
// time until none qualifies or ctx ends, and returns how many it rewrote.
// The file being written is never collected.
func (b *Badger) CollectGarbage(ctx context.Context) (int, error) {
	n := 0
	for ctx.Err() == nil {
		// A rewrite takes space before it frees any: it waits for
		// as much room as new data would.
		if b.spaceCheck != nil {
			if err := b.spaceCheck(false); err != nil {
				return n, err
			}
		}
		err := b.db.RunValueLogGC(gcDiscardRatio)
		switch {
		case err == nil:
			n++
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			// Nothing (more) to collect, or another collection runs.
			return n, nil
		default:
			return n, fmt.Errorf("collect value log garbage: %w", err)
		}
	}
	return n, ctx.Err()
}

// Sync implements KV.
func (b *Badger) Sync() error { return b.db.Sync() }

// Close implements KV.
func (b *Badger) Close() error {
	if b.adviser != nil {
		b.adviser.close()
	}
	return b.db.Close()
}

type badgerTxn struct{ t *badger.Txn }

func (t badgerTxn) Get(key []byte) ([]byte, error) {
	item, err := t.t.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func (t badgerTxn) Set(key, value []byte) error {
	if err := t.t.Set(key, value); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return fmt.Errorf("%w: %v", ErrTxnTooBig, err)
		}
		return err
	}
	return nil
}

func (t badgerTxn) Delete(key []byte) error {
	if err := t.t.Delete(key); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return fmt.Errorf("%w: %v", ErrTxnTooBig, err)
		}
		return err
	}
	return nil
}

func (t badgerTxn) Scan(prefix, start []byte, fn func(key, value []byte) (bool, error)) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = false
	it := t.t.NewIterator(opts)
	defer it.Close()
	seek := prefix
	if start != nil {
		seek = start
	}
	for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		more, err := fn(item.Key(), v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// badgerLogger routes Badger's chatter to slog, keeping only what matters.
type badgerLogger struct{}

func (badgerLogger) Errorf(f string, a ...any)   { slog.Error("badger: " + fmt.Sprintf(f, a...)) }
func (badgerLogger) Warningf(f string, a ...any) { slog.Warn("badger: " + fmt.Sprintf(f, a...)) }
func (badgerLogger) Infof(f string, a ...any)    { slog.Debug("badger: " + fmt.Sprintf(f, a...)) }
func (badgerLogger) Debugf(f string, a ...any)   {}

// SetSpaceCheck makes every write transaction ask check first, with
// freeing true for a change that frees or moves space (a deletion, a
// rename, a change of attributes, the release of blocks); an error refuses
// the transaction. It keeps Badger, whose files are memory-mapped and
// grown sparsely, from meeting a full disk (see cmd/objfs's space guard).
// Call it before the database is used.
func (b *Badger) SetSpaceCheck(check func(freeing bool) error) { b.spaceCheck = check }
