package redisstate

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store"
)

var (
	_ store.SingleUse       = (*State)(nil)
	_ store.BrowserSessions = (*State)(nil)
)

// Keys of browser sign-in (see the key layout in state.go):
//
//	<p>{o:<kind>:<hex hash>}  hash: a single-use record (v value, x expiry ms,
//	                          t taken); a take moves x and the TTL to the
//	                          tombstone's end when that is later
//	<p>{bc:<hex hash>}        a browser-session cookie: "<session id>\n<user id>"
//	<p>{bs:<id>}              the user id of a browser session
//	<p>{u:<uid>}:bs           hash: the user's browser sessions: field <id> the
//	                          times "auth:last:abs:idle:created" (ms), <id>:d the
//	                          rest (JSON), <id>:c the client ids (one per line),
//	                          <id>:g the grants, oldest first (one per line:
//	                          "sid<TAB>client<TAB>offline 0|1<TAB>granted ms"),
//	                          <id>:gn how many lines <id>:g holds,
//	                          <lineage>:l the id of the session that
//	                          continues the lineage (absent while the
//	                          lineage's first session is its only one)
//
// A user's sessions share the slot of the user's cut-off ({u:<uid>}:cut), so
// the scripts that create and find them check it atomically.
func (s *State) onceKey(kind string, h []byte) string {
	return s.prefix + "{o:" + kind + ":" + hex.EncodeToString(h) + "}"
}
func (s *State) cookieKey(h []byte) string   { return s.prefix + "{bc:" + hex.EncodeToString(h) + "}" }
func (s *State) bsOwnerKey(id string) string { return s.prefix + "{bs:" + id + "}" }
func (s *State) userBSKey(uid string) string { return s.prefix + "{u:" + uid + "}:bs" }

// PutOnce implements store.SingleUse. The record's Redis TTL is expiresAt
// by the state's clock; a value already expired by it is refused.
func (s *State) PutOnce(ctx context.Context, kind string, keyHash, value []byte, expiresAt time.Time) error {
	call, err := s.putOnceCall(store.OnceRecord{Kind: kind, KeyHash: keyHash, Value: value, ExpiresAt: expiresAt})
	if err != nil {
		return err
	}
	return putOnceOutcome(call.run(ctx, s.c))
}

// putOnceCall is the script call of PutOnce(r).
func (s *State) putOnceCall(r store.OnceRecord) (scriptCall, error) {
	if r.Kind == "" || strings.ContainsAny(r.Kind, "{}") || len(r.KeyHash) == 0 {
		return scriptCall{}, errors.New("redis token state: put once: invalid kind or empty key hash")
	}
	ttl := r.ExpiresAt.UnixMilli() - s.now().UnixMilli()
	if ttl <= 0 {
		return scriptCall{}, errors.New("redis token state: put once: already expired")
	}
	return scriptCall{putOnceScript, []string{s.onceKey(r.Kind, r.KeyHash)}, []any{r.Value, r.ExpiresAt.UnixMilli(), ttl}}, nil
}

// putOnceOutcome reads putOnceScript's reply.
func putOnceOutcome(cmd *redis.Cmd) error {
	n, err := cmd.Int64()
	if err != nil {
		return unavailable("put once", err)
	}
	if n == 0 {
		return fmt.Errorf("redis token state: put once: %w", store.ErrAlreadyExists)
	}
	return nil
}

// TakeOnce implements store.SingleUse with one script: of any number of
// concurrent takes exactly one finds the record untaken. The taken record's
// expiry (field x) and TTL move to its tombstone's end,
// store.TakenKeptFor(kind) after now, when that is later.
func (s *State) TakeOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error) {
	if kind == "" || strings.ContainsAny(kind, "{}") || len(keyHash) == 0 {
		return nil, fmt.Errorf("redis token state: take once: %w", store.ErrNotFound)
	}
	keep := store.TakenKeptFor(kind).Milliseconds()
	raw, err := takeOnceScript.Run(ctx, s.c, []string{s.onceKey(kind, keyHash)}, now.UnixMilli(), keep).Slice()
	if err != nil {
		return nil, unavailable("take once", err)
	}
	return onceResult("take once", raw)
}

// PeekOnce implements store.SingleUse.
func (s *State) PeekOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error) {
	if kind == "" || strings.ContainsAny(kind, "{}") || len(keyHash) == 0 {
		return nil, fmt.Errorf("redis token state: peek once: %w", store.ErrNotFound)
	}
	vals, err := s.c.HMGet(ctx, s.onceKey(kind, keyHash), "v", "x", "t").Result()
	if err != nil {
		return nil, unavailable("peek once", err)
	}
	v, ok1 := vals[0].(string)
	xs, ok2 := vals[1].(string)
	t, _ := vals[2].(string)
	x, err := strconv.ParseInt(xs, 10, 64)
	if !ok1 || !ok2 || err != nil || now.UnixMilli() >= x {
		return nil, fmt.Errorf("redis token state: peek once: %w", store.ErrNotFound)
	}
	if t == "1" {
		return []byte(v), fmt.Errorf("redis token state: once: %w", store.ErrTokenUsed)
	}
	return []byte(v), nil
}

func onceResult(op string, raw []interface{}) ([]byte, error) {
	if len(raw) == 0 {
		return nil, unavailable(op, errors.New("empty script reply"))
	}
	code, _ := raw[0].(int64)
	if code == 0 || len(raw) < 2 {
		return nil, fmt.Errorf("redis token state: %s: %w", op, store.ErrNotFound)
	}
	v, _ := raw[1].(string)
	if code == 2 {
		return []byte(v), fmt.Errorf("redis token state: %s: %w", op, store.ErrTokenUsed)
	}
	return []byte(v), nil
}

// sessionData is the part of a browser session no script reads.
type sessionData struct {
	// Lineage is store.BrowserSession.Lineage; omitted when it is the
	// session's own id (and in sessions stored before it was kept).
	Lineage   string   `json:"lin,omitempty"`
	AMR       []string `json:"amr,omitempty"`
	Remember  bool     `json:"remember,omitempty"`
	IP        string   `json:"ip,omitempty"`
	UserAgent string   `json:"ua,omitempty"`
}

// validSessionPart reports whether v can be a session id: braces would move
// keys off their hash tag, a newline or colon would break the layout.
func validSessionPart(v string) bool { return v != "" && !strings.ContainsAny(v, "{}\n:") }

// validUserID reports whether v can be the user of a browser session.
func validUserID(v string) bool { return v != "" && !strings.ContainsAny(v, "{}\n") }

// CreateBrowserSession implements store.BrowserSessions. The cookie and
// id are claimed first (store.ErrAlreadyExists when taken); then one script
// on the user's slot (createBrowserSessionScript) refuses
// (store.ErrSessionsEnded) a session whose AuthTime is at or before the
// user's cut-off, else ends the oldest live sessions past the cap
// (Options.MaxSessionsPerUser) and stores it: a concurrent
// RevokeUserSessions either sees the session and ends it or has set the
// cut-off that refuses it, and a concurrent AddBrowserSessionGrant (a
// script on the same slot) lands before the end, whose sessions are
// returned with their grants, or finds the session gone. The cookie and owner keys of an
// ended session are left to expire: they find nothing in the user's hash.
func (s *State) CreateBrowserSession(ctx context.Context, bs store.BrowserSession, cookieHash []byte) ([]store.EndedBrowserSession, error) {
	if !validSessionPart(bs.ID) || !validUserID(bs.UserID) || len(cookieHash) == 0 || bs.AbsoluteExpiry.IsZero() {
		return nil, errors.New("redis token state: create browser session: id, user, cookie hash and absolute expiry are required")
	}
	created := bs.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	last, auth := bs.LastUsedAt, bs.AuthTime
	if last.IsZero() {
		last = created
	}
	if auth.IsZero() {
		auth = created
	}
	ttl := bs.AbsoluteExpiry.UnixMilli() - last.UnixMilli()
	if ttl <= 0 {
		return nil, errors.New("redis token state: create browser session: already expired")
	}
	for _, c := range bs.ClientIDs {
		if c == "" || strings.Contains(c, "\n") {
			return nil, errors.New("redis token state: create browser session: invalid client id")
		}
	}
	grants := make([]string, len(bs.Grants))
	for i, g := range bs.Grants {
		line, err := grantLine(g)
		if err != nil {
			return nil, fmt.Errorf("redis token state: create browser session: %w", err)
		}
		grants[i] = line
	}
	lineage := bs.Lineage
	if lineage == "" {
		lineage = bs.ID
	}
	if !validSessionPart(lineage) {
		return nil, errors.New("redis token state: create browser session: invalid lineage")
	}
	// Kept as every backend keeps them, so that a session reads the same on each.
	ip, ua := store.CleanRequestMeta(bs.IP, bs.UserAgent)
	d := sessionData{AMR: bs.AMR, Remember: bs.Remember, IP: ip, UserAgent: ua}
	if lineage != bs.ID {
		d.Lineage = lineage
	}
	data, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("redis token state: create browser session: %w", err)
	}
	ck, ok := s.cookieKey(cookieHash), s.bsOwnerKey(bs.ID)
	claimed, err := s.c.SetNX(ctx, ok, bs.UserID, time.Duration(ttl)*time.Millisecond).Result()
	if err != nil {
		return nil, unavailable("create browser session", err)
	}
	if !claimed {
		return nil, fmt.Errorf("redis token state: create browser session: %w", store.ErrAlreadyExists)
	}
	claimed, err = s.c.SetNX(ctx, ck, bs.ID+"\n"+bs.UserID, time.Duration(ttl)*time.Millisecond).Result()
	if err != nil || !claimed {
		_ = s.c.Del(ctx, ok).Err()
		if err != nil {
			return nil, unavailable("create browser session", err)
		}
		return nil, fmt.Errorf("redis token state: create browser session: %w", store.ErrAlreadyExists)
	}
	header := fmt.Sprintf("%d:%d:%d:%d:%d", auth.UnixMilli(), last.UnixMilli(), bs.AbsoluteExpiry.UnixMilli(),
		bs.IdleTTL.Milliseconds(), created.UnixMilli())
	raw, err := createBrowserSessionScript.Run(ctx, s.c, []string{s.userBSKey(bs.UserID), s.userCutKey(bs.UserID)},
		bs.ID, header, data, strings.Join(bs.ClientIDs, "\n"), auth.UnixMilli(), last.UnixMilli(), ttl,
		strings.Join(grants, "\n"), lineage, s.maxSes).Slice()
	if err == nil && len(raw) == 0 {
		err = errors.New("empty script reply")
	}
	refused := false
	if err == nil {
		code, _ := raw[0].(int64)
		refused = code < 0
	}
	if err != nil || refused {
		_ = s.c.Del(ctx, ck, ok).Err() // best effort: an orphan cookie finds nothing anyway
	}
	if err != nil {
		return nil, unavailable("create browser session", err)
	}
	if refused {
		return nil, fmt.Errorf("redis token state: create browser session: %w", store.ErrSessionsEnded)
	}
	// raw[1:] is an id and its grants for each ended session. They are
	// ended all the same: what could be read still goes to the caller.
	var ended []store.EndedBrowserSession
	for j := 1; j+1 < len(raw); j += 2 {
		id, _ := raw[j].(string)
		lines, _ := raw[j+1].(string)
		gs, err := parseGrants(lines)
		ended = append(ended, store.EndedBrowserSession{ID: id, Grants: gs})
		if err != nil {
			return ended, fmt.Errorf("redis token state: create browser session: grants of ended session %s: %w", id, err)
		}
	}
	return ended, nil
}

// FindBrowserSession implements store.BrowserSessions. After the session
// script (live, after the cut-off in Redis; touches it), the user's cut-off
// is checked again in the revocation set, which is rebuilt from the durable
// log when Redis lost it: a session authenticated at or before a recorded
// cut-off is never found, and an unreachable Redis or log fails closed.
func (s *State) FindBrowserSession(ctx context.Context, cookieHash []byte, now time.Time) (store.BrowserSession, error) {
	notFound := fmt.Errorf("redis token state: find browser session: %w", store.ErrNotFound)
	if len(cookieHash) == 0 {
		return store.BrowserSession{}, notFound
	}
	uid, id, raw, cut, version, err := s.lookupSession(ctx, cookieHash, now)
	if err != nil {
		return store.BrowserSession{}, unavailable("find browser session", err)
	}
	if uid == "" || len(raw) < 3 {
		return store.BrowserSession{}, notFound
	}
	str := make([]string, 3)
	for i := range str {
		str[i], _ = raw[i].(string)
	}
	bs, err := parseSession(uid, id, str[0], str[1], str[2], "")
	if err != nil {
		return store.BrowserSession{}, fmt.Errorf("redis token state: find browser session: %w", err)
	}
	if cut < 0 { // the revocation set is being rebuilt: the full check waits for it
		if err := s.checkSessionCutoff(ctx, bs); err != nil {
			return store.BrowserSession{}, err
		}
	} else if bs.AuthTime.UnixMilli() <= cut {
		return store.BrowserSession{}, notFound
	}
	bs.UserVersion = store.UserVersion{Read: true, Value: version}
	return bs, nil
}

// lookupSession finds the session of the cookie whose hash is cookieHash:
// its user and id (uid "" when the cookie is unknown), the reply of the
// find script on the user's sessions (findBrowserSessionScript: empty when
// the session is unknown, dead or ended), the user's durable cut-off
// from the revocation set (Unix ms, 0: none, -1: the set is not
// (re)built) and the user's version (UserVersion). Revocations queued
// after a failed write are applied first, as IsAccessTokenRevoked does.
// Without Cluster it is one round trip (findBrowserSessionByCookieScript);
// on Cluster, where the cookie, the user's keys and the revocation set are
// in different slots, the cookie is read first, then the rest in one
// pipeline.
func (s *State) lookupSession(ctx context.Context, cookieHash []byte, now time.Time) (uid, id string, raw []any, cut int64, version string, err error) {
	if err := s.flushPending(ctx); err != nil {
		return "", "", nil, 0, "", err
	}
	if !s.cluster {
		args := make([]any, 0, len(s.findByCookieArgs)+3)
		args = append(append(append(args, now.UnixMilli()), s.findByCookieArgs...), userVersionArgs()...)
		out, err := findBrowserSessionByCookieScript.Run(ctx, s.c, []string{s.cookieKey(cookieHash)}, args...).Slice()
		if err != nil {
			return "", "", nil, 0, "", err
		}
		if len(out) < 4 {
			return "", "", nil, 0, "", nil
		}
		id, _ = out[0].(string)
		uid, _ = out[1].(string)
		c, ok := out[2].(int64)
		v, vok := out[3].(string)
		if id == "" || uid == "" || !ok || !vok {
			return "", "", nil, 0, "", errors.New("find browser session: corrupt script reply")
		}
		return uid, id, out[4:], c, v, nil
	}
	ptr, err := s.c.Get(ctx, s.cookieKey(cookieHash)).Result()
	if errors.Is(err, redis.Nil) {
		return "", "", nil, 0, "", nil
	}
	if err != nil {
		return "", "", nil, 0, "", err
	}
	id, uid, found := strings.Cut(ptr, "\n")
	if !found {
		return "", "", nil, 0, "", nil
	}
	raw, cut, version, err = s.findSession(ctx, uid, id, now)
	return uid, id, raw, cut, version, err
}

// findSession runs the find script on the user's sessions and reads the
// user's durable cut-off from the revocation set and the user's version
// in one round trip (a pipeline; they live in different slots), for
// lookupSession.
func (s *State) findSession(ctx context.Context, uid, id string, now time.Time) (raw []any, cut int64, version string, err error) {
	cmds := s.evalPipelined(ctx,
		scriptCall{findBrowserSessionScript, []string{s.userBSKey(uid), s.userCutKey(uid)}, []any{id, now.UnixMilli()}},
		scriptCall{userCutoffReadScript, []string{s.readyKey(), s.userKey(uid)}, nil},
		scriptCall{userVersionScript, []string{s.userVerKey(uid)}, userVersionArgs()})
	if raw, err = cmds[0].Slice(); err != nil {
		return nil, 0, "", err
	}
	if cut, err = cmds[1].Int64(); err != nil {
		return nil, 0, "", err
	}
	if version, err = cmds[2].Text(); err != nil {
		return nil, 0, "", err
	}
	return raw, cut, version, nil
}

// checkSessionCutoff refuses a session the user's durable cut-off ends.
func (s *State) checkSessionCutoff(ctx context.Context, bs store.BrowserSession) error {
	ended, err := s.IsAccessTokenRevoked(ctx, store.AccessTokenRef{UserID: bs.UserID, IssuedAt: bs.AuthTime})
	if err != nil {
		return fmt.Errorf("redis token state: browser session: check cut-off: %w", err)
	}
	if ended {
		return fmt.Errorf("redis token state: browser session: %w", store.ErrNotFound)
	}
	return nil
}

func parseSession(uid, id, header, data, clients, grants string) (store.BrowserSession, error) {
	parts := strings.Split(header, ":")
	if len(parts) != 5 {
		return store.BrowserSession{}, errors.New("corrupt browser session")
	}
	var n [5]int64
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return store.BrowserSession{}, fmt.Errorf("corrupt browser session: %w", err)
		}
		n[i] = v
	}
	var d sessionData
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		return store.BrowserSession{}, fmt.Errorf("corrupt browser session: %w", err)
	}
	var ids []string
	if clients != "" {
		ids = strings.Split(clients, "\n")
	}
	gs, err := parseGrants(grants)
	if err != nil {
		return store.BrowserSession{}, err
	}
	lineage := d.Lineage
	if lineage == "" {
		lineage = id
	}
	return store.BrowserSession{
		ID: id, Lineage: lineage, UserID: uid, AuthTime: time.UnixMilli(n[0]).UTC(), AMR: d.AMR, Remember: d.Remember,
		CreatedAt: time.UnixMilli(n[4]).UTC(), LastUsedAt: time.UnixMilli(n[1]).UTC(),
		IdleTTL: time.Duration(n[3]) * time.Millisecond, AbsoluteExpiry: time.UnixMilli(n[2]).UTC(),
		IP: d.IP, UserAgent: d.UserAgent, ClientIDs: ids, Grants: gs,
	}, nil
}

// grantLine is g as the session hash keeps it: "sid\tclient\toffline\tms".
func grantLine(g store.SessionGrant) (string, error) {
	if g.SID == "" || g.ClientID == "" || strings.ContainsAny(g.SID, "\t\n") || strings.ContainsAny(g.ClientID, "\t\n") {
		return "", errors.New("invalid grant: sid and client id are required, without tabs or newlines")
	}
	off := "0"
	if g.Offline {
		off = "1"
	}
	return g.SID + "\t" + g.ClientID + "\t" + off + "\t" + strconv.FormatInt(g.GrantedAt.UnixMilli(), 10), nil
}

func parseGrant(line string) (store.SessionGrant, error) {
	f := strings.Split(line, "\t")
	if len(f) != 4 || f[0] == "" || f[1] == "" || (f[2] != "0" && f[2] != "1") {
		return store.SessionGrant{}, errors.New("corrupt browser session grant")
	}
	at, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return store.SessionGrant{}, fmt.Errorf("corrupt browser session grant: %w", err)
	}
	return store.SessionGrant{SID: f[0], ClientID: f[1], Offline: f[2] == "1", GrantedAt: time.UnixMilli(at).UTC()}, nil
}

// KeepBrowserSession implements store.BrowserSessions: one script on the
// user's slot (keepBrowserSessionScript) follows the lineage to its
// session, judges it as FindBrowserSession's script does and moves its
// last use. The user's durable cut-off is not read again: a cut-off that
// ends the session ends the family being refreshed too (its AuthTime is
// the session's or earlier), which the rotation has checked.
func (s *State) KeepBrowserSession(ctx context.Context, userID, lineage string, now time.Time) error {
	notFound := fmt.Errorf("redis token state: keep browser session: %w", store.ErrNotFound)
	if !validUserID(userID) || !validSessionPart(lineage) {
		return notFound
	}
	n, err := keepBrowserSessionScript.Run(ctx, s.c, []string{s.userBSKey(userID), s.userCutKey(userID)},
		lineage, now.UnixMilli(), store.TouchDivisor).Int64()
	if err != nil {
		return unavailable("keep browser session", err)
	}
	if n != 1 {
		return notFound
	}
	return nil
}

// BrowserSessionLive implements store.BrowserSessions: one read-only
// script on the user's slot (browserSessionLiveScript) judges as
// KeepBrowserSession does and writes nothing.
func (s *State) BrowserSessionLive(ctx context.Context, userID, lineage string, now time.Time) error {
	notFound := fmt.Errorf("redis token state: check browser session: %w", store.ErrNotFound)
	if !validUserID(userID) || !validSessionPart(lineage) {
		return notFound
	}
	n, err := browserSessionLiveScript.Run(ctx, s.c, []string{s.userBSKey(userID), s.userCutKey(userID)},
		lineage, now.UnixMilli()).Int64()
	if err != nil {
		return unavailable("check browser session", err)
	}
	if n != 1 {
		return notFound
	}
	return nil
}

// owner returns the user of session id ("" when unknown).
func (s *State) owner(ctx context.Context, op, id string) (string, error) {
	if !validSessionPart(id) {
		return "", nil
	}
	uid, err := s.c.Get(ctx, s.bsOwnerKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", unavailable(op, err)
	}
	return uid, nil
}

// AddBrowserSessionGrant implements store.BrowserSessions: one script on
// the user's slot (the session lives in its user's hash) checks the session
// and the user's cut-off, records the client and the grant and drops the
// oldest grants beyond store.MaxSessionGrants, so that it is atomic with
// EndBrowserSessionGrants and RevokeUserSessions: a session ended first
// takes no grant (store.ErrNotFound), and so does a session of another
// user.
func (s *State) AddBrowserSessionGrant(ctx context.Context, uid, id string, g store.SessionGrant) ([]store.SessionGrant, error) {
	call, err := s.grantCall(uid, id, g)
	if err != nil {
		return nil, err
	}
	return grantOutcome(call.run(ctx, s.c))
}

// AddBrowserSessionGrantWithCode implements store.BrowserSessions: the
// code's PutOnce and the grant's script in one pipeline, one round trip
// (on Cluster, one per node, at once).
func (s *State) AddBrowserSessionGrantWithCode(ctx context.Context, uid, id string, g store.SessionGrant, code store.OnceRecord) ([]store.SessionGrant, error) {
	put, err := s.putOnceCall(code)
	if err != nil {
		return nil, err
	}
	grant, err := s.grantCall(uid, id, g)
	if err != nil {
		return nil, err
	}
	cmds := s.evalPipelined(ctx, put, grant)
	dropped, err := grantOutcome(cmds[1])
	if perr := putOnceOutcome(cmds[0]); perr != nil {
		// The grant may have landed all the same (on Cluster the code's
		// node can fail alone): what it dropped still goes to the caller.
		return dropped, perr
	}
	return dropped, err
}

// grantCall is the script call of AddBrowserSessionGrant(uid, id, g).
func (s *State) grantCall(uid, id string, g store.SessionGrant) (scriptCall, error) {
	line, err := grantLine(g)
	if err != nil {
		return scriptCall{}, fmt.Errorf("redis token state: add browser session grant: %w", err)
	}
	if uid == "" || !validSessionPart(id) {
		return scriptCall{}, fmt.Errorf("redis token state: add browser session grant: %w", store.ErrNotFound)
	}
	return scriptCall{addBrowserSessionGrantScript, []string{s.userBSKey(uid), s.userCutKey(uid)},
		[]any{id, g.ClientID, line, store.MaxSessionGrants}}, nil
}

// grantOutcome reads addBrowserSessionGrantScript's reply: the grants
// dropped.
func grantOutcome(cmd *redis.Cmd) ([]store.SessionGrant, error) {
	raw, err := cmd.Slice()
	if err != nil {
		return nil, unavailable("add browser session grant", err)
	}
	if len(raw) == 0 {
		return nil, unavailable("add browser session grant", errors.New("empty script reply"))
	}
	if code, _ := raw[0].(int64); code != 1 {
		return nil, fmt.Errorf("redis token state: add browser session grant: %w", store.ErrNotFound)
	}
	var dropped []store.SessionGrant
	for _, v := range raw[1:] {
		str, _ := v.(string)
		d, err := parseGrant(str)
		if err != nil {
			return nil, fmt.Errorf("redis token state: add browser session grant: %w", err)
		}
		dropped = append(dropped, d)
	}
	return dropped, nil
}

// EndBrowserSessionGrants implements store.BrowserSessions: one script on
// the user's slot reads the grants and removes the session, so no
// AddBrowserSessionGrant (a script on the same slot) falls between.
func (s *State) EndBrowserSessionGrants(ctx context.Context, id string, _ time.Time) ([]store.SessionGrant, error) {
	uid, err := s.owner(ctx, "end browser session", id)
	if err != nil || uid == "" {
		return nil, err
	}
	raw, err := endBrowserSessionScript.Run(ctx, s.c, []string{s.userBSKey(uid)}, id).Text()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable("end browser session", err)
	}
	gs, err := parseGrants(raw)
	if err != nil {
		return nil, fmt.Errorf("redis token state: end browser session: %w", err)
	}
	return gs, nil
}

// BrowserSessionGrants implements store.BrowserSessions.
func (s *State) BrowserSessionGrants(ctx context.Context, uid, id string) ([]store.SessionGrant, error) {
	notFound := fmt.Errorf("redis token state: browser session grants: %w", store.ErrNotFound)
	if uid == "" || !validSessionPart(id) {
		return nil, notFound
	}
	raw, err := sessionGrantsScript.Run(ctx, s.c, []string{s.userBSKey(uid), s.userCutKey(uid)}, id, s.now().UnixMilli()).Slice()
	if err != nil {
		return nil, unavailable("browser session grants", err)
	}
	if len(raw) < 2 {
		return nil, notFound
	}
	lines, _ := raw[1].(string)
	gs, err := parseGrants(lines)
	if err != nil {
		return nil, fmt.Errorf("redis token state: browser session grants: %w", err)
	}
	return gs, nil
}

// parseGrants reads a session's grants field: one grant a line, oldest first.
func parseGrants(lines string) ([]store.SessionGrant, error) {
	if lines == "" {
		return nil, nil
	}
	var gs []store.SessionGrant
	for _, line := range strings.Split(lines, "\n") {
		g, err := parseGrant(line)
		if err != nil {
			return nil, err
		}
		gs = append(gs, g)
	}
	return gs, nil
}

// ListBrowserSessions implements store.BrowserSessions: newest first (by
// CreatedAt, then id).
func (s *State) ListBrowserSessions(ctx context.Context, userID string, now time.Time) ([]store.BrowserSession, error) {
	if !validUserID(userID) {
		return nil, nil
	}
	raw, err := listBrowserSessionsScript.Run(ctx, s.c, []string{s.userBSKey(userID), s.userCutKey(userID)}, now.UnixMilli()).StringSlice()
	if err != nil {
		return nil, unavailable("list browser sessions", err)
	}
	out := make([]store.BrowserSession, 0, len(raw)/5)
	for i := 0; i+4 < len(raw); i += 5 {
		bs, err := parseSession(userID, raw[i], raw[i+1], raw[i+2], raw[i+3], raw[i+4])
		if err != nil {
			return nil, fmt.Errorf("redis token state: list browser sessions: %w", err)
		}
		switch err := s.checkSessionCutoff(ctx, bs); {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return nil, err
		}
		out = append(out, bs)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

// endUserBrowserSessionsCall is the call that deletes the user's browser
// sessions authenticated at or before cut (ms); ok is false for a user id
// that cannot name browser sessions. A user's revocation runs it after
// moving the cut-off, which already hides them.
func (s *State) endUserBrowserSessionsCall(uid string, cut int64) (c scriptCall, ok bool) {
	if !validUserID(uid) {
		return scriptCall{}, false
	}
	return scriptCall{endUserBrowserSessionsScript, []string{s.userBSKey(uid)}, []any{cut}}, true
}
