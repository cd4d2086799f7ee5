package redisstate

import "github.com/redis/go-redis/v9"

// The Lua scripts below are each one atomic check-and-set. Every script
// touches keys of a single hash slot only (see the key layout in state.go).
// Times are Unix milliseconds passed in by the caller, never Redis TIME, and
// every number written back is formatted with %d so none is rounded.

// createFamilyScript: KEYS fam; ARGV user, client, scope, requested scope,
// created, absolute expiry, idle ttl, idle expiry (0 = none), first hash, key
// ttl, auth time, amr (encoded, see encodeAMR), tenant id, browser session
// lineage ("" for none), granted (ms: when the client was granted the
// access the family continues; the field 'ga', absent in a family written
// before it was kept, means created). Returns 1, or 0 when the family
// already exists.
var createFamilyScript = redis.NewScript(createFamilyLua + `return createFamily(KEYS[1], ARGV)`)

// createFamilyLua defines createFamily(k, a): createFamilyScript's work on
// family key k with its arguments a.
const createFamilyLua = `
local function createFamily(k, a)
  if redis.call('EXISTS', k) == 1 then return 0 end
  redis.call('HSET', k, 'u', a[1], 'c', a[2], 's', a[3], 'rs', a[4],
    'ca', a[5], 'ax', a[6], 'it', a[7], 'ix', a[8], 'cur', a[9], 'rv', '0', 'at', a[11],
    'amr', a[12], 'tn', a[13], 'bs', a[14], 'ga', a[15])
  redis.call('PEXPIRE', k, a[10])
  return 1
end
`

// indexSessionScript: KEYS user's families (zset), user's cut-off, user's
// families by expiry (zset), user's cut-offs at clients (hash: client id →
// ms); ARGV sid, created ms, index ttl ms, cap (0 = none), auth time ms,
// pruned ("1" when the caller has just dropped dead families from the
// index), the earliest the family can end (ms: its absolute or first idle
// expiry), the family's client id, when the client was granted the access
// the family continues (ms). Refuses ({-1}) a family authenticated at or
// before the cut-off, or granted at or before the user's cut-off at its
// client (clientSessionsScript); asks for a prune first ({-2}, nothing changed)
// when the index is full and was not just pruned; otherwise adds it,
// scored by creation and, in the second index, by the earliest it can end,
// never shortens the indexes' lifetime, and when the user holds more than
// cap families pops the oldest (from both): returns {n, popped sids...}.
var indexSessionScript = redis.NewScript(indexSessionLua + `return indexSession(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV)`)

// indexSessionLua defines indexSession(fams, cut, ends, ccut, a):
// indexSessionScript's work on the user's families fams, cut-off cut,
// families by expiry ends and cut-offs at clients ccut with its arguments
// a.
const indexSessionLua = `
local function indexSession(fams, cutKey, ends, ccut, a)
  local cut = redis.call('GET', cutKey)
  if cut and tonumber(a[5]) <= tonumber(cut) then return {-1} end
  if a[8] ~= '' then
    local cc = redis.call('HGET', ccut, a[8])
    if cc and tonumber(a[9]) <= tonumber(cc) then return {-1} end
  end
  if tonumber(a[4]) > 0 and a[6] ~= '1' and redis.call('ZCARD', fams) >= tonumber(a[4]) then return {-2} end
  redis.call('ZADD', fams, a[2], a[1])
  redis.call('ZADD', ends, a[7], a[1])
  for _, k in ipairs({fams, ends}) do
    if redis.call('PTTL', k) < tonumber(a[3]) then
      redis.call('PEXPIRE', k, a[3])
    end
  end
  local cap = tonumber(a[4])
  local out = {0}
  if cap > 0 then
    local n = redis.call('ZCARD', fams)
    if n > cap then
      local popped = redis.call('ZPOPMIN', fams, n - cap)
      for i = 1, #popped, 2 do
        redis.call('ZREM', ends, popped[i])
        table.insert(out, popped[i])
      end
    end
  end
  out[1] = #out - 1
  return out
end
`

// createIndexedFamilyScript is createFamilyScript then indexSessionScript
// as one atomic script, for a Redis without Cluster (its keys are in
// different slots): KEYS fam, then indexSessionScript's four; ARGV the 15
// of createFamilyScript then the 9 of indexSessionScript. Returns {-3}
// when the family exists, else indexSessionScript's reply; when that
// refuses the family ({-1} cut-off, {-2} prune first) the family is
// deleted in the same script, so no one ever sees it.
var createIndexedFamilyScript = redis.NewScript(createFamilyLua + indexSessionLua + `
if createFamily(KEYS[1], ARGV) == 0 then return {-3} end
local r = indexSession(KEYS[2], KEYS[3], KEYS[4], KEYS[5], {ARGV[16], ARGV[17], ARGV[18], ARGV[19], ARGV[20], ARGV[21], ARGV[22], ARGV[23], ARGV[24]})
if r[1] < 0 then redis.call('DEL', KEYS[1]) end
return r
`)

// userSessionsScript: KEYS user's families (zset), user's cut-off, legacy
// family set; ARGV cut-off ms, expiry ms. Moves the cut-off forward (never
// back) and returns every family id of the user, atomically with
// indexSessionScript: a family indexed later was refused by the cut-off.
var userSessionsScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[2])
if not cur or tonumber(cur) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PXAT', ARGV[2])
end
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, v in ipairs(redis.call('SMEMBERS', KEYS[3])) do table.insert(ids, v) end
return ids
`)

// clientSessionsScript: KEYS user's families (zset), user's cut-offs at
// clients (hash: client id → ms), legacy family set; ARGV client id,
// cut-off ms, the hash's TTL ms. Moves the user's cut-off at the client
// forward (never back), never shortens the hash's lifetime, and returns
// every family id of the user, atomically with indexSessionScript: a
// family of the client granted by the cut-off and indexed later was
// refused by it. The caller keeps those of the client (their hashes are
// in other slots).
var clientSessionsScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, v in ipairs(redis.call('SMEMBERS', KEYS[3])) do table.insert(ids, v) end
return ids
`)

// Rotation outcomes as the rotate script reports them (the first four are
// store.RotateOutcome's values).
const (
	scriptInvalid = 0
	scriptOK      = 1
	scriptGrace   = 2
	scriptReuse   = 3
	// scriptLimit: the presented token was current, but the family's used
	// set already holds the rotation limit (ARGV[7]): the script marked
	// the family revoked instead of rotating (store.RotateLimitReached).
	scriptLimit = 5
	// scriptSessionRevoked: the family's session is revoked, or its
	// user's cut-off is at or after its auth time, though the family was
	// not marked (its mark was lost, or it was created after its session
	// was revoked). The script marked it; nothing rotated.
	scriptSessionRevoked = 4
	// scriptNotBuilt: the revocation set is not (re)built, so the session
	// could not be checked. Nothing changed.
	scriptNotBuilt = -1
)

// rotateScript: KEYS fam, used; ARGV presented hash, next hash, next sealed,
// now ms, grace ms, the client the family must belong to ("" for any: a
// family of another client is invalid, left as it was), the most used
// hashes the family may keep (store.MaxFamilyRotations: a rotation of
// the current token when used holds that many ends the family instead,
// scriptLimit). Returns {outcome}
// for invalid, otherwise
// {outcome, user, client, scope, requested scope, created, abs expiry,
// idle ttl, auth time, amr, sealed successor (empty unless a grace replay),
// tenant id, browser session lineage, granted} (a family written before
// auth times or grant times were kept answers its creation time; one
// written before amr, the tenant or the browser session was kept answers
// an empty one). It does not read the revocation set (another slot): on
// Cluster the caller checks the session after it.
var rotateScript = redis.NewScript(rotateLua + `return rotate(nil)`)

// rotateOnOneNodeScript is rotateScript for a Redis without Cluster, where
// one script may read keys of other slots. Before it changes anything it
// checks the family's session and user in the revocation set (as
// checkScript would a token of the session issued at the family's auth
// time): {-1} when the set is not (re)built, {4} when the session is
// revoked (the family is then marked revoked, as revokeFamilyScript
// does). A rotation that returns the family (every other outcome but
// invalid) also reads the family's user's version (as userVersionScript)
// and appends it to rotateScript's reply. ARGV as rotateScript's (seven), then the
// user's version key name with "\n" where the user id goes,
// userVersionScript's candidate and TTL, then the ready marker's, the
// session's revocation key name and the user's cut-off key name in the
// revocation set (with "\n" where the user id goes).
var rotateOnOneNodeScript = redis.NewScript(rotateLua + userVersionLua + userKeyLua + sessionRevokedLua + revokeFamilyLua + `
local r = rotate(function(uid, at)
  local v = sessionRevoked(ARGV[11], ARGV[12], ARGV[13], uid, at)
  if v == 1 then revokeFamily(KEYS[1]) end
  return v
end)
if r[1] > 0 and r[1] < 4 and r[2] then
  table.insert(r, userVersion(userKeyOf(ARGV[8], r[2]), ARGV[9], ARGV[10]))
end
return r
`)

// revokedLua defines revoked(ready, jti, sid, user, at, client, granted):
// the one judgement of the revocation set, whose ready marker is the key
// ready: -1 when the set is not (re)built, 1 when a token issued at at
// (ms) is revoked by its jti's key, its session's key or its user's
// cut-off key, or, granted to its client at granted (ms), by the user's
// cut-off key at that client (each key false, client nil, when not
// checked), 0 when not. checkScript and sessionRevoked both ask it.
const revokedLua = `
local function revoked(ready, jti, sid, user, at, client, granted)
  if redis.call('EXISTS', ready) == 0 then return -1 end
  if jti and redis.call('EXISTS', jti) == 1 then return 1 end
  if sid and redis.call('EXISTS', sid) == 1 then return 1 end
  if user then
    local c = redis.call('GET', user)
    if c and tonumber(at) <= tonumber(c) then return 1 end
  end
  if client then
    local c = redis.call('GET', client)
    if c and tonumber(granted) <= tonumber(c) then return 1 end
  end
  return 0
end
`

// sessionRevokedLua defines sessionRevoked(ready, sid, userTemplate, uid,
// at): revoked's session and user checks for a token of the session whose
// revocation key is sid, of the user uid ("" for none), issued at at (ms);
// the user's cut-off key name is userTemplate with "\n" where the user id
// goes (userKeyLua). Returns -1 when the revocation set is not (re)built,
// 1 when revoked, 0 when not.
const sessionRevokedLua = revokedLua + `
local function sessionRevoked(ready, sid, userTemplate, uid, at)
  local user = false
  if uid and uid ~= '' then user = userKeyOf(userTemplate, uid) end
  return revoked(ready, false, sid, user, at)
end
`

// findFamilyScript is, for a Redis without Cluster, FindRefresh's read of
// a family and of its session's revocation in one: KEYS fam, used; ARGV
// findFamily's three (presented hash, now ms, grace ms), then the ready
// marker's, the session's revocation key name and the user's cut-off key
// name in the revocation set (with "\n" where the user id goes). Returns
// findFamily's reply, then, when the family exists, sessionRevoked's
// answer for its session and user at its auth time.
var findFamilyScript = redis.NewScript(findFamilyLua + userKeyLua + sessionRevokedLua + `
local f = findFamily(KEYS[1], KEYS[2], ARGV)
if f[1] then
  f[16] = sessionRevoked(ARGV[4], ARGV[5], ARGV[6], f[6] or '', f[11] or f[10])
end
return f
`)

// findFamilyOnClusterScript is findFamilyScript on Cluster, where the
// revocation set is in another slot: findFamily's reply alone (the caller
// checks the session after it). KEYS fam, used; ARGV findFamily's three.
var findFamilyOnClusterScript = redis.NewScript(findFamilyLua + `return findFamily(KEYS[1], KEYS[2], ARGV)`)

// findFamilyLua defines findFamily(k, used, a): FindRefresh's read of
// family key k, whose used tokens are the set used, given a = {presented
// hash, now ms, grace ms}. Returns which token the hash is (presented's
// answer: 0 none, 1 current, 2 a grace replay, 3 reuse) in place of the
// family's current hash, then its fields rv, ax, it, ix, u,
// c, s, rs, ca, at, amr, tn, bs (nil where missing), ga (ca where
// missing); the first is nil too when the family does not exist.
const findFamilyLua = presentedLua + `
local function findFamily(k, used, a)
  local f = redis.call('HMGET', k, 'cur', 'rv', 'ax', 'it', 'ix', 'u', 'c', 's', 'rs', 'ca', 'at', 'amr', 'tn', 'bs',
    'ga', 'prev', 'ra', 'sealed')
  if f[1] then
    f[1] = presented(a[1], f[1], f[16], f[17], f[18], tonumber(a[2]), tonumber(a[3]), used)
  end
  f[15] = f[15] or f[10]
  f[16], f[17], f[18] = nil, nil, nil
  return f
end
`

// presentedLua defines presented(p, cur, prev, ra, sealed, now, grace,
// used): the one judgement, for the Redis state, of which of a family's
// tokens the presented hash p is, given its current hash cur, the hash
// cur replaced prev, when that rotation was ra (ms), the successor it kept
// sealed (false where missing), now, the rotation's grace (ms) and the
// key of the family's set of used (rotated) hashes. Returns 1 for the
// current token, 2 for a grace replay (the replaced token, rotated less
// than grace ago by a rotation that kept its successor), 3 for reuse (any
// other rotated token: every rotation adds the hash it replaces to used),
// 0 otherwise. rotate and findFamily both ask it, so a token rotation
// honours is one revocation and introspection find, and one it calls
// reuse is one they tell apart from an unknown one (sqlstate's
// familyRow.match and familyRow.used are the same rule).
const presentedLua = `
local function presented(p, cur, prev, ra, sealed, now, grace, used)
  if p == cur then return 1 end
  if grace > 0 and prev and ra and sealed and p == prev and now - tonumber(ra) < grace then return 2 end
  if redis.call('SISMEMBER', used, p) == 1 then return 3 end
  return 0
end
`

// userKeyLua defines userKeyOf(template, uid): the key name template (one
// of a user's keys, with "\n" where the user id goes, as Go passes it to
// the scripts that name a user's keys themselves) for the user uid.
const userKeyLua = `
local function userKeyOf(t, uid)
  local i = string.find(t, '\n', 1, true)
  return string.sub(t, 1, i - 1) .. uid .. string.sub(t, i + 1)
end
`

// rotateLua defines rotate(revoked): rotateScript's work. revoked, when
// not nil, is called with the user id and auth time of a live family
// before anything changes: a non-zero answer (sessionRevoked's, -1 or 1)
// ends the rotation with {-1} or {4}. A family of another client than
// ARGV[6] (when not "") is invalid before that: nothing is read or changed
// on its account. The current token of a family whose used set holds
// ARGV[7] hashes does not rotate: the family is marked revoked, as reuse
// marks it, and the answer is {5, ...} (scriptLimit).
const rotateLua = presentedLua + `
local function rotate(revoked)
  local f = redis.call('HMGET', KEYS[1], 'cur', 'prev', 'ra', 'ax', 'it', 'ix', 'rv', 'sealed',
    'u', 'c', 's', 'rs', 'ca', 'at', 'amr', 'tn', 'bs', 'ga')
  local cur = f[1]
  local at = f[14] or f[13]
  local ga = f[18] or f[13]
  local amr = f[15] or ''
  local tn = f[16] or ''
  local bs = f[17] or ''
  if not cur or f[7] == '1' then return {0} end
  local now = tonumber(ARGV[4])
  local ax, it, ix = tonumber(f[4]), tonumber(f[5]), tonumber(f[6])
  if now >= ax then return {0} end
  if it > 0 and now >= ix then return {0} end
  local p = ARGV[1]
  if p == '' then return {0} end
  if ARGV[6] ~= '' and f[10] ~= ARGV[6] then return {0} end
  if revoked then
    local v = revoked(f[9] or '', at)
    if v == -1 then return {-1} end
    if v ~= 0 then return {4} end
  end
  local grace = tonumber(ARGV[5])
  local m = presented(p, cur, f[2], f[3], f[8], now, grace, KEYS[2])
  if m == 1 and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[7]) then
    redis.call('HSET', KEYS[1], 'rv', '1')
    redis.call('HDEL', KEYS[1], 'sealed')
    return {5, f[9], f[10], f[11], f[12], f[13], f[4], f[5], at, amr, '', tn, bs, ga}
  end
  if m == 1 then
    local ttl = ax - now
    local nix = 0
    if it > 0 then
      nix = now + it
      if it < ttl then ttl = it end
    end
    local set = {'cur', ARGV[2], 'prev', cur, 'ra', ARGV[4], 'ix', string.format('%d', nix)}
    if grace > 0 then
      set[#set + 1] = 'sealed'
      set[#set + 1] = ARGV[3]
    elseif f[8] then
      redis.call('HDEL', KEYS[1], 'sealed')
    end
    redis.call('HSET', KEYS[1], unpack(set))
    redis.call('SADD', KEYS[2], cur)
    redis.call('PEXPIRE', KEYS[1], string.format('%d', ttl))
    redis.call('PEXPIRE', KEYS[2], string.format('%d', ttl))
    return {1, f[9], f[10], f[11], f[12], f[13], f[4], f[5], at, amr, '', tn, bs, ga}
  end
  if m == 2 then
    return {2, f[9], f[10], f[11], f[12], f[13], f[4], f[5], at, amr, f[8], tn, bs, ga}
  end
  if m == 3 then
    redis.call('HSET', KEYS[1], 'rv', '1')
    redis.call('HDEL', KEYS[1], 'sealed')
    return {3, f[9], f[10], f[11], f[12], f[13], f[4], f[5], at, amr, '', tn, bs, ga}
  end
  return {0}
end
`

// revokeFamilyScript: KEYS fam; ARGV the latest auth time (ms) a family
// it ends may have ("" for any). Marks the family revoked; returns {} when
// the family does not exist (expired or never created) or was
// authenticated after that time, else {its user id} ("" for a family of
// no user), whose indexes the caller then drops it from
// (unindexFamiliesScript).
var revokeFamilyScript = redis.NewScript(revokeFamilyLua + `return revokeFamily(KEYS[1], ARGV[1])`)

// revokeFamilyUnindexingScript is revokeFamilyScript that also drops the
// family from its user's indexes, for a Redis without Cluster (they are in
// another slot): ARGV the user's two index key names (families, families
// by expiry), each with "\n" where the user id goes, then the family id,
// then revokeFamilyScript's latest auth time. Same reply.
var revokeFamilyUnindexingScript = redis.NewScript(revokeFamilyLua + userKeyLua + `
local r = revokeFamily(KEYS[1], ARGV[4])
if r[1] and r[1] ~= '' then
  redis.call('ZREM', userKeyOf(ARGV[1], r[1]), ARGV[3])
  redis.call('ZREM', userKeyOf(ARGV[2], r[1]), ARGV[3])
end
return r
`)

// revokeFamilyLua defines revokeFamily(k, maxAuth): revokeFamilyScript's
// work on family key k (maxAuth: "" or nil for a family of any auth time).
const revokeFamilyLua = `
local function revokeFamily(k, maxAuth)
  if redis.call('EXISTS', k) == 0 then return {} end
  if maxAuth and maxAuth ~= '' then
    local t = redis.call('HMGET', k, 'at', 'ca')
    local at = tonumber(t[1] or t[2])
    if at and at > tonumber(maxAuth) then return {} end
  end
  redis.call('HSET', k, 'rv', '1')
  redis.call('HDEL', k, 'sealed')
  return {redis.call('HGET', k, 'u') or ''}
end
`

// unindexFamiliesScript: KEYS user's families, user's families by expiry;
// ARGV the number of dead families, those family ids, then pairs of a live
// family id and the earliest it can now end (ms). Drops the dead families
// from both indexes (a dead family never comes back to life, so this is
// safe outside the index script) and moves each live family's expiry
// score to the one given, when it is still indexed (a family revoked
// meanwhile stays out). Returns how many dead families were indexed.
var unindexFamiliesScript = redis.NewScript(`
local dead = tonumber(ARGV[1])
local n = 0
for i = 2, dead + 1 do
  n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
for i = dead + 2, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[2], ARGV[i + 1], ARGV[i])
  end
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 and redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return n
`)

// userCutoffScript: KEYS user cut-off; ARGV cutoff ms, expiry ms. Keeps the
// latest cut-off: an earlier one never moves it back.
var userCutoffScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
`)

// checkScript: KEYS ready, jti, sid, user, the user's cut-off at the
// client; ARGV check jti?, check sid?, check user?, issued-at ms, check
// client?, granted-at ms. Returns -1 when the revocation set is not
// (re)built, 1 when revoked, 0 when not (revokedLua). Every key is in the
// revocation set's slot, so it is one call on Cluster too.
var checkScript = redis.NewScript(revokedLua + `
return revoked(KEYS[1], ARGV[1] == '1' and KEYS[2], ARGV[2] == '1' and KEYS[3], ARGV[3] == '1' and KEYS[4], ARGV[4],
  ARGV[5] == '1' and KEYS[5], ARGV[6])
`)

// userCutoffReadScript: KEYS ready, user's cut-off in the revocation set.
// Returns -1 when the revocation set is not (re)built, else the user's
// cut-off in ms (0 when none): checkScript's user check, with the
// comparison left to the caller (so it can run beside the session lookup).
var userCutoffReadScript = redis.NewScript(cutoffReadLua + `return cutoffRead(KEYS[1], KEYS[2])`)

// cutoffReadLua defines cutoffRead(ready, user): userCutoffReadScript's
// work on those keys.
const cutoffReadLua = `
local function cutoffRead(ready, user)
  if redis.call('EXISTS', ready) == 0 then return -1 end
  local c = redis.call('GET', user)
  if not c then return 0 end
  return tonumber(c)
end
`

// generationScript: KEYS gen; ARGV candidate. Returns the generation of the
// revocation set, creating it when Redis has none (it came back empty).
var generationScript = redis.NewScript(`
local g = redis.call('GET', KEYS[1])
if g then return g end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

// rebuildScript: KEYS gen, ready, then one key per record; ARGV generation,
// final ('1' sets the ready marker), then per record: kind ('u' a cut-off,
// of a user or of a user at a client; 'k' plain key), cut-off ms (cut-offs
// only, else empty), expiry ms.
// Writes nothing and returns 0 when the generation changed (Redis lost its
// data meanwhile), so a rebuild never marks a half-written set ready.
var rebuildScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 3
  local kind, cut, exp = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if kind == 'u' then
    local cur = redis.call('GET', KEYS[i])
    if not cur or tonumber(cur) < tonumber(cut) then
      redis.call('SET', KEYS[i], cut, 'PXAT', exp)
    end
  else
    redis.call('SET', KEYS[i], '1', 'PXAT', exp)
  end
end
if ARGV[2] == '1' then redis.call('SET', KEYS[2], '1') end
return 1
`)

// countScript: KEYS counters; ARGV now ms, then for each counter its
// window ms (0: read only) and the count above which no later counter is
// taken. A counter's window is fixed: it starts at the first hit after the
// previous window ended. Returns {count, reset in ms} for each counter
// taken, in order; {0, 0} for a counter read with no live window.
var countScript = redis.NewScript(`
local now = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local w, stop = tonumber(ARGV[2*i]), tonumber(ARGV[2*i+1])
  local v = redis.call('HMGET', KEYS[i], 'n', 'r')
  local n, r = tonumber(v[1]), tonumber(v[2])
  if not n or not r or now >= r then
    n = 0
    r = now + w
  end
  if w > 0 then
    n = n + 1
    redis.call('HSET', KEYS[i], 'n', string.format('%d', n), 'r', string.format('%d', r))
    redis.call('PEXPIRE', KEYS[i], string.format('%d', r - now))
  end
  out[#out+1] = n
  out[#out+1] = r - now
  if n > stop then break end
end
return out
`)

// takeBackScript: KEYS counter; ARGV now ms, events to take back, the end
// (ms) of the window they were counted in. Takes them from the counter's
// live window (never below 0), keeping its end, when that window ends at
// the given end; returns {count left, 1}, or {0, 0} with no live window or
// another one.
var takeBackScript = redis.NewScript(`
local now, k, e = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'n', 'r')
local n, r = tonumber(v[1]), tonumber(v[2])
if not n or not r or now >= r or r ~= e then return {0, 0} end
n = math.max(n - k, 0)
redis.call('HSET', KEYS[1], 'n', string.format('%d', n))
return {n, 1}
`)

// putOnceScript: KEYS record; ARGV value, expiry ms, ttl ms. Returns 1, or 0
// when the key is present.
var putOnceScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'x', ARGV[2], 't', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// takeOnceScript: KEYS record; ARGV now ms, tombstone ms
// (store.TakenKeptFor). Returns {0} when unknown or expired, {2, value} when
// taken before (its tombstone included), else marks it taken, keeps it
// until the later of its expiry and now + tombstone (field x and the key's
// TTL) and returns {1, value}.
var takeOnceScript = redis.NewScript(`
local f = redis.call('HMGET', KEYS[1], 'v', 'x', 't')
local now = tonumber(ARGV[1])
if not f[1] or not f[2] or now >= tonumber(f[2]) then return {0} end
if f[3] == '1' then return {2, f[1]} end
local keep = now + tonumber(ARGV[2])
if keep > tonumber(f[2]) then
  redis.call('HSET', KEYS[1], 't', '1', 'x', string.format('%d', keep))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], 't', '1')
end
return {1, f[1]}
`)

// Browser sessions live in one hash per user (see browser.go): field <id>
// holds "auth:last:abs:idle:created" (ms), <id>:d the data, <id>:c the
// client ids, <id>:g the grants. live (inlined in the scripts below) judges
// a header; drop removes a session's fields.
const sessionLua = `
local function parse(h)
  local a, l, x, i, c = string.match(h, '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
  if not a then return nil end
  return tonumber(a), tonumber(l), tonumber(x), tonumber(i), c
end
local function live(h, now, cut)
  local a, l, x, i = parse(h)
  if not a then return false end
  if now >= x then return false end
  if i > 0 and now >= l + i then return false end
  if cut and a <= tonumber(cut) then return false end
  return true
end
local function drop(k, id)
  redis.call('HDEL', k, id, id .. ':d', id .. ':c', id .. ':g', id .. ':gn')
end
`

// createBrowserSessionScript: KEYS user's sessions, user's cut-off; ARGV
// id, header, data, client ids, auth ms, now ms, ttl ms, grants, lineage,
// cap (0: none). Refuses ({-1}) a session authenticated at or before the
// cut-off; drops the user's dead sessions; when the user then holds cap
// live sessions or more, ends the oldest (by creation, then id) so that
// with the new one they hold cap, as endBrowserSessionScript ends one;
// drops the lineage pointers (<lineage>:l, the session that continues a
// lineage now) whose session is gone; stores the session, points its
// lineage at it when it continues another session's, and never shortens
// the hash's lifetime. Returns {1, then for each ended session, oldest
// first, its id and its grants (its <id>:g field, "" when none)}. It reads the field names
// (HKEYS), the sessions' headers and the pointers, never the grants of a
// session it keeps: with the cap, the user holds at most cap sessions, so
// the work is bounded by it.
var createBrowserSessionScript = redis.NewScript(sessionLua + `
local cut = redis.call('GET', KEYS[2])
if cut and tonumber(ARGV[5]) <= tonumber(cut) then return {-1} end
local now = tonumber(ARGV[6])
local ids, ptrs = {}, {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not string.find(f, ':', 1, true) then
    table.insert(ids, f)
  elseif string.sub(f, -2) == ':l' then
    table.insert(ptrs, f)
  end
end
local function hmget(fields)
  local out = {}
  for s = 1, #fields, 500 do
    local part = redis.call('HMGET', KEYS[1], unpack(fields, s, math.min(s + 499, #fields)))
    for _, v in ipairs(part) do table.insert(out, v) end
  end
  return out
end
local kept = {}
local heads = hmget(ids)
for j, id in ipairs(ids) do
  local h = heads[j]
  if h and live(h, now, cut) then
    local _, _, _, _, c = parse(h)
    table.insert(kept, {id, tonumber(c)})
  else
    drop(KEYS[1], id)
  end
end
local out = {1}
local cap = tonumber(ARGV[10])
if cap > 0 and #kept >= cap then
  table.sort(kept, function(x, y)
    if x[2] ~= y[2] then return x[2] < y[2] end
    return x[1] < y[1]
  end)
  for j = 1, #kept - cap + 1 do
    local id = kept[j][1]
    table.insert(out, id)
    table.insert(out, redis.call('HGET', KEYS[1], id .. ':g') or '')
    drop(KEYS[1], id)
  end
end
local targets = hmget(ptrs)
for j, f in ipairs(ptrs) do
  local id = targets[j]
  if not id or redis.call('HEXISTS', KEYS[1], id) == 0 then redis.call('HDEL', KEYS[1], f) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. ':d', ARGV[3])
if ARGV[9] ~= ARGV[1] then redis.call('HSET', KEYS[1], ARGV[9] .. ':l', ARGV[1]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], ARGV[1] .. ':c', ARGV[4]) end
redis.call('HDEL', KEYS[1], ARGV[1] .. ':gn')
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], ARGV[1] .. ':g', ARGV[8]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[7]) then redis.call('PEXPIRE', KEYS[1], ARGV[7]) end
return out
`)

// keepBrowserSessionScript: KEYS user's sessions, user's cut-off; ARGV
// lineage, now ms, store.TouchDivisor. Returns 0 when no live session
// continues the lineage (dropping a dead one; a session that continues
// another's lineage is no lineage itself), else 1, having moved the
// session's last use to now when store.TouchDue (the same rule).
var keepBrowserSessionScript = redis.NewScript(sessionLua + lineageSessionLua + `
local id, h = lineageSession(KEYS[1], ARGV[1])
if not h then return 0 end
local now = tonumber(ARGV[2])
if not live(h, now, redis.call('GET', KEYS[2])) then drop(KEYS[1], id) return 0 end
local a, l, x, i, c = parse(h)
if (now - l) * tonumber(ARGV[3]) > i then
  redis.call('HSET', KEYS[1], id, string.format('%d:%d:%d:%d:%s', a, now, x, i, c))
end
return 1
`)

// browserSessionLiveScript: KEYS user's sessions, user's cut-off; ARGV
// lineage, now ms. keepBrowserSessionScript's answer, writing nothing.
var browserSessionLiveScript = redis.NewScript(sessionLua + lineageSessionLua + `
local id, h = lineageSession(KEYS[1], ARGV[1])
if not h or not live(h, tonumber(ARGV[2]), redis.call('GET', KEYS[2])) then return 0 end
return 1
`)

// lineageSessionLua defines lineageSession(k, lineage): the id and header
// of the session in the user's sessions k that continues lineage (the one
// its pointer <lineage>:l names, else the session of that id unless it
// continues another's lineage), or nil.
const lineageSessionLua = `
local function lineageSession(k, lineage)
  local id = redis.call('HGET', k, lineage .. ':l')
  if not id then
    id = lineage
    local d = redis.call('HGET', k, id .. ':d')
    if d and string.find(d, '"lin":', 1, true) then return nil end
  end
  return id, redis.call('HGET', k, id)
end
`

// findBrowserSessionScript: KEYS user's sessions, user's cut-off; ARGV id,
// now ms. Returns {} when the session is unknown, dead or ended by the
// cut-off (dropping it), else moves its last use forward (never back) and
// returns {header, data, client ids}.
var findBrowserSessionScript = redis.NewScript(sessionLua + findSessionLua + `return findSession(KEYS[1], KEYS[2], ARGV[1], ARGV[2])`)

// findSessionLua defines findSession(k, cutKey, id, now):
// findBrowserSessionScript's work on the user's sessions k and cut-off
// cutKey (needs sessionLua).
const findSessionLua = `
local function findSession(k, cutKey, id, nowArg)
  local h = redis.call('HGET', k, id)
  if not h then return {} end
  local now = tonumber(nowArg)
  if not live(h, now, redis.call('GET', cutKey)) then drop(k, id) return {} end
  local a, l, x, i, c = parse(h)
  if now > l then
    h = string.format('%d:%d:%d:%d:%s', a, now, x, i, c)
    redis.call('HSET', k, id, h)
  end
  local d = redis.call('HGET', k, id .. ':d') or '{}'
  local cl = redis.call('HGET', k, id .. ':c') or ''
  return {h, d, cl}
end
`

// findBrowserSessionByCookieScript is, for a Redis without Cluster, the
// cookie's lookup, findBrowserSessionScript, userCutoffReadScript and
// userVersionScript as one script: KEYS the cookie; ARGV now ms, then the
// key names of the user's sessions, the user's cut-off, the revocation
// set's ready marker, the user's durable cut-off and the user's version,
// each with "\n" where the user id goes, then userVersionScript's
// candidate and TTL. Returns {} when the cookie is unknown, else {id, user
// id, durable cut-off (as userCutoffReadScript), the user's version (as
// userVersionScript), then findBrowserSessionScript's reply}. The keys of the user are named in the script, not declared:
// Redis without Cluster allows it, and Cluster (where they are in other
// slots) uses the three steps instead.
var findBrowserSessionByCookieScript = redis.NewScript(sessionLua + findSessionLua + cutoffReadLua + userVersionLua + userKeyLua + `
local ptr = redis.call('GET', KEYS[1])
if not ptr then return {} end
local id, uid = string.match(ptr, '^([^\n]+)\n([^\n]+)$')
if not id then return {} end
local function userKey(t) return userKeyOf(t, uid) end
local out = {id, uid, cutoffRead(ARGV[4], userKey(ARGV[5])), userVersion(userKey(ARGV[6]), ARGV[7], ARGV[8])}
for _, v in ipairs(findSession(userKey(ARGV[2]), userKey(ARGV[3]), id, ARGV[1])) do table.insert(out, v) end
return out
`)

// addBrowserSessionGrantScript: KEYS user's sessions, user's cut-off; ARGV
// id, client id, grant (one line), max grants. Returns {0} when the session
// is unknown, ended, or ended by the cut-off; else appends the client once
// and the grant, drops the oldest grants beyond max and returns
// {1, dropped grants...}. <id>:gn counts the lines of <id>:g (counted once
// when missing), so an append copies the field but never splits it: with
// hundreds of grants a split into a Lua table cost ≈200 µs per code.
var addBrowserSessionGrantScript = redis.NewScript(sessionLua + `
local h = redis.call('HGET', KEYS[1], ARGV[1])
if not h then return {0} end
local a = parse(h)
local cut = redis.call('GET', KEYS[2])
if not a or (cut and a <= tonumber(cut)) then return {0} end
local cf = ARGV[1] .. ':c'
local cl = redis.call('HGET', KEYS[1], cf)
if not cl or cl == '' then
  redis.call('HSET', KEYS[1], cf, ARGV[2])
elseif not string.find('\n' .. cl .. '\n', '\n' .. ARGV[2] .. '\n', 1, true) then
  redis.call('HSET', KEYS[1], cf, cl .. '\n' .. ARGV[2])
end
local gf, nf = ARGV[1] .. ':g', ARGV[1] .. ':gn'
local cur = redis.call('HGET', KEYS[1], gf)
if not cur or cur == '' then
  redis.call('HSET', KEYS[1], gf, ARGV[3], nf, '1')
  return {1}
end
local n = tonumber(redis.call('HGET', KEYS[1], nf) or '')
if not n then
  local _, c = string.gsub(cur, '\n', '')
  n = c + 1
end
cur = cur .. '\n' .. ARGV[3]
n = n + 1
local out = {1}
local pos = 1
while n > tonumber(ARGV[4]) do
  local e = string.find(cur, '\n', pos, true)
  table.insert(out, string.sub(cur, pos, e - 1))
  pos = e + 1
  n = n - 1
end
if pos > 1 then cur = string.sub(cur, pos) end
redis.call('HSET', KEYS[1], gf, cur, nf, string.format('%d', n))
return out
`)

// listBrowserSessionsScript: KEYS user's sessions, user's cut-off; ARGV now
// ms. Returns {id, header, data, client ids, grants, ...} of the live
// sessions.
var listBrowserSessionsScript = redis.NewScript(sessionLua + `
local now = tonumber(ARGV[1])
local cut = redis.call('GET', KEYS[2])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for j = 1, #all, 2 do
  local f = all[j]
  if not string.find(f, ':', 1, true) and live(all[j + 1], now, cut) then
    table.insert(out, f)
    table.insert(out, all[j + 1])
    table.insert(out, redis.call('HGET', KEYS[1], f .. ':d') or '{}')
    table.insert(out, redis.call('HGET', KEYS[1], f .. ':c') or '')
    table.insert(out, redis.call('HGET', KEYS[1], f .. ':g') or '')
  end
end
return out
`)

// endUserBrowserSessionsScript: KEYS user's sessions; ARGV cut-off ms.
// Drops every session authenticated at or before the cut-off.
var endUserBrowserSessionsScript = redis.NewScript(sessionLua + `
local cut = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
for j = 1, #all, 2 do
  local f = all[j]
  if not string.find(f, ':', 1, true) then
    local a = parse(all[j + 1])
    if not a or a <= cut then drop(KEYS[1], f) end
  end
end
return 1
`)

// endBrowserSessionScript removes browser session ARGV[1] from the user's
// hash KEYS[1] and returns its grants field ("" when none): reading and
// removing in one step, so no grant is recorded in between.
var endBrowserSessionScript = redis.NewScript(`
local id = ARGV[1]
local grants = redis.call('HGET', KEYS[1], id .. ':g')
redis.call('HDEL', KEYS[1], id, id .. ':d', id .. ':c', id .. ':g', id .. ':gn')
if not grants then return '' end
return grants
`)

// sessionGrantsScript: KEYS user's sessions, user's cut-off; ARGV id, now
// ms. Returns {1, grants} for a live session ({0} otherwise).
var sessionGrantsScript = redis.NewScript(sessionLua + `
local h = redis.call('HGET', KEYS[1], ARGV[1])
if not h then return {0} end
if not live(h, tonumber(ARGV[2]), redis.call('GET', KEYS[2])) then return {0} end
return {1, redis.call('HGET', KEYS[1], ARGV[1] .. ':g') or ''}
`)
