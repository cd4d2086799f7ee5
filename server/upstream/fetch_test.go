package upstream_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
)

// browserSignIn runs the browser path (Begin, the provider, Callback) of a
// person without an email in the id token, so that userinfo is asked too,
// and returns Callback's (or Begin's) error.
func browserSignIn(t *testing.T, op *upstreamtest.Provider, v *upstream.Verifier) error {
	t.Helper()
	ps, err := upstream.NewProviders(&upstream.Provider{ID: "test", Name: "Test", Issuer: op.Issuer, ClientID: op.ClientID,
		ClientSecret: secretOf(t, op)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := upstream.New(upstream.Deps{Providers: ps, Verifier: v, Store: &memStore{}, Accounts: noAccounts{},
		Audit: &auditLog{}, Once: &memOnce{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	op.NextLogin(upstreamtest.Token{Subject: "s-1"})
	op.SetUserInfo(map[string]any{"sub": "s-1", "email": "s1@example.com", "email_verified": true})
	u, err := svc.Begin(ctx, "test", "http://127.0.0.1:1/login/test/callback", upstream.Freshness{}, nil)
	if err != nil {
		return err
	}
	_, err = svc.Callback(ctx, "test", browse(t, u), upstream.Meta{IP: "192.0.2.1", ClientID: "portcullis"})
	return err
}

// TestVerifierBoundsProviderAnswers: an answer of the provider longer than
// 1 MiB (a 64 MiB document padded with spaces, still valid JSON) is refused
// at every endpoint Portcullis reads, whether its length is declared or
// only found by reading, without Portcullis allocating anything near its
// size; an answer just under the bound is read.
func TestVerifierBoundsProviderAnswers(t *testing.T) {
	const huge = 64 << 20
	for _, tc := range []struct {
		name    string
		path    string
		pad     int64
		declare bool
		want    error // nil: the sign-in succeeds
	}{
		{"fail/discovery_chunked", "/.well-known/openid-configuration", huge, false, upstream.ErrUnavailable},
		{"fail/discovery_declared", "/.well-known/openid-configuration", huge, true, upstream.ErrUnavailable},
		{"fail/jwks_chunked", "/jwks", huge, false, upstream.ErrInvalidToken},
		{"fail/jwks_declared", "/jwks", huge, true, upstream.ErrInvalidToken},
		{"fail/token_chunked", "/token", huge, false, upstream.ErrUnavailable},
		{"fail/token_declared", "/token", huge, true, upstream.ErrUnavailable},
		{"fail/userinfo_chunked", "/userinfo", huge, false, upstream.ErrUnavailable},
		{"fail/userinfo_declared", "/userinfo", huge, true, upstream.ErrUnavailable},
		{"ok/discovery_just_under_1MiB", "/.well-known/openid-configuration", 1<<20 - 4096, false, nil},
		{"ok/jwks_just_under_1MiB", "/jwks", 1<<20 - 4096, true, nil},
		{"ok/userinfo_just_under_1MiB", "/userinfo", 1<<20 - 4096, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := upstreamtest.New(t)
			op.Pad(tc.path, tc.pad, tc.declare)
			v := upstream.NewVerifier(nil, nil)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := browserSignIn(t, op, v)
			runtime.ReadMemStats(&after)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("sign-in with a %d-byte padded %s: %v", tc.pad, tc.path, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("sign-in with a %d MiB %s = %v, want %v", tc.pad>>20, tc.path, err, tc.want)
			}
			// The bound is 1 MiB; reading it whole took about twice the
			// document's size.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
				t.Fatalf("refusing a %d MiB %s allocated %d MiB", tc.pad>>20, tc.path, alloc>>20)
			}
		})
	}
}

// TestVerifierKeySetRefetchInterval: tokens that the provider's keys in
// hand do not verify (forged with a key of the same kid, or with a new kid)
// fetch the provider's JWKS again at most once per 10 s, however many come
// and whether they come one after another or at once; within the interval
// they are refused as invalid tokens (never as an unreachable provider), and
// the keys in hand still verify good tokens. A key the provider rotated in
// is taken up by the first token after the interval.
func TestVerifierKeySetRefetchInterval(t *testing.T) {
	op := upstreamtest.New(t)
	p := providerFor(op)
	var (
		mu  sync.Mutex
		now = time.Now()
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	v := upstream.NewVerifier(nil, clock)
	ctx := context.Background()
	good := func(t *testing.T) {
		t.Helper()
		if _, err := v.VerifyIDToken(ctx, p, op.IDToken(t, upstreamtest.Token{Subject: "u1"}), ""); err != nil {
			t.Fatalf("good token: %v", err)
		}
	}
	forged := func(t *testing.T, n int, concurrent bool) {
		t.Helper()
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			tok := op.IDToken(t, upstreamtest.Token{Subject: "u1", UnknownKey: true})
			verify := func() { defer wg.Done(); _, errs[i] = v.VerifyIDToken(ctx, p, tok, "") }
			wg.Add(1)
			if concurrent {
				go verify()
			} else {
				verify()
			}
		}
		wg.Wait()
		for _, err := range errs {
			if !errors.Is(err, upstream.ErrInvalidToken) {
				t.Fatalf("forged token = %v, want ErrInvalidToken", err)
			}
		}
	}
	fetches := func(t *testing.T, want int) {
		t.Helper()
		if got := op.RequestsTo("/jwks"); got != want {
			t.Fatalf("JWKS fetched %d times, want %d", got, want)
		}
	}

	good(t)
	fetches(t, 1)
	t.Run("fail/forged_within_the_interval_fetch_nothing", func(t *testing.T) {
		advance(9 * time.Second)
		forged(t, 20, false)
		fetches(t, 1)
		good(t)
	})
	t.Run("fail/forged_after_the_interval_fetch_once", func(t *testing.T) {
		advance(2 * time.Second)
		forged(t, 20, false)
		fetches(t, 2)
		good(t)
	})
	t.Run("fail/forged_at_once_fetch_once", func(t *testing.T) {
		advance(11 * time.Second)
		forged(t, 20, true)
		fetches(t, 3)
		good(t)
	})
	t.Run("ok/rotated_key_after_the_interval", func(t *testing.T) {
		op.RotateKey(t)
		advance(time.Second)
		rotated := op.IDToken(t, upstreamtest.Token{Subject: "u1"})
		if _, err := v.VerifyIDToken(ctx, p, rotated, ""); !errors.Is(err, upstream.ErrInvalidToken) {
			t.Fatalf("token of a new key within the interval = %v, want ErrInvalidToken", err)
		}
		fetches(t, 3)
		advance(10 * time.Second)
		// go-oidc shares one fetch among the verifications waiting on it,
		// and forgets that fetch only after it has handed out its answer:
		// a verification that comes in that moment is given the refused
		// fetch's error without a request. Retried, it starts its own
		// fetch. Either way the provider sees one request.
		var err error
		for range 1000 {
			if _, err = v.VerifyIDToken(ctx, p, rotated, ""); err == nil || !errors.Is(err, upstream.ErrInvalidToken) ||
				op.RequestsTo("/jwks") > 3 {
				break
			}
			runtime.Gosched() // the refused fetch's goroutine forgets it: nothing to wait on instead
		}
		if err != nil {
			t.Fatalf("token of a new key after the interval: %v", err)
		}
		fetches(t, 4)
	})
}
