package ratelimit

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"
)

// TestTakeBackOnlyFromItsWindow: a login whose password step and second
// step straddle the end of the failure window (the mfa_token lives 5
// minutes, the window 15) takes back only the second step's attempt from
// the new window; the password step's left with its own window. The
// attacker is then answered on the account as on an address without one,
// on every backend. Found by a review; failed before a take-back named the
// window its attempt was counted in: both attempts were taken from the
// new window, erasing one of the attacker's failures there (the attacker
// got a guess early and a shorter delay ladder on the real account).
func TestTakeBackOnlyFromItsWindow(t *testing.T) {
	const limit = 3
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			rules := DefaultRules(limit)
			rules.LoginPerIP = Rule{}
			l, clk := limiterAt(b.open(t), rules, nil)
			ctx := context.Background()
			real, nobody := "owner-"+rand.Text()+"@example.com", "nobody-"+rand.Text()+"@example.com"
			attack := func() {
				for _, login := range []string{real, nobody} {
					_, _ = l.CheckLogin(ctx, "203.0.113.7", login)
				}
			}
			attack() // the attacker's failure opens the 15-minute window W1 on both
			clk.advance(14 * time.Minute)
			password, err := l.CheckLogin(ctx, "198.51.100.20", real) // the owner's password step, in W1
			if err != nil {
				t.Fatal(err)
			}
			clk.advance(2 * time.Minute) // W1 ended while the owner reads the TOTP app
			for range limit {
				attack() // the attacker fills W2 to the limit (the last opens a 1 s delay)
			}
			clk.advance(time.Second)
			second, err := l.CheckLogin(ctx, "198.51.100.20", real) // the owner's second step, in W2
			if err != nil {
				t.Fatal(err)
			}
			l.LoginSucceeded(ctx, "198.51.100.20", password, second) // mfa.Service.Complete
			answers := map[string][]string{}
			for _, w := range []time.Duration{0, time.Second, 0, 2 * time.Second, 0, 4 * time.Second, 0} {
				clk.advance(w)
				for _, login := range []string{real, nobody} {
					a := "admitted"
					if _, err := l.CheckLogin(ctx, "203.0.113.7", login); err != nil {
						a = err.Error()
					}
					answers[login] = append(answers[login], a)
				}
			}
			if !slices.Equal(answers[real], answers[nobody]) {
				t.Fatalf("after the owner's sign-in the attacker is answered\n%q for the account,\n%q for no account", answers[real], answers[nobody])
			}
		})
	}
}
