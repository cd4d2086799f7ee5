// Package keystest holds test doubles for the signing keys' store.
package keystest

import (
	"context"
	"sync"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/store"
)

// AfterCommitStore is a key store where, once armed (Arm), the next change
// is stored and then, before the keys are reloaded, the caller's context
// ends (an admin's client went away) or the first reload fails: the two
// ways a key change can be committed and not yet taken by the instance.
type AfterCommitStore struct {
	keys.Store
	mu       sync.Mutex
	armed    bool
	cancel   context.CancelFunc
	failRead bool
}

// Arm makes the next ApplySigningKeyChanges call cancel once it has
// stored the change (when cancel is not nil), and the first
// ListSigningKeys after it fail with store.ErrUnavailable (when failRead).
func (s *AfterCommitStore) Arm(cancel context.CancelFunc, failRead bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.cancel, s.failRead = true, cancel, failRead
}

// ApplySigningKeyChanges stores the change, then does what Arm asked.
func (s *AfterCommitStore) ApplySigningKeyChanges(ctx context.Context, updates, creates []store.SigningKey) error {
	if err := s.Store.ApplySigningKeyChanges(ctx, updates, creates); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.armed && s.cancel != nil {
		s.cancel()
	}
	s.armed = false
	return nil
}

// ListSigningKeys fails once after an armed change when Arm asked for it.
func (s *AfterCommitStore) ListSigningKeys(ctx context.Context) ([]store.SigningKey, error) {
	s.mu.Lock()
	fail := s.failRead && !s.armed
	if fail {
		s.failRead = false
	}
	s.mu.Unlock()
	if fail {
		return nil, store.ErrUnavailable
	}
	return s.Store.ListSigningKeys(ctx)
}
