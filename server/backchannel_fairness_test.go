package server_test

import (
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
)

// tarpitListener accepts connections and never answers on them (as an
// endpoint that hangs, or a relying party gone dead, does); they are closed
// when the test ends.
func tarpitListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln
}

// TestBackchannelDeadEndpointDelaysNoOther: a client whose back-channel
// endpoint never answers, with many deliveries queued (a browser session
// holding two dozen of its grants, each ended by one logout), takes only
// its share of the delivery slots: another client's logout token, queued
// after them, arrives at once instead of behind a 5 s timeout per slot.
func TestBackchannelDeadEndpointDelaysNoOther(t *testing.T) {
	// within bounds the other client's wait: it is told at once; behind the
	// dead client's 24 deliveries, 8 at a time, it waited 15 s.
	const grants, within = 24, 3 * time.Second
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			d := newSignIn(t, b)
			dead := tarpitListener(t)
			fx := st.NewFixtures(t, d.in.App.Core)
			code := []string{"authorization_code", "refresh_token"}
			fx.Client(t, clients.Spec{ID: "dead-rp", Name: "Dead", FirstParty: true, Grants: code,
				RedirectURIs: []string{siCallback}, BackchannelLogoutURI: "http://" + dead.Addr().String() + "/bcl"})
			rcv := newBCLReceiver(t, d.in)
			fx.Client(t, clients.Spec{ID: "bcl-rp", Name: "BCL RP", FirstParty: true, Grants: code,
				RedirectURIs: []string{siCallback}, BackchannelLogoutURI: rcv.url})
			logout := func(hc *http.Client) {
				t.Helper()
				p := siGet(t, hc, d.in.URL+"/oauth2/logout")
				if p = p.submit(t, hc, url.Values{"decision": {"logout"}}); p.StatusCode != http.StatusOK {
					t.Fatalf("logout: %d", p.StatusCode)
				}
			}
			authorize := func(rp *oauth2.Config) string {
				return rp.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))
			}

			// One sign-in, then silent authorizations: one grant each.
			deadRP := d.oauth("dead-rp", "x", "openid")
			hc := siBrowser(t)
			d.callback(t, siGet(t, hc, authorize(deadRP)).submit(t, hc, url.Values{"username": {siEmail}, "password": {siPassword}}))
			for i := 1; i < grants; i++ {
				d.callback(t, siGet(t, hc, authorize(deadRP)))
			}
			logout(hc)

			hc2 := siBrowser(t)
			d.callback(t, siGet(t, hc2, authorize(d.oauth("bcl-rp", "x", "openid"))).submit(t, hc2,
				url.Values{"username": {siEmail}, "password": {siPassword}}))
			start := time.Now()
			logout(hc2)
			select {
			case <-rcv.got:
				if waited := time.Since(start); waited > within {
					t.Fatalf("the other client's logout token waited %s behind %d deliveries to a dead endpoint", waited, grants)
				}
			case <-time.After(bclWithin):
				t.Fatalf("no logout token for the other client within %s", bclWithin)
			}
		})
	}
}
