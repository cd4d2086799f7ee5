package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/keys/verify/apikey"
	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/token"
)

// maxJSONBody bounds the JSON body of every /auth and /admin request.
const maxJSONBody = 16 << 10

// MountAccounts mounts the self-service account endpoints under /auth:
// invite acceptance, password forgot/reset/change, email verification and
// (answering 403 registration_disabled unless it is on) registration, the
// caller's own browser sessions and remembered consents, and their second
// factors (/auth/mfa…). Invite acceptance and password change answer their
// tokens as the token endpoint does (answerTo before the service, then
// writeTokens): a cookie client's request meets rtcookie.Guard first and its
// refresh token comes only as the cookie.
func (s *Server) MountAccounts(svc *accounts.Service, tokens *token.Service) {
	e := s.echo
	bearer := RequireBearer(tokens)
	e.POST("/auth/invites/accept", func(c echo.Context) error {
		var body struct {
			Token    string  `json:"token"`
			Password string  `json:"password"`
			Name     string  `json:"name"`
			ClientID string  `json:"client_id"`
			Scope    *string `json:"scope"`
		}
		if err := decodeJSON(c, &body, false); err != nil {
			return err
		}
		if body.Token == "" || body.Password == "" {
			return apierr.ErrInvalidRequest.WithDescription("token and password are required.")
		}
		cred, err := jsonClient(c, body.ClientID)
		if err != nil {
			return err
		}
		scope, err := parseScope(body.Scope)
		if err != nil {
			return err
		}
		to, err := s.answerTo(c, tokens, cred.ID)
		if err != nil {
			return err
		}
		resp, err := svc.AcceptInvite(c.Request().Context(), accountMeta(c), accounts.AcceptInviteRequest{
			Token: body.Token, Password: body.Password, Name: body.Name, Client: cred, Scope: scope})
		if err != nil {
			return err
		}
		return s.writeTokens(c, tokens, to, resp)
	}, noCache)
	e.POST("/auth/password/forgot", func(c echo.Context) error {
		var body struct {
			Email string `json:"email"`
		}
		if err := decodeJSON(c, &body, false); err != nil {
			return err
		}
		if err := svc.ForgotPassword(c.Request().Context(), accountMeta(c), body.Email); err != nil {
			return err
		}
		return c.JSON(http.StatusAccepted, map[string]string{
			"status":  "accepted",
			"message": "If an account exists for this address, a link to reset its password has been sent to it.",
		})
	}, noCache)
	e.POST("/auth/password/reset", func(c echo.Context) error {
		var body struct {
			Token       string `json:"token"`
			NewPassword string `json:"new_password"`
		}
		if err := decodeJSON(c, &body, false); err != nil {
			return err
		}
		if body.Token == "" || body.NewPassword == "" {
			return apierr.ErrInvalidRequest.WithDescription("token and new_password are required.")
		}
		if err := svc.ResetPassword(c.Request().Context(), accountMeta(c), body.Token, body.NewPassword); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	}, noCache)
	e.POST("/auth/password/change", func(c echo.Context) error {
		var body struct {
			CurrentPassword string  `json:"current_password"`
			NewPassword     string  `json:"new_password"`
			Scope           *string `json:"scope"`
		}
		if err := decodeJSON(c, &body, false); err != nil {
			return err
		}
		scope, err := parseScope(body.Scope)
		if err != nil {
			return err
		}
		to, err := s.answerTo(c, tokens, Claims(c).ClientID)
		if err != nil {
			return err
		}
		resp, err := svc.ChangePassword(c.Request().Context(), actorOf(c), accounts.ChangePasswordRequest{
			CurrentPassword: body.CurrentPassword, NewPassword: body.NewPassword, Scope: scope})
		if err != nil {
			return err
		}
		return s.writeTokens(c, tokens, to, resp)
	}, noCache, bearer)
	e.POST("/auth/email/verify", func(c echo.Context) error {
		var body struct {
			Token string `json:"token"`
		}
		if err := decodeJSON(c, &body, false); err != nil {
			return err
		}
		if body.Token == "" {
			return apierr.ErrInvalidRequest.WithDescription("token is required.")
		}
		if _, err := svc.VerifyEmail(c.Request().Context(), accountMeta(c), body.Token); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]bool{"email_verified": true})
	}, noCache)
	e.POST("/auth/email/verify/resend", func(c echo.Context) error {
		if err := decodeJSON(c, &struct{}{}, true); err != nil {
			return err
		}
		if err := svc.ResendVerification(c.Request().Context(), actorOf(c)); err != nil {
			return err
		}
		return c.JSON(http.StatusAccepted, map[string]string{"status": "sent"})
	}, noCache, bearer)
	e.POST("/auth/register", func(c echo.Context) error {
		var body struct {
			Email    string `json:"email"`
			Password string `json:"password"`
			Name     string `json:"name"`
		}
		if !svc.Config().PublicRegistration {
			return apierr.ErrRegistrationDisabled
		}
		if err := decodeJSON(c, &body, false); err != nil {
			return err
		}
		u, err := svc.Register(c.Request().Context(), accountMeta(c), accounts.RegisterRequest{
			Email: body.Email, Password: body.Password, Name: body.Name})
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, u)
	}, noCache)
	mountSessionViews(e, svc, bearer)
	mountMFA(e, svc, tokens, bearer)
	mountOwnAPIKeys(e, svc, bearer)
}

// noCache marks an answer as never to be cached (RFC 6749 §5.1; the
// account and admin answers hold tokens or personal data).
func noCache(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		return next(c)
	}
}

// accountMeta describes an unauthenticated request.
func accountMeta(c echo.Context) accounts.Meta {
	m := meta(c)
	return accounts.Meta{IP: m.IP, UserAgent: m.UserAgent}
}

// actorOf is the user of the verified bearer token, with the request's
// metadata, the scope the token was granted, its claims (re-read for
// revocation after a write that outlives its session) and, for a token
// exchanged from an API key, the key's id.
func actorOf(c echo.Context) accounts.Actor {
	claims := Claims(c)
	m := meta(c)
	keyID, _ := apikey.KeyIDOfSession(claims.SID)
	return accounts.Actor{ID: claims.Subject, APIKey: keyID, Scope: claims.Scopes(), Audience: claims.Audience, Bearer: &claims,
		Meta: accounts.Meta{IP: m.IP, UserAgent: m.UserAgent, ClientID: claims.ClientID, Tenant: claims.Tenant}}
}

// jsonClient returns the client credentials of a JSON request that may name
// the client issuing its tokens: client_id in the body, with HTTP Basic
// credentials for a confidential client (form-encoded, RFC 6749 §2.3.1).
// Neither means the built-in first-party client (the zero value).
func jsonClient(c echo.Context, bodyClientID string) (token.ClientCredentials, error) {
	r := c.Request()
	user, pass, hasBasic := r.BasicAuth()
	if !hasBasic && r.Header.Get("Authorization") != "" {
		return token.ClientCredentials{}, apierr.ErrInvalidClient.WithDescription("Unsupported Authorization scheme; use HTTP Basic.")
	}
	if !hasBasic && bodyClientID == "" {
		return token.ClientCredentials{}, nil
	}
	return token.ClientFromRequest(user, pass, hasBasic, map[string]string{"client_id": bodyClientID})
}

// parseScope parses an optional scope string (RFC 6749 §3.3).
func parseScope(raw *string) ([]string, error) {
	if raw == nil {
		return nil, nil
	}
	return token.ParseScope(*raw)
}

// decodeJSON reads a JSON object body into v, the one way every /auth and
// /admin handler reads a body: Content-Type application/json, at most
// maxJSONBody bytes (413 beyond), no unknown fields, nothing after the
// object. Every other failure is 400 invalid_request saying what is wrong;
// never a 5xx. When optional, an empty body (with or without a content type)
// leaves v as it is.
func decodeJSON(c echo.Context, v any, optional bool) error {
	r := c.Request()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxJSONBody+1))
	if err != nil {
		if bodyTooLarge(err) {
			return apierr.ErrTooLarge
		}
		return apierr.ErrInvalidRequest.WithDescription("The request body could not be read.").WithCause(err)
	}
	if len(body) > maxJSONBody {
		return apierr.ErrTooLarge.WithDescription("The request body is larger than %d bytes.", maxJSONBody)
	}
	if optional && len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return apierr.ErrUnsupportedMediaType.WithDescription("The body must be JSON with Content-Type: application/json.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apierr.ErrInvalidRequest.WithDescription("The body holds more than one JSON value.")
	}
	if !bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		return apierr.ErrInvalidRequest.WithDescription("The body must be a JSON object.")
	}
	return nil
}

// jsonError explains a decoding failure to a person.
func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	bad := apierr.ErrInvalidRequest
	switch {
	case errors.Is(err, io.EOF):
		return bad.WithDescription("A JSON body is required.")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad.WithDescription("The JSON body ends too early.")
	case errors.As(err, &se):
		return bad.WithDescription("The body is not valid JSON (at byte %d).", se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return bad.WithDescription("The body must be a JSON object.")
		}
		return bad.WithDescription("The field %q must be %s.", safeField(te.Field), jsonKind(te.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return bad.WithDescription("The field %q is not accepted here.", safeField(name))
	}
	return bad.WithDescription("The JSON body is malformed.").WithCause(err)
}

// safeField makes a field name safe to echo in a description.
func safeField(k string) string {
	if len(k) > 64 || !utf8.ValidString(k) {
		return "(unnamed)"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, k)
}

// jsonKind names the JSON type a Go type expects.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "of another type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "of another type"
}
