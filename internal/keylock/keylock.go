package keylock

import "sync"

// Locks is a mutex per key. The zero value is ready to use; safe for
// concurrent use.
type Locks struct {
	mu    sync.Mutex
	locks map[string]*entry
}

// entry is one key's mutex and how many hold or wait for it (under
// Locks.mu).
type entry struct {
	mu sync.Mutex
	n  int
}

// Lock takes key's mutex, waiting for its holder, and returns its
// unlock (call it once).
func (l *Locks) Lock(key string) (unlock func()) {
	l.mu.Lock()
	e := l.locks[key]
	if e == nil {
		if l.locks == nil {
			l.locks = map[string]*entry{}
		}
		e = &entry{}
		l.locks[key] = e
	}
	e.n++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.n--; e.n == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
}

// Len is how many keys are held or waited for now.
func (l *Locks) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.locks)
}
