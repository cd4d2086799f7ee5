package server

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/config"
	"github.com/portcullis-auth/portcullis/server/metrics"
)

// TestRequestTimeout: a request gets the deadline, except on the routes
// that answer from memory; and the deadline ends a handler's wait.
func TestRequestTimeout(t *testing.T) {
	e := echo.New()
	e.Use(requestTimeout(50*time.Millisecond, func(route string) bool { return route == "/memory" }))
	deadlineOf := func(c echo.Context) error {
		if _, ok := c.Request().Context().Deadline(); ok {
			return c.String(http.StatusOK, "deadline")
		}
		return c.String(http.StatusOK, "none")
	}
	e.GET("/memory", deadlineOf)
	e.GET("/stores", deadlineOf)
	e.GET("/stores/:id", deadlineOf)
	e.GET("/wait", func(c echo.Context) error {
		select {
		case <-c.Request().Context().Done():
			return c.String(http.StatusServiceUnavailable, c.Request().Context().Err().Error())
		case <-time.After(10 * time.Second):
			return c.String(http.StatusOK, "never ended")
		}
	})
	for _, tc := range []struct{ path, want string }{
		{"/memory", "none"}, {"/stores", "deadline"}, {"/stores/1", "deadline"}, {"/memory?x=1", "none"},
	} {
		w := httptest.NewRecorder()
		e.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if w.Body.String() != tc.want {
			t.Errorf("%s: %q, want %q", tc.path, w.Body.String(), tc.want)
		}
	}
	w := httptest.NewRecorder()
	e.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/wait", nil))
	if w.Code != http.StatusServiceUnavailable || w.Body.String() != "context deadline exceeded" {
		t.Errorf("a waiting handler: %d %q, want its deadline to end the wait", w.Code, w.Body.String())
	}
	// What runs after the handler (the error handler) sees the request's
	// own context again, not the bounded one its return cancelled: else
	// every error would read as a client that went away.
	var after error
	outer := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			after = c.Request().Context().Err()
			return err
		}
	}
	e2 := echo.New()
	e2.Use(outer, requestTimeout(time.Minute, func(string) bool { return false }))
	e2.GET("/stores", deadlineOf)
	e2.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/stores", nil))
	if after != nil {
		t.Errorf("after the handler the request's context is %v, want its own (live)", after)
	}
}

// TestComposedMiddleware: the chain built once runs its middleware
// outermost first, each once per request, around the handler the router
// found for that request (404 and 405 included), and a request allocates
// nothing for it.
func TestComposedMiddleware(t *testing.T) {
	var trail []string
	step := func(name string) echo.MiddlewareFunc {
		return func(next echo.HandlerFunc) echo.HandlerFunc {
			return func(c echo.Context) error {
				trail = append(trail, name)
				return next(c)
			}
		}
	}
	e := echo.New()
	e.Use(composed(step("a"), step("b"), step("c")))
	e.GET("/one", func(c echo.Context) error { trail = append(trail, "one"); return c.NoContent(http.StatusOK) })
	e.GET("/two", func(c echo.Context) error { trail = append(trail, "two"); return c.NoContent(http.StatusAccepted) })
	for _, tc := range []struct {
		method, path string
		code         int
		trail        string
	}{
		{http.MethodGet, "/one", http.StatusOK, "a b c one"},
		{http.MethodGet, "/two", http.StatusAccepted, "a b c two"},
		{http.MethodGet, "/three", http.StatusNotFound, "a b c"},
		{http.MethodPost, "/one", http.StatusMethodNotAllowed, "a b c"},
	} {
		trail = nil
		w := httptest.NewRecorder()
		e.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.code || strings.Join(trail, " ") != tc.trail {
			t.Errorf("%s %s: %d, ran %q; want %d, %q", tc.method, tc.path, w.Code, trail, tc.code, tc.trail)
		}
	}
	req, w := httptest.NewRequest(http.MethodGet, "/one", nil), &discardWriter{h: http.Header{}}
	trail = make([]string, 0, 4096)
	if allocs := testing.AllocsPerRun(100, func() { trail = trail[:0]; e.ServeHTTP(w, req) }); allocs != 0 {
		t.Errorf("%.1f allocations per request through the composed chain, want 0", allocs)
	}
}

// TestOneUse: composed does not call the middleware after it, so the
// server's chain must be the only Use of its Echo: a second one in the
// server's code would be skipped on every request.
func TestOneUse(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	uses := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		uses += strings.Count(string(src), ".Use(")
	}
	if uses != 1 {
		t.Fatalf("%d calls of Use in the server's code, want 1 (New's composed chain)", uses)
	}
}

// TestPanicIsCountedAndLogged: a handler's panic is answered 500 like any
// server error, and like one it is counted in the request metric and has
// its access-log line; the answer still carries the security headers and
// the request id, which the panic's own line names. Found by a review:
// the recoverer sat outside the access log, so a panic unwound past the
// metric and the log line and its 500 was counted nowhere.
func TestPanicIsCountedAndLogged(t *testing.T) {
	var logs bytes.Buffer
	s := New(Options{Config: config.Config{}, Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		Metrics: metrics.New(func() time.Duration { return 0 })})
	s.Echo().GET("/boom", func(echo.Context) error { panic("boom") })
	s.Echo().GET("/fail", func(echo.Context) error { return apierr.ErrServer })
	for _, p := range []string{"/boom", "/fail"} {
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, p, nil))
		if w.Code != http.StatusInternalServerError {
			t.Fatalf("%s: %d, want 500", p, w.Code)
		}
		id := w.Header().Get(echo.HeaderXRequestID)
		if id == "" || w.Header().Get("X-Content-Type-Options") != "nosniff" || w.Header().Get("Content-Security-Policy") == "" {
			t.Errorf("%s: the 500 lacks the request id or the security headers: %v", p, w.Header())
		}
		if p == "/boom" && !strings.Contains(logs.String(), `"msg":"panic in handler","panic":"boom","path":"/boom","request_id":"`+id+`"`) {
			t.Errorf("the panic's log line does not name the route and the request id %s:\n%s", id, logs.String())
		}
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(w.Body)
	for _, p := range []string{"/boom", "/fail"} {
		series := `portcullis_http_requests_total{code="500",method="GET",route="` + p + `"} 1`
		if !strings.Contains(string(body), series) {
			t.Errorf("metrics lack %s", series)
		}
		if !strings.Contains(logs.String(), `"msg":"request","method":"GET","path":"`+p+`"`) {
			t.Errorf("no access-log line for %s", p)
		}
	}
}
