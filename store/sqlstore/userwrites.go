package sqlstore

import (
	"context"
	"slices"

	"gorm.io/gorm"
)

// UserWriteHooks hear of every write that can change what GetUser returns
// (the user's row or global roles), so that copies of users kept in memory
// (store/usercache over the Redis token state) are not used across one.
// The one write they do not hear of is RecordLogin's: the last-login time
// is the one field those copies do not serve.
// BeginUserWrite runs before the write commits and EndUserWrite after the
// transaction ends, committed or not.
//
// Neither can stop a write: the database is the truth, and a password
// reset or a deactivation must land even while Redis is unreachable (the
// revocations they cause have their own durable path). A beginning that
// fails is followed by the end all the same, which changes the user's
// version once Redis answers; only when both fail can a copy outlive the
// write, and then for at most usercache's MaxAge.
type UserWriteHooks interface {
	BeginUserWrite(ctx context.Context, userID string) error
	EndUserWrite(ctx context.Context, userID string) error
}

type userWriteHooksBox struct{ h UserWriteHooks }

// SetUserWriteHooks makes every later user write call h (nil: none, the
// default). Call it before the store serves requests.
func (s *Store) SetUserWriteHooks(h UserWriteHooks) {
	if h == nil {
		s.userWrites.Store(nil)
		return
	}
	s.userWrites.Store(&userWriteHooksBox{h})
}

// userTx is tx for a write of users: fn calls changing(id) before it
// writes anything GetUser(id) reads. The first call per user begins the
// write with the hooks (once, however often the transaction is retried);
// every user announced is ended after the transaction, whatever its
// outcome. It is where user writes meet the hooks: every method that
// writes users or their global roles runs in it, but RecordLogin
// (TestUserWritesAnnounced).
func (s *Store) userTx(ctx context.Context, fn func(tx *gorm.DB, changing func(userID string)) error) error {
	box := s.userWrites.Load()
	var announced []string
	if box != nil {
		defer func() {
			// The end must reach Redis even when the caller has gone.
			end := context.WithoutCancel(ctx)
			for _, id := range announced {
				_ = box.h.EndUserWrite(end, id)
			}
		}()
	}
	changing := func(userID string) {
		if box == nil || slices.Contains(announced, userID) {
			return
		}
		_ = box.h.BeginUserWrite(ctx, userID) // see UserWriteHooks: the end follows even when this fails
		announced = append(announced, userID)
	}
	return s.tx(ctx, func(tx *gorm.DB) error { return fn(tx, changing) })
}
