package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/store"
)

// Roles returns every role of the policy, highest level first, with its
// expanded permissions.
func (s *Service) Roles() []policy.Role { return s.policy.Roles() }

// ListClients returns every OAuth client, without secrets. The admin API
// lists with ListClientsAs.
func (s *Service) ListClients(ctx context.Context) ([]clients.ClientView, error) {
	return s.listClients(ctx, actorScope{})
}

// ListClientsAs is ListClients for actor: inside an organisation only its
// clients.
func (s *Service) ListClientsAs(ctx context.Context, actor Actor) ([]clients.ClientView, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return nil, err
	}
	return s.listClients(ctx, sc)
}

func (s *Service) listClients(ctx context.Context, sc actorScope) ([]clients.ClientView, error) {
	list, err := s.store.ListClients(ctx)
	if err != nil {
		return nil, storeErr("list clients", err, nil)
	}
	out := make([]clients.ClientView, 0, len(list))
	for _, c := range list {
		if sc.ownsRecord(c.TenantID, errClientNotFound) == nil {
			out = append(out, clients.View(c))
		}
	}
	return out, nil
}

// CreatedClient is a new client and, for a confidential client, its secret,
// shown this once.
type CreatedClient struct {
	clients.ClientView
	ClientSecret string `json:"client_secret,omitempty"`
}

// clientActor is who creates, deletes or rotates a client, or rotates or
// revokes the signing keys: a user, with the permissions they may pass on
// (passablePermissions: their current roles' and, with a token, only those
// in its scope), or the operator (the CLI), whose events say via "cli".
type clientActor struct {
	id       string
	via      string // "admin" (the API) or "cli"
	operator bool
	perms    []string // concrete, sorted; unused for the operator
	scope    actorScope
}

// loadClientActor loads a user actor (401/403 as loadActor) or returns the operator.
func (s *Service) loadClientActor(ctx context.Context, actor Actor) (clientActor, error) {
	if actor.operator {
		return clientActor{id: OperatorActorID, via: "cli", operator: true}, nil
	}
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return clientActor{}, err
	}
	return clientActor{id: sc.actor.ID, via: "admin", perms: s.passablePermissions(actor, sc.actor.Roles), scope: sc}, nil
}

// checkClientCeiling is the one rule for what a new client may carry
// (contract, "Clients under the privilege ceiling"), used by the API and the
// CLI alike. First, for every actor: each scope listed on the client must be
// a permission the policy knows (else 400 invalid_request). Then the
// privilege ceiling (withinClientCeiling), which binds users and not the
// operator. So no one can mint, through a client, a permission or an admin
// token they could not get themselves.
func (s *Service) checkClientCeiling(a clientActor, spec clients.Spec) error {
	known := s.policy.AllPermissions()
	for _, sc := range spec.Scopes {
		if _, ok := slices.BinarySearch(known, sc); !ok {
			return apierr.ErrInvalidRequest.WithDescription(
				"The policy has no permission %q: a client's scopes must be permissions the policy knows.", sc)
		}
	}
	return s.withinClientCeiling(a, "create", spec.Scopes, spec.Audiences, spec.FirstParty)
}

// withinClientCeiling is the privilege ceiling over a client, new or
// existing: for a user (the operator is bound by none of it), each scope
// listed on the client must be one the user may pass on (a.perms: held now
// and, acting with a token, in its scope, so a full admin's token narrowed
// to clients:write makes no client with more); listing the issuer
// among the audiences, which gives the client's tokens access to the admin
// API, and being first-party, which lets the client skip every user's
// consent, each need every admin permission, and a platform actor: an
// organisation's admin holds every permission inside it (the demo policy's
// "*"), yet its members' accounts are not its own (one may belong to
// another organisation or hold a platform role), and a first-party client
// gets any signed-in member's code without asking (prompt=none), a token
// acting on their whole account at /auth. Else 403 forbidden, saying what
// the actor may not do (act: "create", "delete", …). A scope the policy no
// longer knows is one no user holds: only the operator may then act on the
// client.
func (s *Service) withinClientCeiling(a clientActor, act string, scopes, audiences []string, firstParty bool) error {
	if a.operator {
		return nil
	}
	for _, sc := range scopes {
		if _, ok := slices.BinarySearch(a.perms, sc); !ok {
			return apierr.ErrForbidden.WithDescription(
				"You may not pass on the permission %q (your roles, or the scope of the access token you act with, do not hold it), so you may not %s a client whose tokens carry it.", sc, act)
		}
	}
	issuerAudience := s.cfg.Issuer != "" && slices.Contains(audiences, s.cfg.Issuer)
	if a.inOrganisation() {
		switch {
		case issuerAudience:
			return apierr.ErrForbidden.WithDescription(
				"Listing the issuer among a client's audiences gives its tokens access to the admin API, so only a platform admin may %s such a client; an organisation's token may not.", act)
		case firstParty:
			return apierr.ErrForbidden.WithDescription(
				"A first-party client never asks users for consent, whichever organisations they belong to, so only a platform admin may %s one; an organisation's token may not.", act)
		}
	}
	if issuerAudience {
		if p, ok := a.missingAdminPermission(); !ok {
			return apierr.ErrForbidden.WithDescription(
				"Listing the issuer among a client's audiences gives its tokens access to the admin API, so to %s such a client needs every admin permission; you do not hold %q (in your roles, or in the scope of the access token you act with).", act, p)
		}
	}
	if firstParty {
		if p, ok := a.missingAdminPermission(); !ok {
			return apierr.ErrForbidden.WithDescription(
				"A first-party client never asks users for consent, so to %s one needs every admin permission; you do not hold %q (in your roles, or in the scope of the access token you act with).", act, p)
		}
	}
	return nil
}

// clientInReach refuses an existing client that a may not change (rotate
// its secret, delete it, change its redirect URIs): one a's scope does not
// own (ownsRecord: a platform client 403, another organisation's 404), or
// one above a's privilege ceiling, the rule a new client passes, applied
// to the client as it is (withinClientCeiling: an admin without
// keys:rotate may not take over a client whose tokens carry it by
// rotating its secret). Unknown is 404. The operator is bound by neither.
func (s *Service) clientInReach(ctx context.Context, a clientActor, act, id string) error {
	if a.operator {
		return nil
	}
	c, err := s.store.GetClient(ctx, id)
	if err != nil {
		return storeErr("load client", err, errClientNotFound)
	}
	if err := a.scope.ownsRecord(c.TenantID, errClientNotFound); err != nil {
		return err
	}
	return s.withinClientCeiling(a, act, c.Scopes, c.Audiences, c.FirstParty)
}

// inOrganisation reports whether a acts with an organisation's token (not
// the operator, not a platform actor).
func (a clientActor) inOrganisation() bool {
	return a.scope.inTenant() && !a.scope.byPlatform
}

// missingAdminPermission returns the first admin permission the actor lacks
// and false, or "" and true when they hold every one.
func (a clientActor) missingAdminPermission() (string, bool) {
	for _, p := range policy.AdminPermissions() {
		if _, ok := slices.BinarySearch(a.perms, p); !ok {
			return p, false
		}
	}
	return "", true
}

// reservedAudiences are the server's own access-token audiences, which no
// client id may be (clients.Spec.ReservedAudiences): the default audience
// and the issuer.
func (s *Service) reservedAudiences() []string {
	return clients.ServerAudiences(s.cfg.DefaultAudience, s.cfg.Issuer)
}

// CreateClient creates an OAuth client for a user of the admin API or for the
// operator (Operator, the CLI). A bad spec is 400, and so is one whose id or
// audiences clash with a stored client's or the server's audiences
// (clients.Clashes: an access-token audience is never a client id, for any
// actor); a scope or audience above the actor's ceiling 403
// (checkClientCeiling); a taken id 409. A token
// revoked before the client was written keeps none (madeWithLiveToken): the
// client is deleted (client.deleted via token_revoked) and its secret never
// shown. A confidential client is a credential tied to no user, which no
// password reset, revoke sessions or MFA reset of its maker ever ends, so a
// stolen token held past those must not leave one behind.
func (s *Service) CreateClient(ctx context.Context, actor Actor, spec clients.Spec) (CreatedClient, error) {
	if err := outlivesNoKey(actor); err != nil {
		return CreatedClient{}, err
	}
	a, err := s.loadClientActor(ctx, actor)
	if err != nil {
		return CreatedClient{}, err
	}
	if err := s.checkClientCeiling(a, spec); err != nil {
		return CreatedClient{}, err
	}
	spec.TenantID = a.scope.tenant.ID // inside an organisation, its client
	spec.MaxAccessTokenTTL = s.cfg.MaxClientTokenTTL
	spec.RefreshReuseGrace = s.cfg.RefreshReuseGrace
	spec.ReservedAudiences = s.reservedAudiences()
	c, secret, err := clients.Create(ctx, s.store, spec)
	if err != nil {
		var ve *clients.ValidationError
		switch {
		case errors.As(err, &ve):
			return CreatedClient{}, apierr.ErrInvalidRequest.WithDescription("%s", apierr.Sentence(ve.Reason))
		case errors.Is(err, store.ErrAlreadyExists):
			return CreatedClient{}, apierr.ErrConflict.WithDescription("A client with this id already exists.")
		}
		return CreatedClient{}, storeErr("create client", err, nil)
	}
	s.record(ctx, "client.created", store.OutcomeSuccess, a.id, c.ID, actor.Meta,
		map[string]string{"via": a.via, "public": fmt.Sprint(c.Public), "first_party": fmt.Sprint(c.FirstParty)})
	if err := s.madeWithLiveToken(ctx, actor, "a client", func(ctx context.Context) error {
		if err := s.store.DeleteClient(ctx, c.ID); err != nil {
			return fmt.Errorf("delete client %s: %w", c.ID, err)
		}
		s.record(ctx, "client.deleted", store.OutcomeSuccess, a.id, c.ID, actor.Meta, map[string]string{"via": viaTokenRevoked})
		return nil
	}); err != nil {
		return CreatedClient{}, err
	}
	return CreatedClient{ClientView: clients.View(c), ClientSecret: secret}, nil
}

// DeleteClient deletes an OAuth client; the built-in first-party client
// cannot be deleted (409), by a user or by the operator, and a user may
// delete only a client within their privilege ceiling (clientInReach,
// 403). Its refresh tokens stop working at once (the client no longer
// authenticates); its access and id tokens expire on their own, so the
// store retires its id and audiences until then (the revocation horizon):
// no client created meanwhile takes them (clients.Clashes).
func (s *Service) DeleteClient(ctx context.Context, actor Actor, id string) error {
	a, err := s.loadClientActor(ctx, actor)
	if err != nil {
		return err
	}
	if id == s.cfg.FirstPartyClientID {
		return errFirstPartyDeletion
	}
	if id == "" || len(id) > maxIDLen {
		return errClientNotFound
	}
	if err := s.clientInReach(ctx, a, "delete", id); err != nil {
		return err
	}
	if err := s.store.DeleteClient(ctx, id); err != nil {
		return storeErr("delete client", err, errClientNotFound)
	}
	s.record(ctx, "client.deleted", store.OutcomeSuccess, a.id, id, actor.Meta, map[string]string{"via": a.via})
	return nil
}

// RotateClientSecret replaces a confidential client's secret and returns the
// new one, shown this once (the CLI's rotate-secret, the console's
// "rotate"). Whoever holds the secret gets the client's tokens, so a user
// may rotate only a client within their privilege ceiling (clientInReach,
// 403), the rule that client would pass if they created it. Unknown is
// 404, a public client 400.
//
// A token revoked before the secret was written gets none
// (madeWithLiveToken): the secret is rotated again, to one never shown
// (client.secret_rotated via token_revoked), and the answer is 401. The old
// secret is not written back: the write replaced it for good, and putting
// it back could revive, over a rotation someone made in between, a secret
// rotated away because it leaked. The client is left with a secret nobody
// holds, no worse off than the refused rotation left it: its owner rotates
// again from a live session. Deleting the client instead would undo more
// than the request did.
func (s *Service) RotateClientSecret(ctx context.Context, actor Actor, id string) (string, error) {
	if err := outlivesNoKey(actor); err != nil {
		return "", err
	}
	a, err := s.loadClientActor(ctx, actor)
	if err != nil {
		return "", err
	}
	if id == "" || len(id) > maxIDLen {
		return "", errClientNotFound
	}
	if err := s.clientInReach(ctx, a, "rotate the secret of", id); err != nil {
		return "", err
	}
	secret, err := clients.RotateSecret(ctx, s.store, id)
	if err != nil {
		var ve *clients.ValidationError
		if errors.As(err, &ve) {
			return "", apierr.ErrInvalidRequest.WithDescription("%s", apierr.Sentence(ve.Reason))
		}
		return "", storeErr("rotate client secret", err, errClientNotFound)
	}
	s.record(ctx, "client.secret_rotated", store.OutcomeSuccess, a.id, id, actor.Meta, map[string]string{"via": a.via})
	if err := s.madeWithLiveToken(ctx, actor, "a client secret", func(ctx context.Context) error {
		if _, err := clients.RotateSecret(ctx, s.store, id); err != nil {
			return fmt.Errorf("rotate the secret of client %s again: %w", id, err)
		}
		s.record(ctx, "client.secret_rotated", store.OutcomeSuccess, a.id, id, actor.Meta, map[string]string{"via": viaTokenRevoked})
		return nil
	}); err != nil {
		return "", err
	}
	return secret, nil
}

// ListKeysAs is ListKeys for actor: an organisation's token may not (403).
func (s *Service) ListKeysAs(ctx context.Context, actor Actor) ([]keys.KeyInfo, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return nil, err
	}
	if err := sc.platformOnly(); err != nil {
		return nil, err
	}
	return s.ListKeys(ctx)
}

// SetClientRedirectURIs replaces the redirect URIs of a client of the
// authorization code flow, under the rule that bounds what a new client may
// carry (clientInReach, on the client as it is: changing where a
// first-party or admin-audience client's codes go needs every admin
// permission). The built-in client's are the server's own (409); unknown
// is 404, bad URIs 400. Audit client.updated.
func (s *Service) SetClientRedirectURIs(ctx context.Context, actor Actor, id string, uris []string) (clients.ClientView, error) {
	a, err := s.loadClientActor(ctx, actor)
	if err != nil {
		return clients.ClientView{}, err
	}
	if id == s.cfg.FirstPartyClientID {
		return clients.ClientView{}, apierr.ErrConflict.WithDescription("The built-in client's redirect URIs are the server's own.")
	}
	if id == "" || len(id) > maxIDLen {
		return clients.ClientView{}, errClientNotFound
	}
	if err := s.clientInReach(ctx, a, "change the redirect URIs of", id); err != nil {
		return clients.ClientView{}, err
	}
	c, err := clients.SetRedirectURIs(ctx, s.store, id, uris)
	if err != nil {
		var ve *clients.ValidationError
		if errors.As(err, &ve) {
			return clients.ClientView{}, apierr.ErrInvalidRequest.WithDescription("%s", apierr.Sentence(ve.Reason))
		}
		return clients.ClientView{}, storeErr("set client redirect URIs", err, errClientNotFound)
	}
	s.record(ctx, "client.updated", store.OutcomeSuccess, a.id, id, actor.Meta,
		map[string]string{"via": a.via, "redirect_uris": fmt.Sprint(len(c.RedirectURIs))})
	return clients.View(c), nil
}

// ListKeys returns every signing key without private material.
func (s *Service) ListKeys(ctx context.Context) ([]keys.KeyInfo, error) {
	list, err := s.keys.List(ctx)
	if err != nil {
		return nil, storeErr("list signing keys", err, nil)
	}
	return list, nil
}

// Rotation is the outcome of a key rotation as the API shows it.
type Rotation struct {
	Retired   *keys.KeyInfo `json:"retired"`
	Activated keys.KeyInfo  `json:"activated"`
	Next      keys.KeyInfo  `json:"next"`
	Forced    bool          `json:"forced"`
}

// loadKeysActor is who acts on the signing keys (RotateKeys, RevokeKey),
// an operation of the whole instance: the operator (the CLI's keys rotate
// and keys revoke), or a user acting on the whole instance (loadClientActor;
// an organisation's token is 403).
func (s *Service) loadKeysActor(ctx context.Context, actor Actor) (clientActor, error) {
	a, err := s.loadClientActor(ctx, actor)
	if err != nil {
		return clientActor{}, err
	}
	if err := a.scope.platformOnly(); err != nil {
		return clientActor{}, err
	}
	return a, nil
}

// RotateKeys promotes the next key, retires the active one and creates a new
// next key. Without force it refuses with 409 (saying when it will be safe)
// while the next key has not been published long enough; force breaks
// verifiers that cached the JWKS until they refetch. The operator (the
// CLI's keys rotate) rotates too; its event says via "cli". Audit
// key.rotated, also when this instance could not reload the keys after it
// (keysChanged).
func (s *Service) RotateKeys(ctx context.Context, actor Actor, force bool) (Rotation, error) {
	a, err := s.loadKeysActor(ctx, actor)
	if err != nil {
		return Rotation{}, err
	}
	rot, err := s.keys.Rotate(ctx, force)
	if err != nil && !errors.Is(err, keys.ErrReloadAfterCommit) {
		var early *keys.TooEarlyError
		switch {
		case errors.As(err, &early):
			return Rotation{}, apierr.ErrConflict.WithDescription(
				"The next key has not been published long enough: rotating is safe from %s. Forcing it breaks verifiers that cached the JWKS until they refetch.",
				early.SafeAt.UTC().Format(time.RFC3339)).WithCause(err)
		case errors.Is(err, store.ErrConflict):
			return Rotation{}, apierr.ErrConflict.WithDescription("The signing keys were changed at the same moment elsewhere; list them and try again.").WithCause(err)
		}
		return Rotation{}, storeErr("rotate signing keys", err, nil)
	}
	out := Rotation{Activated: rot.Activated, Next: rot.Next, Forced: rot.Forced}
	if rot.Retired.KID != "" {
		r := rot.Retired
		out.Retired = &r
	}
	return out, s.keysChanged(ctx, a, actor, "key.rotated", rot.Activated.KID,
		map[string]string{"via": a.via, "forced": fmt.Sprint(rot.Forced), "retired": rot.Retired.KID, "next": rot.Next.KID},
		"The signing keys were rotated ("+rot.Activated.KID+" signs now)", err)
}

// keysChanged records a change of the signing keys that was stored
// (key.rotated, key.revoked) and answers it: the one place RotateKeys and
// RevokeKey decide both. err is nil or wraps keys.ErrReloadAfterCommit: the
// change happened, and every instance takes it at its next sync, so it is
// recorded whatever the reload did. When this instance could not reload the
// keys after it, it still signs, verifies and publishes the keys it held
// until a sync succeeds: the answer is 503 saying that the change was made
// (done, a sentence without its full stop), so that nobody repeats it (a
// repeated revocation changes nothing, a repeated forced rotation rotates
// again).
func (s *Service) keysChanged(ctx context.Context, a clientActor, actor Actor, action, targetID string, details map[string]string, done string, err error) error {
	s.record(ctx, action, store.OutcomeSuccess, a.id, targetID, actor.Meta, details)
	if err == nil {
		return nil
	}
	return apierr.ErrTemporarilyUnavailable.WithDescription(
		"%s, but this instance could not reload the signing keys and goes on with the ones it held until its next sync. Do not repeat the change: it is recorded.",
		done).WithCause(fmt.Errorf("%s: %w", action, err))
}

// AuditQuery selects audit events.
type AuditQuery struct {
	Action   string
	ActorID  string
	TargetID string
	Since    time.Time
	Until    time.Time
	Cursor   string
	Limit    int
}

// ListAuditAs is ListAudit for actor: inside an organisation only its
// events, whatever the query says.
func (s *Service) ListAuditAs(ctx context.Context, actor Actor, q AuditQuery) (Page[store.AuditEvent], error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return Page[store.AuditEvent]{}, err
	}
	return s.listAudit(ctx, sc.tenant.ID, q)
}

// ListAudit returns one page of the audit events of the whole instance,
// newest first. The admin API lists with ListAuditAs.
func (s *Service) ListAudit(ctx context.Context, q AuditQuery) (Page[store.AuditEvent], error) {
	return s.listAudit(ctx, "", q)
}

func (s *Service) listAudit(ctx context.Context, tenantID string, q AuditQuery) (Page[store.AuditEvent], error) {
	for _, v := range []string{q.Action, q.ActorID, q.TargetID} {
		if len(v) > 128 {
			return Page[store.AuditEvent]{}, apierr.ErrInvalidRequest.WithDescription("A filter is longer than 128 characters.")
		}
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		return Page[store.AuditEvent]{}, apierr.ErrInvalidRequest.WithDescription("since must be before until.")
	}
	page, err := s.store.ListAudit(ctx, store.AuditFilter{Action: q.Action, ActorID: q.ActorID, TargetID: q.TargetID,
		Since: q.Since, Until: q.Until, TenantID: tenantID, Cursor: q.Cursor, Limit: q.Limit})
	if err != nil {
		return Page[store.AuditEvent]{}, listErr("list audit events", err)
	}
	items := page.Items
	if items == nil {
		items = []store.AuditEvent{}
	}
	return Page[store.AuditEvent]{Items: items, NextCursor: page.NextCursor}, nil
}
