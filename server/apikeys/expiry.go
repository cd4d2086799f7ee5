package apikeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/store"
)

// Expiry notices: a week before a key expires, the people who use it are
// told once (design brief A, as GitHub and GitLab do), so that software
// does not stop on the day.
const (
	// NoticeAhead is how long before its expiry a key is announced.
	NoticeAhead = 7 * 24 * time.Hour
	// NoticeEvery is how often each instance looks for keys to announce.
	NoticeEvery = time.Hour
	// noticeBatch bounds the keys one round claims.
	noticeBatch = 100
	// noticeTimeout bounds the delivery of one notice.
	noticeTimeout = 30 * time.Second
)

// ExpiringKeys is what the notices need of the store (*sqlstore.Store).
type ExpiringKeys interface {
	ClaimExpiringAPIKeys(ctx context.Context, now, before time.Time, limit int) ([]store.ExpiringAPIKey, error)
	ReleaseExpiringAPIKey(ctx context.Context, id string) error
}

// NoticeDeps are what ExpiryNotices works with.
type NoticeDeps struct {
	Keys      ExpiringKeys
	Mail      mail.Sender
	Templates *mail.Templates
	Audit     Auditor
	// ProductName is PORTCULLIS_PRODUCT_NAME.
	ProductName string
	Logger      *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// ExpiryNotices emails, once per key, the coming expiry of every live key
// that expires within NoticeAhead: to its owner, or for a machine user to
// the person who created the key. Any number of instances may run it: the
// store hands each key to one of them. A notice that cannot be sent is
// released for the next round; one without an address is recorded and
// dropped. It never sends or logs a key, only its name and hint.
type ExpiryNotices struct {
	d NoticeDeps
}

// NewExpiryNotices checks d.
func NewExpiryNotices(d NoticeDeps) (*ExpiryNotices, error) {
	if d.Keys == nil || d.Mail == nil || d.Templates == nil || d.Audit == nil {
		return nil, errors.New("apikeys: expiry notices need Keys, Mail, Templates and Audit")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &ExpiryNotices{d: d}, nil
}

// Run sends a round of notices at once and then every NoticeEvery, until
// ctx ends.
func (n *ExpiryNotices) Run(ctx context.Context) {
	t := time.NewTicker(NoticeEvery)
	defer t.Stop()
	for {
		if _, err := n.RunOnce(ctx); err != nil && ctx.Err() == nil {
			n.d.Logger.Warn("API key expiry notices: a round failed; the next one retries", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RunOnce claims the keys due for a notice, in batches, and sends one
// notice each; it returns how many were sent.
func (n *ExpiryNotices) RunOnce(ctx context.Context) (int, error) {
	sent := 0
	for {
		now := n.d.Now()
		due, err := n.d.Keys.ClaimExpiringAPIKeys(ctx, now, now.Add(NoticeAhead), noticeBatch)
		if err != nil {
			return sent, fmt.Errorf("claim API keys about to expire: %w", err)
		}
		var failed []error
		for _, e := range due {
			ok, err := n.notify(ctx, e)
			if ok {
				sent++
			}
			if err != nil {
				failed = append(failed, err)
			}
		}
		if len(failed) > 0 {
			return sent, errors.Join(failed...)
		}
		if len(due) < noticeBatch {
			return sent, nil
		}
	}
}

// notify sends e's notice and records api_key.expiry_notified (details:
// to "owner" or "creator", or the reason it was not sent).
func (n *ExpiryNotices) notify(ctx context.Context, e store.ExpiringAPIKey) (bool, error) {
	k := e.Key
	details := map[string]string{"key_id": k.ID, "expires_at": k.ExpiresAt.UTC().Format(time.RFC3339)}
	record := func(outcome store.Outcome) {
		n.d.Audit.Record(ctx, store.AuditEvent{Action: "api_key.expiry_notified", Outcome: outcome,
			TargetID: k.OwnerID, Details: details})
	}
	if e.Notify == "" {
		details["reason"] = "no_address"
		record(store.OutcomeFailure)
		return false, nil
	}
	data := mail.APIKeyExpiryData{ProductName: n.d.ProductName, To: e.Notify, KeyName: k.Name, KeyHint: k.Hint,
		ExpiresAt: k.ExpiresAt}
	details["to"] = "owner"
	if !e.ToOwner {
		data.Owner, details["to"] = "the machine user "+e.OwnerName, "creator"
	}
	msg, err := n.d.Templates.APIKeyExpiring(data)
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, noticeTimeout)
		err = n.d.Mail.Send(sctx, msg)
		cancel()
	}
	if err != nil {
		if rerr := n.d.Keys.ReleaseExpiringAPIKey(context.WithoutCancel(ctx), k.ID); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return false, fmt.Errorf("API key %s: send its expiry notice: %w", k.ID, err)
	}
	record(store.OutcomeSuccess)
	return true, nil
}
