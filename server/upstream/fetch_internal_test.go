package upstream

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// bodyOf is a transport answering every request with n bytes, declaring
// their length or not.
type bodyOf struct {
	n       int
	declare bool
}

func (b bodyOf) RoundTrip(*http.Request) (*http.Response, error) {
	resp := &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(bytes.NewReader(make([]byte, b.n))), ContentLength: -1}
	if b.declare {
		resp.ContentLength = int64(b.n)
	}
	return resp, nil
}

// TestLimitTransport: an answer of exactly maxResponseBody bytes is read
// whole; one byte more is an error, whether the length is declared, found
// by reading to the end, or read by a caller that stops at the bound itself
// (x/oauth2 reads the token response through io.LimitReader(1 MiB)).
func TestLimitTransport(t *testing.T) {
	whole := func(r io.Reader) ([]byte, error) { return io.ReadAll(r) }
	stopsAtBound := func(r io.Reader) ([]byte, error) { return io.ReadAll(io.LimitReader(r, maxResponseBody)) }
	for _, tc := range []struct {
		name    string
		n       int
		declare bool
		read    func(io.Reader) ([]byte, error)
		ok      bool
	}{
		{"ok/at_the_bound", maxResponseBody, false, whole, true},
		{"ok/at_the_bound_declared", maxResponseBody, true, whole, true},
		{"ok/at_the_bound_reader_stops_there", maxResponseBody, false, stopsAtBound, true},
		{"ok/empty", 0, false, whole, true},
		{"fail/one_byte_over", maxResponseBody + 1, false, whole, false},
		{"fail/one_byte_over_declared", maxResponseBody + 1, true, whole, false},
		{"fail/one_byte_over_reader_stops_at_the_bound", maxResponseBody + 1, false, stopsAtBound, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := limitedClient(&http.Client{Transport: bodyOf{n: tc.n, declare: tc.declare}})
			resp, err := c.Get("https://idp.example/doc")
			if err != nil {
				if !tc.ok && errors.Is(err, errResponseTooLarge) {
					return
				}
				t.Fatalf("Get: %v", err)
			}
			defer resp.Body.Close()
			body, err := tc.read(resp.Body)
			if tc.ok && (err != nil || len(body) != tc.n) {
				t.Fatalf("read %d of %d bytes: %v", len(body), tc.n, err)
			}
			if !tc.ok && !errors.Is(err, errResponseTooLarge) {
				t.Fatalf("read %d of %d bytes: %v, want errResponseTooLarge", len(body), tc.n, err)
			}
		})
	}
}
