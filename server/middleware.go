package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/config"
)

// requestID gives every request an id (a well-formed incoming X-Request-Id is kept).
func requestID() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			id := c.Request().Header.Get(echo.HeaderXRequestID)
			if !validRequestID(id) {
				var b [12]byte
				_, _ = rand.Read(b[:])
				id = hex.EncodeToString(b[:])
			}
			c.Response().Header().Set(echo.HeaderXRequestID, id)
			return next(c)
		}
	}
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
			return false
		}
	}
	return true
}

// recoverer turns a panic into a 500 that reveals nothing, logging the
// stack. It returns the panic as an error (apierr.ErrServer) to accessLog,
// which is outside it, so the 500 is answered, counted and logged as any
// other error is.
func (s *Server) recoverer() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					if r == http.ErrAbortHandler {
						panic(r)
					}
					s.log.Error("panic in handler", "panic", fmt.Sprint(r), "path", c.Path(),
						"request_id", c.Response().Header().Get(echo.HeaderXRequestID), "stack", string(debug.Stack()))
					err = apierr.ErrServer.WithCause(fmt.Errorf("panic: %v", r))
				}
			}()
			return next(c)
		}
	}
}

// accessLog writes one structured line per request and counts it in the
// request metric. Its path is the route template (/admin/users/:id), or
// "unmatched" when no route matched, as in the metric: never the path the
// client sent, which may hold a secret (a reset link mangled into a path,
// an API key given where its id belongs). The query string is logged as
// RedactQuery leaves it; bodies are never logged.
func (s *Server) accessLog() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			req := c.Request()
			status := c.Response().Status
			route := c.Path()
			if route == "" || status == http.StatusNotFound && c.Path() == "/*" {
				route = "unmatched"
			}
			s.metrics.ObserveRequest(route, req.Method, status, time.Since(start))
			if req.URL.Path == "/healthz" || req.URL.Path == "/readyz" || req.URL.Path == "/metrics" {
				return nil
			}
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelError
			}
			if !s.log.Enabled(req.Context(), level) {
				return nil // nothing to build: redacting the query costs a parse
			}
			s.log.LogAttrs(req.Context(), level, "request",
				slog.String("method", req.Method),
				slog.String("path", route),
				slog.String("query", RedactQuery(req.URL.RawQuery)),
				slog.Int("status", status),
				slog.Duration("duration", time.Since(start)),
				slog.String("ip", c.RealIP()),
				slog.String("request_id", c.Response().Header().Get(echo.HeaderXRequestID)),
			)
			return nil
		}
	}
}

// publicParams are the query parameters the access log keeps, name and
// value: they name what was asked (a client, a flow, a page of a list) and
// carry no credential and no personal data. Every other parameter is only
// counted (RedactQuery), so a parameter that carries a secret is hidden
// whether or not anyone thought of it: a token, a code, a password or client secret, an API key or an
// upstream id token sent as subject_token, an mfa_token, a one-time or
// recovery code, a request object or a pending sign-in's id (request), a
// hint naming a person, the state and nonce that bind a response to its
// browser, a search for people (q) — and any name a client invents.
var publicParams = map[string]bool{
	"client_id": true, "response_type": true, "response_mode": true, "scope": true, "redirect_uri": true,
	"post_logout_redirect_uri": true, "prompt": true, "max_age": true, "display": true, "ui_locales": true,
	"acr_values": true, "code_challenge_method": true, "grant_type": true, "token_type_hint": true,
	"subject_token_type": true, "requested_token_type": true, "resource": true, "audience": true,
	"error": true, "error_description": true, "error_uri": true, "iss": true,
	"cursor": true, "limit": true, "since": true, "until": true, "action": true, "outcome": true,
	"actor_id": true, "target_id": true, "kind": true, "status": true, "tenant": true, "provider": true,
}

// RedactQuery is what the access log keeps of the query string raw: the
// public parameters (publicParams), name and value, sorted by name, then
// the number of all the others as redacted_params=N, without their names
// or values: a secret may be sent as either (a reset link whose "=" a mail
// scanner re-encoded reads as a name with no value, and so does an API key
// pasted as the whole query). Unparseable queries are dropped whole.
func RedactQuery(raw string) string {
	if raw == "" {
		return ""
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return "[unparseable query redacted]"
	}
	hidden := 0
	for k, vs := range vals {
		if !publicParams[strings.ToLower(k)] {
			hidden += len(vs)
			delete(vals, k)
		}
	}
	kept := vals.Encode()
	if hidden == 0 {
		return kept
	}
	if kept != "" {
		kept += "&"
	}
	return kept + "redacted_params=" + strconv.Itoa(hidden)
}

// Header values every answer carries, shared by all of them (h.Set would
// allocate each one per answer). Keys are canonical; a value slice is never
// written in place: Header.Set replaces it, Header.Add appends to a full
// slice (a copy), and net/http's Header.Clone copies.
var (
	headerNosniff    = []string{"nosniff"}
	headerDeny       = []string{"DENY"}
	headerNoReferrer = []string{"no-referrer"}
	headerAPICSP     = []string{"default-src 'none'; frame-ancestors 'none'"}
	headerHSTS       = []string{"max-age=63072000; includeSubDomains"}
	headerNoStore    = []string{"no-store"}
	headerNoCache    = []string{"no-cache"}
)

// securityHeaders sets headers that make API answers inert in a browser.
// Pages set a fuller Content-Security-Policy of their own.
func securityHeaders(tls bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			h["X-Content-Type-Options"] = headerNosniff
			h["X-Frame-Options"] = headerDeny
			h["Referrer-Policy"] = headerNoReferrer
			h["Content-Security-Policy"] = headerAPICSP
			if tls {
				h["Strict-Transport-Security"] = headerHSTS
			}
			return next(c)
		}
	}
}

// ownQuery are the pages that check their query themselves and answer a
// malformed one with the page it calls for: the authorization endpoint
// (server/authorize, step 1: the same refusals, as a page, or a redirect
// to the client) and the sign-in steps it leads to.
var ownQuery = map[string]bool{"/oauth2/authorize": true, "/login": true, "/consent": true}

// cleanQuery refuses query strings no endpoint can use: unparseable, with
// invalid UTF-8 or NUL bytes (which PostgreSQL refuses in text), so hostile
// input gets a 400 here instead of reaching a handler or the store. refuse
// answers the refusal: as JSON on the API, with an HTML page on the browser
// pages (Server.refuse), never a JSON body to a person's browser.
func cleanQuery(refuse func(c echo.Context, err error) error) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			raw := c.Request().URL.RawQuery
			if raw == "" || ownQuery[c.Path()] {
				return next(c)
			}
			if err := QueryRefusal(raw); err != nil {
				return refuse(c, err)
			}
			return next(c)
		}
	}
}

// QueryRefusal is the 400 invalid_request the server answers for the query
// string raw before the endpoint sees it (cleanQuery), or nil: raw cannot be
// parsed, or a parameter is not UTF-8 text or holds a NUL byte. The test
// client's OpenAPI check asks it which requests may get that answer.
func QueryRefusal(raw string) *apierr.Error {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return apierr.ErrInvalidRequest.WithDescription("The query string is malformed.")
	}
	for _, vs := range vals {
		for _, v := range vs {
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				return apierr.ErrInvalidRequest.WithDescription("A query parameter is not valid UTF-8 text.")
			}
		}
	}
	return nil
}

// composed is mws, outermost first, as one middleware built once. Echo
// applies the middleware of Use to the route's handler on every request,
// each allocating its closure; this chain is built at start around a last
// step that calls the handler the router found for the request
// (Context.Handler, what Echo passes as next), so a request allocates
// nothing for it. It must be the only middleware given to Use: it does not
// call the next one Echo passes (that call is the closure it saves), so
// middleware added by a later Use would never run (TestOneUse).
func composed(mws ...echo.MiddlewareFunc) echo.MiddlewareFunc {
	h := func(c echo.Context) error { return c.Handler()(c) }
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return func(echo.HandlerFunc) echo.HandlerFunc { return h }
}

// requestTimeout bounds the time a handler may spend on a request, except
// on the routes fromMemory names (their handlers wait on nothing: a
// deadline, its timer and the request's copy would be all cost). The
// request goes back to its own context when the handler returns: the
// bounded one is cancelled then, and the error handler, which runs after,
// must see a cancelled context only when the client went away
// (apierr.ClientGone).
func requestTimeout(d time.Duration, fromMemory func(route string) bool) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if fromMemory(c.Path()) {
				return next(c)
			}
			req := c.Request()
			ctx, cancel := context.WithTimeout(req.Context(), d)
			defer cancel()
			c.SetRequest(req.WithContext(ctx))
			defer c.SetRequest(req)
			return next(c)
		}
	}
}

// clientIPExtractor believes X-Forwarded-For only from trusted proxies.
func clientIPExtractor(cfg config.Config) echo.IPExtractor {
	if len(cfg.TrustedProxies) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range cfg.TrustedProxies {
		_, n, err := net.ParseCIDR(p.String())
		if err == nil {
			opts = append(opts, echo.TrustIPRange(n))
		}
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
