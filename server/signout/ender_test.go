package signout_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/signout"
	"github.com/portcullis-auth/portcullis/store"
)

type recorder struct {
	calls      []string
	ended      []string
	revoked    []string
	queued     []store.BackchannelLogout
	events     []store.AuditEvent
	endErr     error
	grantsErr  error
	queueErr   error
	clientsErr error
	clients    map[string]store.Client
	read       []store.SessionGrant // what the session held when the Ender read it
	readErr    error
	final      []store.SessionGrant   // what the record held when it ended
	listed     []store.BrowserSession // the user's live sessions (EndUser)
	listErr    error
	cutErr     error
	cut        []string // users whose cut-off was written
}

func (r *recorder) ListBrowserSessions(_ context.Context, _ string, _ time.Time) ([]store.BrowserSession, error) {
	r.calls = append(r.calls, "list")
	return r.listed, r.listErr
}

func (r *recorder) EndUserSessions(_ context.Context, userID string) error {
	r.calls = append(r.calls, "cutoff")
	if r.cutErr != nil {
		return r.cutErr
	}
	r.cut = append(r.cut, userID)
	return nil
}

func (r *recorder) BrowserSessionGrants(_ context.Context, _, _ string) ([]store.SessionGrant, error) {
	r.calls = append(r.calls, "read")
	return r.read, r.readErr
}

func (r *recorder) EndBrowserSessionGrants(_ context.Context, id string, _ time.Time) ([]store.SessionGrant, error) {
	r.calls = append(r.calls, "end")
	if r.endErr != nil {
		return nil, r.endErr
	}
	r.ended = append(r.ended, id)
	return r.final, nil
}

func (r *recorder) EndGrants(_ context.Context, sids []string) error {
	r.calls = append(r.calls, "grants")
	if r.grantsErr != nil {
		return r.grantsErr
	}
	r.revoked = append(r.revoked, sids...)
	return nil
}

func (r *recorder) GetClient(_ context.Context, id string) (store.Client, error) {
	if r.clientsErr != nil {
		return store.Client{}, r.clientsErr
	}
	c, ok := r.clients[id]
	if !ok {
		return store.Client{}, store.ErrNotFound
	}
	return c, nil
}

func (r *recorder) Enqueue(_ context.Context, ds []store.BackchannelLogout) error {
	r.calls = append(r.calls, "queue")
	if r.queueErr != nil {
		return r.queueErr
	}
	r.queued = append(r.queued, ds...)
	return nil
}

func (r *recorder) Record(_ context.Context, e store.AuditEvent) {
	r.calls = append(r.calls, "audit")
	r.events = append(r.events, e)
}

func TestEnderEnd(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	bs := store.BrowserSession{ID: "bs1", UserID: "u1", Grants: []store.SessionGrant{
		{SID: "s1", ClientID: "web"},
		{SID: "s2", ClientID: "mobile.app", Offline: true},
		{SID: "s3", ClientID: "web"},
		{SID: "s4", ClientID: "gone"},
	}}
	clients := map[string]store.Client{
		"web":        {ID: "web", BackchannelLogoutURI: "https://web.example/bcl"},
		"mobile.app": {ID: "mobile.app"},
	}
	boom := errors.New("boom")
	tests := []struct {
		name        string
		setup       func(*recorder)
		wantErr     error
		wantRevoked []string
		wantQueued  []string // sids
		wantCalls   []string
	}{
		{name: "non-offline grants, back-channel for clients with a URI, then the record",
			wantRevoked: []string{"s1", "s3", "s4"}, wantQueued: []string{"s1", "s3"},
			wantCalls: []string{"read", "grants", "queue", "end", "audit"}},
		{name: "reading the grants fails: nothing is done", setup: func(r *recorder) { r.readErr = boom },
			wantErr: boom, wantCalls: []string{"read"}},
		{name: "the session ended meanwhile: nothing to end but the record", setup: func(r *recorder) {
			r.read, r.readErr, r.final = nil, store.ErrNotFound, nil
		}, wantCalls: []string{"read", "end", "audit"}},
		{name: "grants failing: the session stays for a retry", setup: func(r *recorder) { r.grantsErr = boom },
			wantErr: boom, wantCalls: []string{"read", "grants"}},
		{name: "clients unreadable: nothing queued, the session stays", setup: func(r *recorder) { r.clientsErr = boom },
			wantErr: boom, wantRevoked: []string{"s1", "s3", "s4"}, wantCalls: []string{"read", "grants"}},
		{name: "queue failing: the session stays", setup: func(r *recorder) { r.queueErr = boom },
			wantErr: boom, wantRevoked: []string{"s1", "s3", "s4"}, wantCalls: []string{"read", "grants", "queue"}},
		{name: "the record failing: no audit", setup: func(r *recorder) { r.endErr = boom },
			wantErr: boom, wantRevoked: []string{"s1", "s3", "s4"}, wantQueued: []string{"s1", "s3"},
			wantCalls: []string{"read", "grants", "queue", "end"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &recorder{clients: clients, read: bs.Grants, final: bs.Grants}
			if tc.setup != nil {
				tc.setup(r)
			}
			e := &signout.Ender{Sessions: r, Grants: r, Clients: r, Backchannel: r, Audit: r, Now: func() time.Time { return now }}
			err := e.End(context.Background(), bs, signout.Reason{Why: signout.WhyLogout})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("End = %v, want %v", err, tc.wantErr)
			}
			wantEnded(t, r, now, tc.wantCalls, tc.wantRevoked, tc.wantQueued)
			if tc.wantErr == nil {
				if len(r.events) != 1 || r.events[0].Action != "session.ended" || r.events[0].Details["reason"] != "logout" ||
					r.events[0].Details["sid"] != "bs1" || r.events[0].ActorID != "u1" {
					t.Fatalf("audit %+v", r.events)
				}
				if len(r.ended) != 1 || r.ended[0] != "bs1" {
					t.Fatalf("ended %v", r.ended)
				}
			}
		})
	}
}

// TestEnderEndsLateGrants: a grant recorded in another tab after the
// session was read (the record's end returns it) is ended too, after the
// record, with its back-channel logout.
func TestEnderEndsLateGrants(t *testing.T) {
	t.Parallel()
	bs := store.BrowserSession{ID: "bs1", UserID: "u1", Grants: []store.SessionGrant{{SID: "s1", ClientID: "web"}}}
	r := &recorder{clients: map[string]store.Client{"web": {ID: "web", BackchannelLogoutURI: "https://web.example/bcl"}},
		read: bs.Grants, final: append(slices.Clone(bs.Grants), store.SessionGrant{SID: "late", ClientID: "web"},
			store.SessionGrant{SID: "late-offline", ClientID: "web", Offline: true})}
	e := &signout.Ender{Sessions: r, Grants: r, Clients: r, Backchannel: r, Audit: r}
	if err := e.End(context.Background(), bs, signout.Reason{Why: signout.WhyLogout}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"s1", "late"}; !reflect.DeepEqual(r.revoked, want) {
		t.Fatalf("revoked %v, want %v", r.revoked, want)
	}
	var queued []string
	for _, d := range r.queued {
		queued = append(queued, d.SID)
	}
	if want := []string{"s1", "late", "late-offline"}; !reflect.DeepEqual(queued, want) {
		t.Fatalf("back-channel for %v, want %v", queued, want)
	}
	if want := []string{"read", "grants", "queue", "end", "audit", "grants", "queue"}; !reflect.DeepEqual(r.calls, want) {
		t.Fatalf("calls %v, want %v", r.calls, want)
	}
}

// TestEnderEndDropped: grants a live session dropped beyond
// store.MaxSessionGrants are ended as End ends a session's: the families of
// those without offline_access, and a logout token for each grant of a
// client with a URI, offline ones included; the session record is neither
// read nor ended. Each step is tried whatever the other's outcome (a drop is
// never retried), and a failure to queue is audited as not queued.
func TestEnderEndDropped(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	dropped := []store.SessionGrant{{SID: "s1", ClientID: "web"}, {SID: "s2", ClientID: "web", Offline: true},
		{SID: "s3", ClientID: "mobile.app"}}
	clients := map[string]store.Client{"web": {ID: "web", BackchannelLogoutURI: "https://web.example/bcl"}, "mobile.app": {ID: "mobile.app"}}
	boom := errors.New("boom")
	tests := []struct {
		name        string
		dropped     []store.SessionGrant
		setup       func(*recorder)
		wantErr     error
		wantRevoked []string
		wantQueued  []string // sids
		wantCalls   []string
	}{
		{name: "ok/families_without_offline_then_backchannel_for_all", dropped: dropped,
			wantRevoked: []string{"s1", "s3"}, wantQueued: []string{"s1", "s2"}, wantCalls: []string{"grants", "queue"}},
		{name: "ok/nothing_dropped", wantCalls: nil},
		{name: "fail/families_still_queues", dropped: dropped, setup: func(r *recorder) { r.grantsErr = boom },
			wantErr: boom, wantQueued: []string{"s1", "s2"}, wantCalls: []string{"grants", "queue"}},
		{name: "fail/queue_audited", dropped: dropped, setup: func(r *recorder) { r.queueErr = boom },
			wantErr: boom, wantRevoked: []string{"s1", "s3"}, wantCalls: []string{"grants", "queue", "audit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &recorder{clients: clients}
			if tc.setup != nil {
				tc.setup(r)
			}
			e := &signout.Ender{Sessions: r, Grants: r, Clients: r, Backchannel: r, Audit: r, Now: func() time.Time { return now }}
			err := e.EndDropped(context.Background(), "u1", tc.dropped)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("EndDropped = %v, want %v", err, tc.wantErr)
			}
			wantEnded(t, r, now, tc.wantCalls, tc.wantRevoked, tc.wantQueued)
			audited := slices.Contains(tc.wantCalls, "audit")
			if audited && (len(r.events) != 1 || r.events[0].Action != "logout.backchannel_failed" ||
				r.events[0].TargetID != "u1" || r.events[0].Details["error"] != "not queued") {
				t.Fatalf("audit %+v", r.events)
			}
		})
	}
}

// TestEnderQueuesTheClientsOrganisation: each delivery names its client's
// organisation ("" for a platform client), for the notifier to connect an
// organisation's only to public addresses.
func TestEnderQueuesTheClientsOrganisation(t *testing.T) {
	t.Parallel()
	bs := store.BrowserSession{ID: "bs1", UserID: "u1", Grants: []store.SessionGrant{
		{SID: "s1", ClientID: "web"}, {SID: "s2", ClientID: "acme.app"}, {SID: "s3", ClientID: "acme.app"}}}
	r := &recorder{clients: map[string]store.Client{
		"web":      {ID: "web", BackchannelLogoutURI: "https://web.example/bcl"},
		"acme.app": {ID: "acme.app", BackchannelLogoutURI: "https://acme.example/bcl", TenantID: "ten_acme"},
	}, read: bs.Grants, final: bs.Grants}
	e := &signout.Ender{Sessions: r, Grants: r, Clients: r, Backchannel: r, Audit: r}
	if err := e.End(context.Background(), bs, signout.Reason{Why: signout.WhyLogout}); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range r.queued {
		got[d.SID] = d.ClientID + " " + d.URI + " " + d.TenantID
	}
	want := map[string]string{"s1": "web https://web.example/bcl ", "s2": "acme.app https://acme.example/bcl ten_acme",
		"s3": "acme.app https://acme.example/bcl ten_acme"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
}

// TestEnderEndUser: ending every session of a user queues back-channel
// logout for each grant of their live browser sessions whose client has a
// URI (with the grant's sid and the user as sub), before the cut-off; a
// failure to read or queue never keeps the cut-off from being written, and
// is audited; a failed cut-off is the answer.
func TestEnderEndUser(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	live := []store.BrowserSession{
		{ID: "bs1", UserID: "u1", Grants: []store.SessionGrant{
			{SID: "s1", ClientID: "web"},
			{SID: "s2", ClientID: "mobile.app", Offline: true}, // no URI
			{SID: "s3", ClientID: "web", Offline: true},
		}},
		{ID: "bs2", UserID: "u1", Grants: []store.SessionGrant{{SID: "s4", ClientID: "web"}, {SID: "s5", ClientID: "gone"}}},
		{ID: "bs3", UserID: "u1"}, // signed in, no grant yet
	}
	clients := map[string]store.Client{
		"web":        {ID: "web", BackchannelLogoutURI: "https://web.example/bcl"},
		"mobile.app": {ID: "mobile.app"},
	}
	boom := errors.New("boom")
	tests := []struct {
		name       string
		setup      func(*recorder)
		wantErr    error
		wantQueued []string // sids
		wantCalls  []string
		wantAudit  bool // logout.backchannel_failed
	}{
		{name: "ok/queued_before_the_cutoff", wantQueued: []string{"s1", "s3", "s4"},
			wantCalls: []string{"list", "queue", "cutoff"}},
		{name: "ok/no_live_session_nothing_queued", setup: func(r *recorder) { r.listed = nil },
			wantCalls: []string{"list", "cutoff"}},
		{name: "ok/only_clients_without_uri", setup: func(r *recorder) {
			r.listed = []store.BrowserSession{{ID: "bs1", UserID: "u1", Grants: []store.SessionGrant{{SID: "s2", ClientID: "mobile.app"}}}}
		}, wantCalls: []string{"list", "cutoff"}},
		{name: "fail/list_still_cuts_off_and_audits", setup: func(r *recorder) { r.listErr = boom },
			wantCalls: []string{"list", "cutoff", "audit"}, wantAudit: true},
		{name: "fail/clients_unreadable_still_cuts_off", setup: func(r *recorder) { r.clientsErr = boom },
			wantCalls: []string{"list", "cutoff", "audit"}, wantAudit: true},
		{name: "fail/queue_still_cuts_off_and_audits", setup: func(r *recorder) { r.queueErr = boom },
			wantCalls: []string{"list", "queue", "cutoff", "audit"}, wantAudit: true},
		{name: "fail/cutoff_is_the_answer", setup: func(r *recorder) { r.cutErr = boom },
			wantErr: boom, wantQueued: []string{"s1", "s3", "s4"}, wantCalls: []string{"list", "queue", "cutoff"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := &recorder{clients: clients, listed: live}
			if tc.setup != nil {
				tc.setup(r)
			}
			e := &signout.Ender{Sessions: r, Grants: r, Clients: r, Backchannel: r, Audit: r, Users: r, Cutoff: r,
				Now: func() time.Time { return now }}
			err := e.EndUser(context.Background(), "u1")
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("EndUser = %v, want %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(r.calls, tc.wantCalls) {
				t.Fatalf("calls %v, want %v", r.calls, tc.wantCalls)
			}
			var sids []string
			for _, d := range r.queued {
				if d.Subject != "u1" || d.ClientID != "web" || d.URI != "https://web.example/bcl" {
					t.Fatalf("queued %+v", d)
				}
				sids = append(sids, d.SID)
			}
			if !reflect.DeepEqual(sids, tc.wantQueued) {
				t.Fatalf("queued sids %v, want %v", sids, tc.wantQueued)
			}
			if tc.wantErr == nil && !reflect.DeepEqual(r.cut, []string{"u1"}) {
				t.Fatalf("cut-off written for %v, want u1", r.cut)
			}
			audited := len(r.events) == 1 && r.events[0].Action == "logout.backchannel_failed" &&
				r.events[0].Outcome == store.OutcomeFailure && r.events[0].TargetID == "u1"
			if audited != tc.wantAudit || (!tc.wantAudit && len(r.events) != 0) {
				t.Fatalf("audit %+v, want logout.backchannel_failed: %v", r.events, tc.wantAudit)
			}
		})
	}
}

// TestEnderEndUserNeedsItsDependencies: an Ender built for End alone
// refuses EndUser instead of ending nothing.
func TestEnderEndUserNeedsItsDependencies(t *testing.T) {
	t.Parallel()
	r := &recorder{}
	e := &signout.Ender{Sessions: r, Grants: r, Clients: r, Backchannel: r, Audit: r}
	if err := e.EndUser(context.Background(), "u1"); err == nil || len(r.calls) != 0 {
		t.Fatalf("EndUser without Users and Cutoff = %v (calls %v), want an error and nothing done", err, r.calls)
	}
}

func TestCarryGrants(t *testing.T) {
	t.Parallel()
	held := []store.SessionGrant{{SID: "s1", ClientID: "web"}, {SID: "s2", ClientID: "mobile.app"}}
	ids, gs := signout.CarryGrants([]string{"web"}, held)
	if !reflect.DeepEqual(ids, []string{"web", "mobile.app"}) || !reflect.DeepEqual(gs, held) {
		t.Fatalf("carried %v %v", ids, gs)
	}
	if ids, gs := signout.CarryGrants(nil, nil); len(ids) != 0 || len(gs) != 0 {
		t.Fatalf("nothing held: %v %v", ids, gs)
	}
}

// wantEnded checks what an Ender did through r: the calls in order, the
// families revoked, and the back-channel deliveries queued (all of user
// u1 at web's URI, due at now), by sid.
func wantEnded(t *testing.T, r *recorder, now time.Time, calls, revoked, queued []string) {
	t.Helper()
	if !reflect.DeepEqual(r.calls, calls) {
		t.Fatalf("calls %v, want %v", r.calls, calls)
	}
	if !reflect.DeepEqual(r.revoked, revoked) {
		t.Fatalf("revoked %v, want %v", r.revoked, revoked)
	}
	var sids []string
	for _, d := range r.queued {
		if d.Subject != "u1" || d.ClientID != "web" || d.URI != "https://web.example/bcl" || !d.NextAttemptAt.Equal(now) {
			t.Fatalf("queued %+v", d)
		}
		sids = append(sids, d.SID)
	}
	if !reflect.DeepEqual(sids, queued) {
		t.Fatalf("queued sids %v, want %v", sids, queued)
	}
}
