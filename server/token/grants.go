package token

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/portcullis-auth/portcullis/policy"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/store"
)

// Exchange runs the token endpoint for an authenticated request.
func (s *Service) Exchange(ctx context.Context, req TokenRequest, meta RequestMeta) (Response, error) {
	client, err := s.AuthenticateClient(ctx, req.Client)
	if err != nil {
		return Response{}, err
	}
	if !clientAllowsGrant(client, req.GrantType) {
		return Response{}, apierr.ErrUnauthorizedClient.WithDescription("The client may not use the %s grant.", req.GrantType)
	}
	var resp Response
	switch req.GrantType {
	case GrantPassword:
		resp, err = s.passwordGrant(ctx, client, req, meta)
	case GrantRefreshToken:
		resp, err = s.refreshGrant(ctx, client, req, meta)
	case GrantClientCredentials:
		resp, err = s.clientCredentialsGrant(client, req)
	default:
		return Response{}, apierr.ErrUnsupportedGrantType
	}
	if err == nil {
		s.metrics.TokenIssued(req.GrantType)
	}
	return resp, err
}

func (s *Service) passwordGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	if s.checker == nil {
		return Response{}, apierr.ErrServer.WithCause(errors.New("password grant: no password checker"))
	}
	now := s.now() // the login starts before the password (hash) is read
	res, err := s.checker.Check(ctx, passcheck.Attempt{Login: req.Username, Password: req.Password,
		IP: meta.IP, UserAgent: meta.UserAgent, ClientID: client.ID, FailureAction: "login.failed"})
	if errors.Is(err, passcheck.ErrBadCredentials) {
		return Response{}, apierr.ErrInvalidGrant.WithDescription("The username or password is incorrect.")
	}
	if err != nil {
		return Response{}, err
	}
	user, needsRehash := res.User, res.NeedsRehash
	if needsRehash {
		s.rehash(ctx, user.ID, req.Password)
	}
	if err := s.users.RecordLogin(ctx, user.ID, now); err != nil {
		s.log.Warn("record login", "user_id", user.ID, "err", err)
	}
	resp, g, err := s.issueSession(ctx, client, user, req.Scope, now)
	if err != nil {
		return Response{}, err
	}
	s.audit.Record(ctx, store.AuditEvent{Action: "login.succeeded", Outcome: store.OutcomeSuccess, ActorID: user.ID,
		TargetID: user.ID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent,
		Details: map[string]string{"sid": g.sid, "grant": GrantPassword}})
	return resp, nil
}

// rehash upgrades an outdated password hash after a successful login.
func (s *Service) rehash(ctx context.Context, userID, password string) {
	h, err := s.passwords.Hash(ctx, password)
	if err != nil {
		s.log.Warn("rehash password", "user_id", userID, "err", err)
		return
	}
	if _, err := s.users.UpdateUser(ctx, userID, func(u *store.User) error {
		u.PasswordHash = h
		return nil
	}); err != nil {
		s.log.Warn("store rehashed password", "user_id", userID, "err", err)
	}
}

func (s *Service) clientCredentialsGrant(client store.Client, req TokenRequest) (Response, error) {
	if client.Public {
		return Response{}, apierr.ErrUnauthorizedClient.WithDescription("Public clients may not use client_credentials.")
	}
	// Only the scopes listed for the client (none when none were listed).
	allowed := client.Scopes
	if allowed == nil {
		allowed = []string{}
	}
	grant, err := policy.ResolveClientScope(req.Scope, allowed)
	if err != nil {
		return Response{}, scopeError(err)
	}
	g := grantSet{client: client, permissions: grant.Permissions, roles: []string{}}
	return s.respond(g, "", s.now())
}

func (s *Service) refreshGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	invalid := apierr.ErrInvalidGrant.WithDescription("The refresh token is invalid, expired or revoked.")
	sid, ok := parseRefreshToken(req.RefreshToken)
	if !ok {
		return Response{}, invalid
	}
	now := s.now()
	next := newRefreshToken(sid)
	sealed, err := s.sealer.Seal([]byte(next), []byte("refresh:"+sid))
	if err != nil {
		return Response{}, apierr.ErrServer.WithCause(fmt.Errorf("seal successor: %w", err))
	}
	res, err := s.state.RotateRefresh(ctx, store.RotateRequest{
		FamilyID: sid, PresentedHash: HashSecret(req.RefreshToken), NextHash: HashSecret(next), NextSealed: sealed,
		Now: now, Grace: s.cfg.RefreshReuseGrace,
	})
	if err != nil {
		if res.Outcome != store.RotateReuseDetected {
			return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("rotate refresh token: %w", err))
		}
		// Reuse revoked the family; its access tokens' revocation may be
		// pending in the token state.
		if err := s.revocationFailed(err, "revoke the session of a reused refresh token"); err != nil {
			return Response{}, err
		}
	}
	fam := res.Family
	switch res.Outcome {
	case store.RotateOK:
	case store.RotateGraceReplay:
		plain, err := s.sealer.Open(res.SuccessorSealed, []byte("refresh:"+sid))
		if err != nil {
			return Response{}, invalid.WithCause(fmt.Errorf("open sealed successor: %w", err))
		}
		next = string(plain)
	case store.RotateReuseDetected:
		s.metrics.RefreshReuseDetected()
		s.audit.Record(ctx, store.AuditEvent{Action: "token.refresh_reuse_detected", Outcome: store.OutcomeFailure,
			TargetID: fam.UserID, ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent,
			Details: map[string]string{"sid": sid}})
		return Response{}, invalid
	default:
		return Response{}, invalid
	}
	if fam.ClientID != client.ID {
		// A token presented by a client it was not issued to is compromised.
		if err := s.revocationFailed(s.state.RevokeFamily(ctx, sid, now), "revoke a refresh token presented by another client"); err != nil {
			return Response{}, err
		}
		s.audit.Record(ctx, store.AuditEvent{Action: "token.revoked", Outcome: store.OutcomeFailure, TargetID: fam.UserID,
			ClientID: client.ID, IP: meta.IP, UserAgent: meta.UserAgent,
			Details: map[string]string{"sid": sid, "reason": "refresh token presented by another client"}})
		return Response{}, invalid
	}
	user, err := s.users.GetUser(ctx, fam.UserID)
	if err != nil || !user.Active || user.MustChangePassword {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load user: %w", err))
		}
		if rerr := s.state.RevokeFamily(ctx, sid, now); rerr != nil {
			s.log.Warn("revoke family of unusable user", "err", rerr)
		}
		return Response{}, invalid
	}
	// The session follows the user's current permissions (or keeps to the
	// ones it named); a refresh may narrow the scope, never widen it.
	scope, err := policy.NarrowOnRefresh(strings.Fields(fam.RequestedScope), req.Scope, s.perms.Permissions(user.Roles), client.Scopes)
	if err != nil {
		return Response{}, scopeError(err)
	}
	g := grantSet{client: client, user: &user, permissions: scope.Permissions, oidc: scope.OIDC, roles: slices.Clone(user.Roles),
		sid: sid, authTime: fam.CreatedAt}
	return s.respond(g, next, now)
}

// scopeError answers invalid_scope with the policy's reason (which names the
// offending scope and never holds a secret).
func scopeError(err error) error {
	return apierr.ErrInvalidScope.WithDescription("%s", err.Error()).WithCause(err)
}
