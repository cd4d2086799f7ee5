package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// transportServer is an HTTP server that counts the connections it accepts
// and echoes a POST's body.
func transportServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Method", r.Method)
	_, _ = w.Write(append([]byte("got:"), body...))
}

func TestDirectTransport(t *testing.T) {
	t.Parallel()
	post := func(t *testing.T, c *http.Client, ctx context.Context, url, body string) (string, error) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	t.Run("keeps one connection alive across requests", func(t *testing.T) {
		t.Parallel()
		srv, conns := transportServer(t, echo)
		c := &http.Client{Transport: newDirectTransport(5 * time.Second)}
		for i := range 5 {
			got, err := post(t, c, context.Background(), srv.URL, "x")
			if err != nil || got != "got:x" {
				t.Fatalf("request %d: %q, %v", i, got, err)
			}
		}
		if n := conns.Load(); n != 1 {
			t.Fatalf("%d connections for 5 sequential requests, want 1", n)
		}
	})

	t.Run("an unread body closed keeps the connection", func(t *testing.T) {
		t.Parallel()
		srv, conns := transportServer(t, echo)
		c := &http.Client{Transport: newDirectTransport(5 * time.Second)}
		for range 3 {
			resp, err := c.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close() // not read
		}
		if n := conns.Load(); n != 1 {
			t.Fatalf("%d connections, want 1: a closed body's rest is read and the connection kept", n)
		}
	})

	t.Run("a connection the server closed is replaced, the body sent again", func(t *testing.T) {
		t.Parallel()
		srv, conns := transportServer(t, echo)
		c := &http.Client{Transport: newDirectTransport(5 * time.Second)}
		if _, err := post(t, c, context.Background(), srv.URL, "first"); err != nil {
			t.Fatal(err)
		}
		srv.CloseClientConnections() // the idle connection is now dead
		got, err := post(t, c, context.Background(), srv.URL, "second")
		if err != nil || got != "got:second" {
			t.Fatalf("after the server closed the connection: %q, %v; want the request sent again", got, err)
		}
		if n := conns.Load(); n != 2 {
			t.Fatalf("%d connections, want 2", n)
		}
	})

	t.Run("Connection: close is honoured", func(t *testing.T) {
		t.Parallel()
		srv, conns := transportServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			echo(w, r)
		})
		c := &http.Client{Transport: newDirectTransport(5 * time.Second)}
		for range 2 {
			if got, err := post(t, c, context.Background(), srv.URL, "x"); err != nil || got != "got:x" {
				t.Fatalf("%q, %v", got, err)
			}
		}
		if n := conns.Load(); n != 2 {
			t.Fatalf("%d connections, want 2: the server asked to close each", n)
		}
	})

	t.Run("the context's deadline answers with the context's error", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		srv, _ := transportServer(t, func(w http.ResponseWriter, r *http.Request) {
			<-release
		})
		defer close(release)
		c := &http.Client{Transport: newDirectTransport(5 * time.Second)}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := post(t, c, ctx, srv.URL, "x")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		if ctx.Err() == nil {
			t.Fatal("the request failed before its context ended")
		}
	})

	t.Run("the transport's own timeout", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		srv, _ := transportServer(t, func(w http.ResponseWriter, r *http.Request) {
			<-release
		})
		defer close(release)
		c := &http.Client{Transport: newDirectTransport(50 * time.Millisecond)}
		_, err := post(t, c, context.Background(), srv.URL, "x")
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v, want a timeout", err)
		}
	})

	t.Run("refuses https", func(t *testing.T) {
		t.Parallel()
		c := &http.Client{Transport: newDirectTransport(time.Second)}
		if _, err := c.Get("https://127.0.0.1:1/"); err == nil || !strings.Contains(err.Error(), "not plain http") {
			t.Fatalf("err = %v, want a refusal", err)
		}
	})
}

// https targets keep net/http's transport, which speaks TLS.
func TestDriverClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url    string
		direct bool
	}{
		{"http://127.0.0.1:8080", true},
		{"https://127.0.0.1:8443", false},
	} {
		_, direct := driverClient(Options{URL: tc.url, Concurrency: 4}).Transport.(*directTransport)
		if direct != tc.direct {
			t.Errorf("%s: directTransport %v, want %v", tc.url, direct, tc.direct)
		}
	}
}
