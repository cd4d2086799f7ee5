// Package servertest is the test harness for Portcullis's HTTP surface: the
// one HTTP client every test uses (so checks such as OpenAPI validation apply
// to every response in one place) and helpers that run one or several real
// server instances on shared PostgreSQL and Redis.
//
// It is imported only by tests.
package servertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// ResponseCheck inspects every exchange the Client makes; a returned error
// fails the test. Install checks with AddResponseCheck (for example OpenAPI
// validation).
type ResponseCheck func(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error

var (
	checksMu sync.RWMutex
	checks   []ResponseCheck
)

// AddResponseCheck installs a check run on every response of every Client.
func AddResponseCheck(c ResponseCheck) {
	checksMu.Lock()
	defer checksMu.Unlock()
	checks = append(checks, c)
}

// Client is the HTTP client of the test suites.
type Client struct {
	t       testing.TB
	BaseURL string
	HTTP    *http.Client
	// Header is added to every request (for example X-Forwarded-For).
	Header http.Header
}

// NewClient returns a client for the server at baseURL.
func NewClient(t testing.TB, baseURL string) *Client {
	return &Client{t: t, BaseURL: strings.TrimSuffix(baseURL, "/"), HTTP: &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, Header: http.Header{}}
}

// Response is a completed exchange with its body read.
type Response struct {
	*http.Response
	Body []byte
	t    testing.TB
}

// JSON decodes the body into v, failing the test on error.
func (r *Response) JSON(v any) {
	r.t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		r.t.Fatalf("decode %s %s response (%d) %q: %v", r.Request.Method, r.Request.URL.Path, r.StatusCode, r.Body, err)
	}
}

// Map decodes the body as a JSON object.
func (r *Response) Map() map[string]any {
	r.t.Helper()
	var m map[string]any
	r.JSON(&m)
	return m
}

// ExpectStatus fails the test unless the status is want.
func (r *Response) ExpectStatus(want int) *Response {
	r.t.Helper()
	if r.StatusCode != want {
		r.t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, want, r.Body)
	}
	return r
}

// ExpectError fails the test unless the answer is an error with this status and code.
func (r *Response) ExpectError(status int, code string) *Response {
	r.t.Helper()
	r.ExpectStatus(status)
	if r.Request.Method == http.MethodHead {
		// A HEAD answer has no content: the code of a bearer token's
		// refusal is in its challenge (RFC 6750 §3), the others only in
		// the status.
		if code == "invalid_token" || code == "insufficient_scope" {
			if ch := r.Header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="`+code+`"`) {
				r.t.Fatalf("HEAD %s: WWW-Authenticate %q, want error=%q", r.Request.URL.Path, ch, code)
			}
		}
		return r
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	r.JSON(&body)
	if body.Error != code {
		r.t.Fatalf("%s %s: error %q, want %q; body %s", r.Request.Method, r.Request.URL.Path, body.Error, code, r.Body)
	}
	if !DescriptionCharsetOK(body.Description) {
		r.t.Fatalf("%s %s: error_description %q has characters outside RFC 6749 5.2's %%x20-21 / %%x23-5B / %%x5D-7E", r.Request.Method, r.Request.URL.Path, body.Description)
	}
	return r
}

// DescriptionCharsetOK reports whether s keeps to the characters RFC 6749
// §5.2 allows in error_description: printable ASCII without the double
// quote and the backslash.
func DescriptionCharsetOK(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Option changes a request before it is sent.
type Option func(*http.Request)

// Bearer sets Authorization: Bearer token.
func Bearer(token string) Option {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

// Basic sets HTTP Basic client authentication, form-encoding id and secret (RFC 6749 §2.3.1).
func Basic(id, secret string) Option {
	return func(r *http.Request) { r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret)) }
}

// WithHeader sets a request header.
func WithHeader(k, v string) Option { return func(r *http.Request) { r.Header.Set(k, v) } }

// Do sends a request with a raw body.
func (c *Client) Do(method, path string, body []byte, contentType string, opts ...Option) *Response {
	c.t.Helper()
	resp, err := c.TryDo(method, path, body, contentType, opts...)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// TryDo is Do returning transport errors instead of failing the test (for fault tests).
func (c *Client) TryDo(method, path string, body []byte, contentType string, opts ...Option) (*Response, error) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.BaseURL+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	checksMu.RLock()
	cs := append([]ResponseCheck(nil), checks...)
	checksMu.RUnlock()
	for _, check := range cs {
		if err := check(req, body, resp, data); err != nil {
			c.t.Errorf("response check on %s %s (%d): %v", method, path, resp.StatusCode, err)
		}
	}
	return &Response{Response: resp, Body: data, t: c.t}, nil
}

// Get sends a GET.
func (c *Client) Get(path string, opts ...Option) *Response {
	c.t.Helper()
	return c.Do(http.MethodGet, path, nil, "", opts...)
}

// PostForm sends a form-encoded POST.
func (c *Client) PostForm(path string, form url.Values, opts ...Option) *Response {
	c.t.Helper()
	return c.Do(http.MethodPost, path, []byte(form.Encode()), "application/x-www-form-urlencoded", opts...)
}

// PostJSON sends v as JSON (a []byte or string is sent as is).
func (c *Client) PostJSON(path string, v any, opts ...Option) *Response {
	c.t.Helper()
	return c.sendJSON(http.MethodPost, path, v, opts...)
}

// PatchJSON sends v as JSON with PATCH.
func (c *Client) PatchJSON(path string, v any, opts ...Option) *Response {
	c.t.Helper()
	return c.sendJSON(http.MethodPatch, path, v, opts...)
}

// Delete sends a DELETE.
func (c *Client) Delete(path string, opts ...Option) *Response {
	c.t.Helper()
	return c.Do(http.MethodDelete, path, nil, "", opts...)
}

func (c *Client) sendJSON(method, path string, v any, opts ...Option) *Response {
	c.t.Helper()
	var body []byte
	switch b := v.(type) {
	case []byte:
		body = b
	case string:
		body = []byte(b)
	case nil:
		body = []byte("{}")
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			c.t.Fatalf("encode JSON: %v", err)
		}
	}
	return c.Do(method, path, body, "application/json", opts...)
}
