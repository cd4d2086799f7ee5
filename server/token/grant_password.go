package token

import (
	"context"
	"errors"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/passcheck"
	"github.com/portcullis-auth/portcullis/store"
)

// parsePasswordGrant reads username and password (RFC 6749 §4.3.2).
func parsePasswordGrant(params map[string]string, req *TokenRequest) error {
	req.Username, req.Password = params["username"], params["password"]
	if req.Username == "" || req.Password == "" {
		return apierr.ErrInvalidRequest.WithDescription("The password grant needs username and password.")
	}
	return nil
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

// Rehash upgrades an outdated password hash after a successful login
// elsewhere (the login page): the password grant's own upgrade, so both
// logins keep hashes current the same way. Failures are logged.
func (s *Service) Rehash(ctx context.Context, userID, password string) {
	s.rehash(ctx, userID, password)
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
