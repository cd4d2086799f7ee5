package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// User record versions: what lets an instance keep a copy of a user in
// memory (store/usercache) and know, from Redis, that the copy is still
// the user as stored. The version lives in <p>{u:<uid>}:ver, a hash:
//
//	v  the version: random, set anew by every write's start and end, and
//	   when Redis has none (it expired, or Redis lost it)
//	w  how many writes of the user are in flight (begun, not ended)
//
// A write calls BeginUserWrite before it commits and EndUserWrite after:
// while w > 0 no copy is used or kept (UserVersion answers ""), and the
// end changes v, so a copy read from the database during the write (which
// could miss it) never matches again. A write whose end never reaches
// Redis leaves w > 0 until the key expires (UserWriteTTL after the last
// start or end), after which a new random v is drawn: copies are unused
// meanwhile and stale ones never match afterwards.
const (
	// UserWriteTTL is how long the version key outlives the last start or
	// end of a write while any is in flight: longer than any transaction.
	UserWriteTTL = 5 * time.Minute
	// UserVersionTTL is how long a version stays once no write is in
	// flight; a fresh one (and a read of each copy) follows its expiry.
	// Copies live far less (usercache.DefaultMaxAge), so a longer TTL would
	// only keep more keys: one per user read within it.
	UserVersionTTL = 10 * time.Minute
)

func (s *State) userVerKey(uid string) string { return s.prefix + "{u:" + uid + "}:ver" }

// beginUserWriteScript: KEYS version; ARGV new version, write TTL ms.
var beginUserWriteScript = redis.NewScript(`
redis.call('HINCRBY', KEYS[1], 'w', 1)
redis.call('HSET', KEYS[1], 'v', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// endUserWriteScript: KEYS version; ARGV new version, write TTL ms,
// version TTL ms. A count below zero (the key expired during the write)
// is taken as zero.
var endUserWriteScript = redis.NewScript(`
local w = redis.call('HINCRBY', KEYS[1], 'w', -1)
redis.call('HSET', KEYS[1], 'v', ARGV[1])
if w <= 0 then
  redis.call('HSET', KEYS[1], 'w', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
`)

// userVersionLua defines userVersion(key, candidate, ttl ms): the user's
// version, or an empty string while a write is in flight; a missing
// version becomes candidate.
const userVersionLua = `
local function userVersion(key, candidate, ttl)
  local r = redis.call('HMGET', key, 'v', 'w')
  if not r[1] then
    redis.call('HSET', key, 'v', candidate, 'w', 0)
    redis.call('PEXPIRE', key, ttl)
    return candidate
  end
  if tonumber(r[2] or '0') > 0 then return '' end
  return r[1]
end
`

// userVersionScript: KEYS version; ARGV candidate, version TTL ms.
var userVersionScript = redis.NewScript(userVersionLua + `return userVersion(KEYS[1], ARGV[1], ARGV[2])`)

// newUserVersion returns a random version: 128 bits, so no version ever
// drawn again after a reset of Redis matches a copy kept from before it.
func newUserVersion() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// userVersionArgs are the arguments every read of a version passes after
// its own (userVersionLua's candidate and TTL).
func userVersionArgs() []any { return []any{newUserVersion(), UserVersionTTL.Milliseconds()} }

// BeginUserWrite marks a write of the user in flight, before it commits
// (sqlstore calls it): until EndUserWrite no copy of the user is used.
// On error nothing was marked; sqlstore writes anyway and still calls
// EndUserWrite (see sqlstore.UserWriteHooks).
func (s *State) BeginUserWrite(ctx context.Context, userID string) error {
	err := beginUserWriteScript.Run(ctx, s.c, []string{s.userVerKey(userID)}, newUserVersion(),
		UserWriteTTL.Milliseconds()).Err()
	if err != nil {
		return unavailable("begin a write of the user", err)
	}
	return nil
}

// EndUserWrite ends a write BeginUserWrite began (committed or not) and
// changes the user's version. On error the write stays in flight until
// the version key expires (UserWriteTTL), which is safe.
func (s *State) EndUserWrite(ctx context.Context, userID string) error {
	err := endUserWriteScript.Run(ctx, s.c, []string{s.userVerKey(userID)}, newUserVersion(),
		UserWriteTTL.Milliseconds(), UserVersionTTL.Milliseconds()).Err()
	if err != nil {
		return unavailable("end a write of the user", err)
	}
	return nil
}

// UserVersion returns the user's current version, or "" while a write of
// the user is in flight (no copy may be used or kept then).
func (s *State) UserVersion(ctx context.Context, userID string) (string, error) {
	v, err := userVersionScript.Run(ctx, s.c, []string{s.userVerKey(userID)}, userVersionArgs()...).Text()
	if err != nil {
		return "", unavailable(fmt.Sprintf("read the version of user %q", userID), err)
	}
	return v, nil
}
