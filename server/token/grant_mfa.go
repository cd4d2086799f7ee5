package token

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/store"
)

// maxMFAParamLen bounds a presented mfa_token or code; Portcullis's are far shorter.
const maxMFAParamLen = 512

// parseMFAGrant reads an MFA grant's mfa_token and its code parameter
// (otp or recovery_code): both are required (invalid_request).
func parseMFAGrant(codeParam string) func(params map[string]string, req TokenRequest) (TokenRequest, error) {
	return func(params map[string]string, req TokenRequest) (TokenRequest, error) {
		req.MFAToken, req.MFACode = params["mfa_token"], params[codeParam]
		if req.MFAToken == "" || req.MFACode == "" {
			return req, apierr.ErrInvalidRequest.WithDescription("This grant needs mfa_token and %s.", codeParam)
		}
		return req, nil
	}
}

// mfaOTPGrant finishes a password login with a TOTP code.
func (s *Service) mfaOTPGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	if s.mfa == nil {
		return Response{}, mfaInvalid
	}
	return s.mfaGrant(ctx, client, req, meta, GrantMFAOTP, s.mfa.TOTPCode(req.MFACode))
}

// mfaRecoveryCodeGrant finishes a password login with a recovery code; the
// answer says how many codes are left.
func (s *Service) mfaRecoveryCodeGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta) (Response, error) {
	if s.mfa == nil {
		return Response{}, mfaInvalid
	}
	return s.mfaGrant(ctx, client, req, meta, GrantMFARecoveryCode, s.mfa.RecoveryCode(req.MFACode))
}

// mfaInvalid is every refusal of an MFA grant (contract: invalid_grant).
var mfaInvalid = apierr.ErrInvalidGrant.WithDescription("The mfa_token or the code is invalid, expired or already used.")

// mfaGrant spends one attempt of the mfa_token with the factor f (the
// mfa.Service counts attempts, the login throttle and audits failures),
// then issues the login the token stands for exactly as the password grant
// would: the scope asked for at the password step, its auth_time, and the
// amr the factor proved.
func (s *Service) mfaGrant(ctx context.Context, client store.Client, req TokenRequest, meta RequestMeta, grant string, f mfa.Factor) (Response, error) {
	if len(req.MFAToken) > maxMFAParamLen || len(req.MFACode) > maxMFAParamLen {
		return Response{}, mfaInvalid
	}
	done, err := s.mfa.CompleteForTenant(ctx, req.MFAToken, client.ID, req.Tenant, f, mfa.Meta{IP: meta.IP, UserAgent: meta.UserAgent, ClientID: client.ID})
	if err != nil {
		var ae *apierr.Error
		switch {
		case errors.Is(err, mfa.ErrInvalidToken), errors.Is(err, mfa.ErrBadCode), errors.Is(err, mfa.ErrNotEnrolled):
			return Response{}, mfaInvalid.WithCause(err)
		case errors.As(err, &ae):
			return Response{}, err
		default:
			return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("complete the second factor: %w", err))
		}
	}
	user, err := s.users.GetUser(ctx, done.UserID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Response{}, mfaInvalid.WithDescription("The account that signed in no longer exists.")
		}
		return Response{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("load user: %w", err))
	}
	if !user.Active {
		return Response{}, mfaInvalid.WithDescription("The account that signed in is deactivated.")
	}
	// The mfa_token is bound to the organisation the password step named,
	// as to its user, client and scope (CompleteForTenant refused another):
	// the login is in that tenant, its membership checked again; a login
	// naming none gets the platform roles.
	user, tn, err := s.loginTenant(ctx, client, user, done.Tenant)
	if err != nil {
		return Response{}, err
	}
	method := mfa.MethodTOTP
	if grant == GrantMFARecoveryCode {
		method = mfa.MethodRecoveryCode
	}
	// The login began at the password step and is issued now: a user's
	// cut-off written since (a password reset, say) voids it, checked
	// after issuing as for a code (voidAfterIssue), so that none written
	// while the tokens are made is missed; so does the user's cut-off at
	// the client written while they are made.
	now := s.now()
	resp, err := s.finishLogin(ctx, client, user, strings.Fields(done.Scope), now,
		loginInfo{authTime: done.AuthTime, amr: done.AMR, tenant: tn,
			recheck: &store.AccessTokenRef{JTI: newJTI(done.AuthTime), UserID: user.ID, IssuedAt: done.AuthTime,
				ClientID: client.ID, GrantedAt: now}},
		meta, grant, method)
	if err != nil {
		return Response{}, err
	}
	if grant == GrantMFARecoveryCode && done.RecoveryCodesLeft >= 0 {
		left := done.RecoveryCodesLeft
		resp.RecoveryCodesLeft = &left
	}
	return resp, nil
}
