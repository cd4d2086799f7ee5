package apikeys

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/mail"
	"github.com/portcullis-auth/portcullis/store"
)

// dueKeys hands out its keys to the first claim (asserting the window) and
// records releases.
type dueKeys struct {
	t        *testing.T
	now      time.Time
	due      []store.ExpiringAPIKey
	released []string
}

func (d *dueKeys) ClaimExpiringAPIKeys(_ context.Context, now, before time.Time, limit int) ([]store.ExpiringAPIKey, error) {
	if !now.Equal(d.now) || !before.Equal(d.now.Add(NoticeAhead)) || limit <= 0 {
		d.t.Errorf("claim window %s..%s limit %d", now, before, limit)
	}
	out := d.due
	d.due = nil
	return out, nil
}

func (d *dueKeys) ReleaseExpiringAPIKey(_ context.Context, id string) error {
	d.released = append(d.released, id)
	return nil
}

// outbox keeps what was sent, or fails every send with err.
type outbox struct {
	sent []mail.Message
	err  error
}

func (o *outbox) Send(_ context.Context, msg mail.Message) error {
	if o.err != nil {
		return o.err
	}
	o.sent = append(o.sent, msg)
	return nil
}

// TestExpiryNotices: one notice per claimed key, to the owner or, for a
// machine user's key, to its creator naming the machine user; a key with
// no address is audited as not notified; a notice that cannot be sent is
// released for the next round and reported; no notice holds more of the
// key than its hint.
func TestExpiryNotices(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	key := store.APIKey{ID: "apk_1", OwnerID: "usr_ann", Name: "deploy", Hint: "pcak_abc...wxyz", ExpiresAt: now.Add(72 * time.Hour)}
	botKey := store.APIKey{ID: "apk_2", OwnerID: "usr_bot", Name: "ci", Hint: "pcak_def...wxyz", ExpiresAt: now.Add(48 * time.Hour)}
	cases := []struct {
		name     string
		due      store.ExpiringAPIKey
		sendErr  error
		sent     int
		want     string // in the text of the one notice sent
		outcome  store.Outcome
		to       string // the audit event's details.to or reason
		released bool
		err      bool
	}{
		{name: "ok/to the owner", due: store.ExpiringAPIKey{Key: key, OwnerName: "Ann", ToOwner: true, Notify: "ann@example.com"},
			sent: 1, want: `Your API key "deploy" (pcak_abc...wxyz) expires on Tuesday 8 December 2026, 12:00 UTC`,
			outcome: store.OutcomeSuccess, to: "owner"},
		{name: "ok/to the creator of a machine user's key", due: store.ExpiringAPIKey{Key: botKey, OwnerName: "ci-bot", Notify: "adm@example.com"},
			sent: 1, want: `that you created for the machine user ci-bot`, outcome: store.OutcomeSuccess, to: "creator"},
		{name: "fail/no address", due: store.ExpiringAPIKey{Key: botKey, OwnerName: "ci-bot"}, outcome: store.OutcomeFailure, to: "no_address"},
		{name: "fail/send fails: released", due: store.ExpiringAPIKey{Key: key, ToOwner: true, Notify: "ann@example.com"},
			sendErr: errors.New("451 try later"), released: true, err: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmpl, err := mail.NewTemplates()
			if err != nil {
				t.Fatal(err)
			}
			keys := &dueKeys{t: t, now: now, due: []store.ExpiringAPIKey{tc.due}}
			box, audit := &outbox{err: tc.sendErr}, &fakeAudit{}
			n, err := NewExpiryNotices(NoticeDeps{Keys: keys, Mail: box, Templates: tmpl, Audit: audit, ProductName: "Acme",
				Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			sent, err := n.RunOnce(context.Background())
			if (err != nil) != tc.err || sent != tc.sent || len(box.sent) != tc.sent {
				t.Fatalf("RunOnce = %d, %v; %d sent", sent, err, len(box.sent))
			}
			if tc.sent == 1 {
				msg := box.sent[0]
				if msg.To != tc.due.Notify || !strings.Contains(msg.Text, tc.want) || !strings.Contains(msg.Subject, "Acme") {
					t.Fatalf("notice to %s:\n%s", msg.To, msg.Text)
				}
			}
			if got := len(keys.released) == 1 && keys.released[0] == tc.due.Key.ID; got != tc.released {
				t.Fatalf("released %v", keys.released)
			}
			if tc.outcome == "" {
				if len(audit.events) != 0 {
					t.Fatalf("audit %+v", audit.events)
				}
				return
			}
			if len(audit.events) != 1 {
				t.Fatalf("audit %+v", audit.events)
			}
			ev := audit.events[0]
			if ev.Action != "api_key.expiry_notified" || ev.Outcome != tc.outcome || ev.TargetID != tc.due.Key.OwnerID ||
				ev.Details["key_id"] != tc.due.Key.ID || (ev.Details["to"] != tc.to && ev.Details["reason"] != tc.to) {
				t.Fatalf("audit event %+v", ev)
			}
		})
	}
}
