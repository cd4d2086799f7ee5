package verify

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestIntrospectorWaiterAsksAgain: a check waiting for another's request
// to the same key asks again when that request is abandoned by its own
// caller (its context ended), rather than failing with the other caller's
// cancellation; a waiter whose own context ends stops waiting at once.
func TestIntrospectorWaiterAsksAgain(t *testing.T) {
	const key = "pcak_0123456789ABCDEFGHIJKLMNOPQRSTUV3bzNgN"
	var n atomic.Int64
	arrived, release := make(chan struct{}, 4), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the form first: only then does the server notice a client
		// that hangs up.
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		if n.Add(1) == 1 {
			// The first request hangs until its caller gives up.
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"active":true,"token_type":"api_key","sub":"usr_1","scope":"projects:read","exp":4102444800,"client_id":"apikey:ak_1"}`))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	in, err := NewIntrospector(IntrospectorOptions{Endpoint: srv.URL, ClientID: "rs", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{}, 4)
	in.waitHook = func() { waiting <- struct{}{} }

	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, err := in.VerifyAPIKey(leaderCtx, key)
		leader <- err
	}()
	<-arrived // the first request is in flight

	// A waiter whose own context ends stops waiting.
	shortCtx, cancelShort := context.WithCancel(context.Background())
	short := make(chan error, 1)
	go func() {
		_, err := in.VerifyAPIKey(shortCtx, key)
		short <- err
	}()
	<-waiting
	cancelShort()
	if err := <-short; !errors.Is(err, ErrIntrospectionUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter with an ended context: %v", err)
	}

	follower := make(chan *Claims, 1)
	go func() {
		c, err := in.VerifyAPIKey(context.Background(), key)
		if err != nil {
			t.Error(err)
		}
		follower <- c
	}()
	<-waiting
	cancelLeader()
	if err := <-leader; !errors.Is(err, ErrIntrospectionUnavailable) {
		t.Fatalf("the abandoned check: %v", err)
	}
	select {
	case c := <-follower:
		if c == nil || c.Subject != "usr_1" || c.APIKeyID != "ak_1" {
			t.Fatalf("the waiter's claims: %+v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter never got an answer")
	}
	if got := n.Load(); got != 2 {
		t.Fatalf("%d requests, want the abandoned one and the waiter's own", got)
	}
}
