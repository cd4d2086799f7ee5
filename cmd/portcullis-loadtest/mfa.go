package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// The mfa scenario (issue 16) measures the grant that finishes a password
// login with a second factor, urn:portcullis:params:oauth:grant-type:
// mfa-recovery-code: one POST /oauth2/token per iteration with an
// mfa_token and a recovery code, answered 200 with tokens (amr pwd mfa).
//
// It is the recovery-code grant rather than mfa-otp because a TOTP time
// step logs a user in once (replays are refused): a user yields one otp
// login per 30 s, so a rate of hundreds per second would need that many
// thousand enrolled users per run. A recovery code is as single-use, and a
// user has ten. Both grants share everything but the factor's check (the
// mfa_token's read, attempt count and take, the user, the session, the
// signatures, the audit); the otp check is three HMAC-SHA1 codes and one
// compare-and-set of the user's last step where a recovery code is one
// hash and one compare-and-set.
//
// Before the clock starts, o.Concurrency goroutines each register users
// (POST /auth/register: the server needs PORTCULLIS_PUBLIC_REGISTRATION,
// which -stack sets), sign each in once, enrol TOTP (POST /auth/mfa/totp,
// then …/confirm with the current code) for its ten recovery codes, and
// pair each code with an mfa_token from a password grant of that user
// (the password step is not what is measured). Minting runs for twice the
// warm-up plus the run, at least mfaMintAtLeast (less when the oldest
// token would outlive its 5-minute lifetime). The warm-up presents unknown
// tokens and spares the pairs; while measuring they are redeemed oldest
// first and, when they run out, the scenario ends and its rate is over the
// time it ran, as code_redemption's.

// mfaMintAtLeast is the shortest minting: each mfa_token costs a password
// hash (and each ten a user's registration, login and enrolment), so
// minting is far slower than redeeming.
const mfaMintAtLeast = 30 * time.Second

// mfaTokenLifetime is the server's default PORTCULLIS_MFA_TOKEN_TTL, less a margin.
const mfaTokenLifetime = 4*time.Minute + 30*time.Second

type mintedMFA struct{ token, code string }

func mfaWorker(ctx context.Context, c *http.Client, o Options, fin finite) (func() (worker, error), error) {
	run := o.Warmup + o.Duration
	mintFor := min(max(2*run, mfaMintAtLeast), mfaTokenLifetime-run)
	if mintFor < time.Second {
		return nil, fmt.Errorf("a run of %s would use mfa_tokens past their lifetime; use a shorter -duration", o.Warmup+o.Duration)
	}
	mintCtx, cancel := context.WithTimeout(ctx, mintFor)
	defer cancel()
	var (
		mu    sync.Mutex
		pool  []mintedMFA
		users int
		errs  []error
		wg    sync.WaitGroup
	)
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for mintCtx.Err() == nil {
				codes, err := enrolledUser(mintCtx, c, o)
				if err == nil {
					mu.Lock()
					users++
					mu.Unlock()
				}
				for i := 0; err == nil && i < codes.len() && mintCtx.Err() == nil; i++ {
					var tok string
					if tok, err = mfaChallenge(mintCtx, c, o, codes.email); err == nil {
						mu.Lock()
						pool = append(pool, mintedMFA{tok, codes.recovery[i]})
						mu.Unlock()
					}
				}
				if err != nil && mintCtx.Err() == nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, fmt.Errorf("minting mfa_tokens: %d failures, first: %w", len(errs), errs[0])
	}
	fmt.Fprintf(logOut, "mfa: %d mfa_tokens of %d enrolled users minted in %s\n", len(pool), users, mintFor)
	next := 0
	take := func() (mintedMFA, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next == len(pool) {
			return mintedMFA{}, false
		}
		next++
		return pool[next-1], true
	}
	tokenURL := o.URL + "/oauth2/token"
	// The warm-up spares the minted pairs: it presents an unknown mfa_token
	// (400 invalid_grant after the same client authentication and token
	// lookup), so that every pair is redeemed while measuring.
	warm := url.Values{"grant_type": {"urn:portcullis:params:oauth:grant-type:mfa-recovery-code"},
		"mfa_token": {"warm-up-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, "recovery_code": {"AAAAAAAAAAAAAAAA"}}.Encode()
	return func() (worker, error) {
		return func(ctx context.Context) bool {
			select {
			case <-fin.measuring:
			default:
				status, _ := post(ctx, c, tokenURL, warm, o.UserClient, o.UserSecret)
				return status == http.StatusBadRequest
			}
			m, ok := take()
			if !ok {
				fin.end() // out of tokens: the run stops here, this call is not counted
				<-ctx.Done()
				return false
			}
			form := url.Values{"grant_type": {"urn:portcullis:params:oauth:grant-type:mfa-recovery-code"},
				"mfa_token": {m.token}, "recovery_code": {m.code}}.Encode()
			status, body := post(ctx, c, tokenURL, form, o.UserClient, o.UserSecret)
			var tr tokenResponse
			return status == http.StatusOK && json.Unmarshal(body, &tr) == nil && tr.AccessToken != ""
		}, nil
	}, nil
}

// mfaUser is a registered user with TOTP enrolled and its recovery codes.
type mfaUser struct {
	email    string
	recovery []string
}

func (u mfaUser) len() int { return len(u.recovery) }

// enrolledUser registers a user, signs in once and enrols TOTP.
func enrolledUser(ctx context.Context, c *http.Client, o Options) (mfaUser, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	u := mfaUser{email: "bench-mfa-" + hex.EncodeToString(b[:]) + "@example.com"}
	if status, body := sendJSON(ctx, c, o.URL+"/auth/register", "", map[string]string{"email": u.email, "password": o.Password}); status != http.StatusCreated {
		return u, fmt.Errorf("register: status %d: %.200s (PORTCULLIS_PUBLIC_REGISTRATION must be on)", status, body)
	}
	tok, err := login(ctx, c, Options{URL: o.URL, Username: u.email, Password: o.Password, UserClient: o.UserClient, UserSecret: o.UserSecret})
	if err != nil {
		return u, err
	}
	status, body := sendJSON(ctx, c, o.URL+"/auth/mfa/totp", tok.AccessToken, map[string]string{})
	var en struct {
		Secret string `json:"secret"`
	}
	if status != http.StatusCreated || json.Unmarshal(body, &en) != nil || en.Secret == "" {
		return u, fmt.Errorf("start TOTP: status %d: %.200s", status, body)
	}
	code, err := totp.GenerateCodeCustom(en.Secret, time.Now(), totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return u, err
	}
	status, body = sendJSON(ctx, c, o.URL+"/auth/mfa/totp/confirm", tok.AccessToken, map[string]string{"code": code})
	var rc struct {
		Codes []string `json:"recovery_codes"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &rc) != nil || len(rc.Codes) == 0 {
		return u, fmt.Errorf("confirm TOTP: status %d: %.200s", status, body)
	}
	u.recovery = rc.Codes
	return u, nil
}

// mfaChallenge runs the password step of an enrolled user: 400 mfa_required.
func mfaChallenge(ctx context.Context, c *http.Client, o Options, email string) (string, error) {
	form := url.Values{"grant_type": {"password"}, "username": {email}, "password": {o.Password}}.Encode()
	status, body := post(ctx, c, o.URL+"/oauth2/token", form, o.UserClient, o.UserSecret)
	var ch struct {
		Error string `json:"error"`
		Token string `json:"mfa_token"`
	}
	if status != http.StatusBadRequest || json.Unmarshal(body, &ch) != nil || ch.Error != "mfa_required" || ch.Token == "" {
		return "", fmt.Errorf("password step: status %d: %.200s", status, body)
	}
	return ch.Token, nil
}

// sendJSON POSTs v as JSON (with a bearer token when given).
func sendJSON(ctx context.Context, c *http.Client, u, bearer string, v any) (int, []byte) {
	b, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return 0, nil
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return do(c, req)
}
