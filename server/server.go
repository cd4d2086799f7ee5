// Package server is the HTTP face of Portcullis: the Echo application, its
// middleware and thin handlers that bind a request, call the protocol or
// account logic, and render the answer. It is the only package that knows
// Echo. Protocol rules live in plain Go packages (server/token, policy, keys).
//
// Handlers never log secrets: request logs carry the path with token query
// parameters redacted, and errors are rendered by one HTTPErrorHandler that
// hides the cause of every 5xx.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/browsersession"
	"github.com/portcullis-auth/portcullis/server/config"
	"github.com/portcullis-auth/portcullis/server/metrics"
	"github.com/portcullis-auth/portcullis/server/rtcookie"
	"github.com/portcullis-auth/portcullis/store/rawconn"
)

// Check is a named readiness probe (the database, the token state).
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Server is a configured Portcullis HTTP server.
type Server struct {
	echo    *echo.Echo
	cfg     config.Config
	log     *slog.Logger
	checks  []Check
	metrics *metrics.Metrics
	origins *rtcookie.Origins
	https   browsersession.HTTPS
	// fromMemory are the route templates whose handlers answer from
	// memory and wait on nothing (JWKS, discovery): the request deadline,
	// which bounds waiting on the stores, is not set up for them. Written
	// while routes are mounted, before serving; read-only after.
	fromMemory map[string]bool
	// pages are the route templates of the browser pages (MarkPages), and
	// refusePage answers a refusal of theirs with an HTML page
	// (RefusePagesWith). Written while routes are mounted, before serving;
	// read-only after.
	pages      map[string]bool
	refusePage func(c echo.Context, err error) error
}

// Options are the parts the server is built from.
type Options struct {
	Config config.Config
	Logger *slog.Logger
	// Checks run on GET /readyz; any failure answers 503.
	Checks []Check
	// Metrics, when set, observes every request and is served on GET
	// /metrics, on this server unless Config.MetricsAddr names a separate
	// listener (see ServeMetrics).
	Metrics *metrics.Metrics
	// Origins, when set, are the allowed origins of the cookie clients,
	// which get credentialed CORS on the refresh-token cookie's endpoints.
	Origins *rtcookie.Origins
}

// New builds the Echo application with middleware and the health endpoints.
// Feature handlers are mounted with the Mount… methods.
func New(opts Options) *Server {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	s := &Server{echo: e, cfg: opts.Config, log: opts.Logger, checks: opts.Checks, metrics: opts.Metrics,
		origins: opts.Origins, https: browsersession.HTTPSFor(opts.Config.TLSCert != "", opts.Config.PublicURL),
		fromMemory: map[string]bool{}, pages: map[string]bool{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	e.IPExtractor = clientIPExtractor(opts.Config)
	e.HTTPErrorHandler = s.handleError
	e.OnAddRouteHandler = answerHead(e)
	// The recoverer is inside the access log: a panic it turns into an
	// error is answered, counted and logged as every other error is.
	chain := []echo.MiddlewareFunc{requestID(), s.accessLog(), s.recoverer(), securityHeaders(opts.Config.TLSCert != ""),
		cleanQuery(s.refuse),
		middleware.BodyLimit(strconv.FormatInt(bodyLimitOrDefault(opts.Config.BodyLimitBytes), 10) + "B")}
	if opts.Config.RequestTimeout > 0 {
		chain = append(chain, requestTimeout(opts.Config.RequestTimeout, func(route string) bool { return s.fromMemory[route] }))
	}
	e.Use(composed(append(chain, s.cors())...)) // the only Use: see composed
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	if opts.Metrics != nil && opts.Config.MetricsAddr == "" {
		e.GET("/metrics", echo.WrapHandler(opts.Metrics.Handler()))
	}
	return s
}

// answerHead makes every GET route of e answer HEAD too, through the same
// handler and route middleware (RFC 9110 §9.1: a server supports GET and
// HEAD; §9.3.2: the same status and header fields, no content). Echo routes
// HEAD to nothing by itself; net/http drops what the handler writes for a
// HEAD request and keeps the Content-Length it measured.
func answerHead(e *echo.Echo) func(host string, r echo.Route, h echo.HandlerFunc, mws []echo.MiddlewareFunc) {
	return func(host string, r echo.Route, h echo.HandlerFunc, mws []echo.MiddlewareFunc) {
		if r.Method == http.MethodGet && host == "" {
			e.Add(http.MethodHead, r.Path, h, mws...)
		}
	}
}

// MarkPages runs mount, which registers the browser pages on the server's
// Echo, and records every route it added as a page: the server answers a
// refusal of a page's request before its handler (a malformed query, see
// cleanQuery) with RefusePagesWith's HTML page. Call it while wiring,
// before serving.
func (s *Server) MarkPages(mount func(e *echo.Echo) error) error {
	before := map[string]bool{}
	for _, r := range s.echo.Routes() {
		before[r.Method+" "+r.Path] = true
	}
	if err := mount(s.echo); err != nil {
		return err
	}
	for _, r := range s.echo.Routes() {
		if !before[r.Method+" "+r.Path] {
			s.pages[r.Path] = true
		}
	}
	return nil
}

// RefusePagesWith makes refuse the answer to a refusal of a browser page's
// request that the server makes before the page's handler (MarkPages): the
// pages' HTML error page, with their headers. Call it while wiring, before
// serving.
func (s *Server) RefusePagesWith(refuse func(c echo.Context, err error) error) { s.refusePage = refuse }

// refuse answers err, a refusal made before the route's handler: with the
// pages' HTML page on a browser page, else as the JSON error every API
// refusal is (handleError).
func (s *Server) refuse(c echo.Context, err error) error {
	if s.isPage(c) {
		return s.refusePage(c, err)
	}
	return err
}

// isPage reports whether the request is a browser page's (MarkPages) and
// the pages answer the server's refusals (RefusePagesWith).
func (s *Server) isPage(c echo.Context) bool {
	return s.refusePage != nil && s.pages[c.Path()]
}

// ServeMetrics serves GET /metrics (and nothing else) on ln, for
// PORTCULLIS_METRICS_ADDR, until ctx is cancelled; then it shuts down
// gracefully within the shutdown timeout.
func (s *Server) ServeMetrics(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics.Handler())
	}
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s.serveUntilDone(ctx, hs, ln, nil, "metrics listener")
}

// serveUntilDone serves hs on ln until ctx is cancelled or serving fails,
// then shuts down gracefully: in-flight requests finish within the shutdown
// timeout. ready, when not nil, receives the bound address once serving.
func (s *Server) serveUntilDone(ctx context.Context, hs *http.Server, ln net.Listener, ready func(net.Addr), what string) error {
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", what, err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down: finishing in-flight requests", "listener", what, "timeout", s.cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown of the %s: %w", what, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", what, err)
	}
	return nil
}

// Echo exposes the application for mounting routes and for tests.
func (s *Server) Echo() *echo.Echo { return s.echo }

// Handler is the http.Handler of the application.
func (s *Server) Handler() http.Handler { return s.echo }

func bodyLimitOrDefault(n int64) int64 {
	if n <= 0 {
		return 64 << 10
	}
	return n
}

// Serve listens on the configured address until ctx is cancelled, then shuts
// down gracefully: in-flight requests finish within the shutdown timeout.
// ready, when not nil, receives the bound address once listening.
func (s *Server) Serve(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (PORTCULLIS_ADDR): %w", s.cfg.Addr, err)
	}
	return s.ServeListener(ctx, ln, ready)
}

// ServeListener is Serve on an existing listener. Its TCP connections read
// and write outside the Go scheduler's system-call state (store/rawconn),
// under TLS too.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener, ready func(addr net.Addr)) error {
	ln = rawconn.Listener{Listener: ln}
	timeout := s.cfg.RequestTimeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	hs := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       timeout,
		WriteTimeout:      timeout + 5*time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("load TLS certificate (PORTCULLIS_TLS_CERT, PORTCULLIS_TLS_KEY): %w", err)
		}
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, hs.TLSConfig)
	}
	return s.serveUntilDone(ctx, hs, ln, ready, "public listener")
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz checks every dependency concurrently, each within a short deadline,
// so a dead dependency answers 503 in well under two seconds.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 1500*time.Millisecond)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(s.checks))
	for _, ch := range s.checks {
		go func(ch Check) { results <- result{ch.Name, ch.Check(ctx)} }(ch)
	}
	var failed []string
	for range s.checks {
		r := <-results
		if r.err != nil {
			failed = append(failed, r.name)
			s.log.Warn("readiness check failed", "check", r.name, "err", r.err)
		}
	}
	if len(failed) > 0 {
		c.Response().Header().Set("Cache-Control", "no-store")
		return c.JSON(http.StatusServiceUnavailable, map[string]any{
			"status":            "unavailable",
			"error":             "temporarily_unavailable",
			"error_description": fmt.Sprintf("unreachable: %v", failed),
			"failed":            failed,
		})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// StatusClientClosedRequest is the status recorded (in the access log and
// the request metrics) for a request whose client went away before it was
// answered: nginx's 499. It never reaches a client.
const StatusClientClosedRequest = 499

// handleError is the single place errors become responses.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *echo.HTTPError
	var ae *apierr.Error
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		ae = fromEchoError(he)
	default:
		ae = apierr.From(err)
	}
	if apierr.ClientGone(c.Request().Context()) {
		// The client went away before the answer (closed the connection,
		// reset the stream): nobody reads it, and whatever the handler
		// failed on was cut short by that, not a fault of the server's. It
		// is recorded as 499, nginx's "client closed request", so that
		// neither the 5xx metrics nor the error log count it.
		s.log.Info("client closed the request", "err", err, "path", c.Path(),
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
		c.Response().WriteHeader(StatusClientClosedRequest)
		return
	}
	if ae.Status >= 500 {
		s.log.Error("request failed", "err", err, "path", c.Path(), "request_id", c.Response().Header().Get(echo.HeaderXRequestID))
	}
	if errors.Is(err, echo.ErrStatusRequestEntityTooLarge) && s.isPage(c) {
		// A form over the body limit (a paste gone wrong) is the one
		// refusal of the server's a person can meet on a page: it gets
		// the pages' HTML error page, as a malformed query does.
		if err := s.refusePage(c, ae); err != nil {
			s.log.Warn("write error page", "err", err)
		}
		return
	}
	h := c.Response().Header()
	if v := ae.Challenge(); v != "" {
		h.Set(echo.HeaderWWWAuthenticate, v)
	}
	if ae.RetryAfterSeconds > 0 {
		h.Set("Retry-After", strconv.Itoa(ae.RetryAfterSeconds))
	}
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-store")
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.Status)
		return
	}
	if err := c.JSON(ae.Status, ae.Body()); err != nil {
		s.log.Warn("write error response", "err", err)
	}
}

func fromEchoError(he *echo.HTTPError) *apierr.Error {
	switch he.Code {
	case http.StatusNotFound:
		return apierr.ErrNotFound.WithCause(he)
	case http.StatusMethodNotAllowed:
		return apierr.ErrMethodNotAllowed.WithCause(he)
	case http.StatusRequestEntityTooLarge:
		return apierr.ErrTooLarge.WithCause(he)
	case http.StatusUnsupportedMediaType:
		return apierr.ErrUnsupportedMediaType.WithCause(he)
	case http.StatusServiceUnavailable:
		return apierr.ErrTemporarilyUnavailable.WithCause(he)
	case http.StatusUnauthorized:
		return apierr.ErrUnauthorized.WithCause(he)
	case http.StatusForbidden:
		return apierr.ErrForbidden.WithCause(he)
	}
	if he.Code >= 400 && he.Code < 500 {
		return apierr.ErrInvalidRequest.WithStatus(he.Code).WithCause(he)
	}
	return apierr.ErrServer.WithCause(he)
}
