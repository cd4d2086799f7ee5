package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
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
}
