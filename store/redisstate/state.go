package redisstate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store"
)

// Defaults of Options.
const (
	DefaultPrefix            = "pc:"
	DefaultMaxAccessTokenTTL = 24 * time.Hour
)

// Background retry of revocations Redis did not take.
const (
	defaultRetryPeriod = 250 * time.Millisecond
	maxRetryPeriod     = time.Second
)

// rebuildBatch is how many revocation records one rebuild script writes.
const rebuildBatch = 500

// Reconciliation of the durable log's unapplied records (Reconcile).
const (
	// DefaultReconcilePeriod is Options.ReconcilePeriod's default.
	DefaultReconcilePeriod = 3 * time.Second
	// DefaultReconcileGrace is Options.ReconcileGrace's default.
	DefaultReconcileGrace = 5 * time.Second
	// reconcileBatch is how many records one step of a reconciliation
	// reads, applies and marks; reconcileBatches bounds the steps of one
	// pass (the rest waits for the next).
	reconcileBatch   = 500
	reconcileBatches = 20
)

// Options configure a State.
type Options struct {
	// Prefix starts every key (default "pc:"). Braces are removed from it:
	// they would break the hash tags that keep each script on one slot.
	// So are newlines: a script that names a user's keys itself
	// (findBrowserSessionByCookieScript) puts the user id where the key
	// name's one newline is.
	Prefix string
	// Log is the durable record of revocations: every revocation is written
	// to it before Redis (and marked applied once Redis took it), the
	// records left unapplied are applied by every instance (Reconcile), and
	// Redis is rebuilt from it when it comes back empty. Nil only in tests
	// that do not exercise durability.
	Log store.RevocationLog
	// MaxAccessTokenTTL bounds the lifetime of any access token (default
	// 24h): the revocation horizon. Session and user revocations are kept
	// this long after they are made, when no token they affect can still be
	// valid; it must be at least the longest lifetime any client's tokens
	// may have (PORTCULLIS_MAX_CLIENT_TOKEN_TTL).
	MaxAccessTokenTTL time.Duration
	// MaxSessionsPerUser caps a user's live refresh families and, apart,
	// their live browser sessions (0: no cap): creating one more ends the
	// oldest (CreateFamily, CreateBrowserSession).
	MaxSessionsPerUser int
	// Now is the clock for the times the interface does not pass in (the
	// revocation time of a jti, the rebuild's notion of "active", the age
	// of an unapplied record). Default time.Now.
	Now func() time.Time
	// ReconcilePeriod is how often RunReconciler applies the durable log's
	// records left unapplied (default DefaultReconcilePeriod).
	ReconcilePeriod time.Duration
	// ReconcileGrace is how long a record stays unapplied before another
	// instance's reconciliation applies it: the instance that recorded it
	// is applying it meanwhile (default DefaultReconcileGrace).
	ReconcileGrace time.Duration
}

// State is the Redis token state. It is safe for concurrent use and for any
// number of server instances sharing one Redis (single node, Sentinel or
// Cluster).
type State struct {
	c       redis.UniversalClient
	cluster bool // keys of different slots may not meet in one script
	prefix  string
	log     store.RevocationLog
	maxAT   time.Duration
	maxSes  int
	now     func() time.Time
	// maxRotations is the most used hashes a family keeps:
	// store.MaxFamilyRotations, fewer in tests.
	maxRotations int

	// findByCookieArgs are findBrowserSessionByCookieScript's key-name
	// templates (after its time argument), fixed by the prefix;
	// userVerTemplate is the user's version key with "\n" where the user id
	// goes (one of them, and rotateOnOneNodeScript's too); userRevTemplate
	// is the user's cut-off in the revocation set, the same way.
	findByCookieArgs []any
	userVerTemplate  string
	userRevTemplate  string
	// unindexArgs are revokeFamilyUnindexingScript's key-name templates
	// (the user's two indexes).
	unindexArgs []any

	rebuildMu sync.Mutex // one rebuild at a time per instance
	// setBuilt: this instance's last check found the revocation set built
	// (a hint, for rotateOnCluster).
	setBuilt atomic.Bool

	// pending holds revocations recorded durably whose Redis write failed;
	// they are written before this instance answers any revocation check,
	// and retried in the background until Redis takes them. Their durable
	// records stay unapplied meanwhile: should this instance stop first,
	// the others apply them (Reconcile).
	pendingMu   sync.Mutex
	pending     []store.Revocation
	retrying    bool
	hasPending  atomic.Bool
	retryPeriod time.Duration

	// reconcilePeriod and reconcileGrace are Options'.
	reconcilePeriod time.Duration
	reconcileGrace  time.Duration

	// unlogged holds revocations Redis took but the durable log did not
	// (the database was unreachable): retried in the background until the
	// log takes them, so that a rebuild of Redis from the log (after Redis
	// lost its data) does not bring back what they revoked. The caller was
	// told the revocation failed; its retry may find nothing left to
	// revoke, and would record nothing.
	unloggedMu      sync.Mutex
	unlogged        []store.Revocation
	retryingLog     bool
	unloggedDrained chan struct{} // closed when the queue empties (tests wait on it)
}

var _ store.TokenState = (*State)(nil)

// New returns the token state on client with opts.
func New(client redis.UniversalClient, opts Options) *State {
	prefix := strings.NewReplacer("{", "", "}", "", "\n", "").Replace(opts.Prefix)
	if prefix == "" {
		prefix = DefaultPrefix
	}
	maxAT := opts.MaxAccessTokenTTL
	if maxAT <= 0 {
		maxAT = DefaultMaxAccessTokenTTL
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	_, cluster := client.(*redis.ClusterClient)
	s := &State{c: client, cluster: cluster, prefix: prefix, log: opts.Log, maxAT: maxAT, maxSes: max(opts.MaxSessionsPerUser, 0),
		now: now, maxRotations: store.MaxFamilyRotations, retryPeriod: defaultRetryPeriod, reconcilePeriod: opts.ReconcilePeriod, reconcileGrace: opts.ReconcileGrace}
	if s.reconcilePeriod <= 0 {
		s.reconcilePeriod = DefaultReconcilePeriod
	}
	if s.reconcileGrace <= 0 {
		s.reconcileGrace = DefaultReconcileGrace
	}
	s.userVerTemplate = s.userVerKey("\n")
	s.userRevTemplate = s.userKey("\n")
	s.findByCookieArgs = []any{s.userBSKey("\n"), s.userCutKey("\n"), s.readyKey(), s.userKey("\n"), s.userVerTemplate}
	s.unindexArgs = []any{s.userFamsKey("\n"), s.userEndsKey("\n")}
	return s
}

// Key layout. Keys a script touches together share a hash tag ({…}), so
// every script runs on one Cluster slot:
//
//	<p>{<sid>}:fam       hash: one refresh family (user, client, scopes, times,
//	                     current and previous token hash, sealed successor, revoked)
//	<p>{<sid>}:used      set: hashes of the family's rotated tokens
//	<p>{u:<uid>}:fams    sorted set: the user's family ids by creation (ms)
//	<p>{u:<uid>}:ends    sorted set: the same ids by the earliest each can end
//	                     (ms; a family's idle expiry moves later as it is used)
//	<p>{u:<uid>}:cut     the user's cut-off (Unix ms) for new families
//	<p>{u:<uid>}:ccut    hash: the user's cut-off at each client (client id →
//	                     Unix ms) for new families of that client
//	<p>{u:<uid>}:sids    set: the user's family ids (index of earlier versions, read only)
//	<p>{u:<uid>}:ver     hash: the user's record version (userversion.go)
//	<p>{rv}:jti:<jti>    revoked access token, until it expires
//	<p>{rv}:sid:<sid>    revoked session, until its last access token expires
//	<p>{rv}:user:<uid>   the user's cut-off (Unix ms), until tokens before it expire
//	<p>{rv}:client:<cid> <uid>  the user's cut-off at the client (Unix ms;
//	                     store.ClientRevocationValue), until tokens before it expire
//	<p>{rv}:ready        the revocation set is complete (built or rebuilt)
//	<p>{rv}:gen          generation of the revocation set (changes when Redis loses it)
//	<p>rl:<key>          hash: rate-limit counter and its window end
//
// All revocation keys share one slot on purpose: if that slot's data is lost,
// the ready marker goes with it, and the next check rebuilds before answering.
func (s *State) famKey(sid string) string  { return s.prefix + "{" + sid + "}:fam" }
func (s *State) usedKey(sid string) string { return s.prefix + "{" + sid + "}:used" }
func (s *State) userSidsKey(uid string) string {
	return s.prefix + "{u:" + uid + "}:sids"
}
func (s *State) userFamsKey(uid string) string { return s.prefix + "{u:" + uid + "}:fams" }
func (s *State) userEndsKey(uid string) string { return s.prefix + "{u:" + uid + "}:ends" }
func (s *State) userCutKey(uid string) string  { return s.prefix + "{u:" + uid + "}:cut" }
func (s *State) userClientCutKey(uid string) string {
	return s.prefix + "{u:" + uid + "}:ccut"
}
func (s *State) jtiKey(jti string) string      { return s.prefix + "{rv}:jti:" + jti }
func (s *State) sidKey(sid string) string      { return s.prefix + "{rv}:sid:" + sid }
func (s *State) userKey(uid string) string     { return s.prefix + "{rv}:user:" + uid }
func (s *State) clientKey(value string) string { return s.prefix + "{rv}:client:" + value }
func (s *State) readyKey() string              { return s.prefix + "{rv}:ready" }
func (s *State) genKey() string                { return s.prefix + "{rv}:gen" }
func (s *State) counterKey(k string) string    { return s.prefix + "rl:" + k }

// validFamilyID reports whether id can name a family: non-empty and without
// braces, which would move its keys off their shared hash tag.
func validFamilyID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "{}")
}

// encodeAMR is how a family's AMR is kept in its hash: a JSON array, or ""
// for none.
func encodeAMR(amr []string) string {
	if len(amr) == 0 {
		return ""
	}
	b, _ := json.Marshal(amr) // cannot fail for []string
	return string(b)
}

// decodeAMR reads encodeAMR's value; "" (none, or a family written before
// the amr was kept) is nil.
func decodeAMR(v string) ([]string, error) {
	if v == "" {
		return nil, nil
	}
	var amr []string
	if err := json.Unmarshal([]byte(v), &amr); err != nil {
		return nil, fmt.Errorf("corrupt family amr: %w", err)
	}
	return amr, nil
}

// authTimeOf is the family's AuthTime, or created when it has none.
func authTimeOf(fam store.RefreshFamily, created time.Time) time.Time {
	if fam.AuthTime.IsZero() {
		return created
	}
	return fam.AuthTime
}

// grantedOf is the family's GrantedAt, or created when it has none.
func grantedOf(fam store.RefreshFamily, created time.Time) time.Time {
	if fam.GrantedAt.IsZero() {
		return created
	}
	return fam.GrantedAt
}

func unavailable(op string, err error) error {
	return fmt.Errorf("redis token state: %s: %w: %w", op, store.ErrUnavailable, err)
}

// CreateFamily implements store.TokenState. It fails with store.ErrAlreadyExists
// when the id is taken. An IdleTTL of zero means no idle expiry. The
// family's keys expire with it (Redis TTL from CreatedAt, not Redis's clock).
//
// A family is indexed under its user by a script that also checks the
// user's cut-off and the session cap, so a concurrent RevokeUserSessions
// either lists it (and revokes it) or its cut-off refuses it. Without
// Cluster, creating and indexing are one script (one round trip, and a
// refused family never exists); on Cluster the family's keys and its user's
// are in different slots, so it is written first, then indexed (then
// checked for a revocation that came in between: unindexIfEnded), and a
// refused family is revoked before it is ever handed out.
func (s *State) CreateFamily(ctx context.Context, fam store.RefreshFamily, firstHash []byte) error {
	created, createArgs, err := s.familyArgs(fam, firstHash)
	if err != nil {
		return err
	}
	if fam.UserID != "" && !s.cluster {
		return s.createIndexedFamily(ctx, fam, created, createArgs, s.createIndexedFamilyCall(fam, created, createArgs, "0").run(ctx, s.c))
	}
	n, err := createFamilyScript.Run(ctx, s.c, []string{s.famKey(fam.ID)}, createArgs...).Int64()
	if err != nil {
		return unavailable("create family", err)
	}
	if n == 0 {
		return fmt.Errorf("redis token state: create family: %w", store.ErrAlreadyExists)
	}
	if fam.UserID == "" {
		return nil
	}
	evicted, err := s.index(ctx, fam, created)
	if err != nil {
		// Never hand out a family that is not bound to its user's cut-off.
		if _, rerr := s.revokeFamily(ctx, fam.ID); rerr != nil {
			err = errors.Join(err, unavailable("create family: revoke unindexed family", rerr))
		}
		return err
	}
	evictErr := s.evict(ctx, evicted, created)
	return errors.Join(evictErr, s.unindexIfEnded(ctx, fam))
}

// unindexIfEnded drops from its user's indexes a family that a revocation
// ended between its creation and its indexing (on Cluster they are two
// calls): that revocation found it in no index, and the cap would count
// it until its earliest end. A revocation after the indexing drops it
// itself, so one of the two always does.
func (s *State) unindexIfEnded(ctx context.Context, fam store.RefreshFamily) error {
	rv, err := s.c.HGet(ctx, s.famKey(fam.ID), "rv").Result()
	switch {
	case errors.Is(err, redis.Nil): // gone: ended as well
	case err != nil:
		return unavailable("create family: check for a revocation", err)
	case rv != "1":
		return nil
	}
	if err := unindexFamiliesScript.Run(ctx, s.c, []string{s.userFamsKey(fam.UserID), s.userEndsKey(fam.UserID)}, 1, fam.ID).Err(); err != nil {
		return unavailable("create family: drop a revoked family from the index", err)
	}
	return nil
}

// CreateFamilyAndCheck implements store.TokenState. Without Cluster the
// family's script and the revocation check go in one pipeline, which Redis
// runs in order: one round trip. When the family's script has to wait for
// a prune of the user's index or ran again on its own (Redis had lost it),
// or the revocation set is being rebuilt, or revocations are queued for
// Redis, the check runs (again) on its own once the family exists. On
// Cluster the two scripts' slots differ and a pipeline would not keep
// their order, so it is CreateFamily then IsAccessTokenRevoked.
func (s *State) CreateFamilyAndCheck(ctx context.Context, fam store.RefreshFamily, firstHash []byte, check store.AccessTokenRef) (bool, error) {
	if fam.UserID == "" || s.cluster || s.hasPending.Load() {
		return store.CreateFamilyThenCheck(ctx, s, fam, firstHash, check)
	}
	created, createArgs, err := s.familyArgs(fam, firstHash)
	if err != nil {
		return true, err
	}
	cmds, reran := s.evalPipelinedReran(ctx, s.createIndexedFamilyCall(fam, created, createArgs, "0"), s.checkCall(check))
	if err := s.createIndexedFamily(ctx, fam, created, createArgs, cmds[0]); err != nil {
		return true, err
	}
	if reran[0] && !reran[1] {
		// Redis lacked the family's script (a restart, SCRIPT FLUSH): it
		// ran on its own after the pipeline's check. Check again.
		return s.IsAccessTokenRevoked(ctx, check)
	}
	if first, _ := cmds[0].Slice(); len(first) > 0 {
		if code, _ := first[0].(int64); code == -2 {
			// The family was created after a prune, so after the
			// pipeline's check: check again.
			return s.IsAccessTokenRevoked(ctx, check)
		}
	}
	n, err := cmds[1].Int64()
	if err != nil {
		return true, unavailable("check revocation", err)
	}
	if n < 0 {
		return s.IsAccessTokenRevoked(ctx, check) // rebuilds the set first
	}
	return n == 1, nil
}

// familyArgs validates fam and returns its creation time and
// createFamilyScript's arguments.
func (s *State) familyArgs(fam store.RefreshFamily, firstHash []byte) (time.Time, []any, error) {
	if !validFamilyID(fam.ID) {
		return time.Time{}, nil, errors.New("redis token state: create family: invalid family id")
	}
	if len(firstHash) == 0 {
		return time.Time{}, nil, errors.New("redis token state: create family: empty token hash")
	}
	created := fam.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	idleMS, idleExp := fam.IdleTTL.Milliseconds(), int64(0)
	if idleMS > 0 {
		idleExp = created.UnixMilli() + idleMS
	}
	ttl := familyEnd(fam, created) - created.UnixMilli()
	if ttl <= 0 {
		return time.Time{}, nil, errors.New("redis token state: create family: already expired")
	}
	return created, []any{fam.UserID, fam.ClientID, fam.Scope, fam.RequestedScope,
		created.UnixMilli(), fam.AbsoluteExpiry.UnixMilli(), idleMS, idleExp, firstHash, ttl, authTimeOf(fam, created).UnixMilli(),
		encodeAMR(fam.AMR), fam.TenantID, fam.BrowserSessionID, grantedOf(fam, created).UnixMilli()}, nil
}

// familyEnd is the earliest a family created at created can end, in Unix
// ms: its absolute expiry, or its first idle expiry when that is sooner.
// Each use moves the idle expiry later; nothing moves it sooner.
func familyEnd(fam store.RefreshFamily, created time.Time) int64 {
	end := fam.AbsoluteExpiry.UnixMilli()
	if idle := fam.IdleTTL.Milliseconds(); idle > 0 {
		end = min(end, created.UnixMilli()+idle)
	}
	return end
}

// createIndexedFamilyCall is createIndexedFamilyScript's call for fam
// (pruned: "1" when the user's index was just pruned).
func (s *State) createIndexedFamilyCall(fam store.RefreshFamily, created time.Time, createArgs []any, pruned string) scriptCall {
	return scriptCall{createIndexedFamilyScript, append([]string{s.famKey(fam.ID)}, s.indexKeys(fam.UserID)...),
		append(createArgs[:len(createArgs):len(createArgs)], s.indexArgs(fam, created, pruned)...)}
}

// indexKeys are indexSessionScript's keys for the user.
func (s *State) indexKeys(userID string) []string {
	return []string{s.userFamsKey(userID), s.userCutKey(userID), s.userEndsKey(userID), s.userClientCutKey(userID)}
}

// createIndexedFamily finishes creating and indexing a user's family in
// one script (createIndexedFamilyScript) given the reply of its first run:
// when the index was full it is pruned and the script runs again.
func (s *State) createIndexedFamily(ctx context.Context, fam store.RefreshFamily, created time.Time, createArgs []any, first *redis.Cmd) error {
	raw, err := s.indexPruningAfter(ctx, fam, "create family", first, func(pruned string) *redis.Cmd {
		return s.createIndexedFamilyCall(fam, created, createArgs, pruned).run(ctx, s.c)
	})
	if err != nil {
		return err
	}
	if code, _ := raw[0].(int64); code == -3 {
		return fmt.Errorf("redis token state: create family: %w", store.ErrAlreadyExists)
	}
	evicted, err := indexOutcome(raw)
	if err != nil {
		return err
	}
	return s.evict(ctx, evicted, created)
}

// evict ends the families the session cap pushed out of their user's index.
func (s *State) evict(ctx context.Context, evicted []string, now time.Time) error {
	if len(evicted) == 0 {
		return nil
	}
	if err := s.revokeSessions(ctx, evicted, now); err != nil {
		return fmt.Errorf("create family: end the oldest sessions over the cap: %w", err)
	}
	return nil
}

// index adds a created family to its user's index, refusing it when it
// began at or before the user's cut-off, and returns the families the cap
// pushes out (possibly this one).
func (s *State) index(ctx context.Context, fam store.RefreshFamily, created time.Time) ([]string, error) {
	keys := s.indexKeys(fam.UserID)
	raw, err := s.indexPruning(ctx, fam, "create family: index session", func(pruned string) *redis.Cmd {
		return indexSessionScript.Run(ctx, s.c, keys, s.indexArgs(fam, created, pruned)...)
	})
	if err != nil {
		return nil, err
	}
	return indexOutcome(raw)
}

// indexPruning runs an indexing script (run, given whether the index was
// just pruned): one round trip while the user is under the session cap; at
// the cap ({-2}, the script changed nothing) the dead families are pruned
// first, so that the cap counts live ones, and the script runs once more.
func (s *State) indexPruning(ctx context.Context, fam store.RefreshFamily, op string, run func(pruned string) *redis.Cmd) ([]interface{}, error) {
	return s.indexPruningAfter(ctx, fam, op, run("0"), run)
}

// indexPruningAfter is indexPruning given the reply of the script's first
// run (not pruned), which the caller may have sent in a pipeline.
func (s *State) indexPruningAfter(ctx context.Context, fam store.RefreshFamily, op string, first *redis.Cmd, run func(pruned string) *redis.Cmd) ([]interface{}, error) {
	cmd := first
	for pruned := "0"; ; pruned = "1" {
		raw, err := cmd.Slice()
		if err != nil {
			return nil, unavailable(op, err)
		}
		if len(raw) == 0 {
			return nil, unavailable(op, errors.New("empty script reply"))
		}
		if code, _ := raw[0].(int64); code != -2 || pruned == "1" {
			return raw, nil
		}
		if err := s.pruneIndex(ctx, fam.UserID, fam.ID); err != nil {
			return nil, err
		}
		cmd = run("1")
	}
}

// indexArgs are indexSessionScript's arguments for fam (pruned: "1" when
// the index was just pruned).
func (s *State) indexArgs(fam store.RefreshFamily, created time.Time, pruned string) []any {
	life := max(fam.AbsoluteExpiry.UnixMilli()-created.UnixMilli(), 1)
	return []any{fam.ID, created.UnixMilli(), life, s.maxSes, authTimeOf(fam, created).UnixMilli(), pruned, familyEnd(fam, created), fam.ClientID,
		grantedOf(fam, created).UnixMilli()}
}

// indexOutcome reads indexSessionScript's reply: the families the cap
// pushed out, or store.ErrSessionsEnded when the cut-off refused it.
func indexOutcome(raw []interface{}) ([]string, error) {
	if code, _ := raw[0].(int64); code < 0 {
		return nil, fmt.Errorf("redis token state: create family: %w", store.ErrSessionsEnded)
	}
	evicted := make([]string, 0, len(raw)-1)
	for _, v := range raw[1:] {
		if sid, ok := v.(string); ok {
			evicted = append(evicted, sid)
		}
	}
	return evicted, nil
}

// pruneBatch bounds the families one prune reads: the user's families
// whose earliest end has passed, oldest end first. More than that can only
// be due when a user's sessions expired by the thousand since their last
// login at the cap; the rest are then read by the next prunes, and until
// then the cap may count a few dead families as live.
const pruneBatch = 1000

// pruneIndex drops the user's dead families from the index, so the cap
// counts live ones. Revoking a family drops it from the index (revokeFamily),
// so what is left to find is expiry: only families whose earliest end (the
// second index's score) has passed are read. Those that ended are dropped;
// those still live (used since, so their idle expiry moved) get their new
// earliest end, and are not read again before it. A prune of a user whose
// families are all live reads none of them; it costs one pipeline, one read
// of the due families and one script, however large the cap.
//
// Families indexed by an earlier version have no expiry score: when the
// index holds any (more families than expiry scores), every family is read
// once and the live ones get their score.
func (s *State) pruneIndex(ctx context.Context, userID, skip string) error {
	fams, ends := s.userFamsKey(userID), s.userEndsKey(userID)
	now := s.now().UnixMilli()
	var nFams, nEnds *redis.IntCmd
	var due *redis.StringSliceCmd
	if _, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		nFams, nEnds = p.ZCard(ctx, fams), p.ZCard(ctx, ends)
		due = p.ZRangeArgs(ctx, redis.ZRangeArgs{Key: ends, Start: "-inf", Stop: now, ByScore: true, Count: pruneBatch})
		return nil
	}); err != nil {
		return unavailable("create family: count sessions", err)
	}
	if nFams.Val() < int64(s.maxSes) {
		return nil
	}
	ids := due.Val()
	if nFams.Val() > nEnds.Val() {
		all, err := s.c.ZRange(ctx, fams, 0, -1).Result()
		if err != nil {
			return unavailable("create family: list sessions", err)
		}
		ids = all
	}
	ids = slices.DeleteFunc(ids, func(sid string) bool { return sid == skip }) // ids are this call's own
	if len(ids) == 0 {
		return nil
	}
	reads := make([]*redis.SliceCmd, len(ids))
	if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, sid := range ids {
			if validFamilyID(sid) {
				reads[i] = p.HMGet(ctx, s.famKey(sid), "rv", "ax", "ix")
			}
		}
		return nil
	}); err != nil {
		return unavailable("create family: check sessions", err)
	}
	var dead, live []any
	for i, sid := range ids {
		end, ok := liveFamilyEnd(reads[i])
		if !ok {
			dead = append(dead, sid)
			continue
		}
		live = append(live, sid, end)
	}
	args := append(append([]any{len(dead)}, dead...), live...)
	if err := unindexFamiliesScript.Run(ctx, s.c, []string{fams, ends}, args...).Err(); err != nil {
		return unavailable("create family: prune sessions", err)
	}
	return nil
}

// liveFamilyEnd reads a family's HMGET of rv, ax and ix (nil: not a family
// id): whether it is live, and if so the earliest it can end (Unix ms). A
// family is dead when its hash is gone (it expired: its keys expire with
// it) or it is marked revoked; nothing else, and no clock, drops a family
// from the index: the index is also the list a user's revocation ends.
func liveFamilyEnd(read *redis.SliceCmd) (int64, bool) {
	if read == nil {
		return 0, false
	}
	v := read.Val()
	if len(v) != 3 || v[1] == nil {
		return 0, false
	}
	if rv, _ := v[0].(string); rv == "1" {
		return 0, false
	}
	ax, _ := v[1].(string)
	ix, _ := v[2].(string)
	end, err := strconv.ParseInt(ax, 10, 64)
	if err != nil {
		return 0, true // unreadable: due at once, read again by the next prune
	}
	if idle, err := strconv.ParseInt(ix, 10, 64); err == nil && idle > 0 {
		end = min(end, idle)
	}
	return end, true
}

// RotateRefresh implements store.TokenState. When it detects reuse, or
// ends a family at its rotation limit (the used set holds
// store.MaxFamilyRotations hashes: SCARD in the rotation script), it
// revokes the session's access tokens too; should that durable write fail
// it returns the RotateReuseDetected or RotateLimitReached result together
// with the error (the family is revoked either way).
//
// A family whose session is revoked, or whose user's cut-off is at or
// after its auth time, does not rotate even when its own mark is missing
// (a revocation whose Redis write was lost, a family created after its
// session was revoked): it answers RotateInvalid and is ended then, as
// RevokeFamily ends it. Without Cluster the rotation script checks that
// itself, before it changes anything (one round trip, as before); on
// Cluster the revocation set is in another slot (rotateOnCluster).
// Either way a revocation set Redis has lost is rebuilt first, and
// revocations this instance has queued are written first.
func (s *State) RotateRefresh(ctx context.Context, req store.RotateRequest) (store.RotateResult, error) {
	if !validFamilyID(req.FamilyID) || len(req.PresentedHash) == 0 {
		return store.RotateResult{Outcome: store.RotateInvalid}, nil
	}
	if len(req.NextHash) == 0 {
		return store.RotateResult{}, errors.New("redis token state: rotate refresh: empty successor hash")
	}
	if err := s.flushPending(ctx); err != nil {
		return store.RotateResult{}, err // fail closed until Redis takes the queued revocations
	}
	grace := req.Grace.Milliseconds()
	if grace < 0 {
		grace = 0
	}
	keys := []string{s.famKey(req.FamilyID), s.usedKey(req.FamilyID)}
	args := []any{req.PresentedHash, req.NextHash, req.NextSealed, req.Now.UnixMilli(), grace, req.ClientID, s.maxRotations}
	if s.cluster { // the user's version and the revocation set are in other slots
		return s.rotateOnCluster(ctx, req, scriptCall{rotateScript, keys, args})
	}
	args = append(append(append(args, s.userVerTemplate), userVersionArgs()...), s.sessionCheckArgs(req.FamilyID)...)
	for attempt := 0; ; attempt++ {
		raw, err := rotateOnOneNodeScript.Run(ctx, s.c, keys, args...).Slice()
		if err != nil {
			return store.RotateResult{}, unavailable("rotate refresh", err)
		}
		if code, _ := raw[0].(int64); code == scriptNotBuilt && len(raw) == 1 {
			if attempt == 2 {
				return store.RotateResult{}, unavailable("rotate refresh", errors.New("revocation set lost again during rebuild"))
			}
			if err := s.rebuild(ctx); err != nil {
				return store.RotateResult{}, err
			}
			continue
		}
		return s.rotated(ctx, req, raw)
	}
}

// rotateOnCluster is RotateRefresh on Cluster. The rotation and the
// check of the session's revocation go in one pipeline: they are in
// different slots, so they run side by side, and the check sees the
// revocation set as it was when the rotation ran (a racer's reuse
// detection, which revokes the session after the rotation it follows, is
// not taken for a revocation the rotation should have seen). The user's
// cut-off is checked after, in a call of its own: the family's user is
// known only then. A rotation that returns the family is refused when
// either finds it revoked.
//
// The check can only see the set as the rotation ran when the set is
// built. An instance that has not found it built since it last found it
// lost (at start, after a loss) checks the session first, rebuilding the
// set, and then rotates as above; when the set was lost between the two
// (a rebuild is then due), the session is checked after the rotation.
func (s *State) rotateOnCluster(ctx context.Context, req store.RotateRequest, rotation scriptCall) (store.RotateResult, error) {
	if !s.setBuilt.Load() {
		revoked, err := s.IsAccessTokenRevoked(ctx, store.AccessTokenRef{SID: req.FamilyID})
		if err != nil {
			return store.RotateResult{}, fmt.Errorf("rotate refresh: check the session: %w", err)
		}
		if revoked {
			return store.RotateResult{Outcome: store.RotateInvalid}, s.endRevokedSession(ctx, req.FamilyID, req.Now)
		}
	}
	cmds := s.evalPipelined(ctx, rotation, s.checkCall(store.AccessTokenRef{SID: req.FamilyID}))
	raw, err := cmds[0].Slice()
	if err != nil {
		return store.RotateResult{}, unavailable("rotate refresh", err)
	}
	res, err := s.rotated(ctx, req, raw)
	if err != nil || (res.Outcome != store.RotateOK && res.Outcome != store.RotateGraceReplay) {
		return res, err
	}
	revoked, err := cmds[1].Int64()
	if err != nil {
		return store.RotateResult{}, unavailable("rotate refresh: check the session", err)
	}
	ref := store.AccessTokenRef{UserID: res.Family.UserID, IssuedAt: res.Family.AuthTime}
	if revoked < 0 {
		s.setBuilt.Store(false)
		ref.SID = req.FamilyID // check the session too once the set is rebuilt
	}
	if revoked != 1 && (ref.SID != "" || ref.UserID != "") {
		r, err := s.IsAccessTokenRevoked(ctx, ref)
		if err != nil {
			return store.RotateResult{}, fmt.Errorf("rotate refresh: check the session: %w", err)
		}
		if r {
			revoked = 1
		}
	}
	if revoked == 1 {
		return store.RotateResult{Outcome: store.RotateInvalid}, s.endRevokedSession(ctx, req.FamilyID, req.Now)
	}
	return res, nil
}

// sessionCheckArgs are sessionRevokedLua's key names for the session sid
// (the ready marker, the session's revocation, the user's cut-off
// template), as the one-node scripts take them.
func (s *State) sessionCheckArgs(sid string) []any {
	return []any{s.readyKey(), s.sidKey(sid), s.userRevTemplate}
}

// rotated finishes RotateRefresh given the rotation script's reply: a
// session the script found revoked is ended, as is one whose reuse it
// detected or that it ended at its rotation limit.
func (s *State) rotated(ctx context.Context, req store.RotateRequest, raw []interface{}) (store.RotateResult, error) {
	if len(raw) == 1 {
		if code, _ := raw[0].(int64); code == scriptSessionRevoked {
			return store.RotateResult{Outcome: store.RotateInvalid}, s.endRevokedSession(ctx, req.FamilyID, req.Now)
		}
	}
	res, err := parseRotate(req.FamilyID, raw)
	if err != nil {
		return store.RotateResult{}, unavailable("rotate refresh", err)
	}
	if res.Outcome == store.RotateReuseDetected || res.Outcome == store.RotateLimitReached {
		if err := s.revokeSessions(ctx, []string{req.FamilyID}, req.Now); err != nil {
			return res, fmt.Errorf("rotate refresh: %s: %w", res.Outcome, err)
		}
	}
	return res, nil
}

// endRevokedSession ends, as RevokeFamily does (durably first, then its
// access tokens and its family), a session found revoked by a refresh
// whose family was not marked: a user's cut-off covers the session's
// access tokens issued up to the cut-off only, and the mark and the
// session's record outlive the cut-off's. A revocation Redis did not
// take is queued, and is no error here: the refresh is refused either way.
func (s *State) endRevokedSession(ctx context.Context, sid string, now time.Time) error {
	err := s.revokeSessions(ctx, []string{sid}, now)
	if errors.Is(err, store.ErrRevocationPending) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rotate refresh: end a revoked session: %w", err)
	}
	return nil
}

func parseRotate(sid string, raw []interface{}) (store.RotateResult, error) {
	if len(raw) == 0 {
		return store.RotateResult{}, errors.New("empty script reply")
	}
	code, ok := raw[0].(int64)
	if !ok {
		return store.RotateResult{}, fmt.Errorf("unexpected script reply %T", raw[0])
	}
	if code == scriptInvalid {
		return store.RotateResult{Outcome: store.RotateInvalid}, nil
	}
	if len(raw) < 14 {
		return store.RotateResult{}, fmt.Errorf("short script reply (%d values)", len(raw))
	}
	str := make([]string, len(raw)-1)
	for i, v := range raw[1:] {
		sv, ok := v.(string)
		if !ok {
			return store.RotateResult{}, fmt.Errorf("unexpected script reply value %T", v)
		}
		str[i] = sv
	}
	var nums [4]int64
	for i, sv := range str[4:8] {
		n, err := strconv.ParseInt(sv, 10, 64)
		if err != nil {
			return store.RotateResult{}, fmt.Errorf("corrupt family time: %w", err)
		}
		nums[i] = n
	}
	res := store.RotateResult{Family: store.RefreshFamily{
		ID:             sid,
		UserID:         str[0],
		ClientID:       str[1],
		Scope:          str[2],
		RequestedScope: str[3],
		CreatedAt:      time.UnixMilli(nums[0]).UTC(),
		AbsoluteExpiry: time.UnixMilli(nums[1]).UTC(),
		IdleTTL:        time.Duration(nums[2]) * time.Millisecond,
		AuthTime:       time.UnixMilli(nums[3]).UTC(),
	}}
	amr, err := decodeAMR(str[8])
	if err != nil {
		return store.RotateResult{}, err
	}
	res.Family.AMR = amr
	res.Family.TenantID = str[10]
	res.Family.BrowserSessionID = str[11]
	ga, err := strconv.ParseInt(str[12], 10, 64)
	if err != nil {
		return store.RotateResult{}, fmt.Errorf("corrupt family grant time: %w", err)
	}
	res.Family.GrantedAt = time.UnixMilli(ga).UTC()
	if len(str) > 13 { // rotateOnOneNodeScript
		res.UserVersion = store.UserVersion{Read: true, Value: str[13]}
	}
	switch code {
	case scriptOK:
		res.Outcome = store.RotateOK
	case scriptGrace:
		res.Outcome = store.RotateGraceReplay
		res.SuccessorSealed = []byte(str[9])
	case scriptReuse:
		res.Outcome = store.RotateReuseDetected
	case scriptLimit:
		res.Outcome = store.RotateLimitReached
	default:
		return store.RotateResult{}, fmt.Errorf("unknown rotation outcome %d", code)
	}
	return res, nil
}

// record writes revocations to the durable log (when there is one).
func (s *State) record(ctx context.Context, revs []store.Revocation) error {
	if s.log == nil {
		return nil
	}
	if err := s.log.RecordRevocations(ctx, revs); err != nil {
		return fmt.Errorf("redis token state: record revocations: %w: %w", store.ErrUnavailable, err)
	}
	return nil
}

// revoke is the one path of every revocation: the durable record first,
// then Redis. Should the durable write fail, Redis is still written, the
// error returned, and the durable write retried in the background until
// the log takes it (queueUnlogged): the revocation holds meanwhile, and
// for good once recorded, even if Redis later loses its data.
// Should the Redis write fail, the revocation is queued: it is written
// before this instance answers its next revocation check and retried in the
// background until Redis takes it, and the error says so
// (store.ErrRevocationPending when the durable record holds it). The
// durable record stays unapplied until Redis has taken it, so should this
// instance stop (or stay cut off from Redis) first, every other instance's
// reconciliation applies it (Reconcile).
func (s *State) revoke(ctx context.Context, revs []store.Revocation) error {
	logErr := s.record(ctx, revs)
	if logErr != nil {
		s.queueUnlogged(revs)
	}
	if err := s.flushPending(ctx); err != nil {
		s.queue(revs)
		return errors.Join(logErr, s.pendingErr(logErr, err))
	}
	if err := s.apply(ctx, revs); err != nil {
		s.queue(revs)
		return errors.Join(logErr, s.pendingErr(logErr, err))
	}
	s.markApplied(ctx, revs)
	return logErr
}

// markApplied marks in the durable log the records of revocations Redis
// has taken. A failure is no error: the revocation holds, and a
// reconciliation applies the record once more (applying is idempotent).
func (s *State) markApplied(ctx context.Context, revs []store.Revocation) {
	if s.log != nil && len(revs) > 0 {
		_ = s.log.MarkRevocationsApplied(ctx, revs)
	}
}

// pendingErr describes a Redis write that failed after the durable write
// (logErr) was attempted.
func (s *State) pendingErr(logErr, err error) error {
	if s.log != nil && logErr == nil {
		return fmt.Errorf("redis token state: %w: %w", store.ErrRevocationPending, err)
	}
	return err
}

// apply writes revocations to Redis. It is idempotent, so a queued
// revocation may be applied again.
func (s *State) apply(ctx context.Context, revs []store.Revocation) error {
	for _, r := range revs {
		var err error
		switch r.Kind {
		case store.RevokedJTI:
			if err = s.setUntil(ctx, s.jtiKey(r.Value), r.ExpiresAt); err != nil {
				err = unavailable("revoke access token", err)
			}
		case store.RevokedSession:
			err = s.applySession(ctx, r.Value, r.ExpiresAt)
		case store.RevokedUser:
			err = s.applyUser(ctx, r)
		case store.RevokedClient:
			_, err = s.applyClient(ctx, r)
		default:
			err = fmt.Errorf("redis token state: unknown revocation kind %q", r.Kind)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// applySession denies the session's access tokens, then marks its family
// revoked (endFamilies). In that order: a family created while this runs
// is either there to be marked, or created before a check that then sees
// the session revoked (CreateFamilyAndCheck's promise; marking first left
// a family created in between live with the check answering "not
// revoked").
func (s *State) applySession(ctx context.Context, sid string, exp time.Time) error {
	if err := s.setUntil(ctx, s.sidKey(sid), exp); err != nil {
		return unavailable("revoke session", err)
	}
	return s.endFamilies(ctx, []string{sid})
}

// endFamilies is the part of session revocations that ends their refresh
// families, once their access tokens are denied (applySession, and a
// rebuild of the revocation set): it marks the families revoked and drops
// them from their users' indexes.
func (s *State) endFamilies(ctx context.Context, sids []string) error {
	valid := make([]string, 0, len(sids))
	for _, sid := range sids {
		if validFamilyID(sid) {
			valid = append(valid, sid)
		}
	}
	if len(valid) == 0 {
		return nil
	}
	if _, err := s.revokeFamilies(ctx, valid, nil); err != nil {
		return unavailable("revoke family", err)
	}
	return nil
}

// revokeFamily marks the family revoked and drops it from its user's
// indexes, so that the session cap never counts it again; it reports
// whether the family existed (revokeFamilies for one family).
func (s *State) revokeFamily(ctx context.Context, sid string) (bool, error) {
	ended, err := s.revokeFamilies(ctx, []string{sid}, nil)
	return len(ended) > 0, err
}

// revokeFamilies marks the families revoked and drops them from their
// users' indexes; it returns those that existed, and were marked. With
// maxAuth (nil, or one per family: "" or Unix ms) it leaves a family
// authenticated after its time alone. Without Cluster that is one script
// per family, all in one pipeline; on Cluster the users' indexes are in
// other slots, so they are written after, in a second one (a failure
// there leaves a family revoked and indexed until a prune finds it, and
// is returned, so the revocation is retried).
func (s *State) revokeFamilies(ctx context.Context, sids, maxAuth []string) ([]string, error) {
	calls := make([]scriptCall, len(sids))
	for i, sid := range sids {
		keys, bound := []string{s.famKey(sid)}, ""
		if maxAuth != nil {
			bound = maxAuth[i]
		}
		if s.cluster {
			calls[i] = scriptCall{revokeFamilyScript, keys, []any{bound}}
		} else {
			calls[i] = scriptCall{revokeFamilyUnindexingScript, keys, append(s.unindexArgs[:len(s.unindexArgs):len(s.unindexArgs)], sid, bound)}
		}
	}
	var ended []string
	var errs []error
	unindex := map[string][]any{} // on Cluster: user id → their families to drop
	for i, cmd := range s.runCalls(ctx, calls) {
		r, err := cmd.StringSlice()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(r) == 0 {
			continue
		}
		ended = append(ended, sids[i])
		if s.cluster && r[0] != "" {
			unindex[r[0]] = append(unindex[r[0]], sids[i])
		}
	}
	if len(unindex) > 0 {
		calls = calls[:0]
		for uid, ids := range unindex {
			calls = append(calls, scriptCall{unindexFamiliesScript, []string{s.userFamsKey(uid), s.userEndsKey(uid)}, append([]any{len(ids)}, ids...)})
		}
		for _, cmd := range s.runCalls(ctx, calls) {
			if err := cmd.Err(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return ended, errors.Join(errs...)
}

// runCalls runs one call on its own, or several in one pipeline
// (evalPipelined).
func (s *State) runCalls(ctx context.Context, calls []scriptCall) []*redis.Cmd {
	if len(calls) == 1 {
		return []*redis.Cmd{calls[0].run(ctx, s.c)}
	}
	return s.evalPipelined(ctx, calls...)
}

// applyUser sets the user's cut-off for access tokens, then does the rest
// of a user's revocation (endUserSessions), for every family in the
// user's index.
func (s *State) applyUser(ctx context.Context, r store.Revocation) error {
	if err := userCutoffScript.Run(ctx, s.c, []string{s.userKey(r.Value)}, r.At.UnixMilli(), keyExpiry(r.ExpiresAt)).Err(); err != nil {
		return unavailable("revoke user sessions: cut-off", err)
	}
	return s.endUserSessions(ctx, []store.Revocation{r}, false)
}

// applyClient sets the user's cut-off at the client for access tokens (in
// the revocation set), then ends the user's families at the client
// granted by then (endClientSessions); it returns how many it ended.
func (s *State) applyClient(ctx context.Context, r store.Revocation) (int, error) {
	if err := userCutoffScript.Run(ctx, s.c, []string{s.clientKey(r.Value)}, r.At.UnixMilli(), keyExpiry(r.ExpiresAt)).Err(); err != nil {
		return 0, unavailable("revoke client grants: cut-off", err)
	}
	return s.endClientSessions(ctx, r)
}

// endClientSessions is the part of a client revocation beyond the cut-off
// for access tokens (applyClient, and a rebuild of the revocation set):
// it sets the user's cut-off at the client for new families and lists the
// user's families atomically with their indexing (clientSessionsScript),
// reads which are the client's, not revoked and granted at or before the
// cut-off (one pipeline; 'ga', or 'ca' for a family written before grant
// times were kept), and revokes those sessions (durably first, as
// endUserSessions does). A record of another shape changes nothing.
func (s *State) endClientSessions(ctx context.Context, r store.Revocation) (int, error) {
	uid, cid, ok := store.ParseClientRevocationValue(r.Value)
	if !ok || !validUserID(uid) {
		return 0, nil
	}
	ttl := max(keyExpiry(r.ExpiresAt)-s.now().UnixMilli(), 1)
	ids, err := clientSessionsScript.Run(ctx, s.c, []string{s.userFamsKey(uid), s.userClientCutKey(uid), s.userSidsKey(uid)},
		cid, r.At.UnixMilli(), ttl).StringSlice()
	if err != nil {
		return 0, unavailable("revoke client grants: list sessions", err)
	}
	ids = slices.DeleteFunc(ids, func(id string) bool { return !validFamilyID(id) })
	if len(ids) == 0 {
		return 0, nil
	}
	reads := make([]*redis.SliceCmd, len(ids))
	if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			reads[i] = p.HMGet(ctx, s.famKey(id), "c", "rv", "ca", "ga")
		}
		return nil
	}); err != nil {
		return 0, unavailable("revoke client grants: read the user's families", err)
	}
	var match []string
	for i, rd := range reads {
		v := rd.Val()
		c, _ := v[0].(string)
		rv, _ := v[1].(string)
		granted, _ := v[3].(string)
		if granted == "" {
			granted, _ = v[2].(string)
		}
		at, perr := strconv.ParseInt(granted, 10, 64)
		if c == cid && rv != "1" && perr == nil && at <= r.At.UnixMilli() {
			match = append(match, ids[i])
		}
	}
	if len(match) == 0 {
		return 0, nil
	}
	sessions := s.sessionRevocations(match, latest(s.now(), r.At))
	if err := s.record(ctx, sessions); err != nil {
		return 0, err
	}
	if err := s.apply(ctx, sessions); err != nil {
		return 0, err
	}
	s.markApplied(ctx, sessions)
	return len(match), nil
}

// endUserSessions is the part of users' revocations beyond the cut-off
// for access tokens (applyUser, and a rebuild of the revocation set): for
// each user it sets the cut-off for new families and browser sessions,
// drops the browser sessions authenticated at or before it, then ends the
// families in the user's index and revokes their sessions' access tokens
// too (durably first), as the SQL state does: a token issued by a
// rotation racing the cut-off still dies. With onlyBefore, only the
// families authenticated at or before the cut-off end: a rebuild, which
// may come long after the cut-off, leaves the sessions of later logins
// alone. The users' calls go in one pipeline, and so do their families'.
func (s *State) endUserSessions(ctx context.Context, revs []store.Revocation, onlyBefore bool) error {
	calls := make([]scriptCall, 0, 2*len(revs))
	for _, r := range revs {
		uid, cut := r.Value, r.At.UnixMilli()
		calls = append(calls, scriptCall{userSessionsScript, []string{s.userFamsKey(uid), s.userCutKey(uid), s.userSidsKey(uid)},
			[]any{cut, keyExpiry(r.ExpiresAt)}})
		if c, ok := s.endUserBrowserSessionsCall(uid, cut); ok {
			calls = append(calls, c)
		}
	}
	cmds := s.runCalls(ctx, calls)
	var sids, maxAuth []string
	at := s.now() // the sessions' access tokens may have been issued up to now
	for _, r := range revs {
		listed, err := cmds[0].StringSlice()
		if err != nil {
			return unavailable("revoke user sessions: list sessions", err)
		}
		cmds = cmds[1:]
		if validUserID(r.Value) { // endUserBrowserSessionsCall added its call
			if err := cmds[0].Err(); err != nil {
				return unavailable("revoke user sessions: end browser sessions", err)
			}
			cmds = cmds[1:]
		}
		bound := ""
		if onlyBefore {
			bound = strconv.FormatInt(r.At.UnixMilli(), 10)
		}
		for _, sid := range listed {
			if validFamilyID(sid) {
				sids, maxAuth = append(sids, sid), append(maxAuth, bound)
			}
		}
		at = latest(at, r.At)
	}
	if len(sids) == 0 {
		return nil
	}
	ended, err := s.revokeFamilies(ctx, sids, maxAuth)
	if err != nil {
		err = unavailable("revoke user sessions: revoke family", err)
	}
	if len(ended) == 0 {
		return err
	}
	// The families marked are out of the index, so a retry would not
	// find them again: their sessions are revoked even when another
	// failed.
	sessions := s.sessionRevocations(ended, at)
	if rerr := s.record(ctx, sessions); rerr != nil {
		return errors.Join(err, rerr)
	}
	if aerr := s.apply(ctx, sessions); aerr != nil {
		return errors.Join(err, aerr)
	}
	s.markApplied(ctx, sessions)
	return err
}

// latest is the later of a and b.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (s *State) sessionRevocations(sids []string, now time.Time) []store.Revocation {
	revs := make([]store.Revocation, len(sids))
	for i, sid := range sids {
		revs[i] = store.Revocation{Kind: store.RevokedSession, Value: sid, At: now, ExpiresAt: now.Add(s.maxAT)}
	}
	return revs
}

// revokeSessions revokes the sessions and their access tokens.
func (s *State) revokeSessions(ctx context.Context, sids []string, now time.Time) error {
	return s.revoke(ctx, s.sessionRevocations(sids, now))
}

// queue keeps revocations Redis did not take and starts the background
// retry when none is running.
func (s *State) queue(revs []store.Revocation) {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	s.pending = append(s.pending, revs...)
	s.hasPending.Store(true)
	if !s.retrying {
		s.retrying = true
		go s.retry()
	}
}

// retry writes the queued revocations until Redis takes them.
func (s *State) retry() {
	s.retryUntilDone(func(ctx context.Context) bool {
		err := s.flushPending(ctx)
		s.pendingMu.Lock()
		defer s.pendingMu.Unlock()
		if err == nil && len(s.pending) == 0 {
			s.retrying = false
			return true
		}
		return false
	})
}

// retryUntilDone runs attempt (with a 10 s deadline) after retryPeriod,
// then after twice as long each time up to maxRetryPeriod, until it
// reports done: the background retry of the Redis writes (retry) and of
// the durable log's (retryLog).
func (s *State) retryUntilDone(attempt func(ctx context.Context) (done bool)) {
	wait := s.retryPeriod
	for {
		t := time.NewTimer(wait)
		<-t.C
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		done := attempt(ctx)
		cancel()
		if done {
			return
		}
		wait = min(2*wait, maxRetryPeriod)
	}
}

// queueUnlogged keeps revocations the durable log did not take and starts
// the background retry when none is running.
func (s *State) queueUnlogged(revs []store.Revocation) {
	s.unloggedMu.Lock()
	defer s.unloggedMu.Unlock()
	s.unlogged = append(s.unlogged, revs...)
	if !s.retryingLog {
		s.retryingLog = true
		s.unloggedDrained = make(chan struct{})
		go s.retryLog(s.unloggedDrained)
	}
}

// retryLog records the queued revocations until the log takes them
// (recording one again is harmless: the log keeps the later times), then
// closes drained.
func (s *State) retryLog(drained chan struct{}) {
	s.retryUntilDone(func(ctx context.Context) bool {
		s.unloggedMu.Lock()
		batch := slices.Clone(s.unlogged)
		s.unloggedMu.Unlock()
		err := s.record(ctx, batch)
		s.unloggedMu.Lock()
		defer s.unloggedMu.Unlock()
		if err != nil {
			return false
		}
		s.unlogged = s.unlogged[len(batch):] // those queued meanwhile stay
		if len(s.unlogged) > 0 {
			return false
		}
		s.unlogged, s.retryingLog = nil, false
		close(drained)
		return true
	})
}

// Reconcile writes to Redis the revocations whose Redis write failed
// earlier: those this instance has queued (its checks write them first,
// and its background retry until Redis takes them), then the durable
// log's records left unapplied for longer than the grace
// (Options.ReconcileGrace), whichever instance recorded them: one that
// stopped, or cannot reach Redis, before Redis took them. Each is marked
// applied once written. Every instance with a log runs it at start and
// every Options.ReconcilePeriod (RunReconciler).
func (s *State) Reconcile(ctx context.Context) error {
	return errors.Join(s.flushPending(ctx), s.applyUnapplied(ctx))
}

// RunReconciler reconciles (Reconcile) at once and then every
// Options.ReconcilePeriod until ctx ends, each pass within 10 s; report
// (when not nil) receives a failed pass's error: the next pass tries
// again.
func (s *State) RunReconciler(ctx context.Context, report func(error)) {
	t := time.NewTicker(s.reconcilePeriod)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.Reconcile(pctx)
		cancel()
		if err != nil && report != nil && ctx.Err() == nil {
			report(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// applyUnapplied applies the durable log's records unapplied for longer
// than the grace, in batches, marking each batch applied once Redis took
// it. A user's record is applied as a rebuild applies it (applyRecorded).
func (s *State) applyUnapplied(ctx context.Context) error {
	if s.log == nil {
		return nil
	}
	for range reconcileBatches {
		now := s.now()
		revs, err := s.log.UnappliedRevocations(ctx, now, now.Add(-s.reconcileGrace), reconcileBatch)
		if err != nil {
			return fmt.Errorf("redis token state: reconcile: list unapplied revocations: %w: %w", store.ErrUnavailable, err)
		}
		if len(revs) == 0 {
			return nil
		}
		if err := s.applyRecorded(ctx, revs); err != nil {
			return fmt.Errorf("redis token state: reconcile: %w", err)
		}
		if err := s.log.MarkRevocationsApplied(ctx, revs); err != nil {
			return fmt.Errorf("redis token state: reconcile: mark revocations applied: %w: %w", store.ErrUnavailable, err)
		}
		if len(revs) < reconcileBatch {
			return nil
		}
	}
	return nil
}

// applyRecorded writes durable records another instance may have failed
// to apply: access tokens, sessions and a user's cut-off at a client as
// apply does (the latter ends only the families granted by its cut-off); a user's cut-off as
// applyUser does, except that, as in a rebuild, only the user's families
// authenticated at or before the cut-off end (this may run long after the
// cut-off: the sessions of later logins go on).
func (s *State) applyRecorded(ctx context.Context, revs []store.Revocation) error {
	var users []store.Revocation
	for _, r := range revs {
		if r.Kind != store.RevokedUser {
			if err := s.apply(ctx, []store.Revocation{r}); err != nil {
				return err
			}
			continue
		}
		if err := userCutoffScript.Run(ctx, s.c, []string{s.userKey(r.Value)}, r.At.UnixMilli(), keyExpiry(r.ExpiresAt)).Err(); err != nil {
			return unavailable("revoke user sessions: cut-off", err)
		}
		users = append(users, r)
	}
	if len(users) == 0 {
		return nil
	}
	return s.endUserSessions(ctx, users, true)
}

// Drain writes, within ctx, what this instance holds in memory only: the
// revocations Redis did not take (queued for Redis) and those the durable
// log did not take (queued for the log). It reports how many are left
// unwritten: those queued for Redis alone are in the log, unapplied, and
// another instance's reconciliation applies them; those queued for the
// log are in Redis only, until Redis loses its data. For a process that
// stops.
func (s *State) Drain(ctx context.Context) (int, error) {
	err := s.flushPending(ctx)
	s.pendingMu.Lock()
	left := len(s.pending)
	s.pendingMu.Unlock()
	s.unloggedMu.Lock()
	unlogged := slices.Clone(s.unlogged)
	s.unloggedMu.Unlock()
	// Recording them again later (the background retry) is harmless.
	if rerr := s.record(ctx, unlogged); rerr != nil {
		err = errors.Join(err, rerr)
		left += len(unlogged)
	}
	return left, err
}

func (s *State) flushPending(ctx context.Context) error {
	if !s.hasPending.Load() {
		return nil
	}
	s.pendingMu.Lock()
	if len(s.pending) == 0 {
		s.pendingMu.Unlock()
		return nil
	}
	if err := s.apply(ctx, s.pending); err != nil {
		s.pendingMu.Unlock()
		return fmt.Errorf("redis token state: apply queued revocations: %w", err)
	}
	applied := s.pending
	s.pending = nil
	s.hasPending.Store(false)
	s.pendingMu.Unlock()
	s.markApplied(ctx, applied)
	return nil
}

// pendingEnds reports whether a revocation this instance has queued (not
// yet written to Redis) ends fam: its session's, its user's at or after
// its auth time, or its user's at its client at or after its grant
// (ClientGrantedAt).
func (s *State) pendingEnds(fam store.RefreshFamily) bool {
	if !s.hasPending.Load() {
		return false
	}
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	for _, r := range s.pending {
		switch {
		case r.Kind == store.RevokedSession && r.Value == fam.ID:
			return true
		case r.Kind == store.RevokedUser && r.Value == fam.UserID && !r.At.Before(fam.AuthTime):
			return true
		case r.Kind == store.RevokedClient && fam.UserID != "" && r.Value == store.ClientRevocationValue(fam.UserID, fam.ClientID) &&
			!r.At.Before(fam.ClientGrantedAt()):
			return true
		}
	}
	return false
}

// setUntil sets a revocation key that expires at exp (keyExpiry).
func (s *State) setUntil(ctx context.Context, key string, exp time.Time) error {
	return s.c.Do(ctx, "SET", key, "1", "PXAT", keyExpiry(exp)).Err()
}

// keyExpiry is the PXAT (Unix ms) of a revocation key, or of a cut-off,
// that must last until exp: store.RevocationKeptUntil(exp). Redis judges
// PXAT by its clock, and every instance judges the token's exp by its
// own, so without the margin a Redis clock ahead of an instance's dropped
// the revocation while the instance still accepted the token. Every
// revocation write's expiry goes through it (setUntil, the cut-off
// scripts, a rebuild).
func keyExpiry(exp time.Time) int64 {
	return store.RevocationKeptUntil(exp).UnixMilli()
}

// RevokeFamily implements store.TokenState. The session's access tokens are
// revoked even when the family is unknown (its state may have been lost).
func (s *State) RevokeFamily(ctx context.Context, familyID string, now time.Time) error {
	if familyID == "" {
		return nil
	}
	return s.revokeSessions(ctx, []string{familyID}, now)
}

// RevokeClientGrants implements store.TokenState: the cut-off is recorded
// durably first (RevokedClient); then it is set in the revocation set, as
// the user's cut-off at the client for new families, and the user's
// families at the client granted by then are revoked with their sessions
// (applyClient).
func (s *State) RevokeClientGrants(ctx context.Context, userID, clientID string, cutoff time.Time) error {
	if !validUserID(userID) || clientID == "" || strings.Contains(clientID, " ") {
		return errors.New("redis token state: revoke client grants: invalid user or client id")
	}
	return s.revoke(ctx, []store.Revocation{{Kind: store.RevokedClient, Value: store.ClientRevocationValue(userID, clientID),
		At: cutoff, ExpiresAt: cutoff.Add(s.maxAT)}})
}

// RevokeUserSessions implements store.TokenState. The cut-off is recorded
// durably first; then it is set in Redis and every family in the user's
// index is marked revoked.
func (s *State) RevokeUserSessions(ctx context.Context, userID string, cutoff time.Time) error {
	if userID == "" {
		return errors.New("redis token state: revoke user sessions: empty user id")
	}
	return s.revoke(ctx, []store.Revocation{{Kind: store.RevokedUser, Value: userID, At: cutoff, ExpiresAt: cutoff.Add(store.UserCutoffLifetime(s.maxAT))}})
}

// RevokeAccessToken implements store.TokenState.
func (s *State) RevokeAccessToken(ctx context.Context, jti string, expiresAt time.Time) error {
	if jti == "" {
		return errors.New("redis token state: revoke access token: empty jti")
	}
	now := s.now()
	if !expiresAt.After(now) {
		return nil // already expired: nothing to deny
	}
	return s.revoke(ctx, []store.Revocation{{Kind: store.RevokedJTI, Value: jti, At: now, ExpiresAt: expiresAt}})
}

// IsAccessTokenRevoked implements store.TokenState. When Redis has lost the
// revocation set (restart without persistence, FLUSHALL) it is rebuilt from
// the durable log before the first answer.
func (s *State) IsAccessTokenRevoked(ctx context.Context, ref store.AccessTokenRef) (bool, error) {
	if err := s.flushPending(ctx); err != nil {
		return true, err // fail closed until Redis takes the queued revocations
	}
	return s.inRevocationSet(ctx, ref)
}

// inRevocationSet is IsAccessTokenRevoked's check of the set in Redis,
// rebuilding it when Redis has lost it, without first writing this
// instance's queued revocations: a caller that goes on while Redis
// refuses them (FindRefresh) counts them itself.
func (s *State) inRevocationSet(ctx context.Context, ref store.AccessTokenRef) (bool, error) {
	check := s.checkCall(ref)
	for attempt := 0; attempt < 3; attempt++ {
		n, err := check.run(ctx, s.c).Int64()
		if err != nil {
			return true, unavailable("check revocation", err)
		}
		s.setBuilt.Store(n >= 0)
		if n >= 0 {
			return n == 1, nil
		}
		if err := s.rebuild(ctx); err != nil {
			return true, err
		}
	}
	return true, unavailable("check revocation", errors.New("revocation set lost again during rebuild"))
}

// checkCall is checkScript's call for ref.
func (s *State) checkCall(ref store.AccessTokenRef) scriptCall {
	client := ""
	if ref.UserID != "" && ref.ClientID != "" {
		client = store.ClientRevocationValue(ref.UserID, ref.ClientID)
	}
	return scriptCall{checkScript, []string{s.readyKey(), s.jtiKey(ref.JTI), s.sidKey(ref.SID), s.userKey(ref.UserID), s.clientKey(client)},
		[]any{flag(ref.JTI != ""), flag(ref.SID != ""), flag(ref.UserID != ""), ref.IssuedAt.UnixMilli(),
			flag(client != ""), ref.ClientGrantedAt().UnixMilli()}}
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// rebuild restores the revocation set from the durable log and marks it
// ready. Concurrent rebuilds (here or on other instances) write the same
// records; a rebuild whose Redis lost its data meanwhile writes nothing
// more, leaves the set unmarked, and is retried by the caller.
//
// It restores everything a revocation means, with the code apply uses:
// each batch of records first denies the access tokens (rebuildScript),
// then, for a session, marks its family revoked (endFamilies, as
// applySession does after its denial), and for a user, sets the cut-off
// for new families and ends the user's families authenticated at or
// before the cut-off (endUserSessions, as applyUser does after its
// cut-off). The ready marker is set last, by a script of its own, only
// when all of it succeeded and the generation is unchanged: until then
// every check, rotation and lookup waits for (or does) a rebuild.
func (s *State) rebuild(ctx context.Context) error {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	ready, err := s.c.Exists(ctx, s.readyKey()).Result()
	if err != nil {
		return unavailable("rebuild revocations", err)
	}
	if ready == 1 {
		return nil // another caller finished a rebuild meanwhile
	}
	gen, err := generationScript.Run(ctx, s.c, []string{s.genKey()}, randomToken()).Text()
	if err != nil {
		return unavailable("rebuild revocations", err)
	}
	now := s.now()
	var revs []store.Revocation
	if s.log != nil {
		revs, err = s.log.ActiveRevocations(ctx, now)
		if err != nil {
			return fmt.Errorf("redis token state: rebuild revocations: %w: %w", store.ErrUnavailable, err)
		}
	}
	live := revs[:0:0]
	for _, r := range revs {
		if store.RevocationKeptUntil(r.ExpiresAt).After(now) {
			live = append(live, r)
		}
	}
	for start := 0; start < len(live); start += rebuildBatch {
		batch := live[start:min(start+rebuildBatch, len(live))]
		keys := []string{s.genKey(), s.readyKey()}
		args := []interface{}{gen, flag(false)}
		for _, r := range batch {
			switch r.Kind {
			case store.RevokedJTI:
				keys = append(keys, s.jtiKey(r.Value))
				args = append(args, "k", "", keyExpiry(r.ExpiresAt))
			case store.RevokedSession:
				keys = append(keys, s.sidKey(r.Value))
				args = append(args, "k", "", keyExpiry(r.ExpiresAt))
			case store.RevokedUser:
				keys = append(keys, s.userKey(r.Value))
				args = append(args, "u", r.At.UnixMilli(), keyExpiry(r.ExpiresAt))
			case store.RevokedClient:
				keys = append(keys, s.clientKey(r.Value))
				args = append(args, "u", r.At.UnixMilli(), keyExpiry(r.ExpiresAt))
			default:
				return fmt.Errorf("redis token state: rebuild revocations: unknown kind %q", r.Kind)
			}
		}
		n, err := rebuildScript.Run(ctx, s.c, keys, args...).Int64()
		if err != nil {
			return unavailable("rebuild revocations", err)
		}
		if n == 0 {
			// Redis lost its data during the rebuild; the caller sees no
			// ready marker and rebuilds again.
			return nil
		}
		if err := s.rebuildRefresh(ctx, batch); err != nil {
			return fmt.Errorf("redis token state: rebuild revocations: %w", err)
		}
	}
	if err := rebuildScript.Run(ctx, s.c, []string{s.genKey(), s.readyKey()}, gen, flag(true)).Err(); err != nil {
		return unavailable("rebuild revocations", err)
	}
	return nil
}

// rebuildRefresh restores the refresh side of a batch of revocation
// records whose access-token side rebuildScript has just written: the
// families of revoked sessions are marked (endFamilies), each cut-off
// user's cut-off for new families is set and their families from before
// it are ended (endUserSessions), and so is each user's cut-off at a
// client for that client's families (endClientSessions).
func (s *State) rebuildRefresh(ctx context.Context, batch []store.Revocation) error {
	var sids []string
	var users, clients []store.Revocation
	for _, r := range batch {
		switch r.Kind {
		case store.RevokedSession:
			sids = append(sids, r.Value)
		case store.RevokedUser:
			users = append(users, r)
		case store.RevokedClient:
			clients = append(clients, r)
		}
	}
	if err := s.endFamilies(ctx, sids); err != nil {
		return err
	}
	for _, r := range clients {
		if _, err := s.endClientSessions(ctx, r); err != nil {
			return err
		}
	}
	if len(users) == 0 {
		return nil
	}
	return s.endUserSessions(ctx, users, true)
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Hit implements store.TokenState with a fixed window that starts at the
// first hit after the previous window ended; the window is judged by now,
// not by Redis's clock.
func (s *State) Hit(ctx context.Context, key string, window time.Duration, now time.Time) (int64, time.Duration, error) {
	if window < time.Millisecond {
		return 0, 0, errors.New("redis token state: hit: window shorter than 1ms")
	}
	c, err := s.countOne(ctx, now, store.CounterStep{Key: key, Window: window, StopAbove: math.MaxInt64})
	return c.Count, c.ResetIn, err
}

// Peek reports the count of key's current window and the time until it
// resets, without counting anything (0, 0 when there is no live window).
func (s *State) Peek(ctx context.Context, key string, now time.Time) (int64, time.Duration, error) {
	c, err := s.countOne(ctx, now, store.CounterStep{Key: key, StopAbove: math.MaxInt64})
	return c.Count, c.ResetIn, err
}

// CountSteps implements store.TokenState: one script call on one node; on
// Cluster, where the counters' slots differ, one per step.
func (s *State) CountSteps(ctx context.Context, now time.Time, steps ...store.CounterStep) ([]store.CounterCount, error) {
	if err := store.CheckCounterSteps(steps); err != nil {
		return nil, fmt.Errorf("redis token state: %w", err)
	}
	if !s.cluster {
		return s.countSteps(ctx, now, steps...)
	}
	return store.CountEach(steps, func(st store.CounterStep) (store.CounterCount, error) {
		return s.countOne(ctx, now, st)
	})
}

// countOne takes one step in one call of countScript.
func (s *State) countOne(ctx context.Context, now time.Time, st store.CounterStep) (store.CounterCount, error) {
	c, err := s.countSteps(ctx, now, st)
	if err != nil {
		return store.CounterCount{}, err
	}
	return c[0], nil
}

// countSteps takes steps in one call of countScript; it returns at least
// one count for at least one step.
func (s *State) countSteps(ctx context.Context, now time.Time, steps ...store.CounterStep) ([]store.CounterCount, error) {
	if len(steps) == 0 {
		return nil, nil
	}
	keys := make([]string, len(steps))
	args := make([]any, 1, 1+2*len(steps))
	args[0] = now.UnixMilli()
	for i, st := range steps {
		keys[i] = s.counterKey(st.Key)
		args = append(args, st.Window.Milliseconds(), st.StopAbove)
	}
	raw, err := countScript.Run(ctx, s.c, keys, args...).Int64Slice()
	if err != nil {
		return nil, unavailable("count", err)
	}
	if len(raw) < 2 || len(raw)%2 != 0 || len(raw) > 2*len(steps) {
		return nil, unavailable("count", fmt.Errorf("unexpected script reply %v", raw))
	}
	out := make([]store.CounterCount, len(raw)/2)
	for i := range out {
		out[i] = store.CounterCount{Count: raw[2*i], ResetIn: time.Duration(raw[2*i+1]) * time.Millisecond}
	}
	return out, nil
}

// TakeBack implements store.TokenState in one script call (one key, so
// one node on Cluster too).
func (s *State) TakeBack(ctx context.Context, key string, n int64, windowEnd, now time.Time) (int64, bool, error) {
	if n < 0 {
		return 0, false, errors.New("redis token state: take back: a negative count")
	}
	raw, err := takeBackScript.Run(ctx, s.c, []string{s.counterKey(key)}, now.UnixMilli(), n, windowEnd.UnixMilli()).Int64Slice()
	if err != nil {
		return 0, false, unavailable("take back", err)
	}
	if len(raw) != 2 {
		return 0, false, unavailable("take back", fmt.Errorf("unexpected script reply %v", raw))
	}
	return raw[0], raw[1] == 1, nil
}

// ResetCounters implements store.TokenState: one DEL per key, in order, in
// one pipeline on one node (which runs them in order); on Cluster, where
// the keys' slots differ and a pipeline's nodes run their parts at once,
// one round trip per key.
func (s *State) ResetCounters(ctx context.Context, keys ...string) error {
	if len(keys) == 0 {
		return nil
	}
	if s.cluster {
		for _, k := range keys {
			if err := s.c.Del(ctx, s.counterKey(k)).Err(); err != nil {
				return unavailable("reset counters", err)
			}
		}
		return nil
	}
	if _, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, s.counterKey(k))
		}
		return nil
	}); err != nil {
		return unavailable("reset counters", err)
	}
	return nil
}

// Ping implements store.TokenState.
func (s *State) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}
