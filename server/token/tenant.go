package token

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/tenancy"
	"github.com/portcullis-auth/portcullis/store"
)

// errTenantRefused answers a login or refresh whose tenant is unknown,
// inactive, or one the user is not a member of: the same words in every
// case, so they tell nobody which tenants exist.
var errTenantRefused = apierr.ErrInvalidGrant.WithDescription(
	"The organisation is unknown or inactive, or the account is not a member of it.")

// tenancyErr turns an error of the tenancy rules into the answer.
func tenancyErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tenancy.ErrRefused):
		return errTenantRefused.WithCause(err)
	}
	return apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("tenant: %w", err))
}

// loginTenant gives user the roles of a login through client naming the
// tenant slug: with organisations off the user as is (the parameter means
// nothing); on, the tenant's roles, or the platform roles when slug is "".
// A client of an organisation logs in only to it: naming none means its
// own, naming another is refused.
func (s *Service) loginTenant(ctx context.Context, client store.Client, user store.User, slug string) (store.User, store.Tenant, error) {
	if client.TenantID != "" {
		// A client of an organisation logs in only to it; with its
		// organisation inactive, or organisations off, it gets nothing,
		// as its client_credentials tokens do not (clientTenant): it never
		// becomes a platform client of the user's platform roles.
		own, err := s.clientTenant(ctx, client)
		if err != nil {
			return store.User{}, store.Tenant{}, err
		}
		if slug != "" && slug != own.Slug {
			return store.User{}, store.Tenant{}, errTenantRefused.WithCause(errors.New("the client belongs to another organisation"))
		}
		slug = own.Slug
	}
	if s.tenancy == nil {
		return user, store.Tenant{}, nil
	}
	u, t, err := s.tenancy.ForLogin(ctx, user, slug)
	return u, t, tenancyErr(err)
}

// boundTenant is loginTenant for a token bound to a credential
// (BoundIssuance: an API key's), which acts in no organisation. A client
// of an organisation issues only in it (its logins go to it, its
// client_credentials tokens carry it), so it issues no such token: an
// inactive organisation's client is refused as at every grant
// (clientTenant, unauthorized_client), an active one's as a login it asks
// outside its organisation (invalid_grant). Naming a tenant is refused.
func (s *Service) boundTenant(ctx context.Context, client store.Client, slug string) error {
	if client.TenantID != "" {
		if _, err := s.clientTenant(ctx, client); err != nil {
			return err
		}
		return errTenantRefused.WithDescription(
			"A client of an organisation issues tokens only in it, and a token exchanged from an API key acts in no organisation.").
			WithCause(errors.New("the client belongs to an organisation"))
	}
	if s.tenancy != nil && slug != "" {
		return apierr.ErrInvalidRequest.WithDescription("A token exchanged from an API key acts in no organisation; drop the tenant parameter.")
	}
	return nil
}

// sessionTenant is loginTenant for a refresh family bound to tenantID
// refreshed through client. A family bound to a tenant while organisations
// are off is refused: nothing would keep it to its tenant. A client of an
// organisation refreshes only families of that organisation (loginTenant
// issues it no other), which ForSession then finds active, so a session of
// another tenant or of none (one issued before this rule) gets nothing, as
// its logins do not, and nothing once its organisation is turned off.
func (s *Service) sessionTenant(ctx context.Context, client store.Client, user store.User, tenantID string) (store.User, store.Tenant, error) {
	if client.TenantID != "" && tenantID != client.TenantID {
		return store.User{}, store.Tenant{}, errTenantRefused.WithCause(errors.New("the session is not of the client's organisation"))
	}
	if s.tenancy == nil {
		if tenantID != "" {
			return store.User{}, store.Tenant{}, errTenantRefused.WithCause(errors.New("organisations are off"))
		}
		return user, store.Tenant{}, nil
	}
	u, t, err := s.tenancy.ForSession(ctx, user, tenantID)
	return u, t, tenancyErr(err)
}

// SessionUser returns user as a session started through client in the
// organisation tenant names ("": none) would hold it (the rule of every
// login, loginTenant: with organisations on, the roles held there, or the
// platform roles), or the refusal that session would get. A change that
// ends in such a session (a password change) asks it before changing
// anything, and the second factor is decided on these roles.
func (s *Service) SessionUser(ctx context.Context, client store.Client, user store.User, tenant string) (store.User, error) {
	u, _, err := s.loginTenant(ctx, client, user, tenant)
	return u, err
}

// ClientIssuesIn answers, before an invite to the organisation tenantID
// ("": the platform) is redeemed, whether client could start the session
// that follows it, which names no organisation (IssueForUser): a platform
// client can, a client of an organisation only for an invite to it while
// it is active and organisations are on (else unauthorized_client, as
// clientTenant); for another invite it would log in outside its
// organisation (invalid_grant, as loginTenant). So a refused client never
// spends the invite.
func (s *Service) ClientIssuesIn(ctx context.Context, client store.Client, tenantID string) error {
	if client.TenantID == "" {
		return nil
	}
	if _, err := s.clientTenant(ctx, client); err != nil {
		return err
	}
	if tenantID != client.TenantID {
		return errTenantRefused.WithCause(errors.New("the client belongs to another organisation"))
	}
	return nil
}

// clientTenant is the tenant a client belongs to (zero for a platform
// client): its client_credentials tokens always carry it. A client of an
// unknown or inactive tenant, or of a tenant while organisations are off,
// gets nothing.
func (s *Service) clientTenant(ctx context.Context, client store.Client) (store.Tenant, error) {
	if client.TenantID == "" {
		return store.Tenant{}, nil
	}
	refused := apierr.ErrUnauthorizedClient.WithDescription("The client's organisation is inactive or organisations are off.")
	if s.tenancy == nil {
		return store.Tenant{}, refused
	}
	t, err := s.tenancy.GetTenant(ctx, client.TenantID)
	if errors.Is(err, store.ErrNotFound) || err == nil && !t.Active {
		return store.Tenant{}, refused
	}
	if err != nil {
		return store.Tenant{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load the client's tenant: %w", err))
	}
	return t, nil
}

// switchTenant exchanges a user's access token of this issuer (not
// revoked, issued to this very client, not one exchanged from an API key)
// for one access token of the organisation req.Tenant names: the user must
// hold a role there (else invalid_grant, as a login naming it). The new
// token holds that tenant's roles and at most the permissions the
// presented token holds (narrowed by a named scope and the client's),
// keeps its sid (ending that session ends this token too), amr and
// auth_time, and lives no longer than it. Roles there that need a second
// factor the presented token's amr lacks are refused (invalid_grant). No
// refresh token and no id token: a session in the new tenant takes a new
// login, so an access token can never be turned into a longer session
// this way.
func (s *Service) switchTenant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	refused := apierr.ErrInvalidRequest.WithDescription("The subject token is invalid, expired or refused.")
	now := s.now()
	c, err := s.verifyAccessToken(req.SubjectToken, now)
	if err != nil {
		if unusable := keysUnusable(err); unusable != nil {
			return Response{}, unusable
		}
		return Response{}, refused.WithCause(err)
	}
	if !c.IsUser() || c.SID == "" || !IssuedTo(client, c.ClientID, latestIn(c.IssuedAt)) {
		return Response{}, refused.WithDescription("Only a user's access token issued to this client can switch organisation.")
	}
	if _, fromKey := apikey.KeyIDOfSession(c.SID); fromKey {
		return Response{}, refused.WithDescription("A token exchanged from an API key cannot switch organisation.")
	}
	if gone, err := s.revoked(ctx, c); err != nil {
		return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(err)
	} else if gone {
		return Response{}, refused.WithDescription("The subject token has been revoked.")
	}
	user, err := s.users.GetUser(ctx, c.Subject)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Response{}, refused
		}
		return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load user: %w", err))
	}
	if !user.Active || user.MustChangePassword {
		return Response{}, refused.WithDescription("The account cannot switch organisation now.")
	}
	user, tn, err := s.loginTenant(ctx, client, user, req.Tenant)
	if err != nil {
		return Response{}, err
	}
	// The new tenant's roles may need a second factor the presented
	// token's login did not use (its amr): that takes a new login.
	if err := s.secondFactorOwed(user.Roles, c.AMR); err != nil {
		return Response{}, err
	}
	grant, err := s.loginScope(client, user, req.Scope, false)
	if err != nil {
		return Response{}, err
	}
	held := c.Scopes()
	perms := slices.DeleteFunc(grant.Permissions, func(p string) bool { return !slices.Contains(held, p) })
	ttl := time.Duration(s.accessTTL(client)) * time.Second
	ttl = min(ttl, time.Unix(c.Expiry, 0).Sub(now).Truncate(time.Second))
	if ttl < time.Second {
		return Response{}, refused.WithDescription("The subject token expires now.")
	}
	g := grantSet{client: client, user: &user, permissions: perms, roles: slices.Clone(user.Roles), sid: c.SID,
		amr: c.AMR, tenant: tn, ttl: ttl, scopeAsked: len(req.Scope) > 0}
	if c.AuthTime != 0 {
		g.authTime = time.Unix(c.AuthTime, 0)
	}
	resp, err := s.respond(g, "", now)
	if err != nil {
		return Response{}, err
	}
	resp.IssuedTokenType = TokenTypeAccessToken
	s.recordSwitch(ctx, client, user, c, tn, meta)
	return resp, nil
}

// recordSwitch audits a switch by user from the organisation of the token
// c into tn: tenant.switched_out stamped with the organisation the token
// acted in (none for a platform token), tenant.switched stamped with tn.
// Each organisation's admin sees only its own event (ListAuditAs), so
// neither learns the other organisation of a member of both; the platform
// sees both, joined by the session's sid.
func (s *Service) recordSwitch(ctx context.Context, client store.Client, user store.User, c AccessClaims, tn store.Tenant, meta RequestMeta) {
	event := func(action, tenantID string, details map[string]string) {
		details["sid"], details["grant"] = c.SID, GrantTokenExchange
		s.audit.Record(ctx, store.AuditEvent{Action: action, Outcome: store.OutcomeSuccess, ActorID: user.ID,
			TargetID: user.ID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent, TenantID: tenantID,
			Details: details})
	}
	out := map[string]string{}
	from := store.Tenant{}
	if c.Tenant != "" {
		err := errors.New("organisations are off")
		if s.tenancy != nil {
			from, err = s.tenancy.TenantBySlug(ctx, c.Tenant)
		}
		if err != nil {
			// Unknown now: the event goes to the platform alone, naming
			// the organisation the token said.
			s.log.Warn("audit a tenant switch: load the organisation switched from", "err", err)
			from, out["from_tenant"] = store.Tenant{}, c.Tenant
		}
	}
	event("tenant.switched_out", from.ID, out)
	event("tenant.switched", tn.ID, map[string]string{})
}
