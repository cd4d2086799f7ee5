// Command demo-api is a downstream resource server built only on
// Portcullis's public verifier package (keys/verify) and the standard
// library: a model for services that accept Portcullis access tokens.
//
// Settings (environment):
//
//	DEMO_API_ADDR      listen address            (default 127.0.0.1:8081)
//	DEMO_API_ISSUER    the Portcullis issuer URL  (default http://127.0.0.1:8080); the JWKS is found through discovery
//	DEMO_API_AUDIENCE  the aud tokens must carry (default api)
//	DEMO_API_CLIENT_ID the demo's client id at the issuer, the aud of its logout tokens (default demo-api)
//	DEMO_API_CLIENT_SECRET that client's secret: set, API keys are accepted, checked through
//	                   the issuer's introspection endpoint (the client must be confidential);
//	                   unset, only access tokens are (an X-API-Key alone answers 401)
//	DEMO_API_MAX_TOKEN_TTL the issuer's longest access token lifetime: how long a logout is remembered (default 24h)
//
// Routes:
//
//	GET  /me             any valid access token: its sub, client_id, roles and scope
//	GET  /projects       permission projects:read; an access token or an API key
//	                     (X-API-Key: pcak_… or Authorization: Bearer pcak_…)
//	POST /projects       permission projects:write; body {"name": "..."}; a token or a key
//	GET  /admin/metrics  role admin or higher (levels of docs/examples/demo-policy.yaml),
//	                     signed in with a second factor (acr mfa)
//	GET  /healthz        no token
//	POST /backchannel-logout  OpenID Connect Back-Channel Logout 1.0: a form with
//	                     logout_token; the access tokens of the logged-out session
//	                     (sid) are refused from then on (register the URL as the
//	                     client's backchannel_logout_uri)
//
// With DEMO_API_CLIENT_SECRET, every guarded route takes an API key as it
// takes an access token, with the same permission requirements; a key
// carries no roles, so /admin/metrics refuses every key (403). A request
// with both a key and an Authorization header is refused (400).
//
// Errors follow RFC 6750 (401 with WWW-Authenticate: Bearer
// error="invalid_token", 403 with error="insufficient_scope") and RFC 9470
// (401 with error="insufficient_user_authentication" and acr_values="mfa"
// for an admin token from a password alone); 503 when the issuer's keys or
// introspection endpoint cannot be reached. It never logs a token, a key or
// the client secret, and stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := loadConfig(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-api:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("demo-api stopped", "error", err)
		os.Exit(1)
	}
}

// shutdownTimeout bounds how long requests in flight may take at shutdown.
const shutdownTimeout = 10 * time.Second

// run serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	a, err := newAPI(cfg, time.Now, log)
	if err != nil {
		return err
	}
	defer a.Close()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("demo-api listening", "addr", ln.Addr().String(), "issuer", cfg.Issuer, "audience", cfg.Audience,
		"api_keys", cfg.apiKeys())
	// Fetch the issuer's keys early; requests would fetch them anyway.
	go func() {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := a.keys.Refresh(fctx); err != nil && ctx.Err() == nil {
			log.Warn("issuer keys not available yet; retrying in the background", "error", err)
		}
	}()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("demo-api shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
