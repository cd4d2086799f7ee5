package keys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/portcullis-auth/portcullis/store"
)

// Store persists signing keys; store/sqlstore implements it on PostgreSQL and SQLite.
type Store interface {
	// ListSigningKeys returns every key, in every state, oldest first.
	ListSigningKeys(ctx context.Context) ([]store.SigningKey, error)
	// CreateSigningKey inserts a key with Version 1. A duplicate kid, or a
	// second active or next key, is store.ErrConflict.
	CreateSigningKey(ctx context.Context, k store.SigningKey) error
	// ApplySigningKeyChanges applies, in one transaction, each update in
	// order as a compare-and-swap on Version (the stored row must have
	// k.Version; it is written with Version+1), then inserts creates. Any
	// mismatch or unique violation is store.ErrConflict and changes nothing.
	ApplySigningKeyChanges(ctx context.Context, updates []store.SigningKey, creates []store.SigningKey) error
}

// Config configures a Manager.
type Config struct {
	Store Store   // where keys are kept (required)
	KEKs  KEKRing // seals and opens private keys (required)
	// Alg is the algorithm of new keys (RS256, ES256, EdDSA); RSABits the RSA
	// size (0 means 2048).
	Alg     string
	RSABits int
	// JWKSMaxAge is the JWKS Cache-Control max-age (PORTCULLIS_JWKS_MAX_AGE).
	JWKSMaxAge time.Duration
	// SyncInterval is how often Run reloads the keys (PORTCULLIS_KEY_SYNC_INTERVAL).
	SyncInterval time.Duration
	// RotationInterval is the automatic rotation period; 0 means manual.
	RotationInterval time.Duration
	// MaxTokenTTL is the longest lifetime of any access or id token of any client.
	MaxTokenTTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives lifecycle events (never key material); nil discards.
	Logger *slog.Logger
	// OnAutoRotate, when set, is called after Run rotated the keys itself,
	// so the caller can audit it as it audits a manual Rotate.
	OnAutoRotate func(Rotation)
}

// Manager keeps one server instance's view of the signing keys and changes
// them. JWKS, Sign, Verify, VerifyTyped, SigningAlgs and ActiveKeyAge read an
// in-memory snapshot and never touch the Store; the other methods do.
type Manager struct {
	cfg  Config
	t    timing
	now  func() time.Time
	log  *slog.Logger
	snap atomic.Pointer[snapshot]

	// busy is the lock that serializes Init, Sync, Refresh and the changes:
	// a one-slot channel (acquire fills it, unlock empties it), so that a
	// caller stops waiting when its context ends and a change hanging in
	// the store never holds up the others for ever.
	busy        chan struct{}
	checkedNext string    // kid of the next key last checked to decrypt (under busy)
	toldStale   *snapshot // the snapshot Refresh last logged as stale (under busy)
}

// KeyInfo describes a signing key without any private material; it is what
// List, Rotate and Revoke return and what the admin API and CLI show.
type KeyInfo struct {
	KID       string         `json:"kid"`
	Alg       string         `json:"alg"`
	State     store.KeyState `json:"state"`
	CreatedAt time.Time      `json:"created_at"`
	// PublishedAt is when every instance serves the key (creation + sync interval).
	PublishedAt time.Time `json:"published_at"`
	// SigningSafeAt is when the key may sign without breaking a verifier that
	// cached the JWKS (publication + JWKS max age).
	SigningSafeAt  time.Time  `json:"signing_safe_at"`
	ActivatedAt    *time.Time `json:"activated_at,omitempty"`
	RetiredAt      *time.Time `json:"retired_at,omitempty"`
	RevokedAt      *time.Time `json:"revoked_at,omitempty"`
	PublishedUntil *time.Time `json:"published_until,omitempty"`
	// InJWKS says whether the key is in the JWKS now.
	InJWKS bool `json:"in_jwks"`
}

// Rotation is the outcome of a rotation, for the audit event key.rotated.
type Rotation struct {
	Retired   KeyInfo // the previously active key (KID empty when there was none)
	Activated KeyInfo // the former next key, now signing
	Next      KeyInfo // the newly generated next key
	Forced    bool    // true when the next key was promoted before it was safe
}

// Revocation is the outcome of a revocation, for the audit event key.revoked.
type Revocation struct {
	Revoked        KeyInfo        // the revoked key
	PreviousState  store.KeyState // its state before
	AlreadyRevoked bool           // nothing changed: the key was already revoked
	Activated      *KeyInfo       // when the active key was revoked: the key promoted in its place
	Next           *KeyInfo       // when the active or next key was revoked: the new next key
}

// NewManager checks cfg and returns a Manager with no keys loaded; call Init.
func NewManager(cfg Config) (*Manager, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("no key store"))
	}
	if cfg.KEKs.Len() == 0 {
		errs = append(errs, errors.New("no key-encryption key"))
	}
	if err := ValidateAlg(cfg.Alg, cfg.RSABits); err != nil {
		errs = append(errs, err)
	}
	if cfg.SyncInterval <= 0 {
		errs = append(errs, fmt.Errorf("key sync interval %s must be positive", cfg.SyncInterval))
	}
	if cfg.JWKSMaxAge < 0 {
		errs = append(errs, fmt.Errorf("JWKS max age %s is negative", cfg.JWKSMaxAge))
	}
	if cfg.MaxTokenTTL <= 0 {
		errs = append(errs, fmt.Errorf("longest token lifetime %s must be positive", cfg.MaxTokenTTL))
	}
	if err := ValidateRotationInterval(cfg.RotationInterval, cfg.SyncInterval, cfg.JWKSMaxAge); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("signing keys: %w", errors.Join(errs...))
	}
	if cfg.RSABits == 0 {
		cfg.RSABits = DefaultRSABits
	}
	m := &Manager{
		cfg:  cfg,
		t:    timing{sync: cfg.SyncInterval, maxAge: cfg.JWKSMaxAge, maxTokenTTL: cfg.MaxTokenTTL},
		now:  cfg.Now,
		log:  cfg.Logger,
		busy: make(chan struct{}, 1),
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	return m, nil
}

// maxAttempts bounds the retries after losing a compare-and-swap.
const maxAttempts = 5

// acquire takes the Manager's lock, waiting no longer than ctx: a change
// hanging in the store (a blackholed connection, another instance's
// transaction holding the row lock) must not hold up every other one for
// ever. what names the caller in the error, which wraps ctx.Err().
func (m *Manager) acquire(ctx context.Context, what string) error {
	select {
	case m.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for another change of the signing keys on this instance: %w", what, ctx.Err())
	}
}

// unlock releases what acquire took.
func (m *Manager) unlock() { <-m.busy }

// Init makes sure an active and a next key exist, creating them when needed,
// then loads them. On an empty store the first active key signs at once (no
// verifier can hold a stale JWKS) and a next key is created with it; instances
// starting together agree on one first key, because only one insert of an
// active key can succeed. Init fails when the active or next private key
// cannot be decrypted with the configured key-encryption keys.
func (m *Manager) Init(ctx context.Context) error {
	if err := m.acquire(ctx, "init signing keys"); err != nil {
		return err
	}
	defer m.unlock()
	for attempt := 0; ; attempt++ {
		if attempt == maxAttempts {
			return errors.New("init signing keys: the keys kept changing under concurrent updates; try again")
		}
		loadedAt := m.now()
		recs, err := m.cfg.Store.ListSigningKeys(ctx)
		if err != nil {
			return fmt.Errorf("init signing keys: load: %w", err)
		}
		active, next := findCurrent(recs)
		now := m.clock()
		switch {
		case active == nil && next == nil:
			if len(recs) > 0 {
				m.log.Warn("no active or next signing key: creating a new active key that signs at once", "keys", len(recs))
			}
			a, err := m.newRecord(store.KeyActive, now)
			if err != nil {
				return fmt.Errorf("init signing keys: %w", err)
			}
			n, err := m.newRecord(store.KeyNext, now)
			if err != nil {
				return fmt.Errorf("init signing keys: %w", err)
			}
			err = m.cfg.Store.ApplySigningKeyChanges(ctx, nil, []store.SigningKey{a, n})
			if lostRace(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("init signing keys: create the first keys: %w", err)
			}
			m.log.Info("created the first signing keys", "active_kid", a.KID, "next_kid", n.KID, "alg", a.Alg)
		case active == nil:
			m.log.Warn("no active signing key: promoting the next key at once", "kid", next.KID)
			if _, err := openPrivateKey(m.cfg.KEKs, *next); err != nil {
				return fmt.Errorf("init signing keys: %w", err)
			}
			promoted := *next
			promoted.State = store.KeyActive
			promoted.ActivatedAt = &now
			n, err := m.newRecord(store.KeyNext, now)
			if err != nil {
				return fmt.Errorf("init signing keys: %w", err)
			}
			err = m.cfg.Store.ApplySigningKeyChanges(ctx, []store.SigningKey{promoted}, []store.SigningKey{n})
			if lostRace(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("init signing keys: promote the next key: %w", err)
			}
		case next == nil:
			n, err := m.newRecord(store.KeyNext, now)
			if err != nil {
				return fmt.Errorf("init signing keys: %w", err)
			}
			err = m.cfg.Store.CreateSigningKey(ctx, n)
			if lostRace(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("init signing keys: create a next key: %w", err)
			}
			m.log.Info("created a next signing key", "kid", n.KID, "alg", n.Alg)
		default:
			if _, err := openPrivateKey(m.cfg.KEKs, *next); err != nil {
				return fmt.Errorf("init signing keys: %w", err)
			}
			m.checkedNext = next.KID
			if err := m.syncRecords(recs, loadedAt); err != nil {
				return fmt.Errorf("init signing keys: %w", err)
			}
			return nil
		}
	}
}

// Sync reloads the keys from the Store and replaces the in-memory snapshot.
// On error the previous snapshot stays in use.
func (m *Manager) Sync(ctx context.Context) error {
	if err := m.acquire(ctx, "sync signing keys"); err != nil {
		return err
	}
	defer m.unlock()
	return m.syncLocked(ctx)
}

func (m *Manager) syncLocked(ctx context.Context) error {
	loadedAt := m.now()
	recs, err := m.cfg.Store.ListSigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("sync signing keys: %w", err)
	}
	if err := m.syncRecords(recs, loadedAt); err != nil {
		return fmt.Errorf("sync signing keys: %w", err)
	}
	return nil
}

// syncRecords makes recs, read from the store at loadedAt, the snapshot.
func (m *Manager) syncRecords(recs []store.SigningKey, loadedAt time.Time) error {
	prev := m.snap.Load()
	s, err := buildSnapshot(recs, m.cfg.KEKs, m.t, m.now(), prev)
	if err != nil {
		return err
	}
	s.loadedAt = loadedAt
	if s.active == nil {
		return errors.New("no active signing key (run Init)")
	}
	if prev == nil || prev.active.key.kid != s.active.key.kid {
		m.log.Info("signing with key", "kid", s.active.key.kid, "alg", s.active.key.alg)
	}
	m.snap.Store(s)
	if _, next := findCurrent(recs); next != nil && next.KID != m.checkedNext {
		if _, err := openPrivateKey(m.cfg.KEKs, *next); err != nil {
			m.log.Error("the next signing key cannot be decrypted: rotation will fail until the key-encryption keys are fixed", "kid", next.KID, "err", err)
		} else {
			m.checkedNext = next.KID
		}
	}
	return nil
}

// Run syncs at once (the keys Init read may be old by the time the instance
// serves), then every SyncInterval until ctx ends and, when RotationInterval
// is set, rotates once the active key is due and the next key is safe to
// sign. Of many instances, exactly one rotation wins; the others see it at
// their next sync. Each sync and each rotation is bounded by SyncInterval,
// so a store call that hangs fails instead of stopping the syncs behind it.
// Errors are logged, not returned; Run returns when ctx ends.
func (m *Manager) Run(ctx context.Context) {
	tick := time.NewTicker(m.cfg.SyncInterval)
	defer tick.Stop()
	for {
		if err := m.Refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("signing key sync failed", "err", err)
		}
		if m.cfg.RotationInterval > 0 {
			rotCtx, cancel := context.WithTimeout(ctx, m.cfg.SyncInterval)
			rot, done, err := m.RotateIfDue(rotCtx)
			cancel()
			if err != nil && ctx.Err() == nil {
				m.log.Warn("automatic key rotation failed", "err", err)
			}
			if done {
				m.log.Info("rotated signing keys", "retired_kid", rot.Retired.KID, "active_kid", rot.Activated.KID, "next_kid", rot.Next.KID)
				if m.cfg.OnAutoRotate != nil {
					m.cfg.OnAutoRotate(rot)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Refresh is what Run does every SyncInterval: Sync, bounded by the
// interval so that a store that hangs counts as one that fails. Whether it
// fails, hangs or is not called at all, keys read staleAfter ago or more
// are not used (current): Sign, Verify, VerifyTyped and JWKS answer
// ErrStale until a sync succeeds. Refresh logs it once per snapshot.
func (m *Manager) Refresh(ctx context.Context) error {
	syncCtx, cancel := context.WithTimeout(ctx, m.cfg.SyncInterval)
	defer cancel()
	if err := m.acquire(syncCtx, "sync signing keys"); err != nil {
		return err
	}
	defer m.unlock()
	err := m.syncLocked(syncCtx)
	if err == nil {
		return nil
	}
	if s := m.snap.Load(); s != nil && s != m.toldStale && errors.Is(m.Usable(), ErrStale) {
		m.toldStale = s
		m.log.Error("signing keys not reloaded since "+s.loadedAt.UTC().Format(time.RFC3339)+
			": no token is signed, verified or published with them until a sync succeeds", "err", err)
	}
	return err
}

// Usable reports whether Sign, Verify, VerifyTyped and JWKS can use the
// keys now: nil, ErrNotReady before Init, ErrStale once they were read
// too long ago. One atomic load and a clock reading, for callers that must
// not spend anything (a refresh token's rotation, a code) on a request they
// could not sign the answer to.
func (m *Manager) Usable() error {
	_, _, err := m.current()
	return err
}

// current returns the snapshot in use and the time it was judged at:
// ErrNotReady before Init, ErrStale once its keys were read from the store
// staleAfter ago or more. It is the one place staleness is decided, by the
// clock alone, so that it holds whatever Run is doing (failing, hanging in
// a store call, or not running): an instance that cannot reload the keys
// must not go on accepting, or publishing to downstream verifiers, a key
// that another instance revoked (fail closed); its /readyz answers 503.
func (m *Manager) current() (*snapshot, time.Time, error) {
	s := m.snap.Load()
	if s == nil {
		return nil, time.Time{}, ErrNotReady
	}
	now := m.now()
	if now.Sub(s.loadedAt) >= m.t.staleAfter() {
		return nil, now, ErrStale
	}
	return s, now, nil
}

// RotateIfDue rotates when automatic rotation is configured, the active key
// has been active for RotationInterval and the next key is safe to sign. It
// reports whether this call rotated; losing the race to another instance is
// not an error (done is false and the keys are re-synced). A rotation that
// was stored but not reloaded is done, with the reload's error.
func (m *Manager) RotateIfDue(ctx context.Context) (rot Rotation, done bool, err error) {
	if m.cfg.RotationInterval <= 0 {
		return Rotation{}, false, nil
	}
	if s := m.snap.Load(); s != nil && m.now().Before(s.activatedAt.Add(m.cfg.RotationInterval)) {
		return Rotation{}, false, nil
	}
	if err := m.acquire(ctx, "rotate signing keys"); err != nil {
		return Rotation{}, false, err
	}
	defer m.unlock()
	rot, err = m.rotateLocked(ctx, false, true)
	var tooEarly *TooEarlyError
	switch {
	case errors.Is(err, ErrReloadAfterCommit):
		return rot, true, err
	case errors.Is(err, errNotDue), errors.As(err, &tooEarly):
		return Rotation{}, false, nil
	case errors.Is(err, store.ErrConflict):
		m.log.Info("another instance rotated the signing keys")
		return Rotation{}, false, m.syncLocked(ctx)
	case err != nil:
		return Rotation{}, false, err
	}
	return rot, true, nil
}

var errNotDue = errors.New("rotation not due")

// Rotate promotes the next key to active, retires the active key (published
// until every token it may have signed has expired) and creates a new next
// key. Without force it refuses with *TooEarlyError while the next key has
// not been published for long enough. When another instance changed the keys
// at the same moment nothing is changed and the error wraps store.ErrConflict.
// A rotation stored but not reloaded on this instance is returned with an
// error wrapping ErrReloadAfterCommit.
func (m *Manager) Rotate(ctx context.Context, force bool) (Rotation, error) {
	if err := m.acquire(ctx, "rotate signing keys"); err != nil {
		return Rotation{}, err
	}
	defer m.unlock()
	rot, err := m.rotateLocked(ctx, force, false)
	if errors.Is(err, store.ErrConflict) && !errors.Is(err, ErrReloadAfterCommit) {
		if serr := m.syncLocked(ctx); serr != nil {
			m.log.Warn("signing key sync after a lost rotation failed", "err", serr)
		}
	}
	return rot, err
}

func (m *Manager) rotateLocked(ctx context.Context, force, onlyIfDue bool) (Rotation, error) {
	recs, err := m.cfg.Store.ListSigningKeys(ctx)
	if err != nil {
		return Rotation{}, fmt.Errorf("rotate signing keys: load: %w", err)
	}
	active, next := findCurrent(recs)
	now := m.clock()
	if onlyIfDue && active != nil && active.ActivatedAt != nil && now.Before(active.ActivatedAt.Add(m.cfg.RotationInterval)) {
		return Rotation{}, errNotDue
	}
	if next == nil {
		// Normally impossible: Init and every change leave a next key. Create
		// one now; it becomes safe to promote only after the publication delay.
		n, err := m.newRecord(store.KeyNext, now)
		if err != nil {
			return Rotation{}, fmt.Errorf("rotate signing keys: %w", err)
		}
		if err := m.cfg.Store.CreateSigningKey(ctx, n); err != nil {
			return Rotation{}, fmt.Errorf("rotate signing keys: create a next key: %w", conflictHint(err))
		}
		next = &n
	}
	if safeAt := m.t.safeToSignAt(next.CreatedAt); !force && now.Before(safeAt) {
		return Rotation{}, &TooEarlyError{SafeAt: safeAt}
	}
	if _, err := openPrivateKey(m.cfg.KEKs, *next); err != nil {
		return Rotation{}, fmt.Errorf("rotate signing keys: %w", err)
	}
	newNext, err := m.newRecord(store.KeyNext, now)
	if err != nil {
		return Rotation{}, fmt.Errorf("rotate signing keys: %w", err)
	}
	var updates []store.SigningKey
	var retired store.SigningKey
	if active != nil {
		retired = *active
		retired.State = store.KeyRetired
		retired.RetiredAt = &now
		until := m.t.publishedUntil(now)
		retired.PublishedUntil = &until
		updates = append(updates, retired)
	}
	promoted := *next
	promoted.State = store.KeyActive
	promoted.ActivatedAt = &now
	updates = append(updates, promoted)
	if err := m.cfg.Store.ApplySigningKeyChanges(ctx, updates, []store.SigningKey{newNext}); err != nil {
		return Rotation{}, fmt.Errorf("rotate signing keys: %w", conflictHint(err))
	}
	rot := Rotation{
		Activated: m.info(promoted, now),
		Next:      m.info(newNext, now),
		Forced:    now.Before(m.t.safeToSignAt(next.CreatedAt)),
	}
	if active != nil {
		rot.Retired = m.info(retired, now)
	}
	return rot, m.reloadAfterCommit(ctx, "rotate signing keys")
}

// reloadAfterCommit reloads the keys after a rotation or revocation was
// stored, for Rotate, RotateIfDue and Revoke. The change happened whatever
// the caller does now, so the reload is not cut short by the caller going
// away (an admin client disconnecting right after the commit); it is
// bounded by the sync interval, as Run's syncs are. A failure wraps
// ErrReloadAfterCommit, so that callers still report and record the change.
func (m *Manager) reloadAfterCommit(ctx context.Context, what string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.SyncInterval)
	defer cancel()
	if err := m.syncLocked(rctx); err != nil {
		return fmt.Errorf("%s: %w: %w", what, ErrReloadAfterCommit, err)
	}
	return nil
}

// Revoke marks a compromised key revoked: it leaves the JWKS and Verify
// refuses its tokens at once on this instance, and on every other instance
// at its next sync. Revoking the active key promotes the next key at once
// (an emergency rotation, breaking verifiers whose cached JWKS lacks it);
// revoking the active or next key creates a new next key. Revoking a revoked
// key changes nothing (AlreadyRevoked). An unknown kid is ErrKeyNotFound. A
// revocation stored but not reloaded on this instance is returned with an
// error wrapping ErrReloadAfterCommit.
func (m *Manager) Revoke(ctx context.Context, kid string) (Revocation, error) {
	if !validKID(kid) {
		return Revocation{}, fmt.Errorf("revoke signing key: %w (a kid is 43 base64url characters)", ErrKeyNotFound)
	}
	if err := m.acquire(ctx, "revoke signing key "+kid); err != nil {
		return Revocation{}, err
	}
	defer m.unlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		rev, err := m.revokeOnce(ctx, kid)
		if errors.Is(err, store.ErrConflict) && !errors.Is(err, ErrReloadAfterCommit) {
			continue // the keys changed meanwhile (a rotation elsewhere): decide again on fresh state
		}
		return rev, err
	}
	return Revocation{}, fmt.Errorf("revoke signing key %s: the keys kept changing under concurrent updates: %w", kid, store.ErrConflict)
}

func (m *Manager) revokeOnce(ctx context.Context, kid string) (Revocation, error) {
	recs, err := m.cfg.Store.ListSigningKeys(ctx)
	if err != nil {
		return Revocation{}, fmt.Errorf("revoke signing key %s: load: %w", kid, err)
	}
	var target *store.SigningKey
	for i := range recs {
		if recs[i].KID == kid {
			target = &recs[i]
		}
	}
	if target == nil {
		return Revocation{}, fmt.Errorf("revoke signing key %s: %w", kid, ErrKeyNotFound)
	}
	now := m.clock()
	rev := Revocation{PreviousState: target.State}
	if target.State == store.KeyRevoked {
		rev.Revoked = m.info(*target, now)
		rev.AlreadyRevoked = true
		return rev, m.syncLocked(ctx)
	}
	revoked := *target
	revoked.State = store.KeyRevoked
	revoked.RevokedAt = &now
	updates := []store.SigningKey{revoked}
	var creates []store.SigningKey
	switch target.State {
	case store.KeyActive:
		_, next := findCurrent(recs)
		if next != nil {
			if _, err := openPrivateKey(m.cfg.KEKs, *next); err != nil {
				return Revocation{}, fmt.Errorf("revoke signing key %s: cannot promote the next key: %w", kid, err)
			}
			promoted := *next
			promoted.State = store.KeyActive
			promoted.ActivatedAt = &now
			updates = append(updates, promoted)
			info := m.info(promoted, now)
			rev.Activated = &info
		} else {
			a, err := m.newRecord(store.KeyActive, now)
			if err != nil {
				return Revocation{}, fmt.Errorf("revoke signing key %s: %w", kid, err)
			}
			creates = append(creates, a)
			info := m.info(a, now)
			rev.Activated = &info
		}
		fallthrough
	case store.KeyNext:
		n, err := m.newRecord(store.KeyNext, now)
		if err != nil {
			return Revocation{}, fmt.Errorf("revoke signing key %s: %w", kid, err)
		}
		creates = append(creates, n)
		info := m.info(n, now)
		rev.Next = &info
	}
	if err := m.cfg.Store.ApplySigningKeyChanges(ctx, updates, creates); err != nil {
		return Revocation{}, fmt.Errorf("revoke signing key %s: %w", kid, err)
	}
	rev.Revoked = m.info(revoked, now)
	if rev.Activated != nil {
		m.log.Warn("revoked the active signing key: promoted the next key at once; verifiers that cached the JWKS without it fail until they refetch", "revoked_kid", kid, "active_kid", rev.Activated.KID)
	}
	return rev, m.reloadAfterCommit(ctx, "revoke signing key "+kid)
}

// Reencrypt re-seals every private key not yet sealed under the first
// key-encryption key, in one compare-and-swap transaction, and returns how
// many it changed. A key no configured KEK opens fails the whole call, naming
// the kid, and nothing is changed. It re-seals the signing keys only:
// `portcullis keys reencrypt` (app.Core.Reencrypt) calls it and re-seals the
// TOTP secrets too.
func (m *Manager) Reencrypt(ctx context.Context) (int, error) {
	if err := m.acquire(ctx, "reencrypt signing keys"); err != nil {
		return 0, err
	}
	defer m.unlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		recs, err := m.cfg.Store.ListSigningKeys(ctx)
		if err != nil {
			return 0, fmt.Errorf("reencrypt signing keys: load: %w", err)
		}
		var updates []store.SigningKey
		for _, rec := range recs {
			sealed, err := m.cfg.KEKs.Reseal(rec.PrivateEncrypted, signingKeyAAD(rec.KID))
			if err != nil {
				return 0, fmt.Errorf("reencrypt signing key %s: %w", rec.KID, err)
			}
			if sealed == nil {
				continue
			}
			rec.PrivateEncrypted = sealed
			updates = append(updates, rec)
		}
		if len(updates) == 0 {
			return 0, nil
		}
		err = m.cfg.Store.ApplySigningKeyChanges(ctx, updates, nil)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("reencrypt signing keys: %w", err)
		}
		m.log.Info("re-encrypted signing keys under the first key-encryption key", "keys", len(updates))
		return len(updates), nil
	}
	return 0, fmt.Errorf("reencrypt signing keys: the keys kept changing under concurrent updates: %w", store.ErrConflict)
}

// List returns every key, oldest first, without private material.
func (m *Manager) List(ctx context.Context) ([]KeyInfo, error) {
	recs, err := m.cfg.Store.ListSigningKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	now := m.clock()
	out := make([]KeyInfo, len(recs))
	for i, rec := range recs {
		out[i] = m.info(rec, now)
	}
	return out, nil
}

// JWKS returns the JWKS document (public members only, with kid, alg and
// "use":"sig") and its strong ETag (quoted), both precomputed at the last
// sync. The slice is shared: callers must not modify it. Before Init it is an
// empty key set; once the keys are stale, ErrStale (a stale set could hand
// downstream verifiers a key revoked elsewhere).
func (m *Manager) JWKS() (body []byte, etag string, err error) {
	s, _, err := m.current()
	switch {
	case errors.Is(err, ErrNotReady):
		return emptyJWKS, etagEmpty, nil
	case err != nil:
		return nil, "", err
	}
	return s.jwks, s.etag, nil
}

var etagEmpty = etagOf(emptyJWKS)

// Sign marshals claims to a JSON object and signs it with the active key as a
// compact JWS whose protected header holds alg, kid and typ (for example
// "at+jwt" for access tokens, "JWT" for id tokens).
func (m *Manager) Sign(claims any, typ string) (string, error) {
	s, _, err := m.current()
	if err != nil {
		return "", err
	}
	if s.active == nil {
		return "", ErrNotReady
	}
	return s.active.sign(claims, typ)
}

// Verify checks a compact JWS signed by a published, non-revoked key: the
// kid selects the key and alg must be that key's algorithm. It returns the
// payload (claims are not validated: typ, iss, aud, exp are the caller's) and
// the kid. Errors wrap ErrMalformed, ErrUnknownKey, ErrRevokedKey or
// ErrBadSignature; ErrNotReady and ErrStale say the keys cannot be used.
func (m *Manager) Verify(token string) (payload []byte, kid string, err error) {
	s, now, err := m.current()
	if err != nil {
		return nil, "", err
	}
	payload, kid, _, err = s.verify(token, now)
	return payload, kid, err
}

// VerifyTyped is Verify that also requires the header typ to be wantTyp
// (compared as RFC 7515 says: case-insensitively, "application/" optional);
// a mismatch is ErrWrongType.
func (m *Manager) VerifyTyped(token, wantTyp string) (payload []byte, kid string, err error) {
	s, now, err := m.current()
	if err != nil {
		return nil, "", err
	}
	payload, kid, typ, err := s.verify(token, now)
	if err != nil {
		return nil, kid, err
	}
	if !typMatches(typ, wantTyp) {
		return nil, kid, ErrWrongType
	}
	return payload, kid, nil
}

// SigningAlgs returns the algorithms of the published keys (for discovery's
// id_token_signing_alg_values_supported), in a fixed order.
func (m *Manager) SigningAlgs() []string {
	s := m.snap.Load()
	if s == nil {
		return nil
	}
	return append([]string(nil), s.algs...)
}

// ActiveKeyAge returns how long the active key has been active (0 before Init).
func (m *Manager) ActiveKeyAge() time.Duration {
	s := m.snap.Load()
	if s == nil || s.active == nil {
		return 0
	}
	return m.now().Sub(s.activatedAt)
}

// ActiveKID returns the kid of the key that signs ("" before Init).
func (m *Manager) ActiveKID() string {
	s := m.snap.Load()
	if s == nil || s.active == nil {
		return ""
	}
	return s.active.key.kid
}

// clock returns the time of a change as the store keeps it (UTC, microseconds),
// so the records returned equal the records stored.
func (m *Manager) clock() time.Time { return m.now().UTC().Truncate(time.Microsecond) }

func (m *Manager) newRecord(state store.KeyState, now time.Time) (store.SigningKey, error) {
	pk, err := Generate(m.cfg.Alg, m.cfg.RSABits)
	if err != nil {
		return store.SigningKey{}, err
	}
	return pk.record(m.cfg.KEKs, state, now)
}

func (m *Manager) info(k store.SigningKey, now time.Time) KeyInfo {
	return KeyInfo{
		KID:            k.KID,
		Alg:            k.Alg,
		State:          k.State,
		CreatedAt:      k.CreatedAt,
		PublishedAt:    m.t.publishedAt(k.CreatedAt),
		SigningSafeAt:  m.t.safeToSignAt(k.CreatedAt),
		ActivatedAt:    k.ActivatedAt,
		RetiredAt:      k.RetiredAt,
		RevokedAt:      k.RevokedAt,
		PublishedUntil: k.PublishedUntil,
		InJWKS:         inJWKS(k, now),
	}
}

// findCurrent returns the active and next keys (nil when missing).
func findCurrent(recs []store.SigningKey) (active, next *store.SigningKey) {
	for i := range recs {
		switch recs[i].State {
		case store.KeyActive:
			active = &recs[i]
		case store.KeyNext:
			next = &recs[i]
		}
	}
	return active, next
}

// lostRace reports whether err means another instance made the change first.
func lostRace(err error) bool {
	return errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrAlreadyExists)
}

// conflictHint explains a lost compare-and-swap; other errors pass through.
func conflictHint(err error) error {
	if lostRace(err) {
		return fmt.Errorf("another instance changed the signing keys at the same moment and nothing was changed; list the keys and retry if needed: %w", store.ErrConflict)
	}
	return err
}
