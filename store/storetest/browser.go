package storetest

import (
	"errors"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// runBrowserStateTests runs the browser sign-in cases of the token-state
// suite: store.SingleUse and store.BrowserSessions, which every token state
// implements. It pins:
//   - a single-use record is live while now is before its expiry; a taken
//     one answers its value with store.ErrTokenUsed until then, and a taken
//     authorization code until its tombstone ends (store.TakenKeptFor),
//     whatever its expiry;
//   - a browser session is found while now is before its absolute expiry
//     and before LastUsedAt + IdleTTL (no idle expiry when IdleTTL is 0);
//     finding it sets LastUsedAt to now;
//   - RevokeUserSessions ends every browser session of the user whose
//     AuthTime is at or before the cut-off, and refuses to create one
//     (store.ErrSessionsEnded), however the calls interleave;
//   - KeepBrowserSession finds the live session continuing a lineage (a
//     session's own id, or the lineage a re-login carried on) as
//     FindBrowserSession judges it, and moves its last use only when
//     store.TouchDue, so the idle expiry moves at most a few times per
//     IdleTTL and never past the absolute expiry; BrowserSessionLive
//     judges as it does and moves nothing;
//   - a session keeps its grants oldest first and each client once, drops
//     exactly the oldest beyond store.MaxSessionGrants, takes none once
//     ended, and loses none to concurrent additions; a grant added with its
//     authorization code stores the code as PutOnce does;
//   - past Config.MaxSessionsPerUser live browser sessions of a user,
//     CreateBrowserSession ends the oldest by creation (dead, ended and
//     other users' sessions do not count) and returns their grants, oldest
//     session first, however many sign-ins race: afterwards the user holds
//     the cap, and every grant recorded in an ended session is returned
//     exactly once.
func runBrowserStateTests(t *testing.T, newBackend func(t *testing.T, cfg Config) Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, b Backend)
	}{
		{"ok/once_put_take_peek", testOncePutTakePeek},
		{"fail/once_expiry", testOnceExpiry},
		{"fail/once_duplicate_put", testOnceDuplicate},
		{"fail/once_taken_code_replayed_after_expiry", testOnceCodeTombstone},
		{"ok/once_tombstone_only_for_codes", testOnceNoTombstone},
		{"race/once_take_exactly_one", testOnceRace},
		{"ok/browser_session_roundtrip", testBSRoundtrip},
		{"ok/browser_session_request_text_always_stored", testBSRequestText},
		{"fail/browser_session_idle_expiry", testBSIdle},
		{"fail/browser_session_absolute_expiry", testBSAbsolute},
		{"ok/browser_session_end", testBSEnd},
		{"ok/browser_session_list_newest_first", testBSList},
		{"ok/browser_session_grants", testBSGrants},
		{"ok/browser_session_grants_drop_oldest", testBSGrantsDrop},
		{"fail/browser_session_grant_to_ended_session", testBSGrantEnded},
		{"ok/browser_session_grant_with_code", testBSGrantWithCode},
		{"race/browser_session_grants_none_lost", testBSGrantsRace},
		{"ok/browser_session_end_returns_grants", testBSEndGrants},
		{"race/browser_session_end_vs_grants", testBSEndVsGrants},
		{"fail/browser_session_duplicate", testBSDuplicate},
		{"fail/browser_session_cutoff_ends_sessions", testBSCutoff},
		{"race/browser_session_create_vs_cutoff", testBSCreateVsCutoff},
		{"ok/browser_session_keep_extends_idle", testBSKeepIdle},
		{"fail/browser_session_keep_not_live", testBSKeepNotLive},
		{"ok/browser_session_keep_follows_lineage", testBSKeepLineage},
		{"ok/browser_session_live_reads_only", testBSLiveReadsOnly},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newBackend(t, Config{})) })
	}
	t.Run("fail/once_code_tombstone_window", func(t *testing.T) { testOnceTombstoneWindow(t, newBackend) })
	t.Run("ok/browser_session_cap_ends_oldest", func(t *testing.T) { testBSCap(t, newBackend) })
	t.Run("race/browser_session_cap_concurrent_sign_ins", func(t *testing.T) { testBSCapRace(t, newBackend) })
	t.Run("race/browser_session_cap_vs_grants", func(t *testing.T) { testBSCapVsGrants(t, newBackend) })
}

func onceOf(t *testing.T, st store.TokenState) store.SingleUse {
	t.Helper()
	o, ok := st.(store.SingleUse)
	if !ok {
		t.Fatalf("%T does not implement store.SingleUse", st)
	}
	return o
}

func sessionsOf(t *testing.T, st store.TokenState) store.BrowserSessions {
	t.Helper()
	s, ok := st.(store.BrowserSessions)
	if !ok {
		t.Fatalf("%T does not implement store.BrowserSessions", st)
	}
	return s
}

func wantOnce(t *testing.T, what string, got []byte, err error, wantVal []byte, wantErr error) {
	t.Helper()
	if wantErr == nil && err != nil || wantErr != nil && !errors.Is(err, wantErr) {
		t.Fatalf("%s: error %v, want %v", what, err, wantErr)
	}
	if string(got) != string(wantVal) {
		t.Fatalf("%s: value %q, want %q", what, got, wantVal)
	}
}

func testOncePutTakePeek(t *testing.T, b Backend) {
	o := onceOf(t, b.State)
	c, now := ctx(t), baseTime()
	key, other := newToken().hash, newToken().hash
	val := []byte("code-record\x00\xff binary")
	if err := o.PutOnce(c, store.OnceAuthCode, key, val, now.Add(time.Minute)); err != nil {
		t.Fatalf("PutOnce: %v", err)
	}
	steps := []struct {
		name    string
		call    func() ([]byte, error)
		wantVal []byte
		wantErr error
	}{
		{"peek before take", func() ([]byte, error) { return o.PeekOnce(c, store.OnceAuthCode, key, now) }, val, nil},
		{"unknown key", func() ([]byte, error) { return o.TakeOnce(c, store.OnceAuthCode, other, now) }, nil, store.ErrNotFound},
		{"other kind", func() ([]byte, error) { return o.TakeOnce(c, store.OnceAuthRequest, key, now) }, nil, store.ErrNotFound},
		{"first take", func() ([]byte, error) { return o.TakeOnce(c, store.OnceAuthCode, key, now.Add(time.Second)) }, val, nil},
		{"second take", func() ([]byte, error) { return o.TakeOnce(c, store.OnceAuthCode, key, now.Add(2*time.Second)) }, val, store.ErrTokenUsed},
		{"peek after take", func() ([]byte, error) { return o.PeekOnce(c, store.OnceAuthCode, key, now.Add(3*time.Second)) }, val, store.ErrTokenUsed},
		{"taken code kept past its expiry", func() ([]byte, error) { return o.TakeOnce(c, store.OnceAuthCode, key, now.Add(time.Minute)) }, val, store.ErrTokenUsed},
	}
	for _, s := range steps {
		v, err := s.call()
		wantOnce(t, s.name, v, err, s.wantVal, s.wantErr)
	}
}

func testOnceExpiry(t *testing.T, b Backend) {
	o := onceOf(t, b.State)
	c, now := ctx(t), baseTime()
	key := newToken().hash
	if err := o.PutOnce(c, store.OnceAuthRequest, key, []byte("req"), now.Add(time.Minute)); err != nil {
		t.Fatalf("PutOnce: %v", err)
	}
	v, err := o.PeekOnce(c, store.OnceAuthRequest, key, now.Add(time.Minute-time.Millisecond))
	wantOnce(t, "peek 1 ms before expiry", v, err, []byte("req"), nil)
	v, err = o.PeekOnce(c, store.OnceAuthRequest, key, now.Add(time.Minute))
	wantOnce(t, "peek at expiry", v, err, nil, store.ErrNotFound)
	v, err = o.TakeOnce(c, store.OnceAuthRequest, key, now.Add(time.Minute))
	wantOnce(t, "take at expiry", v, err, nil, store.ErrNotFound)
	v, err = o.TakeOnce(c, store.OnceAuthRequest, key, now.Add(time.Minute-time.Millisecond))
	wantOnce(t, "take 1 ms before expiry (the late take changed nothing)", v, err, []byte("req"), nil)
}

func testOnceDuplicate(t *testing.T, b Backend) {
	o := onceOf(t, b.State)
	c, now := ctx(t), baseTime()
	key := newToken().hash
	if err := o.PutOnce(c, store.OnceAuthCode, key, []byte("first"), now.Add(time.Minute)); err != nil {
		t.Fatalf("PutOnce: %v", err)
	}
	if err := o.PutOnce(c, store.OnceAuthCode, key, []byte("second"), now.Add(time.Hour)); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second PutOnce: %v, want ErrAlreadyExists", err)
	}
	if _, err := o.TakeOnce(c, store.OnceAuthCode, key, now); err != nil {
		t.Fatal(err)
	}
	if err := o.PutOnce(c, store.OnceAuthCode, key, []byte("third"), now.Add(time.Hour)); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("PutOnce over a taken record: %v, want ErrAlreadyExists", err)
	}
	v, err := o.PeekOnce(c, store.OnceAuthCode, key, now.Add(time.Second))
	wantOnce(t, "the first value stays", v, err, []byte("first"), store.ErrTokenUsed)
}

// testOnceCodeTombstone: an authorization code taken at once and presented
// again after its expiry, while its tombstone lasts, answers its value with
// store.ErrTokenUsed (so the replay revokes the grant), and is gone once the
// tombstone ends; one never taken is gone at its expiry, and a take then
// leaves no tombstone.
func testOnceCodeTombstone(t *testing.T, b Backend) {
	o := onceOf(t, b.State)
	c, now := ctx(t), baseTime()
	taken, untaken := newToken().hash, newToken().hash
	val := []byte("code record")
	for _, k := range [][]byte{taken, untaken} {
		if err := o.PutOnce(c, store.OnceAuthCode, k, val, now.Add(time.Minute)); err != nil {
			t.Fatalf("PutOnce: %v", err)
		}
	}
	v, err := o.TakeOnce(c, store.OnceAuthCode, taken, now.Add(time.Second))
	wantOnce(t, "first take", v, err, val, nil)
	// The tombstone lasts CodeReuseWindow after the take.
	minEnd := now.Add(time.Second + store.CodeReuseWindow)
	steps := []struct {
		name    string
		call    func() ([]byte, error)
		wantVal []byte
		wantErr error
	}{
		{"take at the code's expiry", func() ([]byte, error) { return o.TakeOnce(c, store.OnceAuthCode, taken, now.Add(time.Minute)) }, val, store.ErrTokenUsed},
		{"peek after the code's expiry", func() ([]byte, error) { return o.PeekOnce(c, store.OnceAuthCode, taken, now.Add(2*time.Minute)) }, val, store.ErrTokenUsed},
		{"take 1 ms before the tombstone ends", func() ([]byte, error) {
			return o.TakeOnce(c, store.OnceAuthCode, taken, minEnd.Add(-time.Millisecond))
		}, val, store.ErrTokenUsed},
		{"untaken code: take at its expiry", func() ([]byte, error) { return o.TakeOnce(c, store.OnceAuthCode, untaken, now.Add(time.Minute)) }, nil, store.ErrNotFound},
		{"untaken code: no tombstone after a late take", func() ([]byte, error) {
			return o.PeekOnce(c, store.OnceAuthCode, untaken, now.Add(2*time.Minute))
		}, nil, store.ErrNotFound},
	}
	for _, s := range steps {
		v, err := s.call()
		wantOnce(t, s.name, v, err, s.wantVal, s.wantErr)
	}
}

// testOnceTombstoneWindow: a taken code's tombstone lasts
// store.CodeReuseWindow after the take, whatever the revocation horizon, or
// to the code's own expiry when that is later; then the record is gone.
func testOnceTombstoneWindow(t *testing.T, newBackend func(t *testing.T, cfg Config) Backend) {
	cases := []struct {
		name    string
		horizon time.Duration
		expiry  time.Duration // after now; the take is 1 s after now
		end     time.Duration // after now: the first instant the record is gone
	}{
		{"short horizon: the window", time.Minute, time.Minute, time.Second + store.CodeReuseWindow},
		{"long horizon: still the window", 3 * time.Hour, time.Minute, time.Second + store.CodeReuseWindow},
		{"expiry after the window: the expiry", time.Minute, time.Hour, time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := onceOf(t, newBackend(t, Config{Horizon: tc.horizon}).State)
			c, now := ctx(t), baseTime()
			key, val := newToken().hash, []byte("code record")
			if err := o.PutOnce(c, store.OnceAuthCode, key, val, now.Add(tc.expiry)); err != nil {
				t.Fatalf("PutOnce: %v", err)
			}
			v, err := o.TakeOnce(c, store.OnceAuthCode, key, now.Add(time.Second))
			wantOnce(t, "first take", v, err, val, nil)
			end := now.Add(tc.end)
			v, err = o.TakeOnce(c, store.OnceAuthCode, key, end.Add(-time.Millisecond))
			wantOnce(t, "take 1 ms before the tombstone ends", v, err, val, store.ErrTokenUsed)
			v, err = o.PeekOnce(c, store.OnceAuthCode, key, end.Add(-time.Millisecond))
			wantOnce(t, "peek 1 ms before the tombstone ends", v, err, val, store.ErrTokenUsed)
			v, err = o.TakeOnce(c, store.OnceAuthCode, key, end)
			wantOnce(t, "take when the tombstone ends", v, err, nil, store.ErrNotFound)
			v, err = o.PeekOnce(c, store.OnceAuthCode, key, end)
			wantOnce(t, "peek when the tombstone ends", v, err, nil, store.ErrNotFound)
		})
	}
}

// testOnceNoTombstone: every kind but the authorization code is gone at its
// expiry, taken or not (store.TakenKeptFor is 0 for them).
func testOnceNoTombstone(t *testing.T, b Backend) {
	o := onceOf(t, b.State)
	c, now := ctx(t), baseTime()
	for _, kind := range []string{store.OnceAuthRequest, store.OncePushedRequest, store.OnceMFAToken,
		store.OnceWebAuthnSession, store.OnceUpstreamLogin, store.OnceLogoutRequest} {
		if d := store.TakenKeptFor(kind); d != 0 {
			t.Fatalf("TakenKeptFor(%q) = %v, want 0", kind, d)
		}
		key := newToken().hash
		if err := o.PutOnce(c, kind, key, []byte("v"), now.Add(time.Minute)); err != nil {
			t.Fatalf("PutOnce(%s): %v", kind, err)
		}
		v, err := o.TakeOnce(c, kind, key, now.Add(time.Second))
		wantOnce(t, kind+": take", v, err, []byte("v"), nil)
		v, err = o.TakeOnce(c, kind, key, now.Add(time.Minute-time.Millisecond))
		wantOnce(t, kind+": taken, 1 ms before expiry", v, err, []byte("v"), store.ErrTokenUsed)
		v, err = o.TakeOnce(c, kind, key, now.Add(time.Minute))
		wantOnce(t, kind+": taken, at expiry", v, err, nil, store.ErrNotFound)
	}
}

// testOnceRace: 32 takes of one code, released together (on two instances
// of the state when the backend offers a second), get exactly one nil
// error; every other take gets the value with ErrTokenUsed.
func testOnceRace(t *testing.T, b Backend) {
	states := []store.SingleUse{onceOf(t, b.State)}
	if b.Again != nil {
		states = append(states, onceOf(t, b.Again(t)))
	}
	c, now := ctx(t), baseTime()
	for round := 0; round < 3; round++ {
		key, val := newToken().hash, []byte("the code's record")
		if err := states[0].PutOnce(c, store.OnceAuthCode, key, val, now.Add(time.Minute)); err != nil {
			t.Fatalf("PutOnce: %v", err)
		}
		const n = 32
		start := make(chan struct{})
		var wg sync.WaitGroup
		vals, errs := make([][]byte, n), make([]error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				vals[i], errs[i] = states[i%len(states)].TakeOnce(c, store.OnceAuthCode, key, now.Add(time.Second))
			}(i)
		}
		close(start)
		wg.Wait()
		winners := 0
		for i := range errs {
			switch {
			case errs[i] == nil:
				winners++
			case !errors.Is(errs[i], store.ErrTokenUsed):
				t.Fatalf("take %d: %v, want nil or ErrTokenUsed", i, errs[i])
			}
			if string(vals[i]) != string(val) {
				t.Fatalf("take %d: value %q, want %q", i, vals[i], val)
			}
		}
		if winners != 1 {
			t.Fatalf("%d takes won, want exactly 1 (instances: %d)", winners, len(states))
		}
	}
}

func newBrowserSession(userID string, base time.Time) store.BrowserSession {
	return store.BrowserSession{
		ID:             randomID("bs-"),
		UserID:         userID,
		AuthTime:       base,
		AMR:            []string{"pwd"},
		Remember:       true,
		CreatedAt:      base,
		LastUsedAt:     base,
		IdleTTL:        8 * time.Hour,
		AbsoluteExpiry: base.Add(7 * 24 * time.Hour),
		IP:             "192.0.2.1",
		UserAgent:      "Mozilla/5.0 (test)",
	}
}

func createBS(t *testing.T, s store.BrowserSessions, bs store.BrowserSession) []byte {
	t.Helper()
	cookie := newToken().hash
	if _, err := s.CreateBrowserSession(ctx(t), bs, cookie); err != nil {
		t.Fatalf("CreateBrowserSession: %v", err)
	}
	return cookie
}

func findBS(t *testing.T, s store.BrowserSessions, what string, cookie []byte, now time.Time, live bool) store.BrowserSession {
	t.Helper()
	got, err := s.FindBrowserSession(ctx(t), cookie, now)
	switch {
	case live && err != nil:
		t.Fatalf("%s: FindBrowserSession: %v, want the session", what, err)
	case !live && !errors.Is(err, store.ErrNotFound):
		t.Fatalf("%s: FindBrowserSession: %v (%+v), want ErrNotFound", what, err, got)
	}
	return got
}

func testBSRoundtrip(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	bs.AuthTime = base.Add(-time.Minute)
	// Grants and clients carried over from an earlier session are kept as given.
	bs.ClientIDs = []string{"web-app", "cli.native"}
	bs.Grants = []store.SessionGrant{
		{SID: randomID("sid-"), ClientID: "web-app", GrantedAt: base.Add(-2 * time.Hour)},
		{SID: randomID("sid-"), ClientID: "cli.native", Offline: true, GrantedAt: base.Add(-time.Hour)},
	}
	cookie := createBS(t, s, bs)
	got := findBS(t, s, "fresh session", cookie, base.Add(time.Minute), true)
	want := bs
	want.Lineage = bs.ID // a session that continues none is its own lineage
	want.LastUsedAt = base.Add(time.Minute)
	want.Grants = nil // FindBrowserSession leaves them out
	// The user's version is read beside the session by some backends (it
	// is not part of the record; its protocol is tested with them).
	got.UserVersion = store.UserVersion{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FindBrowserSession:\n got %+v\nwant %+v", got, want)
	}
	if gs := grantsOf(t, s, bs); !reflect.DeepEqual(gs, bs.Grants) {
		t.Fatalf("BrowserSessionGrants = %+v, want %+v", gs, bs.Grants)
	}
	findBS(t, s, "unknown cookie", newToken().hash, base, false)
}

// testBSRequestText: a session's IP address and User-Agent never fail its
// creation (a sign-in) and read back as store.CleanRequestMeta makes them,
// on every backend alike.
func testBSRequestText(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	for _, tc := range requestTexts {
		t.Run(tc.name, func(t *testing.T) {
			bs := newBrowserSession(randomID("u-"), base)
			bs.IP, bs.UserAgent = tc.ip, tc.ua
			cookie := createBS(t, s, bs)
			got := findBS(t, s, "the session", cookie, base.Add(time.Minute), true)
			if got.IP != tc.wantIP || got.UserAgent != tc.wantUA {
				t.Fatalf("stored IP %q, User-Agent %q; want %q, %q", got.IP, got.UserAgent, tc.wantIP, tc.wantUA)
			}
			list, err := s.ListBrowserSessions(ctx(t), bs.UserID, base.Add(time.Minute))
			if err != nil || len(list) != 1 || list[0].IP != tc.wantIP || list[0].UserAgent != tc.wantUA {
				t.Fatalf("ListBrowserSessions: %+v, %v; want the session with IP %q, User-Agent %q", list, err, tc.wantIP, tc.wantUA)
			}
		})
	}
}

func testBSIdle(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	bs.IdleTTL = time.Hour
	cookie := createBS(t, s, bs)
	t1 := base.Add(time.Hour - time.Millisecond)
	findBS(t, s, "1 ms before idle expiry", cookie, t1, true)
	t2 := t1.Add(time.Hour - time.Millisecond)
	findBS(t, s, "the find extended idle expiry", cookie, t2, true)
	findBS(t, s, "idle for IdleTTL since the last find", cookie, t2.Add(time.Hour), false)

	noIdle := newBrowserSession(bs.UserID, base)
	noIdle.IdleTTL = 0
	cookie = createBS(t, s, noIdle)
	findBS(t, s, "no idle expiry when IdleTTL is 0", cookie, base.Add(6*24*time.Hour), true)
}

func testBSAbsolute(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	bs.IdleTTL, bs.AbsoluteExpiry = time.Hour, base.Add(90*time.Minute)
	cookie := createBS(t, s, bs)
	findBS(t, s, "in use", cookie, base.Add(50*time.Minute), true)
	findBS(t, s, "1 ms before absolute expiry", cookie, bs.AbsoluteExpiry.Add(-time.Millisecond), true)
	findBS(t, s, "at absolute expiry though recently used", cookie, bs.AbsoluteExpiry, false)
}

func testBSEnd(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	user := randomID("u-")
	bs, keep := newBrowserSession(user, base), newBrowserSession(user, base)
	cookie, keepCookie := createBS(t, s, bs), createBS(t, s, keep)
	if _, err := s.EndBrowserSessionGrants(ctx(t), bs.ID, base); err != nil {
		t.Fatalf("EndBrowserSessionGrants: %v", err)
	}
	findBS(t, s, "ended session", cookie, base.Add(time.Second), false)
	findBS(t, s, "the user's other session", keepCookie, base.Add(time.Second), true)
	if _, err := s.EndBrowserSessionGrants(ctx(t), bs.ID, base); err != nil {
		t.Fatalf("EndBrowserSessionGrants again: %v", err)
	}
	if _, err := s.EndBrowserSessionGrants(ctx(t), randomID("bs-"), base); err != nil {
		t.Fatalf("EndBrowserSessionGrants of an unknown id: %v", err)
	}
}

func listBS(t *testing.T, s store.BrowserSessions, user string, now time.Time) []string {
	t.Helper()
	got, err := s.ListBrowserSessions(ctx(t), user, now)
	if err != nil {
		t.Fatalf("ListBrowserSessions: %v", err)
	}
	ids := []string{}
	for _, bs := range got {
		if bs.UserID != user {
			t.Fatalf("listed a session of %q for %q", bs.UserID, user)
		}
		ids = append(ids, bs.ID)
	}
	return ids
}

func testBSList(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	user, other := randomID("u-"), randomID("u-")
	var ids []string
	for i := 0; i < 4; i++ {
		bs := newBrowserSession(user, base.Add(time.Duration(i)*time.Minute))
		if i == 1 {
			bs.IdleTTL = 10 * time.Minute // idle by the time of the list
		}
		createBS(t, s, bs)
		ids = append(ids, bs.ID)
	}
	if _, err := s.EndBrowserSessionGrants(ctx(t), ids[2], base); err != nil {
		t.Fatal(err)
	}
	createBS(t, s, newBrowserSession(other, base))
	got := listBS(t, s, user, base.Add(time.Hour))
	if want := []string{ids[3], ids[0]}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ListBrowserSessions = %v, want %v (newest first, no ended or idle session)", got, want)
	}
	if got := listBS(t, s, randomID("u-"), base); len(got) != 0 {
		t.Fatalf("sessions of an unknown user: %v", got)
	}
}

func addGrant(t *testing.T, s store.BrowserSessions, bs store.BrowserSession, g store.SessionGrant) []store.SessionGrant {
	t.Helper()
	dropped, err := s.AddBrowserSessionGrant(ctx(t), bs.UserID, bs.ID, g)
	if err != nil {
		t.Fatalf("AddBrowserSessionGrant(%s, %s): %v", g.SID, g.ClientID, err)
	}
	return dropped
}

// grantsOf reads the grants of a live session.
func grantsOf(t *testing.T, s store.BrowserSessions, bs store.BrowserSession) []store.SessionGrant {
	t.Helper()
	gs, err := s.BrowserSessionGrants(ctx(t), bs.UserID, bs.ID)
	if err != nil {
		t.Fatalf("BrowserSessionGrants(%s): %v", bs.ID, err)
	}
	return gs
}

func newGrant(client string, at time.Time) store.SessionGrant {
	return store.SessionGrant{SID: randomID("sid-"), ClientID: client, GrantedAt: at}
}

// testBSGrants: grants are kept oldest first, every client once in order of
// first grant, read with BrowserSessionGrants and listed with the session
// (FindBrowserSession leaves them out).
func testBSGrants(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	cookie := createBS(t, s, bs)
	var want []store.SessionGrant
	for i, c := range []string{"web-app", "cli.native", "web-app", "third:party"} {
		g := newGrant(c, base.Add(time.Duration(i)*time.Second))
		g.Offline = i == 1
		if dropped := addGrant(t, s, bs, g); len(dropped) != 0 {
			t.Fatalf("grant %d dropped %+v, want none", i, dropped)
		}
		want = append(want, g)
	}
	got := findBS(t, s, "session with grants", cookie, base.Add(time.Minute), true)
	if len(got.Grants) != 0 {
		t.Fatalf("FindBrowserSession returned grants %+v", got.Grants)
	}
	if gs := grantsOf(t, s, bs); !reflect.DeepEqual(gs, want) {
		t.Fatalf("Grants = %+v\nwant %+v (oldest first)", gs, want)
	}
	if _, err := s.BrowserSessionGrants(ctx(t), randomID("u-"), bs.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("BrowserSessionGrants named with another user: %v, want ErrNotFound", err)
	}
	if wantIDs := []string{"web-app", "cli.native", "third:party"}; !reflect.DeepEqual(got.ClientIDs, wantIDs) {
		t.Fatalf("ClientIDs = %v, want %v (order of first grant, once each)", got.ClientIDs, wantIDs)
	}
	list, err := s.ListBrowserSessions(ctx(t), bs.UserID, base.Add(time.Minute))
	if err != nil {
		t.Fatalf("ListBrowserSessions: %v", err)
	}
	if len(list) != 1 || !reflect.DeepEqual(list[0].Grants, want) || !reflect.DeepEqual(list[0].ClientIDs, got.ClientIDs) {
		t.Fatalf("ListBrowserSessions = %+v, want the session with its grants %+v", list, want)
	}
}

// testBSGrantsDrop: a session fills up to store.MaxSessionGrants without
// dropping any, then drops exactly its oldest grant at each addition, and
// returns it.
func testBSGrantsDrop(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	const added = 3 // by AddBrowserSessionGrant; the rest carried in at creation
	for i := 0; i < store.MaxSessionGrants-added; i++ {
		bs.Grants = append(bs.Grants, newGrant("app-0", base.Add(-time.Hour+time.Duration(i)*time.Millisecond)))
	}
	bs.ClientIDs = []string{"app-0"}
	cookie := createBS(t, s, bs)
	all := slices.Clone(bs.Grants)
	for i := 1; i <= added; i++ {
		g := newGrant("app-"+strconv.Itoa(i%3), base.Add(time.Duration(i)*time.Millisecond))
		if dropped := addGrant(t, s, bs, g); len(dropped) != 0 {
			t.Fatalf("grant %d of %d dropped %+v, want none", len(all)+1, store.MaxSessionGrants, dropped)
		}
		all = append(all, g)
	}
	for i := 0; i < 2; i++ {
		g := newGrant("late", base.Add(time.Minute+time.Duration(i)*time.Millisecond))
		dropped := addGrant(t, s, bs, g)
		if want := all[i : i+1]; !reflect.DeepEqual(dropped, want) {
			t.Fatalf("grant %d over the bound dropped %+v, want exactly the oldest %+v", i+1, dropped, want)
		}
		all = append(all, g)
	}
	got := findBS(t, s, "full session", cookie, base.Add(2*time.Minute), true)
	if kept, want := grantsOf(t, s, bs), all[2:]; !reflect.DeepEqual(kept, want) {
		t.Fatalf("kept %d grants, want the newest %d", len(kept), len(want))
	}
	if want := []string{"app-0", "app-1", "app-2", "late"}; !reflect.DeepEqual(got.ClientIDs, want) {
		t.Fatalf("ClientIDs = %v, want %v", got.ClientIDs, want)
	}
}

// testBSGrantWithCode: AddBrowserSessionGrantWithCode stores the code's
// single-use record and records its grant, as PutOnce and
// AddBrowserSessionGrant would; a code already stored is
// store.ErrAlreadyExists, an unknown session store.ErrNotFound, and a
// session at store.MaxSessionGrants drops its oldest grant as ever.
func testBSGrantWithCode(t *testing.T, b Backend) {
	s, o := sessionsOf(t, b.State), onceOf(t, b.State)
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	for i := 0; i < store.MaxSessionGrants; i++ {
		bs.Grants = append(bs.Grants, newGrant("app-0", base.Add(-time.Hour+time.Duration(i)*time.Millisecond)))
	}
	bs.ClientIDs = []string{"app-0"}
	createBS(t, s, bs)
	code := store.OnceRecord{Kind: store.OnceAuthCode, KeyHash: newToken().hash, Value: []byte("code record"), ExpiresAt: base.Add(time.Minute)}
	g := newGrant("app-1", base)
	dropped, err := s.AddBrowserSessionGrantWithCode(ctx(t), bs.UserID, bs.ID, g, code)
	if err != nil {
		t.Fatalf("AddBrowserSessionGrantWithCode: %v", err)
	}
	if want := bs.Grants[:1]; !reflect.DeepEqual(dropped, want) {
		t.Fatalf("dropped %+v, want the oldest grant %+v", dropped, want)
	}
	if gs := grantsOf(t, s, bs); len(gs) != store.MaxSessionGrants || !reflect.DeepEqual(gs[len(gs)-1], g) {
		t.Fatalf("grants end with %+v (%d of them), want %+v last of %d", gs[len(gs)-1], len(gs), g, store.MaxSessionGrants)
	}
	v, err := o.TakeOnce(ctx(t), store.OnceAuthCode, code.KeyHash, base.Add(time.Second))
	wantOnce(t, "take the code", v, err, code.Value, nil)

	if _, err := s.AddBrowserSessionGrantWithCode(ctx(t), bs.UserID, bs.ID, newGrant("app-1", base), code); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("the same code again: %v, want ErrAlreadyExists", err)
	}
	other := store.OnceRecord{Kind: store.OnceAuthCode, KeyHash: newToken().hash, Value: []byte("x"), ExpiresAt: base.Add(time.Minute)}
	if _, err := s.AddBrowserSessionGrantWithCode(ctx(t), bs.UserID, randomID("bs-"), newGrant("app-1", base), other); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("an unknown session: %v, want ErrNotFound", err)
	}
}

// testBSGrantEnded: no grant is recorded in an unknown session, one ended
// by EndBrowserSessionGrants, or one ended by the user's cut-off.
func testBSGrantEnded(t *testing.T, b Backend) {
	st := b.State
	s := sessionsOf(t, st)
	base := baseTime()
	ended, cut := newBrowserSession(randomID("u-"), base), newBrowserSession(randomID("u-"), base)
	live := newBrowserSession(randomID("u-"), base)
	createBS(t, s, ended)
	createBS(t, s, cut)
	createBS(t, s, live)
	addGrant(t, s, ended, newGrant("web-app", base))
	addGrant(t, s, cut, newGrant("web-app", base))
	if _, err := s.EndBrowserSessionGrants(ctx(t), ended.ID, base.Add(time.Second)); err != nil {
		t.Fatalf("EndBrowserSessionGrants: %v", err)
	}
	if err := st.RevokeUserSessions(ctx(t), cut.UserID, base.Add(time.Second)); err != nil {
		t.Fatalf("RevokeUserSessions: %v", err)
	}
	for _, tc := range []struct{ name, user, id string }{
		{"an unknown session", ended.UserID, randomID("bs-")},
		{"an ended session", ended.UserID, ended.ID},
		{"session ended by the cut-off", cut.UserID, cut.ID},
		{"live session named with another user", ended.UserID, live.ID},
		{"live session named without its user", "", live.ID},
	} {
		dropped, err := s.AddBrowserSessionGrant(ctx(t), tc.user, tc.id, newGrant("web-app", base.Add(2*time.Second)))
		if !errors.Is(err, store.ErrNotFound) || len(dropped) != 0 {
			t.Fatalf("AddBrowserSessionGrant to a %s: %+v, %v, want ErrNotFound", tc.name, dropped, err)
		}
	}
	addGrant(t, s, live, newGrant("web-app", base.Add(3*time.Second)))
}

// testBSGrantsRace: 32 additions to one session, released together (on two
// instances of the state when the backend offers a second), all land, each
// client once; with the session 16 below the bound, exactly the 16 grants
// it held first are dropped, each once.
func testBSGrantsRace(t *testing.T, b Backend) {
	sessions := []store.BrowserSessions{sessionsOf(t, b.State)}
	if b.Again != nil {
		sessions = append(sessions, sessionsOf(t, b.Again(t)))
	}
	const n, room = 32, 16
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	for i := 0; i < store.MaxSessionGrants-room; i++ {
		bs.Grants = append(bs.Grants, newGrant("old", base.Add(-time.Hour+time.Duration(i)*time.Millisecond)))
	}
	bs.ClientIDs = []string{"old"}
	cookie := createBS(t, sessions[0], bs)
	grants := make([]store.SessionGrant, n)
	for i := range grants {
		grants[i] = newGrant("app-"+strconv.Itoa(i%4), base.Add(time.Second))
	}
	dropped := make([][]store.SessionGrant, n)
	errs := race(n, func(i int) error {
		var err error
		dropped[i], err = sessions[i%len(sessions)].AddBrowserSessionGrant(ctx(t), bs.UserID, bs.ID, grants[i])
		return err
	})
	droppedSIDs := map[string]int{}
	for i := range errs {
		if errs[i] != nil {
			t.Fatalf("addition %d: %v", i, errs[i])
		}
		for _, d := range dropped[i] {
			droppedSIDs[d.SID]++
		}
	}
	wantDropped := map[string]int{}
	for _, g := range bs.Grants[:n-room] {
		wantDropped[g.SID] = 1
	}
	if !reflect.DeepEqual(droppedSIDs, wantDropped) {
		t.Fatalf("dropped %d grants %v, want the %d oldest once each", len(droppedSIDs), droppedSIDs, len(wantDropped))
	}
	got := findBS(t, sessions[0], "session after the race", cookie, base.Add(time.Minute), true)
	kept := grantsOf(t, sessions[0], bs)
	if len(kept) != store.MaxSessionGrants {
		t.Fatalf("kept %d grants, want %d", len(kept), store.MaxSessionGrants)
	}
	if !reflect.DeepEqual(kept[:len(bs.Grants)-(n-room)], bs.Grants[n-room:]) {
		t.Fatal("the surviving earlier grants are not kept oldest first")
	}
	added := map[string]bool{}
	for _, g := range kept[len(bs.Grants)-(n-room):] {
		added[g.SID] = true
	}
	for i, g := range grants {
		if !added[g.SID] {
			t.Fatalf("addition %d (%s) was lost", i, g.SID)
		}
	}
	want := []string{"old", "app-0", "app-1", "app-2", "app-3"}
	sorted := slices.Clone(got.ClientIDs)
	slices.Sort(sorted[min(1, len(sorted)):])
	if !slices.Equal(sorted, want) {
		t.Fatalf("ClientIDs = %v, want %v (after old in any order), once each", got.ClientIDs, want)
	}
}

// testBSEndGrants: ending a session returns the grants it held, once; it
// is then found no more and takes no grant.
func testBSEndGrants(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	cookie := createBS(t, s, bs)
	var want []store.SessionGrant
	for i := 0; i < 3; i++ {
		g := newGrant("app-"+strconv.Itoa(i), base.Add(time.Duration(i)*time.Second))
		g.Offline = i == 1
		addGrant(t, s, bs, g)
		want = append(want, g)
	}
	got, err := s.EndBrowserSessionGrants(ctx(t), bs.ID, base.Add(time.Minute))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("EndBrowserSessionGrants = %+v, %v; want %+v", got, err, want)
	}
	findBS(t, s, "ended session", cookie, base.Add(time.Minute), false)
	if _, err := s.BrowserSessionGrants(ctx(t), bs.UserID, bs.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("BrowserSessionGrants of an ended session: %v, want ErrNotFound", err)
	}
	if again, err := s.EndBrowserSessionGrants(ctx(t), bs.ID, base.Add(time.Minute)); err != nil || len(again) != 0 {
		t.Fatalf("ending again = %+v, %v; want no grants, no error", again, err)
	}
	if _, err := s.AddBrowserSessionGrant(ctx(t), bs.UserID, bs.ID, newGrant("late", base.Add(2*time.Minute))); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a grant after the end: %v, want ErrNotFound", err)
	}
	if got, err := s.EndBrowserSessionGrants(ctx(t), randomID("bs-"), base); err != nil || len(got) != 0 {
		t.Fatalf("ending an unknown session = %+v, %v", got, err)
	}
}

// testBSEndVsGrants: grants recorded while the session ends (on any
// instance) are either returned by the end or refused with ErrNotFound:
// none is recorded and missed.
func testBSEndVsGrants(t *testing.T, b Backend) {
	sessions := []store.BrowserSessions{sessionsOf(t, b.State)}
	if b.Again != nil {
		sessions = append(sessions, sessionsOf(t, b.Again(t)))
	}
	const n = 24
	base := baseTime()
	for round := 0; round < 3; round++ {
		bs := newBrowserSession(randomID("u-"), base)
		createBS(t, sessions[0], bs)
		grants := make([]store.SessionGrant, n)
		for i := range grants {
			grants[i] = newGrant("app", base.Add(time.Second))
		}
		var ended []store.SessionGrant
		errs := race(n+1, func(i int) error {
			if i == n {
				var err error
				ended, err = sessions[len(sessions)-1].EndBrowserSessionGrants(ctx(t), bs.ID, base.Add(time.Minute))
				return err
			}
			_, err := sessions[i%len(sessions)].AddBrowserSessionGrant(ctx(t), bs.UserID, bs.ID, grants[i])
			return err
		})
		endErr := errs[n]
		errs = errs[:n]
		if endErr != nil {
			t.Fatalf("EndBrowserSessionGrants: %v", endErr)
		}
		returned := map[string]bool{}
		for _, g := range ended {
			returned[g.SID] = true
		}
		for i, err := range errs {
			switch {
			case err == nil && !returned[grants[i].SID]:
				t.Fatalf("round %d: grant %d was recorded but not returned by the end: it would outlive the logout", round, i)
			case err != nil && !errors.Is(err, store.ErrNotFound):
				t.Fatalf("round %d: grant %d: %v", round, i, err)
			case err != nil && returned[grants[i].SID]:
				t.Fatalf("round %d: grant %d was refused but returned", round, i)
			}
		}
	}
}

func testBSDuplicate(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	bs := newBrowserSession(randomID("u-"), base)
	cookie := createBS(t, s, bs)
	again := newBrowserSession(bs.UserID, base)
	if _, err := s.CreateBrowserSession(ctx(t), again, cookie); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second session on one cookie: %v, want ErrAlreadyExists", err)
	}
	if _, err := s.CreateBrowserSession(ctx(t), bs, newToken().hash); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("second session with one id: %v, want ErrAlreadyExists", err)
	}
	if got := findBS(t, s, "the first session", cookie, base, true); got.ID != bs.ID {
		t.Fatalf("cookie finds %q, want %q", got.ID, bs.ID)
	}
}

// testBSCutoff: ending every session of a user ends the browser sessions
// authenticated at or before the cut-off (found and listed no more) and
// refuses new ones authenticated then; later ones and other users' live.
func testBSCutoff(t *testing.T, b Backend) {
	st := b.State
	s := sessionsOf(t, st)
	base := baseTime()
	user, other := randomID("u-"), randomID("u-")
	before, at := newBrowserSession(user, base.Add(-time.Second)), newBrowserSession(user, base)
	otherBS := newBrowserSession(other, base.Add(-time.Second))
	cBefore, cAt, cOther := createBS(t, s, before), createBS(t, s, at), createBS(t, s, otherBS)
	if err := st.RevokeUserSessions(ctx(t), user, base); err != nil {
		t.Fatalf("RevokeUserSessions: %v", err)
	}
	now := base.Add(time.Minute)
	findBS(t, s, "authenticated before the cut-off", cBefore, now, false)
	findBS(t, s, "authenticated at the cut-off", cAt, now, false)
	findBS(t, s, "another user's session", cOther, now, true)
	if got := listBS(t, s, user, now); len(got) != 0 {
		t.Fatalf("ended sessions listed: %v", got)
	}
	late := newBrowserSession(user, base)
	late.CreatedAt, late.LastUsedAt = now, now // a login that began before the cut-off, finishing after it
	if _, err := s.CreateBrowserSession(ctx(t), late, newToken().hash); !errors.Is(err, store.ErrSessionsEnded) {
		t.Fatalf("session authenticated at the cut-off: %v, want ErrSessionsEnded", err)
	}
	after := newBrowserSession(user, base.Add(time.Millisecond))
	cAfter := createBS(t, s, after)
	findBS(t, s, "authenticated after the cut-off", cAfter, now, true)
	if got := listBS(t, s, user, now); !reflect.DeepEqual(got, []string{after.ID}) {
		t.Fatalf("listed %v, want only %s", got, after.ID)
	}
}

// testBSCreateVsCutoff races sign-ins authenticated before a cut-off
// against the call that sets it: whichever wins, none of their sessions is
// found afterwards.
func testBSCreateVsCutoff(t *testing.T, b Backend) {
	st := b.State
	s := sessionsOf(t, st)
	for round := 0; round < 5; round++ {
		base := baseTime()
		user := randomID("u-")
		const logins = 24
		start := make(chan struct{})
		var wg sync.WaitGroup
		cookies := make([][]byte, logins)
		errs := make([]error, logins)
		for i := range cookies {
			cookies[i] = newToken().hash
			bs := newBrowserSession(user, base)
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				_, errs[i] = s.CreateBrowserSession(ctx(t), bs, cookies[i])
			}(i)
		}
		var revokeErr error
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			revokeErr = st.RevokeUserSessions(ctx(t), user, base.Add(time.Millisecond))
		}()
		close(start)
		wg.Wait()
		if revokeErr != nil {
			t.Fatalf("RevokeUserSessions: %v", revokeErr)
		}
		for i := range cookies {
			if errs[i] != nil && !errors.Is(errs[i], store.ErrSessionsEnded) {
				t.Fatalf("CreateBrowserSession: %v, want nil or ErrSessionsEnded", errs[i])
			}
			findBS(t, s, "session of a sign-in authenticated before the cut-off", cookies[i], base.Add(time.Second), false)
		}
		if got := listBS(t, s, user, base.Add(time.Second)); len(got) != 0 {
			t.Fatalf("listed %v after the cut-off", got)
		}
	}
}

// keepStep is one KeepBrowserSession call of a test: at, and whether a live
// session should be found.
type keepStep struct {
	what string
	at   time.Time
	live bool
}

// runKeepSteps runs each step's KeepBrowserSession, after checking that
// BrowserSessionLive (which changes nothing) judges the session as it will.
func runKeepSteps(t *testing.T, s store.BrowserSessions, user, lineage string, steps []keepStep) {
	t.Helper()
	for _, st := range steps {
		err := s.BrowserSessionLive(ctx(t), user, lineage, st.at)
		switch {
		case st.live && err != nil:
			t.Fatalf("%s: BrowserSessionLive: %v, want the session live", st.what, err)
		case !st.live && !errors.Is(err, store.ErrNotFound):
			t.Fatalf("%s: BrowserSessionLive: %v, want ErrNotFound", st.what, err)
		}
		err = s.KeepBrowserSession(ctx(t), user, lineage, st.at)
		switch {
		case st.live && err != nil:
			t.Fatalf("%s: KeepBrowserSession: %v, want the session live", st.what, err)
		case !st.live && !errors.Is(err, store.ErrNotFound):
			t.Fatalf("%s: KeepBrowserSession: %v, want ErrNotFound", st.what, err)
		}
	}
}

// testBSKeepIdle: a refresh keeps a session alive as a visit would, once
// the move is worth a write (store.TouchDue), and never past its absolute
// expiry.
func testBSKeepIdle(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	const idle = time.Hour
	step := idle / store.TouchDivisor
	for _, tc := range []struct {
		name  string
		steps func(base time.Time) []keepStep
	}{
		{"extends_idle_expiry", func(base time.Time) []keepStep {
			t1 := base.Add(idle - time.Millisecond)
			t2 := t1.Add(idle - time.Millisecond)
			return []keepStep{
				{"1 ms before idle expiry", t1, true},
				{"the keep extended the idle expiry", t2, true},
				{"idle for IdleTTL since the last keep", t2.Add(idle), false},
			}
		}},
		{"no_write_within_touch_step", func(base time.Time) []keepStep {
			return []keepStep{
				{"kept within the touch step", base.Add(step), true},
				{"idle expiry unmoved by it", base.Add(idle), false},
			}
		}},
		{"write_past_touch_step", func(base time.Time) []keepStep {
			return []keepStep{
				{"kept past the touch step", base.Add(step + time.Millisecond), true},
				{"idle expiry moved by it", base.Add(idle), true},
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := newBrowserSession(randomID("u-"), base)
			bs.IdleTTL = idle
			createBS(t, s, bs)
			runKeepSteps(t, s, bs.UserID, bs.ID, tc.steps(base))
		})
	}
	t.Run("never_past_absolute_expiry", func(t *testing.T) {
		bs := newBrowserSession(randomID("u-"), base)
		bs.IdleTTL, bs.AbsoluteExpiry = idle, base.Add(90*time.Minute)
		cookie := createBS(t, s, bs)
		runKeepSteps(t, s, bs.UserID, bs.ID, []keepStep{
			{"in use", base.Add(50 * time.Minute), true},
			{"1 ms before absolute expiry", bs.AbsoluteExpiry.Add(-time.Millisecond), true},
			{"at absolute expiry though recently kept", bs.AbsoluteExpiry, false},
		})
		findBS(t, s, "at absolute expiry", cookie, bs.AbsoluteExpiry, false)
	})
	t.Run("kept session found by its cookie", func(t *testing.T) {
		bs := newBrowserSession(randomID("u-"), base)
		bs.IdleTTL = idle
		cookie := createBS(t, s, bs)
		at := base.Add(50 * time.Minute)
		runKeepSteps(t, s, bs.UserID, bs.ID, []keepStep{{"in use", at, true}})
		got := findBS(t, s, "after the keep's idle expiry from creation", cookie, base.Add(idle+time.Minute), true)
		if !got.LastUsedAt.Equal(base.Add(idle + time.Minute)) {
			t.Fatalf("LastUsedAt = %v", got.LastUsedAt)
		}
	})
}

// testBSLiveReadsOnly: BrowserSessionLive answers as KeepBrowserSession
// but is no activity of the session: however often it finds the session
// live, the session idles out IdleTTL after its last use.
func testBSLiveReadsOnly(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	const idle = time.Hour
	bs := newBrowserSession(randomID("u-"), base)
	bs.IdleTTL = idle
	cookie := createBS(t, s, bs)
	for _, at := range []time.Time{base.Add(idle / 2), base.Add(idle - time.Millisecond)} {
		if err := s.BrowserSessionLive(ctx(t), bs.UserID, bs.ID, at); err != nil {
			t.Fatalf("BrowserSessionLive at %v: %v, want the session live", at.Sub(base), err)
		}
	}
	if err := s.BrowserSessionLive(ctx(t), bs.UserID, bs.ID, base.Add(idle)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("BrowserSessionLive at the idle expiry of the last use: %v, want ErrNotFound", err)
	}
	findBS(t, s, "at the idle expiry of the last use", cookie, base.Add(idle), false)
}

// testBSKeepNotLive: an ended session, one ended by the user's cut-off,
// another user's and an unknown lineage keep nothing alive.
func testBSKeepNotLive(t *testing.T, b Backend) {
	st := b.State
	s := sessionsOf(t, st)
	base := baseTime()
	now := base.Add(time.Minute)
	for _, tc := range []struct {
		name string
		// setup returns the user and lineage to keep.
		setup func(t *testing.T) (user, lineage string)
	}{
		{"ended", func(t *testing.T) (string, string) {
			bs := newBrowserSession(randomID("u-"), base)
			createBS(t, s, bs)
			if _, err := s.EndBrowserSessionGrants(ctx(t), bs.ID, base); err != nil {
				t.Fatalf("EndBrowserSessionGrants: %v", err)
			}
			return bs.UserID, bs.ID
		}},
		{"user_cutoff", func(t *testing.T) (string, string) {
			bs := newBrowserSession(randomID("u-"), base)
			createBS(t, s, bs)
			if err := st.RevokeUserSessions(ctx(t), bs.UserID, base); err != nil {
				t.Fatalf("RevokeUserSessions: %v", err)
			}
			return bs.UserID, bs.ID
		}},
		{"another_user", func(t *testing.T) (string, string) {
			bs := newBrowserSession(randomID("u-"), base)
			createBS(t, s, bs)
			return randomID("u-"), bs.ID
		}},
		{"unknown", func(t *testing.T) (string, string) { return randomID("u-"), randomID("bs-") }},
		{"empty", func(t *testing.T) (string, string) { return randomID("u-"), "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, lineage := tc.setup(t)
			runKeepSteps(t, s, user, lineage, []keepStep{{tc.name, now, false}})
		})
	}
}

// testBSKeepFollowsLineage: a re-login that ends a session and starts one
// continuing its lineage keeps the lineage alive; ending the new session
// ends it.
func testBSKeepLineage(t *testing.T, b Backend) {
	s := sessionsOf(t, b.State)
	base := baseTime()
	first := newBrowserSession(randomID("u-"), base)
	createBS(t, s, first)
	runKeepSteps(t, s, first.UserID, first.ID, []keepStep{{"first session", base.Add(time.Minute), true}})
	if _, err := s.EndBrowserSessionGrants(ctx(t), first.ID, base.Add(2*time.Minute)); err != nil {
		t.Fatalf("EndBrowserSessionGrants: %v", err)
	}
	second := newBrowserSession(first.UserID, base.Add(2*time.Minute))
	second.Lineage = first.ID
	cookie := createBS(t, s, second)
	if got := findBS(t, s, "re-login", cookie, base.Add(3*time.Minute), true); got.Lineage != first.ID {
		t.Fatalf("re-login's Lineage = %q, want %q", got.Lineage, first.ID)
	}
	third := newBrowserSession(first.UserID, base.Add(3*time.Minute)) // another browser: its own lineage
	createBS(t, s, third)
	runKeepSteps(t, s, first.UserID, first.ID, []keepStep{{"continued by the re-login", base.Add(4 * time.Minute), true}})
	runKeepSteps(t, s, first.UserID, second.ID, []keepStep{{"the re-login's own id is not a lineage", base.Add(4 * time.Minute), false}})
	if _, err := s.EndBrowserSessionGrants(ctx(t), second.ID, base.Add(5*time.Minute)); err != nil {
		t.Fatalf("EndBrowserSessionGrants: %v", err)
	}
	runKeepSteps(t, s, first.UserID, first.ID, []keepStep{{"re-login ended", base.Add(6 * time.Minute), false}})
	runKeepSteps(t, s, first.UserID, third.ID, []keepStep{{"the other browser's session", base.Add(6 * time.Minute), true}})
}

// grantedBS is a session of user created at base+at, holding one grant
// (sid the session's id with a "g-" prefix).
func grantedBS(user string, base time.Time, at time.Duration) store.BrowserSession {
	bs := newBrowserSession(user, base.Add(at))
	bs.ClientIDs = []string{"web"}
	bs.Grants = []store.SessionGrant{{SID: "g-" + bs.ID, ClientID: "web", GrantedAt: base.Add(at)}}
	return bs
}

// sidsOf is the sids of gs, in order.
func sidsOf(gs []store.SessionGrant) []string {
	out := []string{}
	for _, g := range gs {
		out = append(out, g.SID)
	}
	return out
}

// testBSCap: with a cap of 3, a sign-in past it ends the user's oldest
// live sessions by creation (not by the order they were stored in) and
// returns them (their ids, for the caller's audit) with their grants,
// oldest session first; the ended sessions are found
// no more, take no grant and return nothing when ended again. A dead
// session, an ended one and other users' sessions do not count.
func testBSCap(t *testing.T, newBackend func(t *testing.T, cfg Config) Backend) {
	s := sessionsOf(t, newBackend(t, Config{MaxSessionsPerUser: 3}).State)
	base := baseTime()
	user, other := randomID("u-"), randomID("u-")
	now := base.Add(time.Minute)
	create := func(bs store.BrowserSession) ([]byte, []store.EndedBrowserSession) {
		t.Helper()
		cookie := newToken().hash
		ended, err := s.CreateBrowserSession(ctx(t), bs, cookie)
		if err != nil {
			t.Fatalf("CreateBrowserSession(%s): %v", bs.ID, err)
		}
		return cookie, ended
	}
	// Dead (idle since before base) and ended sessions, and another user's
	// three, take no place.
	dead := grantedBS(user, base, -9*time.Hour)
	create(dead)
	gone := grantedBS(user, base, -time.Hour)
	create(gone)
	if _, err := s.EndBrowserSessionGrants(ctx(t), gone.ID, base); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, ended := create(grantedBS(other, base, time.Duration(i)*time.Millisecond)); len(ended) != 0 {
			t.Fatalf("another user's sign-in %d ended %+v", i, ended)
		}
	}
	// Stored out of creation order: b, a, c. The oldest, a, holds two
	// grants (one offline), in order.
	a, b, c := grantedBS(user, base, 1*time.Millisecond), grantedBS(user, base, 2*time.Millisecond), grantedBS(user, base, 3*time.Millisecond)
	a.Grants = append(a.Grants, store.SessionGrant{SID: "g2-" + a.ID, ClientID: "rp", Offline: true, GrantedAt: base.Add(time.Millisecond)})
	cookies := map[string][]byte{}
	for _, bs := range []store.BrowserSession{b, a, c} {
		var ended []store.EndedBrowserSession
		if cookies[bs.ID], ended = create(bs); len(ended) != 0 {
			t.Fatalf("sign-in within the cap (%s) ended %+v", bs.ID, ended)
		}
	}
	d := grantedBS(user, base, 4*time.Millisecond)
	var ended []store.EndedBrowserSession
	cookies[d.ID], ended = create(d)
	if want := []store.EndedBrowserSession{{ID: a.ID, Grants: a.Grants}}; !reflect.DeepEqual(ended, want) {
		t.Fatalf("a sign-in past the cap ended %+v, want the oldest session with its grants %+v", ended, want)
	}
	e := grantedBS(user, base, 5*time.Millisecond)
	cookies[e.ID], ended = create(e)
	if len(ended) != 1 || ended[0].ID != b.ID || !reflect.DeepEqual(sidsOf(ended[0].Grants), sidsOf(b.Grants)) {
		t.Fatalf("the next sign-in ended %+v, want %s with its grants %v", ended, b.ID, sidsOf(b.Grants))
	}
	if got, want := listBS(t, s, user, now), []string{e.ID, d.ID, c.ID}; !reflect.DeepEqual(got, want) {
		t.Fatalf("listed %v, want the three newest %v", got, want)
	}
	for _, bs := range []store.BrowserSession{a, b} {
		findBS(t, s, "a session the cap ended", cookies[bs.ID], now, false)
		if _, err := s.AddBrowserSessionGrant(ctx(t), user, bs.ID, store.SessionGrant{SID: randomID("g-"), ClientID: "web", GrantedAt: now}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("AddBrowserSessionGrant to a session the cap ended: %v, want ErrNotFound", err)
		}
		if gs, err := s.EndBrowserSessionGrants(ctx(t), bs.ID, now); err != nil || len(gs) != 0 {
			t.Fatalf("EndBrowserSessionGrants of a session the cap ended: %v, %v; want nothing", gs, err)
		}
	}
	for _, bs := range []store.BrowserSession{c, d, e} {
		findBS(t, s, "a kept session", cookies[bs.ID], now, true)
	}
	if got := listBS(t, s, other, now); len(got) != 3 {
		t.Fatalf("the other user's sessions: %v, want all three", got)
	}
}

// testBSCapRace: sign-ins of one user past the cap, all at once: the user
// holds exactly the cap afterwards, and the sessions returned (with their
// grants) are those no longer live, each once.
func testBSCapRace(t *testing.T, newBackend func(t *testing.T, cfg Config) Backend) {
	const limit, logins = 4, 24
	s := sessionsOf(t, newBackend(t, Config{MaxSessionsPerUser: limit}).State)
	base := baseTime()
	user := randomID("u-")
	sessions := make([]store.BrowserSession, logins)
	endeds := make([][]store.EndedBrowserSession, logins)
	errs := make([]error, logins)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range sessions {
		sessions[i] = grantedBS(user, base, time.Duration(i)*time.Millisecond)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			endeds[i], errs[i] = s.CreateBrowserSession(ctx(t), sessions[i], newToken().hash)
		}(i)
	}
	close(start)
	wg.Wait()
	returned, returnedIDs := map[string]int{}, map[string]int{}
	for i := range sessions {
		if errs[i] != nil {
			t.Fatalf("CreateBrowserSession %d: %v", i, errs[i])
		}
		for _, e := range endeds[i] {
			returnedIDs[e.ID]++
			for _, g := range e.Grants {
				returned[g.SID]++
			}
		}
	}
	live := listBS(t, s, user, base.Add(time.Minute))
	if len(live) != limit {
		t.Fatalf("%d sign-ins at once: %d live sessions, want the cap, %d", logins, len(live), limit)
	}
	isLive := map[string]bool{}
	for _, id := range live {
		isLive[id] = true
	}
	for _, bs := range sessions {
		n, m := returned[bs.Grants[0].SID], returnedIDs[bs.ID]
		if isLive[bs.ID] && (n != 0 || m != 0) || !isLive[bs.ID] && (n != 1 || m != 1) {
			t.Fatalf("session %s (live %v): returned %d times, its grant %d times", bs.ID, isLive[bs.ID], m, n)
		}
	}
}

// testBSCapVsGrants races grants recorded in a user's oldest session
// against the sign-in that ends it past the cap: every grant recorded
// (nil error) is among those the sign-in returns; the others found the
// session ended (ErrNotFound).
func testBSCapVsGrants(t *testing.T, newBackend func(t *testing.T, cfg Config) Backend) {
	const limit, adds = 2, 16
	s := sessionsOf(t, newBackend(t, Config{MaxSessionsPerUser: limit}).State)
	for round := 0; round < 3; round++ {
		base := baseTime()
		user := randomID("u-")
		old := grantedBS(user, base, 0)
		createBS(t, s, old)
		createBS(t, s, grantedBS(user, base, time.Millisecond))
		next := grantedBS(user, base, 2*time.Millisecond)
		grants := make([]store.SessionGrant, adds)
		errs := make([]error, adds)
		var capped []store.EndedBrowserSession
		var createErr error
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range grants {
			grants[i] = store.SessionGrant{SID: randomID("g-"), ClientID: "web", GrantedAt: base}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start
				_, errs[i] = s.AddBrowserSessionGrant(ctx(t), user, old.ID, grants[i])
			}(i)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			capped, createErr = s.CreateBrowserSession(ctx(t), next, newToken().hash)
		}()
		close(start)
		wg.Wait()
		if createErr != nil {
			t.Fatalf("CreateBrowserSession: %v", createErr)
		}
		if len(capped) != 1 || capped[0].ID != old.ID {
			t.Fatalf("ended %+v, want the old session %s", capped, old.ID)
		}
		ended := capped[0].Grants
		got := map[string]bool{}
		for _, g := range ended {
			got[g.SID] = true
		}
		if !got[old.Grants[0].SID] || len(got) != len(ended) {
			t.Fatalf("ended %v, want the old session's grants once each", sidsOf(ended))
		}
		recorded := 1
		for i, g := range grants {
			switch {
			case errs[i] == nil:
				recorded++
				if !got[g.SID] {
					t.Fatalf("grant %s recorded in the ended session, but not returned (%v)", g.SID, sidsOf(ended))
				}
			case !errors.Is(errs[i], store.ErrNotFound):
				t.Fatalf("AddBrowserSessionGrant: %v, want nil or ErrNotFound", errs[i])
			}
		}
		if recorded != len(ended) {
			t.Fatalf("%d grants recorded, %d returned", recorded, len(ended))
		}
	}
}
