package replicated

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

type listEntry struct {
	key  string
	size int64
}

// listBuffer is how many keys each store's listing may run ahead of the
// merge; it bounds memory per store.
const listBuffer = 64

// errListStopped ends a store's listing once the merge needs no more.
var errListStopped = errors.New("listing stopped")

// List merges the stores' listings, each in lexical order, into one lexical,
// deduplicated stream. Each store lists in its own goroutine, at most
// listBuffer keys ahead, so memory does not grow with the number of keys. A
// key's size is taken from the first store (in list order) that has it. If
// any store cannot list, List fails: a caller such as gc must not take a
// partial listing for the whole.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chans := make([]chan listEntry, len(s.stores))
	errs := make([]error, len(s.stores))
	var wg sync.WaitGroup
	for i, st := range s.stores {
		ch := make(chan listEntry, listBuffer)
		chans[i] = ch
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(ch)
			err := st.List(lctx, prefix, func(key string, size int64) error {
				select {
				case ch <- listEntry{key, size}:
					return nil
				case <-lctx.Done():
					return errListStopped
				}
			})
			if err != nil && !errors.Is(err, errListStopped) {
				errs[i] = fmt.Errorf("list %s: %w", st, err)
			}
		}()
	}
	// Stopping the listings before waiting for them: an early return from
	// the merge would otherwise leave them blocked on full channels.
	defer wg.Wait()
	defer cancel()

	heads := make([]*listEntry, len(chans))
	// advance moves store i to its next key. A store whose listing failed
	// stops the merge at once, so fn never sees a stream with a hole in it
	// without List returning an error right after.
	advance := func(i int) error {
		e, ok := <-chans[i]
		if ok {
			heads[i] = &e
			return nil
		}
		heads[i] = nil
		// errs[i] is written before the channel is closed.
		if errs[i] != nil {
			return fmt.Errorf("replicated: list %q: %w", prefix, errs[i])
		}
		return nil
	}
	for i := range chans {
		if err := advance(i); err != nil {
			return err
		}
	}
	for {
		// The number of stores is small, so a linear scan for the smallest
		// head is simpler than a heap and as fast.
		low := -1
		for i, h := range heads {
			if h != nil && (low < 0 || h.key < heads[low].key) {
				low = i
			}
		}
		if low < 0 {
			break
		}
		cur := *heads[low]
		for i, h := range heads {
			if h != nil && h.key == cur.key {
				if err := advance(i); err != nil {
					return err
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("replicated: list %q: %w", prefix, err)
		}
		if err := fn(cur.key, cur.size); err != nil {
			return err
		}
	}
	cancel()
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("replicated: list %q: %w", prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replicated: list %q: %w", prefix, err)
	}
	return nil
}
