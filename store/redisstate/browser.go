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
//	<p>{o:<kind>:<hex hash>}  hash: a single-use record (v value, x expiry ms, t taken)
//	<p>{bc:<hex hash>}        a browser-session cookie: "<session id>\n<user id>"
//	<p>{bs:<id>}              the user id of a browser session
//	<p>{u:<uid>}:bs           hash: the user's browser sessions: field <id> the
//	                          times "auth:last:abs:idle:created" (ms), <id>:d the
//	                          rest (JSON), <id>:c the client ids (one per line)
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
	if kind == "" || strings.ContainsAny(kind, "{}") || len(keyHash) == 0 {
		return errors.New("redis token state: put once: invalid kind or empty key hash")
	}
	ttl := expiresAt.UnixMilli() - s.now().UnixMilli()
	if ttl <= 0 {
		return errors.New("redis token state: put once: already expired")
	}
	n, err := putOnceScript.Run(ctx, s.c, []string{s.onceKey(kind, keyHash)}, value, expiresAt.UnixMilli(), ttl).Int64()
	if err != nil {
		return unavailable("put once", err)
	}
	if n == 0 {
		return fmt.Errorf("redis token state: put once: %w", store.ErrAlreadyExists)
	}
	return nil
}

// TakeOnce implements store.SingleUse with one script: of any number of
// concurrent takes exactly one finds the record untaken.
func (s *State) TakeOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error) {
	if kind == "" || strings.ContainsAny(kind, "{}") || len(keyHash) == 0 {
		return nil, fmt.Errorf("redis token state: take once: %w", store.ErrNotFound)
	}
	raw, err := takeOnceScript.Run(ctx, s.c, []string{s.onceKey(kind, keyHash)}, now.UnixMilli()).Slice()
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
// on the user's slot refuses (store.ErrSessionsEnded) a session whose
// AuthTime is at or before the user's cut-off, else stores it: a concurrent
// RevokeUserSessions either sees the session and ends it or has set the
// cut-off that refuses it.
func (s *State) CreateBrowserSession(ctx context.Context, bs store.BrowserSession, cookieHash []byte) error {
	if !validSessionPart(bs.ID) || !validUserID(bs.UserID) || len(cookieHash) == 0 || bs.AbsoluteExpiry.IsZero() {
		return errors.New("redis token state: create browser session: id, user, cookie hash and absolute expiry are required")
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
		return errors.New("redis token state: create browser session: already expired")
	}
	for _, c := range bs.ClientIDs {
		if c == "" || strings.Contains(c, "\n") {
			return errors.New("redis token state: create browser session: invalid client id")
		}
	}
	data, err := json.Marshal(sessionData{AMR: bs.AMR, Remember: bs.Remember, IP: bs.IP, UserAgent: bs.UserAgent})
	if err != nil {
		return fmt.Errorf("redis token state: create browser session: %w", err)
	}
	ck, ok := s.cookieKey(cookieHash), s.bsOwnerKey(bs.ID)
	claimed, err := s.c.SetNX(ctx, ok, bs.UserID, time.Duration(ttl)*time.Millisecond).Result()
	if err != nil {
		return unavailable("create browser session", err)
	}
	if !claimed {
		return fmt.Errorf("redis token state: create browser session: %w", store.ErrAlreadyExists)
	}
	claimed, err = s.c.SetNX(ctx, ck, bs.ID+"\n"+bs.UserID, time.Duration(ttl)*time.Millisecond).Result()
	if err != nil || !claimed {
		_ = s.c.Del(ctx, ok).Err()
		if err != nil {
			return unavailable("create browser session", err)
		}
		return fmt.Errorf("redis token state: create browser session: %w", store.ErrAlreadyExists)
	}
	header := fmt.Sprintf("%d:%d:%d:%d:%d", auth.UnixMilli(), last.UnixMilli(), bs.AbsoluteExpiry.UnixMilli(),
		bs.IdleTTL.Milliseconds(), created.UnixMilli())
	n, err := createBrowserSessionScript.Run(ctx, s.c, []string{s.userBSKey(bs.UserID), s.userCutKey(bs.UserID)},
		bs.ID, header, data, strings.Join(bs.ClientIDs, "\n"), auth.UnixMilli(), last.UnixMilli(), ttl).Int64()
	if err != nil || n < 0 {
		_ = s.c.Del(ctx, ck, ok).Err() // best effort: an orphan cookie finds nothing anyway
	}
	if err != nil {
		return unavailable("create browser session", err)
	}
	if n < 0 {
		return fmt.Errorf("redis token state: create browser session: %w", store.ErrSessionsEnded)
	}
	return nil
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
	ptr, err := s.c.Get(ctx, s.cookieKey(cookieHash)).Result()
	if errors.Is(err, redis.Nil) {
		return store.BrowserSession{}, notFound
	}
	if err != nil {
		return store.BrowserSession{}, unavailable("find browser session", err)
	}
	id, uid, found := strings.Cut(ptr, "\n")
	if !found {
		return store.BrowserSession{}, notFound
	}
	raw, err := findBrowserSessionScript.Run(ctx, s.c, []string{s.userBSKey(uid), s.userCutKey(uid)}, id, now.UnixMilli()).Slice()
	if err != nil {
		return store.BrowserSession{}, unavailable("find browser session", err)
	}
	if len(raw) < 3 {
		return store.BrowserSession{}, notFound
	}
	str := make([]string, 3)
	for i := range str {
		str[i], _ = raw[i].(string)
	}
	bs, err := parseSession(uid, id, str[0], str[1], str[2])
	if err != nil {
		return store.BrowserSession{}, fmt.Errorf("redis token state: find browser session: %w", err)
	}
	if err := s.checkSessionCutoff(ctx, bs); err != nil {
		return store.BrowserSession{}, err
	}
	return bs, nil
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

func parseSession(uid, id, header, data, clients string) (store.BrowserSession, error) {
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
	return store.BrowserSession{
		ID: id, UserID: uid, AuthTime: time.UnixMilli(n[0]).UTC(), AMR: d.AMR, Remember: d.Remember,
		CreatedAt: time.UnixMilli(n[4]).UTC(), LastUsedAt: time.UnixMilli(n[1]).UTC(),
		IdleTTL: time.Duration(n[3]) * time.Millisecond, AbsoluteExpiry: time.UnixMilli(n[2]).UTC(),
		IP: d.IP, UserAgent: d.UserAgent, ClientIDs: ids,
	}, nil
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

// AddBrowserSessionClient implements store.BrowserSessions; an unknown or
// ended session is store.ErrNotFound.
func (s *State) AddBrowserSessionClient(ctx context.Context, id, clientID string) error {
	if clientID == "" || strings.Contains(clientID, "\n") {
		return errors.New("redis token state: add browser session client: invalid client id")
	}
	uid, err := s.owner(ctx, "add browser session client", id)
	if err != nil {
		return err
	}
	if uid == "" {
		return fmt.Errorf("redis token state: add browser session client: %w", store.ErrNotFound)
	}
	n, err := addBrowserSessionClientScript.Run(ctx, s.c, []string{s.userBSKey(uid)}, id, clientID).Int64()
	if err != nil {
		return unavailable("add browser session client", err)
	}
	if n == 0 {
		return fmt.Errorf("redis token state: add browser session client: %w", store.ErrNotFound)
	}
	return nil
}

// EndBrowserSession implements store.BrowserSessions.
func (s *State) EndBrowserSession(ctx context.Context, id string, _ time.Time) error {
	uid, err := s.owner(ctx, "end browser session", id)
	if err != nil || uid == "" {
		return err
	}
	if err := s.c.HDel(ctx, s.userBSKey(uid), id, id+":d", id+":c").Err(); err != nil {
		return unavailable("end browser session", err)
	}
	return nil
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
	out := make([]store.BrowserSession, 0, len(raw)/4)
	for i := 0; i+3 < len(raw); i += 4 {
		bs, err := parseSession(userID, raw[i], raw[i+1], raw[i+2], raw[i+3])
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

// endUserBrowserSessions deletes the user's browser sessions authenticated
// at or before cut (ms); RevokeUserSessions calls it after moving the
// cut-off, which already hides them.
func (s *State) endUserBrowserSessions(ctx context.Context, uid string, cut int64) error {
	if !validUserID(uid) {
		return nil
	}
	if err := endUserBrowserSessionsScript.Run(ctx, s.c, []string{s.userBSKey(uid)}, cut).Err(); err != nil {
		return unavailable("revoke user sessions: end browser sessions", err)
	}
	return nil
}
