package authorize

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

type fakeClients map[string]store.Client

func (f fakeClients) GetClient(_ context.Context, id string) (store.Client, error) {
	if id == "broken" {
		return store.Client{}, store.ErrUnavailable
	}
	c, ok := f[id]
	if !ok {
		return store.Client{}, store.ErrNotFound
	}
	return c, nil
}

// fakeHints accepts "hint-<sub>" and refuses anything else.
type fakeHints struct{}

func (fakeHints) VerifyIDTokenHint(raw string) (string, error) {
	if len(raw) > 5 && raw[:5] == "hint-" {
		return raw[5:], nil
	}
	return "", errors.New("not ours")
}

type fakePerms []string

func (p fakePerms) AllPermissions() []string { return append([]string(nil), p...) }

// fakeOnce is an in-memory store.SingleUse; one mutex makes TakeOnce atomic.
type fakeOnce struct {
	mu   sync.Mutex
	recs map[string]*onceRec
}

type onceRec struct {
	val   []byte
	exp   time.Time
	taken bool
}

func newFakeOnce() *fakeOnce { return &fakeOnce{recs: map[string]*onceRec{}} }

func (f *fakeOnce) PutOnce(_ context.Context, kind string, key, val []byte, exp time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := kind + "/" + string(key)
	if _, ok := f.recs[k]; ok {
		return store.ErrAlreadyExists
	}
	f.recs[k] = &onceRec{val: bytes.Clone(val), exp: exp}
	return nil
}

func (f *fakeOnce) get(kind string, key []byte, now time.Time, take bool) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.recs[kind+"/"+string(key)]
	if !ok || !now.Before(r.exp) {
		return nil, store.ErrNotFound
	}
	if r.taken {
		return bytes.Clone(r.val), store.ErrTokenUsed
	}
	if take {
		r.taken = true
	}
	return bytes.Clone(r.val), nil
}

func (f *fakeOnce) TakeOnce(_ context.Context, kind string, key []byte, now time.Time) ([]byte, error) {
	return f.get(kind, key, now, true)
}

func (f *fakeOnce) PeekOnce(_ context.Context, kind string, key []byte, now time.Time) ([]byte, error) {
	return f.get(kind, key, now, false)
}
