package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// cookiePaths are the endpoints that read or set the refresh-token cookie
// (the token, revocation and logout endpoints, and the account endpoints
// that start a session: password change and invite acceptance), and so
// answer credentialed CORS to the allowed origins of cookie clients.
var cookiePaths = map[string]bool{"/oauth2/token": true, "/oauth2/revoke": true, "/auth/logout": true,
	"/auth/password/change": true, "/auth/invites/accept": true}

// cors is the one place CORS is answered. On the cookie endpoints an Origin
// that is an exact allowed origin of a cookie client gets that origin with
// credentials (and X-Portcullis-CSRF among the allowed headers); any other
// origin there, and every origin elsewhere, gets what
// PORTCULLIS_CORS_ORIGINS allows (never credentials), or nothing.
func (s *Server) cors() echo.MiddlewareFunc {
	var static echo.MiddlewareFunc
	if len(s.cfg.CORSOrigins) > 0 {
		static = middleware.CORSWithConfig(middleware.CORSConfig{
			AllowOrigins:  s.cfg.CORSOrigins,
			AllowMethods:  []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete},
			AllowHeaders:  []string{echo.HeaderAuthorization, echo.HeaderContentType},
			ExposeHeaders: []string{"Retry-After", echo.HeaderWWWAuthenticate, echo.HeaderXRequestID},
			MaxAge:        600,
		})
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		fallback := next
		if static != nil {
			fallback = static(next)
		}
		return func(c echo.Context) error {
			r := c.Request()
			if !cookiePaths[r.URL.Path] {
				return fallback(c)
			}
			h := c.Response().Header()
			origin := r.Header.Get(echo.HeaderOrigin)
			ok := false
			if origin != "" && s.origins != nil {
				var err error
				if ok, err = s.origins.Allowed(r.Context(), origin); err != nil {
					// Fail closed: no credentialed CORS; the request itself
					// still meets every other check.
					s.log.Warn("CORS: cannot read the allowed origins of cookie clients", "err", err)
				}
			}
			if !ok {
				if static == nil {
					// The answer depends on the Origin (the static CORS
					// middleware says so itself).
					h.Add(echo.HeaderVary, echo.HeaderOrigin)
				}
				return fallback(c)
			}
			h.Add(echo.HeaderVary, echo.HeaderOrigin)
			h.Set(echo.HeaderAccessControlAllowOrigin, origin)
			h.Set(echo.HeaderAccessControlAllowCredentials, "true")
			if r.Method == http.MethodOptions && r.Header.Get(echo.HeaderAccessControlRequestMethod) != "" {
				h.Set(echo.HeaderAccessControlAllowMethods, http.MethodPost)
				h.Set(echo.HeaderAccessControlAllowHeaders, strings.Join([]string{
					rtcookie.CSRFHeader, echo.HeaderContentType, echo.HeaderAuthorization}, ", "))
				h.Set(echo.HeaderAccessControlMaxAge, strconv.Itoa(600))
				return c.NoContent(http.StatusNoContent)
			}
			h.Set(echo.HeaderAccessControlExposeHeaders, strings.Join([]string{
				"Retry-After", echo.HeaderWWWAuthenticate, echo.HeaderXRequestID}, ", "))
			return next(c)
		}
	}
}

// secure reports whether the browser talks HTTPS to us (the rule of every
// cookie, browsersession.HTTPS).
func (s *Server) secure(c echo.Context) bool {
	return s.https.Secure(c.IsTLS(), c.Scheme())
}

// cookieClient returns the client id names and whether it takes its
// refresh token in the cookie; for such a client it first runs
// rtcookie.Guard. The client is not authenticated here (the endpoint does
// that next): an unknown id is a body client, so the endpoint answers as it
// always did.
func (s *Server) cookieClient(c echo.Context, svc *token.Service, id string) (store.Client, bool, error) {
	if id == "" {
		return store.Client{}, false, nil
	}
	cl, err := svc.LookupClient(c.Request().Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Client{}, false, nil
	case err != nil:
		return store.Client{}, false, apierr.ErrTemporarilyUnavailable.WithCause(err)
	case !cl.RefreshByCookie():
		return cl, false, nil
	}
	if err := rtcookie.Guard(c.Request(), cl); err != nil {
		return cl, true, err
	}
	return cl, true, nil
}

// tokenAnswer is where the tokens a request asks for go: to the client it
// names (the zero client when it names none or an unknown one). Every
// request that may be answered with tokens finds it (answerTo) before it
// changes anything, so a cookie client's request that fails Guard is
// refused with nothing rotated, created or changed; writeTokens then
// answers through it.
type tokenAnswer struct {
	client   store.Client
	byCookie bool // client.RefreshByCookie, Guard passed
	secure   bool // the cookie is the HTTPS one (only set for a cookie client)
}

// answerTo returns where the tokens of a request naming the client id go:
// for a cookie client, only after rtcookie.Guard (else 403
// invalid_request).
func (s *Server) answerTo(c echo.Context, svc *token.Service, id string) (tokenAnswer, error) {
	cl, byCookie, err := s.cookieClient(c, svc, id)
	if err != nil {
		return tokenAnswer{}, err
	}
	return tokenAnswer{client: cl, byCookie: byCookie, secure: byCookie && s.secure(c)}, nil
}

// writeTokens is the one rule of every answer carrying tokens (the token
// endpoint, invite acceptance, password change): a refresh token issued to
// a cookie client is set as the cookie and left out of the body (contract:
// "never in the JSON body"); any other client gets the body as it is.
//
// The rule follows the client the tokens were issued to (resp.ClientID).
// When that is not the client the request named (a password change whose
// token's client is gone continues with the first-party client; a request
// naming no client gets the first-party client's tokens), that client is
// found and, if it takes the cookie, Guard runs now: a refusal then comes
// after the session started, but its refresh token never reaches the body.
func (s *Server) writeTokens(c echo.Context, svc *token.Service, a tokenAnswer, resp token.Response) error {
	if resp.RefreshToken != "" && resp.ClientID != a.client.ID {
		var err error
		if a, err = s.answerTo(c, svc, resp.ClientID); err != nil {
			return err
		}
	}
	if a.byCookie && resp.RefreshToken != "" {
		c.SetCookie(rtcookie.Set(resp.RefreshToken, resp.RefreshLifetime, a.secure))
		resp.RefreshToken = ""
	}
	return writeTokenResponse(c, resp)
}

// tokenEndpoint is POST /oauth2/token. For a cookie client (after Guard),
// grant_type=refresh_token without refresh_token takes the cookie's (the
// grant then refuses another client's token without ending its session:
// token.TokenRequest.RefreshFromCookie), and an issued refresh token goes
// into the cookie, never the body (writeTokens).
func (s *Server) tokenEndpoint(svc *token.Service) echo.HandlerFunc {
	return func(c echo.Context) error {
		params, cred, err := s.clientForm(c)
		if err != nil {
			return err
		}
		to, err := s.answerTo(c, svc, cred.ID)
		if err != nil {
			return err
		}
		fromCookie := false
		if to.byCookie && params["grant_type"] == token.GrantRefreshToken && params["refresh_token"] == "" {
			if rt := rtcookie.Read(c.Request(), to.secure); rt != "" {
				params["refresh_token"], fromCookie = rt, true
			}
		}
		req, err := token.ParseTokenRequest(params, cred)
		if err != nil {
			return err
		}
		req.RefreshFromCookie = fromCookie
		resp, err := svc.Exchange(c.Request().Context(), req, meta(c))
		if err != nil {
			return err
		}
		return s.writeTokens(c, svc, to, resp)
	}
}

// revokeEndpoint is POST /oauth2/revoke (RFC 7009). An API key (pcak_…) is
// revoked by value before any client authentication: whoever holds a key
// may kill it. A cookie client (after Guard) may omit token: the cookie's
// refresh token is revoked; either way its answer clears the cookie.
func (s *Server) revokeEndpoint(svc *token.Service) echo.HandlerFunc {
	return func(c echo.Context) error {
		params, err := formParams(c)
		if err != nil {
			return err
		}
		if handled, err := svc.RevokeAPIKey(c.Request().Context(), params["token"], meta(c)); handled {
			if err != nil {
				return err
			}
			return c.NoContent(http.StatusOK)
		}
		cred, err := clientCredentials(c, params)
		if err != nil {
			return err
		}
		_, byCookie, err := s.cookieClient(c, svc, cred.ID)
		if err != nil {
			return err
		}
		ctx, secure := c.Request().Context(), s.secure(c)
		tok := params["token"]
		if byCookie && tok == "" {
			tok = rtcookie.Read(c.Request(), secure)
			if tok == "" {
				// Nothing to revoke (RFC 7009 §2.2 answers 200 for that);
				// the client must still be who it says.
				if _, err := svc.AuthenticateClient(ctx, cred); err != nil {
					return err
				}
				c.SetCookie(rtcookie.Clear(secure))
				return c.NoContent(http.StatusOK)
			}
		}
		if tok == "" {
			return apierr.ErrInvalidRequest.WithDescription("The token parameter is missing.")
		}
		if err := svc.Revoke(ctx, cred, tok, meta(c)); err != nil {
			return err
		}
		if byCookie {
			c.SetCookie(rtcookie.Clear(secure))
		}
		return c.NoContent(http.StatusOK)
	}
}

// logoutEndpoint is POST /auth/logout: it ends the bearer token's session;
// for a cookie client (after Guard) its answer clears the cookie.
func (s *Server) logoutEndpoint(svc *token.Service) echo.HandlerFunc {
	return func(c echo.Context) error {
		claims := Claims(c)
		_, byCookie, err := s.cookieClient(c, svc, claims.ClientID)
		if err != nil {
			return err
		}
		if err := svc.Logout(c.Request().Context(), claims, meta(c)); err != nil {
			return err
		}
		if byCookie {
			c.SetCookie(rtcookie.Clear(s.secure(c)))
		}
		return c.NoContent(http.StatusNoContent)
	}
}
