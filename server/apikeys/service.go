package apikeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// Lifetimes of keys and of the tokens exchanged from them (contract).
const (
	// DefaultTTL is the lifetime of a key created without expires_at
	// (shortened to the maximum when that is shorter).
	DefaultTTL = 90 * 24 * time.Hour
	// MinTTL is the shortest lifetime a key may be given.
	MinTTL = time.Hour
	// DefaultMaxTTL is PORTCULLIS_API_KEY_MAX_TTL's default.
	DefaultMaxTTL = 8760 * time.Hour
	// ExchangedTokenTTL caps the lifetime of an access token exchanged
	// from a key.
	ExchangedTokenTTL = 15 * time.Minute
	// TouchEvery is how often an instance writes a key's last_used_at at
	// most (and audits the rejections of one key for one reason).
	TouchEvery = time.Minute
)

// Bounds of the work a flood of refused keys can cause.
const (
	// maxGateNames bounds the keys each once-a-minute gate remembers.
	maxGateNames = 100_000
	// maxExplaining bounds the background lookups of keys that were not
	// live (to audit a revoked one) running at once; beyond it they are
	// skipped.
	maxExplaining = 8
	// explainTimeout bounds one background lookup.
	explainTimeout = 5 * time.Second
)

// maxNameLen bounds a key's name.
const maxNameLen = 100

// Store is the relational store the service works on (*sqlstore.Store).
type Store interface {
	store.APIKeys
	GetUser(ctx context.Context, id string) (store.User, error)
}

// Permissions expands roles into concrete permissions (*policy.Policy).
type Permissions interface {
	Permissions(roles []string) []string
}

// Grants ends the sessions of sids on every instance: the access tokens
// exchanged from a key carry its sid (*token.Service).
type Grants interface {
	EndGrants(ctx context.Context, sids []string) error
}

// Auditor records security-relevant events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// Config holds the settings.
type Config struct {
	// Issuer is PORTCULLIS_ISSUER (the iss of introspection answers).
	Issuer string
	// MaxTTL is PORTCULLIS_API_KEY_MAX_TTL (0: DefaultMaxTTL).
	MaxTTL time.Duration
}

// Deps are the collaborators of a Service. Audit and Logger may be nil.
type Deps struct {
	Store       Store
	Permissions Permissions
	Grants      Grants
	Audit       Auditor
	Logger      *slog.Logger
	// Now is the clock (default time.Now): expiry, last use and the
	// once-a-minute gates follow it.
	Now func() time.Time
}

// Service manages and checks API keys. It is safe for concurrent use; every
// check reads the store, so a revocation made on any instance holds at
// once on all of them.
type Service struct {
	cfg     Config
	d       Deps
	touched *gate // last_used_at writes, by key id
	refused *gate // api_key.rejected events, by key id and reason
	// explained gates the background lookups of keys that were not live,
	// by key hash; explaining bounds how many run at once.
	explained  *gate
	explaining chan struct{}
	bg         sync.WaitGroup
}

var (
	_ token.SubjectTokenHandler = (*Service)(nil)
	_ token.APIKeys             = (*Service)(nil)
)

// New returns a Service.
func New(cfg Config, d Deps) (*Service, error) {
	if d.Store == nil || d.Permissions == nil || d.Grants == nil {
		return nil, errors.New("apikeys: Store, Permissions and Grants are required")
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.MaxTTL < MinTTL {
		return nil, fmt.Errorf("apikeys: the maximum lifetime %s is under the minimum %s", cfg.MaxTTL, MinTTL)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, d: d, touched: newGate(TouchEvery, maxGateNames), refused: newGate(TouchEvery, maxGateNames),
		explained: newGate(TouchEvery, maxGateNames), explaining: make(chan struct{}, maxExplaining)}, nil
}

// Wait blocks until the background lookups (audits of revoked keys) have
// finished. Call it before closing the store.
func (s *Service) Wait() { s.bg.Wait() }

// Meta says who acts and how, for audit events.
type Meta struct {
	// ActorID is the user acting ("" for a revocation by value).
	ActorID   string
	IP        string
	UserAgent string
	// ClientID is the OAuth client of the request.
	ClientID string
	// Via is how the operation came: "self" (/auth/api-keys), "admin"
	// (/admin/users/{id}/api-keys), "revoke_endpoint", "introspection",
	// "token_exchange", "password_reset", or "token_revoked" (a key
	// revoked as it was made: the token making it was revoked before the
	// key was written).
	Via string
}

func (s *Service) record(ctx context.Context, action string, outcome store.Outcome, targetID string, m Meta, details map[string]string) {
	if s.d.Audit == nil {
		return
	}
	if m.Via != "" {
		details["via"] = m.Via
	}
	s.d.Audit.Record(ctx, store.AuditEvent{Action: action, Outcome: outcome, ActorID: m.ActorID, TargetID: targetID,
		ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent, Details: details})
}

// ---- management ----

// CreateRequest is a new key: a name, the permissions it may use (required;
// nil is absent) and an optional expiry.
type CreateRequest struct {
	Name      string
	Scopes    []string
	ExpiresAt *time.Time
}

// Created is a new key as the API shows it, with the key itself: shown
// this once.
type Created struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Key       string    `json:"key"`
	Hint      string    `json:"hint"`
	Scopes    []string  `json:"scopes"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedAt time.Time `json:"created_at"`
}

// View is a key as lists show it: never the key.
type View struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Hint       string     `json:"hint"`
	Scopes     []string   `json:"scopes"`
	ExpiresAt  time.Time  `json:"expires_at"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// ViewKey returns the list view of k.
func ViewKey(k store.APIKey) View {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return View{ID: k.ID, Name: k.Name, Hint: k.Hint, Scopes: scopes, ExpiresAt: k.ExpiresAt, CreatedAt: k.CreatedAt,
		CreatedBy: k.CreatedBy, LastUsedAt: k.LastUsedAt, RevokedAt: k.RevokedAt}
}

// Page is one page of keys.
type Page struct {
	Items      []View `json:"items"`
	NextCursor string `json:"next_cursor"`
}

// errTooManyKeys refuses a key past store.MaxLiveAPIKeys.
var errTooManyKeys = apierr.ErrConflict.WithDescription(
	"This user holds %d live API keys, the most allowed: revoke one that is no longer used first.", store.MaxLiveAPIKeys)

// Create makes a key for owner (read from the store by the caller just
// now: its roles are the owner's current ones) and returns it, with the key
// shown this once. A bad name, missing scopes or an expiry under MinTTL or
// past the maximum is 400 invalid_request; a scope that is not one of the
// owner's permissions, or that its maker may not pass on (keyScopes), is
// 400 invalid_scope; an owner holding store.MaxLiveAPIKeys live keys
// (neither revoked nor expired) is 409 conflict, decided by the store in
// the insert's transaction. Audit api_key.created.
//
// Every key is made under its maker's bound: a person's own key under the
// scope of the access token making it, a key an admin gives a machine
// user (bound also by the privilege ceiling, checked by the caller) under
// the permissions that admin may pass on (accounts' passablePermissions).
// So a session narrowed to named permissions (by the scope it asked for,
// or by its client's scopes) never gains more through a key, its own or a
// machine's.
func (s *Service) Create(ctx context.Context, owner store.User, maker Token, req CreateRequest, m Meta) (Created, error) {
	if maker.Scope == nil {
		maker.Scope = []string{}
	}
	name, err := keyName(req.Name)
	if err != nil {
		return Created{}, err
	}
	scopes, err := s.keyScopes(owner, req.Scopes, maker)
	if err != nil {
		return Created{}, err
	}
	now := s.d.Now()
	expires, err := s.expiry(req.ExpiresAt, now)
	if err != nil {
		return Created{}, err
	}
	key, err := apikey.Generate()
	if err != nil {
		return Created{}, apierr.ErrServer.WithCause(fmt.Errorf("generate an API key: %w", err))
	}
	k := store.APIKey{OwnerID: owner.ID, Name: name, Hint: key.Hint(), Hash: key.Hash(), Scopes: scopes,
		ExpiresAt: expires, CreatedBy: m.ActorID}
	if err := s.d.Store.CreateAPIKey(ctx, &k); err != nil {
		if errors.Is(err, store.ErrTooManyAPIKeys) {
			return Created{}, errTooManyKeys.WithCause(err)
		}
		return Created{}, storeErr("store the API key", err, apierr.ErrNotFound.WithDescription("No user has this id."))
	}
	s.record(ctx, "api_key.created", store.OutcomeSuccess, owner.ID, m, map[string]string{"key_id": k.ID,
		"scopes": strings.Join(k.Scopes, " "), "expires_at": k.ExpiresAt.Format(time.RFC3339)})
	return Created{ID: k.ID, Name: k.Name, Key: key.String(), Hint: k.Hint, Scopes: k.Scopes, ExpiresAt: k.ExpiresAt,
		CreatedAt: k.CreatedAt}, nil
}

// Token is what the maker of a key may pass on to it: the scope of the
// access token making a person's own key, or the permissions an admin
// making a machine's key may pass on.
type Token struct {
	// Scope is the permissions the maker may pass on (for an access
	// token, its scope claim, split). Nil is nothing.
	Scope []string
	// ForPortcullis: the maker acts for Portcullis's own audience (the
	// issuer, which /admin requires; the console is Portcullis's own). A
	// token meant for another audience, which /admin refuses whoever it
	// belongs to, gives a key no permission of the admin API: the key,
	// exchanged through the built-in client, would be the way around
	// that refusal.
	ForPortcullis bool
}

// keyName trims a key's name and checks it: 1 to maxNameLen characters, no
// control characters.
func keyName(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", apierr.ErrInvalidRequest.WithDescription("A name is required: say what the key is for.")
	case !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxNameLen:
		return "", apierr.ErrInvalidRequest.WithDescription("The name must be at most %d characters of valid UTF-8.", maxNameLen)
	case strings.ContainsFunc(s, unicode.IsControl):
		return "", apierr.ErrInvalidRequest.WithDescription("The name contains control characters.")
	}
	return s, nil
}

// keyScopes is the one routine that decides a new key's scopes: at least
// one is required (no request means "all"), each a concrete permission the
// owner holds now (no OIDC scope, no wildcard) and one its maker may pass
// on (maker). It returns them sorted.
func (s *Service) keyScopes(owner store.User, requested []string, maker Token) ([]string, error) {
	if len(requested) == 0 {
		return nil, apierr.ErrInvalidRequest.WithDescription("scopes is required: name the permissions the key may use.")
	}
	for _, sc := range requested {
		if policy.IsOIDCScope(sc) {
			// sc is one of policy's OIDC scope names: safe to echo.
			return nil, apierr.ErrInvalidScope.WithDescription("Scope %q: an API key carries permissions only.", sc)
		}
	}
	grant, err := policy.ResolveScope(requested, s.d.Permissions.Permissions(owner.Roles), nil)
	if err != nil {
		return nil, apierr.ErrInvalidScope.WithDescription("%s", apierr.Sentence(err.Error())).WithCause(err)
	}
	for _, p := range grant.Permissions {
		// p passed ResolveScope: a well-formed permission, safe to echo.
		switch {
		case !slices.Contains(maker.Scope, p):
			return nil, apierr.ErrInvalidScope.WithDescription(
				"Scope %q: the access token creating the key was not granted this permission (or its maker may not pass it on), and a key never holds more than the token that makes it.", p)
		case !maker.ForPortcullis && policy.IsAdminPermission(p):
			return nil, apierr.ErrInvalidScope.WithDescription(
				"Scope %q: a permission of Portcullis's admin API, which a key gets only from a token meant for Portcullis (one /admin accepts).", p)
		}
	}
	return grant.Permissions, nil
}

// expiry decides a new key's expiry: DefaultTTL (or the maximum when
// shorter) when none is asked; otherwise at least MinTTL and at most the
// maximum from now.
func (s *Service) expiry(asked *time.Time, now time.Time) (time.Time, error) {
	if asked == nil {
		return now.Add(min(DefaultTTL, s.cfg.MaxTTL)).UTC(), nil
	}
	at := asked.UTC()
	switch {
	case at.Before(now.Add(MinTTL)):
		return time.Time{}, apierr.ErrInvalidRequest.WithDescription("expires_at must be at least one hour from now.")
	case at.After(now.Add(s.cfg.MaxTTL)):
		return time.Time{}, apierr.ErrInvalidRequest.WithDescription(
			"expires_at must be at most %s from now (PORTCULLIS_API_KEY_MAX_TTL).", s.cfg.MaxTTL)
	}
	return at, nil
}

// List returns one page of the owner's keys, newest first (revoked and
// expired ones included), never the keys themselves. A bad cursor is 400.
func (s *Service) List(ctx context.Context, ownerID, cursor string, limit int) (Page, error) {
	page, err := s.d.Store.ListAPIKeys(ctx, ownerID, cursor, limit)
	if err != nil {
		if errors.Is(err, sqlstore.ErrInvalidCursor) {
			return Page{}, apierr.ErrInvalidRequest.WithDescription("The cursor is not valid; start again without one.").WithCause(err)
		}
		return Page{}, storeErr("list API keys", err, nil)
	}
	out := Page{Items: make([]View, 0, len(page.Items)), NextCursor: page.NextCursor}
	for _, k := range page.Items {
		out.Items = append(out.Items, ViewKey(k))
	}
	return out, nil
}

// errKeyNotFound answers an id that is not one of the owner's keys.
var errKeyNotFound = apierr.ErrNotFound.WithDescription("No API key of this user has this id.")

// maxIDLen bounds a key id taken from a path; longer ones are unknown.
const maxIDLen = 64

// Revoke revokes one of the owner's keys: it stops working at once on
// every instance, and so do the access tokens exchanged from it. Revoking
// a revoked key again is an idempotent success; an id that is not one of
// the owner's keys is 404. Audit api_key.revoked.
func (s *Service) Revoke(ctx context.Context, ownerID, keyID string, m Meta) error {
	if keyID == "" || len(keyID) > maxIDLen {
		return errKeyNotFound
	}
	return s.revoke(ctx, ownerID, keyID, m)
}

// revoke is the one revocation: the durable record first, then the sid of
// the key's exchanged tokens (if that fails the key is revoked all the
// same and the caller is told: 503).
func (s *Service) revoke(ctx context.Context, ownerID, keyID string, m Meta) error {
	k, changed, err := s.d.Store.RevokeAPIKey(ctx, ownerID, keyID, m.ActorID, s.d.Now())
	if err != nil {
		return storeErr("revoke the API key", err, errKeyNotFound)
	}
	if changed {
		s.auditRevoked(ctx, k, m)
	}
	// Not only the first time: a revocation whose sid could not be ended
	// is completed by trying again, for as long as a token exchanged
	// before it may live (after that there is nothing left to revoke).
	if !changed && k.RevokedAt != nil && s.d.Now().Sub(*k.RevokedAt) > ExchangedTokenTTL {
		return nil
	}
	if err := s.d.Grants.EndGrants(ctx, []string{apikey.SessionID(k.ID)}); err != nil {
		s.d.Logger.Error("API key revoked, but the tokens exchanged from it could not be revoked", "key_id", k.ID, "err", err)
		return err
	}
	return nil
}

// auditRevoked records the revocation of k (api_key.revoked).
func (s *Service) auditRevoked(ctx context.Context, k store.APIKey, m Meta) {
	s.record(ctx, "api_key.revoked", store.OutcomeSuccess, k.OwnerID, m, map[string]string{"key_id": k.ID})
}

// Revoked completes the revocation of keys the store revoked inside
// another write's transaction (a password reset: sqlstore's
// RedeemPasswordReset; a temporary password: UpdateUserRevokingKeys): each
// is audited api_key.revoked, as Revoke audits it, and the sids of the
// tokens exchanged from them are ended on every instance. The keys are
// revoked whatever this returns; an error says the sids could not all be
// ended (the tokens still die with their owner's cut-off, which the reset
// or the temporary password writes).
func (s *Service) Revoked(ctx context.Context, keys []store.APIKey, m Meta) error {
	if len(keys) == 0 {
		return nil
	}
	sids := make([]string, 0, len(keys))
	for _, k := range keys {
		s.auditRevoked(ctx, k, m)
		sids = append(sids, apikey.SessionID(k.ID))
	}
	if err := s.d.Grants.EndGrants(ctx, sids); err != nil {
		s.d.Logger.Error("API keys revoked, but the tokens exchanged from them could not all be revoked", "keys", len(keys), "err", err)
		return err
	}
	return nil
}

// RevokeAPIKeyByValue implements token.APIKeys: the revocation endpoint's
// revocation of a presented key, with no client authentication (whoever
// holds a key may kill it). A malformed, unknown or revoked key is not an
// error.
func (s *Service) RevokeAPIKeyByValue(ctx context.Context, raw string, meta token.RequestMeta) error {
	key, err := apikey.Parse(raw)
	if err != nil {
		return nil
	}
	k, err := s.d.Store.GetAPIKeyByHash(ctx, key.Hash())
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return storeErr("look up the API key", err, nil)
	}
	err = s.revoke(ctx, k.OwnerID, k.ID, Meta{IP: meta.IP, UserAgent: meta.UserAgent, Via: "revoke_endpoint"})
	if errors.Is(err, errKeyNotFound) {
		return nil // deleted with its owner meanwhile
	}
	return err
}

// ---- use ----

// Refusal reasons of Authenticate; the last three are also the
// details.reason of api_key.rejected.
const (
	// ReasonMalformed: not shaped like a key, or a wrong checksum.
	ReasonMalformed = "malformed"
	// ReasonNotLive: no live key has this hash: unknown, or revoked (the
	// two are answered alike; a revoked one is audited after the answer).
	ReasonNotLive = "not_live"
	// ReasonRevoked: the key is revoked.
	ReasonRevoked = "revoked"
	// ReasonExpired: the key is past its expiry.
	ReasonExpired = "expired"
	// ReasonOwnerDeactivated: the key's owner is deactivated.
	ReasonOwnerDeactivated = "owner_deactivated"
)

// ErrRefused is matched (errors.Is) by every refusal of a presented key.
var ErrRefused = errors.New("apikeys: the API key is refused")

// Refusal is a refused key and why (one of the Reason… constants).
type Refusal struct{ Reason string }

// Error names the reason.
func (r *Refusal) Error() string { return "apikeys: the API key is refused: " + r.Reason }

// Is makes errors.Is(err, ErrRefused) true.
func (r *Refusal) Is(target error) bool { return target == ErrRefused }

// Authenticated is a key that may be used now.
type Authenticated struct {
	Key   store.APIKey
	Owner store.User
	// Scopes is the effective scope: the key's scopes the owner holds now,
	// sorted.
	Scopes []string
}

// Authenticate is the one check of a presented key. The checksum is checked
// first: a malformed key costs no lookup. Then the live keys are searched
// by the key's hash, the owner and its roles read in the same statement
// (one round trip per use): an unknown and a revoked key both miss that index and
// cost the same (ReasonNotLive), and which of the two it was is looked up
// after the answer, in the background, to audit a revoked key. An expired
// key or a deactivated owner is refused. Every rejection of a known key is
// audited as api_key.rejected, at most once a minute per key, reason and
// instance. The effective scope is computed from the owner's current roles;
// a use writes last_used_at at most once a minute per key and instance.
// Refusals wrap ErrRefused (a *Refusal); a store failure is a 503
// *apierr.Error.
func (s *Service) Authenticate(ctx context.Context, raw string, m Meta) (Authenticated, error) {
	key, err := apikey.Parse(raw)
	if err != nil {
		return Authenticated{}, &Refusal{Reason: ReasonMalformed}
	}
	hash := key.Hash()
	k, owner, err := s.d.Store.FindLiveAPIKey(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		s.explainLater(ctx, hash, m)
		return Authenticated{}, &Refusal{Reason: ReasonNotLive}
	}
	if err != nil {
		return Authenticated{}, storeErr("look up the API key", err, nil)
	}
	now := s.d.Now()
	switch {
	case k.Revoked(): // revoked since the lookup read it
		return Authenticated{}, s.reject(ctx, k, ReasonRevoked, now, m)
	case !now.Before(k.ExpiresAt):
		return Authenticated{}, s.reject(ctx, k, ReasonExpired, now, m)
	}
	if !owner.Active {
		return Authenticated{}, s.reject(ctx, k, ReasonOwnerDeactivated, now, m)
	}
	s.touch(ctx, k.ID, now)
	return Authenticated{Key: k, Owner: owner, Scopes: EffectiveScope(k.Scopes, s.d.Permissions.Permissions(owner.Roles))}, nil
}

// EffectiveScope is what a key may do now: its scopes that the owner's
// current permissions hold, sorted. Demoting the owner narrows every key.
func EffectiveScope(keyScopes, ownerPermissions []string) []string {
	out := []string{}
	for _, p := range keyScopes {
		if slices.Contains(ownerPermissions, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// explainLater looks a key that was not live up after the request, to
// audit it when it is a revoked key (a leak signal): at most once a minute
// per key hash and instance, at most maxExplaining at once (more are
// skipped), never delaying the answer, so an unknown and a revoked key are
// answered alike.
func (s *Service) explainLater(ctx context.Context, hash []byte, m Meta) {
	if !s.explained.allow(string(hash), s.d.Now()) {
		return
	}
	select {
	case s.explaining <- struct{}{}:
	default:
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer func() { <-s.explaining }()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), explainTimeout)
		defer cancel()
		k, err := s.d.Store.GetAPIKeyByHash(ctx, hash)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			s.d.Logger.Warn("look up a refused API key to audit it", "err", err)
		case k.Revoked():
			s.reject(ctx, k, ReasonRevoked, s.d.Now(), m)
		}
	}()
}

// reject audits a refused key (a leak signal) at most once a minute per
// key, reason and instance, and returns the refusal.
func (s *Service) reject(ctx context.Context, k store.APIKey, reason string, now time.Time, m Meta) error {
	if s.refused.allow(k.ID+" "+reason, now) {
		s.record(ctx, "api_key.rejected", store.OutcomeFailure, k.OwnerID, m, map[string]string{"key_id": k.ID, "reason": reason})
	}
	return &Refusal{Reason: reason}
}

// touch records a use as last_used_at, at most once a minute per key and
// instance; a failed write is logged (the use goes on).
func (s *Service) touch(ctx context.Context, keyID string, now time.Time) {
	if !s.touched.allow(keyID, now) {
		return
	}
	if err := s.d.Store.TouchAPIKey(ctx, keyID, now); err != nil {
		s.d.Logger.Warn("record an API key's last use", "key_id", keyID, "err", err)
	}
}

// IntrospectAPIKey implements token.APIKeys: RFC 7662 for a presented key.
// An active key answers token_type api_key, the owner as sub, the effective
// scope, the key's expiry, client_id apikey:<id> and no roles; anything
// else {"active": false} and nothing more.
func (s *Service) IntrospectAPIKey(ctx context.Context, client store.Client, raw string) (map[string]any, error) {
	a, err := s.Authenticate(ctx, raw, Meta{ClientID: client.ID, Via: "introspection"})
	if errors.Is(err, ErrRefused) {
		return map[string]any{"active": false}, nil
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"active":     true,
		"token_type": "api_key",
		"iss":        s.cfg.Issuer,
		"sub":        a.Owner.ID,
		"scope":      strings.Join(a.Scopes, " "),
		"exp":        a.Key.ExpiresAt.Unix(),
		"iat":        a.Key.CreatedAt.Unix(),
		"client_id":  apikey.ClientID(a.Key.ID),
		"roles":      []string{},
	}, nil
}

// ExchangeSubjectToken implements token.SubjectTokenHandler for
// subject_token_type urn:portcullis:params:oauth:token-type:api_key: the
// key's owner, and a bound issuance of one access token with the effective
// scope, the sid ak_<key id>, at most ExchangedTokenTTL and never past the
// key's expiry. A refused key is 400 invalid_request (RFC 8693 §2.2.2).
func (s *Service) ExchangeSubjectToken(ctx context.Context, client store.Client, raw string, meta token.RequestMeta) (token.ExchangedSubject, error) {
	a, err := s.Authenticate(ctx, raw, Meta{IP: meta.IP, UserAgent: meta.UserAgent, ClientID: client.ID, Via: "token_exchange"})
	var r *Refusal
	switch {
	case errors.As(err, &r) && r.Reason == ReasonMalformed:
		return token.ExchangedSubject{}, apierr.ErrInvalidRequest.WithDescription(
			"The subject token is not an API key (its prefix, length or checksum is wrong).").WithCause(err)
	case errors.As(err, &r):
		return token.ExchangedSubject{}, apierr.ErrInvalidRequest.WithDescription(
			"The API key is unknown, revoked or expired, or its owner is deactivated.").WithCause(err)
	case err != nil:
		return token.ExchangedSubject{}, err
	}
	return token.ExchangedSubject{User: a.Owner, Details: map[string]string{"method": "api_key", "key_id": a.Key.ID},
		Bound: &token.BoundIssuance{SID: apikey.SessionID(a.Key.ID), Permissions: a.Scopes, MaxTTL: ExchangedTokenTTL,
			NotAfter: a.Key.ExpiresAt}}, nil
}

// ---- errors ----

// storeErr is apierr.FromStore: a store failure as an answer.
func storeErr(what string, err error, notFound error) error {
	return apierr.FromStore(what, err, notFound)
}
