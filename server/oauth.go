package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/authorize"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// claimsKey is where the bearer middleware leaves the verified claims.
const claimsKey = "portcullis.claims"

// MountOAuth mounts the token, revocation, introspection, userinfo and logout endpoints.
func (s *Server) MountOAuth(svc *token.Service) {
	e := s.echo
	e.POST("/oauth2/token", s.tokenEndpoint(svc), noStore)
	e.POST("/oauth2/revoke", s.revokeEndpoint(svc), noStore)
	e.POST("/oauth2/introspect", func(c echo.Context) error {
		cred, tok, err := s.tokenForm(c)
		if err != nil {
			return err
		}
		out, err := svc.Introspect(c.Request().Context(), cred, tok)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, out)
	}, noStore)
	bearer := RequireBearer(svc)
	userinfo := func(c echo.Context) error {
		info, err := svc.UserInfo(c.Request().Context(), Claims(c))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, info)
	}
	userinfoBearer := RequireUserInfoBearer(svc)
	e.GET("/userinfo", userinfo, noStore, userinfoBearer)
	e.POST("/userinfo", userinfo, noStore, userinfoBearer)
	e.POST("/auth/logout", s.logoutEndpoint(svc), noStore, bearer)
}

// writeTokenResponse answers 200 with resp (RFC 6749 §5.1), encoded by
// token.Response.AppendJSON: the bytes echo's c.JSON wrote (without its
// ?pretty indentation), without reflection.
func writeTokenResponse(c echo.Context, resp token.Response) error {
	buf := getScratch()
	defer putScratch(buf) // c.Blob has written the answer out when it returns
	buf.Write(resp.AppendJSON(buf.AvailableBuffer()))
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, buf.Bytes())
}

// scratchBuffers keeps the buffers a request's form body is read into
// (readPostForm) and its answer encoded in (writeTokenResponse): nothing
// in them outlives the call that took one.
var scratchBuffers = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 2048)) }}

// getScratch takes an empty buffer from scratchBuffers.
func getScratch() *bytes.Buffer { return scratchBuffers.Get().(*bytes.Buffer) }

// putScratch empties buf and returns it to scratchBuffers, unless an
// outsized body or answer grew it.
func putScratch(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		buf.Reset()
		scratchBuffers.Put(buf)
	}
}

// noStore marks every answer of an endpoint uncacheable (RFC 6749 §5.1).
func noStore(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h["Cache-Control"] = headerNoStore
		h["Pragma"] = headerNoCache
		return next(c)
	}
}

// Pusher validates and keeps an authorization request pushed by an
// authenticated client from address ip (pages.AuthorizeFlow.Push over
// authorize.Push, counting a public client's pushes per address).
type Pusher interface {
	Push(ctx context.Context, form url.Values, client store.Client, ip string) (authorize.Pushed, error)
}

// MountPAR mounts POST /oauth2/par (RFC 9126): the client authenticates
// exactly as at the token endpoint (a public client with client_id alone),
// the form body is the authorization request, and the answer is 201 with
// the request_uri or a JSON error (RFC 9126 §2.3).
func (s *Server) MountPAR(svc *token.Service, par Pusher) {
	s.echo.POST("/oauth2/par", func(c echo.Context) error {
		_, cred, err := s.clientForm(c)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		client, err := svc.AuthenticateClient(ctx, cred)
		if err != nil {
			return err
		}
		out, err := par.Push(ctx, c.Request().PostForm, client, c.RealIP())
		if err != nil {
			return err
		}
		return c.JSON(http.StatusCreated, out)
	}, noStore)
}

// tokenForm is clientForm for the endpoints that take a token (RFC 7009, RFC 7662).
func (s *Server) tokenForm(c echo.Context) (token.ClientCredentials, string, error) {
	params, cred, err := s.clientForm(c)
	if err != nil {
		return cred, "", err
	}
	tok := params["token"]
	if tok == "" {
		return cred, "", apierr.ErrInvalidRequest.WithDescription("The token parameter is missing.")
	}
	return cred, tok, nil
}

// clientForm reads a form-encoded POST body once, rejecting repeated
// parameters, and extracts the client's credentials.
func (s *Server) clientForm(c echo.Context) (map[string]string, token.ClientCredentials, error) {
	params, err := formParams(c)
	if err != nil {
		return nil, token.ClientCredentials{}, err
	}
	cred, err := clientCredentials(c, params)
	return params, cred, err
}

// formParams reads a form-encoded POST body once, rejecting repeated
// parameters (RFC 6749 §3.1), and returns the single value of each. The
// parsed body is left in r.PostForm, as r.ParseForm leaves it (PAR reads
// it); r.Form is left to be built by whoever asks for it.
func formParams(c echo.Context) (map[string]string, error) {
	r := c.Request()
	if !isFormBody(r.Header.Get("Content-Type")) {
		return nil, apierr.ErrInvalidRequest.WithDescription("The body must be application/x-www-form-urlencoded.")
	}
	if err := readPostForm(r); err != nil {
		switch {
		case bodyTooLarge(err):
			return nil, apierr.ErrTooLarge
		case errors.Is(err, errMalformedForm):
			return nil, apierr.ErrInvalidRequest.WithDescription("The form body is malformed.")
		}
		return nil, apierr.ErrInvalidRequest.WithDescription("The form body could not be read.").WithCause(err)
	}
	return token.ParseForm(r.PostForm)
}

// errMalformedForm is a form body that is not application/x-www-form-urlencoded.
var errMalformedForm = errors.New("malformed form body")

// readPostForm parses r's form body into r.PostForm once, as r.ParseForm
// would without also building r.Form (the body limit middleware bounds
// the read). A body that does not parse is errMalformedForm. The body is
// read into a pooled buffer; the parsed values share one copy of it.
func readPostForm(r *http.Request) error {
	if r.PostForm != nil {
		return nil
	}
	buf := getScratch()
	defer putScratch(buf) // ParseQuery's values are in a copy of the body
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return fmt.Errorf("read the form body: %w", err)
	}
	form, err := url.ParseQuery(buf.String())
	if err != nil {
		return fmt.Errorf("%w: %v", errMalformedForm, err)
	}
	r.PostForm = form
	return nil
}

// bodyTooLarge reports whether reading a request body failed because it
// is over a limit: the body limit middleware's or http.MaxBytesReader's.
func bodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	var he *echo.HTTPError
	return errors.As(err, &mbe) || errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge
}

// isFormBody reports whether contentType is a form body: the media type
// exactly as every client sends it, or anything mime.ParseMediaType reads
// as it (other case, parameters, spaces).
func isFormBody(contentType string) bool {
	const form = "application/x-www-form-urlencoded"
	if contentType == form {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == form
}

// clientCredentials extracts the client's credentials from HTTP Basic or
// the form's client_id and client_secret.
func clientCredentials(c echo.Context, params map[string]string) (token.ClientCredentials, error) {
	r := c.Request()
	user, pass, hasBasic := r.BasicAuth()
	if !hasBasic && r.Header.Get("Authorization") != "" {
		return token.ClientCredentials{}, apierr.ErrInvalidClient.WithDescription("Unsupported Authorization scheme; use HTTP Basic.")
	}
	return token.ClientFromRequest(user, pass, hasBasic, params)
}

// meta describes the request for audit events and throttling, its IP
// address and User-Agent as every record keeps them (store.CleanRequestMeta).
func meta(c echo.Context) token.RequestMeta {
	ip, ua := store.CleanRequestMeta(c.RealIP(), c.Request().UserAgent())
	return token.RequestMeta{IP: ip, UserAgent: ua}
}

// RequireBearer authenticates an RFC 6750 bearer access token of a user and
// leaves its claims in the context. No token: 401 with a bare
// WWW-Authenticate: Bearer; a bad one: 401 invalid_token.
func RequireBearer(svc *token.Service) echo.MiddlewareFunc {
	return requireUserBearer(svc.AuthenticateBearer, false)
}

// RequireUserInfoBearer is RequireBearer for /userinfo, which also takes the
// token as access_token in a form-encoded POST body (RFC 6750 §2.2, OIDC
// Core §5.3.1). A request that uses both ways is 400 invalid_request (RFC
// 6750 §2: a client MUST NOT use more than one).
func RequireUserInfoBearer(svc *token.Service) echo.MiddlewareFunc {
	return requireUserBearer(svc.AuthenticateBearer, true)
}

// RequireAdminBearer is RequireBearer for /admin: the token's aud must also
// hold the issuer (token.Service.AuthenticateAdmin), else 401 invalid_token.
func RequireAdminBearer(svc *token.Service) echo.MiddlewareFunc {
	return requireUserBearer(svc.AuthenticateAdmin, false)
}

// requireUserBearer authenticates a user's bearer token with authenticate;
// with inBody, a form-encoded POST may carry it as access_token instead.
func requireUserBearer(authenticate func(ctx context.Context, raw string) (token.AccessClaims, error), inBody bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			raw, ok := bearerToken(c.Request())
			if inBody {
				var err error
				if raw, ok, err = bodyBearerToken(c.Request(), raw, ok); err != nil {
					return err
				}
			}
			if !ok {
				return apierr.ErrUnauthorized.
					WithDescription("A bearer access token is required.")
			}
			claims, err := authenticate(c.Request().Context(), raw)
			if err != nil {
				return err
			}
			if !claims.IsUser() {
				return apierr.ErrInvalidToken.
					WithDescription("This endpoint accepts only tokens issued to users.")
			}
			c.Set(claimsKey, claims)
			return next(c)
		}
	}
}

// Claims returns the verified claims left by RequireBearer.
func Claims(c echo.Context) token.AccessClaims {
	claims, _ := c.Get(claimsKey).(token.AccessClaims)
	return claims
}

// bodyBearerToken reads access_token from a form-encoded POST body (RFC
// 6750 §2.2) when the request carries one; header and ok are what the
// Authorization header gave.
func bodyBearerToken(r *http.Request, header string, ok bool) (string, bool, error) {
	if r.Method != http.MethodPost {
		return header, ok, nil
	}
	if !isFormBody(r.Header.Get("Content-Type")) {
		return header, ok, nil
	}
	if err := readPostForm(r); err != nil {
		return "", false, apierr.ErrInvalidRequest.Challenging(apierr.Bearer).WithDescription("The form body is malformed.")
	}
	vs := r.PostForm["access_token"]
	switch {
	case len(vs) == 0:
		return header, ok, nil
	case ok || len(vs) > 1:
		return "", false, apierr.ErrInvalidRequest.Challenging(apierr.Bearer).
			WithDescription("Send the access token once: in the Authorization header or in the body, not both.")
	}
	tok := strings.TrimSpace(vs[0])
	return tok, tok != "", nil
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
