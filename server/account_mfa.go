package server

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/token"
)

// mfaActorKey is where requireEnrolBearer leaves the actor of an mfa_token.
const mfaActorKey = "portcullis.mfa_actor"

// mountMFA mounts the person's own second factors under /auth/mfa behind
// bearer (a user's access token, the self-service rules of
// accounts.loadSelf; its auth_time and amr are what a write of a factor
// needs recent and complete, accounts.loadMFASelf). POST /auth/mfa/totp and …/confirm also take, as the
// bearer, an mfa_token whose login must enrol a second factor
// (requireEnrolBearer); no other endpoint does.
func mountMFA(e *echo.Echo, svc *accounts.Service, tokens *token.Service, bearer echo.MiddlewareFunc) {
	enrol := requireEnrolBearer(tokens, svc)
	e.GET("/auth/mfa", func(c echo.Context) error {
		st, err := svc.OwnMFA(ctx(c), actorOf(c))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, st)
	}, noCache, bearer)
	e.POST("/auth/mfa/totp", func(c echo.Context) error {
		if err := decodeJSON(c, &struct{}{}, true); err != nil {
			return err
		}
		en, err := svc.StartTOTP(ctx(c), selfActor(c))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, map[string]string{
			"secret": en.Secret, "otpauth_uri": en.URI, "qr_png": base64.StdEncoding.EncodeToString(en.QRPNG)})
	}, noCache, enrol)
	e.POST("/auth/mfa/totp/confirm", func(c echo.Context) error {
		var body struct {
			Code string `json:"code"`
		}
		if err := decodeJSON(c, &body, false); err != nil {
			return err
		}
		codes, err := svc.ConfirmTOTP(ctx(c), selfActor(c), body.Code)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string][]string{"recovery_codes": codes})
	}, noCache, enrol)
	e.DELETE("/auth/mfa/totp", func(c echo.Context) error {
		pw, err := currentPassword(c)
		if err != nil {
			return err
		}
		if err := svc.RemoveTOTP(ctx(c), actorOf(c), pw); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}, noCache, bearer)
	e.POST("/auth/mfa/recovery-codes", func(c echo.Context) error {
		if err := decodeJSON(c, &struct{}{}, true); err != nil {
			return err
		}
		codes, err := svc.RegenerateRecoveryCodes(ctx(c), actorOf(c))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string][]string{"recovery_codes": codes})
	}, noCache, bearer)
	e.POST("/auth/mfa/webauthn/register/begin", func(c echo.Context) error {
		if err := decodeJSON(c, &struct{}{}, true); err != nil {
			return err
		}
		opts, handle, err := svc.BeginPasskeyRegistration(ctx(c), actorOf(c))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"handle": handle, "options": json.RawMessage(opts)})
	}, noCache, bearer)
	e.POST("/auth/mfa/webauthn/register/finish", func(c echo.Context) error {
		var body struct {
			Handle     string          `json:"handle"`
			Name       string          `json:"name"`
			Credential json.RawMessage `json:"credential"`
		}
		if err := decodeJSON(c, &body, false); err != nil {
			return err
		}
		if body.Handle == "" || len(body.Credential) == 0 || body.Credential[0] != '{' {
			return apierr.ErrInvalidRequest.WithDescription("handle and credential (the PublicKeyCredential as a JSON object) are required.")
		}
		pk, err := svc.FinishPasskeyRegistration(ctx(c), actorOf(c), body.Handle, body.Name, body.Credential)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, pk)
	}, noCache, bearer)
	e.DELETE("/auth/mfa/webauthn/:id", func(c echo.Context) error {
		pw, err := currentPassword(c)
		if err != nil {
			return err
		}
		if err := svc.RemovePasskey(ctx(c), actorOf(c), c.Param("id"), pw); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}, noCache, bearer)
}

// currentPassword reads the {"current_password"} body of a factor's removal.
func currentPassword(c echo.Context) (string, error) {
	var body struct {
		CurrentPassword string `json:"current_password"`
	}
	if err := decodeJSON(c, &body, false); err != nil {
		return "", err
	}
	if body.CurrentPassword == "" {
		return "", apierr.ErrInvalidRequest.WithDescription("current_password is required.")
	}
	return body.CurrentPassword, nil
}

// requireEnrolBearer is RequireBearer for the TOTP enrolment endpoints: a
// user's access token as everywhere, or else an mfa_token whose login must
// enrol a second factor (accounts.MFATokenActor: any other mfa_token is
// 403). A token that is neither is refused as RequireBearer refuses it.
func requireEnrolBearer(tokens *token.Service, svc *accounts.Service) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			raw, ok := bearerToken(c.Request())
			if !ok {
				return apierr.ErrUnauthorized.WithDescription("A bearer access token is required.")
			}
			claims, err := tokens.AuthenticateBearer(ctx(c), raw)
			if err == nil {
				if !claims.IsUser() {
					return apierr.ErrInvalidToken.WithDescription("This endpoint accepts only tokens issued to users.")
				}
				c.Set(claimsKey, claims)
				return next(c)
			}
			if !errors.Is(err, apierr.ErrInvalidToken) {
				return err
			}
			actor, merr := svc.MFATokenActor(ctx(c), raw, accountMeta(c))
			switch {
			case errors.Is(merr, apierr.ErrInvalidToken):
				return err // neither an access token nor a live mfa_token
			case merr != nil:
				return merr
			}
			c.Set(mfaActorKey, actor)
			return next(c)
		}
	}
}

// selfActor is the actor of requireEnrolBearer: the mfa_token's, else the
// access token's.
func selfActor(c echo.Context) accounts.Actor {
	if a, ok := c.Get(mfaActorKey).(accounts.Actor); ok {
		return a
	}
	return actorOf(c)
}
