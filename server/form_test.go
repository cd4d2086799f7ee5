package server

import (
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/portcullis-auth/portcullis/server/apierr"
)

func TestIsFormBody(t *testing.T) {
	t.Parallel()
	for ct, want := range map[string]bool{
		"application/x-www-form-urlencoded":                 true,
		"application/x-www-form-urlencoded; charset=UTF-8":  true,
		"Application/X-WWW-Form-Urlencoded":                 true,
		" application/x-www-form-urlencoded ;charset=utf-8": true,
		"":                                   false,
		"application/json":                   false,
		"multipart/form-data; boundary=x":    false,
		"application/x-www-form-urlencoded;": true, // as mime.ParseMediaType reads it
		"application/x-www-form-urlencodedx": false,
		"text/plain; application/x-www-form-urlencoded": false,
	} {
		if got := isFormBody(ct); got != want {
			t.Errorf("isFormBody(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestFormParams(t *testing.T) {
	t.Parallel()
	body := func(s string) io.Reader { return strings.NewReader(s) }
	unsized := func(s string) io.Reader { return io.MultiReader(strings.NewReader(s)) } // no Content-Length: read until the limit
	tests := []struct {
		name, ctype string
		body        io.Reader
		want        map[string]string
		wantStatus  int
	}{
		{"ok", "application/x-www-form-urlencoded", body("grant_type=client_credentials&scope=a+b"), map[string]string{"grant_type": "client_credentials", "scope": "a b"}, 0},
		{"ok with a charset", "application/x-www-form-urlencoded; charset=utf-8", body("a=1"), map[string]string{"a": "1"}, 0},
		{"not a form", "application/json", body(`{"a":1}`), nil, http.StatusBadRequest},
		{"malformed", "application/x-www-form-urlencoded", body("a=%zz"), nil, http.StatusBadRequest},
		{"a parameter twice", "application/x-www-form-urlencoded", body("a=1&a=2"), nil, http.StatusBadRequest},
		{"over the limit, sized", "application/x-www-form-urlencoded", body("a=" + strings.Repeat("x", 100)), nil, http.StatusRequestEntityTooLarge},
		{"over the limit, unsized", "application/x-www-form-urlencoded", unsized("a=" + strings.Repeat("x", 100)), nil, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := echo.New()
			req := httptest.NewRequest(http.MethodPost, "/oauth2/token", tt.body)
			req.Header.Set("Content-Type", tt.ctype)
			var got map[string]string
			h := middleware.BodyLimit("64B")(func(c echo.Context) error {
				var err error
				got, err = formParams(c)
				return err
			})
			err := h(e.NewContext(req, httptest.NewRecorder()))
			if tt.wantStatus == 0 {
				if err != nil || !maps.Equal(got, tt.want) {
					t.Fatalf("formParams = %v, %v; want %v", got, err, tt.want)
				}
				for k, v := range tt.want {
					if req.PostForm.Get(k) != v {
						t.Fatalf("the parsed body is not left in PostForm: %v", req.PostForm)
					}
				}
				return
			}
			status := 0
			var ae *apierr.Error
			var he *echo.HTTPError
			switch {
			case errors.As(err, &ae):
				status = ae.Status
			case errors.As(err, &he):
				status = he.Code
			}
			if status != tt.wantStatus {
				t.Fatalf("formParams error %v (status %d), want status %d", err, status, tt.wantStatus)
			}
		})
	}
}
