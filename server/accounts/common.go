package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/clients"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// maxIDLen bounds an id taken from a path; longer ones are unknown.
const maxIDLen = 64

// loadActor reads the actor's current record: their roles as they are now,
// not as their token says, and where they act (scopeOf: with organisations
// on, the roles of their token's tenant, or their platform roles). A
// deleted actor is 401, a deactivated one 403.
func (s *Service) loadActor(ctx context.Context, actor Actor) (store.User, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return store.User{}, err
	}
	return sc.actor, nil
}

// loadActorRecord reads the actor's stored record, roles as stored.
func (s *Service) loadActorRecord(ctx context.Context, actor Actor) (store.User, error) {
	if actor.ID == "" || len(actor.ID) > maxIDLen {
		return store.User{}, errActorUnknown
	}
	u, err := s.store.GetUser(ctx, actor.ID)
	if err != nil {
		return store.User{}, storeErr("load the acting user", err, errActorUnknown)
	}
	if !u.Active {
		return store.User{}, errActorInactive
	}
	u.PasswordHash = ""
	return u, nil
}

// loadTarget reads the user an operation of the whole instance acts on
// (the views that name no actor); unknown is 404.
func (s *Service) loadTarget(ctx context.Context, id string) (store.User, error) {
	t, err := s.target(ctx, actorScope{}, id, reachMember)
	return t.User, err
}

// actorAndTarget loads both, the target within the actor's scope as an
// account the operation changes (scopeOf, target), and checks that the
// actor may manage the target (strictly above them, never themself; on
// the whole instance above every role they hold, in organisations too:
// targetUser.ceiling).
func (s *Service) actorAndTarget(ctx context.Context, actor Actor, id string) (store.User, store.User, error) {
	sc, err := s.scopeOf(ctx, actor)
	if err != nil {
		return store.User{}, store.User{}, err
	}
	t, err := s.target(ctx, sc, id, reachAccount)
	if err != nil {
		return store.User{}, store.User{}, err
	}
	if err := s.policy.CanManage(subject(sc.actor), t.ceiling); err != nil {
		return store.User{}, store.User{}, ceilingErr(err)
	}
	return sc.actor, t.User, nil
}

// platform is u as a login naming no organisation sees them: with
// organisations on, their platform roles only (tenancy.Resolver.Platform);
// otherwise u as it is.
func (s *Service) platform(u store.User) store.User {
	if s.tenancy == nil {
		return u
	}
	return s.tenancy.Platform(u)
}

func subject(u store.User) policy.Subject { return policy.Subject{ID: u.ID, Roles: u.Roles} }

// resolveClient returns the client that issues a session's tokens: the
// built-in first-party client when the request names none, else the named
// client authenticated like at the token endpoint.
func (s *Service) resolveClient(ctx context.Context, cred token.ClientCredentials) (store.Client, error) {
	if cred.ID == "" && !cred.Basic {
		return s.firstPartyClient(ctx)
	}
	return s.sessions.AuthenticateClient(ctx, cred)
}

// firstPartyClient loads the built-in first-party client.
func (s *Service) firstPartyClient(ctx context.Context) (store.Client, error) {
	c, err := s.store.GetClient(ctx, s.cfg.FirstPartyClientID)
	if err != nil {
		return store.Client{}, storeErr("load the first-party client", err, nil)
	}
	return c, nil
}

// checkScope refuses, before anything is changed, a requested scope that the
// session about to be issued could not receive.
func checkScope(requested, userPerms []string, client store.Client) error {
	if _, err := policy.ResolveScope(requested, userPerms, client.Scopes); err != nil {
		return apierr.ErrInvalidScope.WithDescription("%s", apierr.Sentence(err.Error())).WithCause(err)
	}
	return nil
}

// listErr answers a failed list: a bad cursor is 400.
func listErr(what string, err error) error {
	if errors.Is(err, sqlstore.ErrInvalidCursor) {
		return apierr.ErrInvalidRequest.WithDescription("The cursor is not valid; start again without one.").WithCause(err)
	}
	return storeErr(what, err, nil)
}

// EnsureFirstPartyClient creates the built-in first-party client when it does
// not exist: public, with the refresh_token and token-exchange grants only
// (so it can never be used for the password grant; an existing one gains
// token exchange), allowed every permission, and listing the
// issuer among its audiences (its tokens are the ones the admin API
// accepts). It is idempotent and safe with many instances starting at once.
// It is first-party (it never shows consent). An existing client with that
// id keeps its settings, except that it is marked first-party and the issuer
// is added to its audiences when missing: a database created before the
// admin API had its own audience or before the code flow (migration 3 marks
// only the default id), a renamed built-in client, or a changed
// PORTCULLIS_ISSUER, is reconciled at start-up.
func (s *Service) EnsureFirstPartyClient(ctx context.Context) error {
	id := s.cfg.FirstPartyClientID
	var audiences []string
	if s.cfg.Issuer != "" {
		audiences = []string{s.cfg.Issuer}
	}
	existing, err := s.store.GetClient(ctx, id)
	switch {
	case err == nil:
		if !existing.FirstParty {
			if err := s.store.SetClientFirstParty(ctx, id, true); err != nil {
				return fmt.Errorf("mark the built-in client %q first-party: %w", id, err)
			}
			s.log.Info("marked the built-in client first-party", "client_id", id)
		}
		if err := s.reconcileFirstPartyFlows(ctx, existing); err != nil {
			return err
		}
		if s.cfg.Issuer == "" || slices.Contains(existing.Audiences, s.cfg.Issuer) {
			return nil
		}
		aud := append(slices.Clone(existing.Audiences), s.cfg.Issuer)
		if err := s.store.SetClientAudiences(ctx, id, aud); err != nil {
			return fmt.Errorf("add the issuer to the audiences of the first-party client %q: %w", id, err)
		}
		s.log.Info("added the issuer to the audiences of the built-in client", "client_id", id, "audiences", aud)
		return nil
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("load the first-party client %q: %w", id, err)
	}
	_, _, err = clients.Create(ctx, s.store, clients.Spec{ID: id, Name: "Portcullis (first-party)", Public: true,
		Grants: []string{token.GrantRefreshToken, token.GrantTokenExchange}, Audiences: audiences, FirstParty: true,
		ReservedAudiences: s.reservedAudiences()})
	if err != nil && !errors.Is(err, store.ErrAlreadyExists) {
		return fmt.Errorf("create the first-party client %q: %w", id, err)
	}
	if len(s.cfg.FirstPartyRedirectURIs) == 0 {
		return nil
	}
	created, err := s.store.GetClient(ctx, id)
	if err != nil {
		return fmt.Errorf("load the first-party client %q: %w", id, err)
	}
	return s.reconcileFirstPartyFlows(ctx, created)
}

// reconcileFirstPartyFlows gives the built-in client the token-exchange
// grant and, when the server has redirect URIs for it (the console's
// callback), the authorization_code grant and exactly those redirect URIs
// (none other: a former issuer's are dropped). They are the server's own URLs, set here
// rather than through registration (PORTCULLIS_ISSUER may be a plain-http
// development host that registration refuses).
func (s *Service) reconcileFirstPartyFlows(ctx context.Context, c store.Client) error {
	want := []string{token.GrantTokenExchange}
	if len(s.cfg.FirstPartyRedirectURIs) > 0 {
		want = append(want, token.GrantAuthorizationCode)
	}
	grants := slices.Clone(c.Grants)
	for _, g := range want {
		if !slices.Contains(grants, g) {
			grants = append(grants, g)
		}
	}
	if len(grants) != len(c.Grants) {
		if err := s.store.SetClientGrants(ctx, c.ID, grants); err != nil {
			return fmt.Errorf("add %v to the grants of the built-in client %q: %w", want, c.ID, err)
		}
		s.log.Info("reconciled the grants of the built-in client", "client_id", c.ID, "grants", grants)
	}
	// Exactly the server's own: a redirect URI left from a former issuer
	// would let whoever holds that origin now receive codes of this client.
	uris := s.cfg.FirstPartyRedirectURIs
	if len(uris) > 0 && !slices.Equal(uris, c.RedirectURIs) {
		if err := s.store.SetClientRedirectURIs(ctx, c.ID, uris); err != nil {
			return fmt.Errorf("set the redirect URIs of the built-in client %q: %w", c.ID, err)
		}
		s.log.Info("reconciled the redirect URIs of the built-in client", "client_id", c.ID, "redirect_uris", uris)
	}
	return nil
}
