package upstream

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/store"
)

// Claims is what Portcullis takes from a verified upstream id token (and,
// for email, the provider's userinfo for the same sub).
type Claims struct {
	// Provider is the id of the provider that issued the token.
	Provider string `json:"provider"`
	Subject  string `json:"sub"`
	Email    string `json:"email,omitempty"`
	// EmailVerified is true only when the provider said so (a missing
	// claim is false).
	EmailVerified bool   `json:"email_verified,omitempty"`
	Name          string `json:"name,omitempty"`
	// AMR is the provider's own amr claim, as sent.
	AMR []string `json:"amr,omitempty"`
	// AuthTime is the provider's auth_time, zero when absent.
	AuthTime time.Time `json:"auth_time,omitzero"`
	// Expiry is the token's exp.
	Expiry time.Time `json:"-"`
	// IssuedAt is the token's iat (the sign-in's time when it has no
	// auth_time: LoginTime).
	IssuedAt time.Time `json:"-"`
}

// Verifier verifies upstream id tokens with go-oidc: issuer, audience (the
// provider's client_id), expiry, signature with a key of the provider's
// JWKS, and an algorithm the provider's discovery document publishes. The
// nonce is the caller's to require (VerifyIDToken's nonce). Every answer
// it reads from a provider is at most maxResponseBody (limitedClient), and
// a provider's key set is fetched again at most once per
// keySetRefetchInterval (keySetGate).
type Verifier struct {
	client *http.Client
	now    func() time.Time

	mu      sync.Mutex
	remotes map[string]*remote // by provider id
}

// remote is a provider's discovered endpoints and verifier, and whether
// its discovery document says its authorization responses carry iss.
type remote struct {
	oidc     *oidc.Provider
	verifier *oidc.IDTokenVerifier
	issParam bool
}

// NewVerifier returns a Verifier using client for every request to
// providers (nil: a client with a 10 s timeout that follows only https or
// loopback redirects), each answer cut at 1 MiB (maxResponseBody), and now
// as the clock (nil: time.Now), which also spaces a provider's key set
// fetches (keySetGate).
func NewVerifier(client *http.Client, now func() time.Time) *Verifier {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("stopped after 5 redirects")
			}
			return checkEndpoint(req.URL.String())
		}}
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{client: limitedClient(client), now: now, remotes: map[string]*remote{}}
}

// ErrUnavailable wraps a failure to reach a provider (discovery, keys,
// token or userinfo endpoint): the sign-in fails closed, as a temporary
// problem rather than a bad token.
var ErrUnavailable = errors.New("upstream: the identity provider could not be reached")

// ErrInvalidToken wraps every reason an id token is refused.
var ErrInvalidToken = errors.New("upstream: invalid id token")

// ctx gives go-oidc and oauth2 the Verifier's HTTP client.
func (v *Verifier) ctx(ctx context.Context) context.Context {
	ctx = oidc.ClientContext(ctx, v.client)
	return context.WithValue(ctx, oauth2.HTTPClient, v.client)
}

// discover returns the provider's discovered configuration, fetching it on
// first use (a failure is retried on the next use). The discovery
// document's issuer must equal the configured one (go-oidc), and its
// endpoints must be https (or http on a loopback IP).
func (v *Verifier) discover(ctx context.Context, p *Provider) (*remote, error) {
	v.mu.Lock()
	r, ok := v.remotes[p.ID]
	v.mu.Unlock()
	if ok {
		return r, nil
	}
	// The keys are fetched later with whatever context Verify gets; the
	// provider keeps the HTTP client, not this request's context.
	op, err := oidc.NewProvider(v.ctx(context.WithoutCancel(ctx)), p.Issuer)
	if err != nil {
		var mismatch *oidc.IssuerMismatchError
		if errors.As(err, &mismatch) {
			return nil, fmt.Errorf("%w: provider %q: discovery names another issuer", ErrUnavailable, p.ID)
		}
		return nil, fmt.Errorf("%w: provider %q: discovery: %v", ErrUnavailable, p.ID, err)
	}
	var meta struct {
		JWKS     string `json:"jwks_uri"`
		UserInfo string `json:"userinfo_endpoint"`
		// IssParam is RFC 9207 §3's flag, read as raw JSON so that a
		// malformed one does not fail the discovery: only true counts.
		IssParam json.RawMessage `json:"authorization_response_iss_parameter_supported"`
	}
	if err := op.Claims(&meta); err != nil {
		return nil, fmt.Errorf("%w: provider %q: discovery: %v", ErrUnavailable, p.ID, err)
	}
	for _, u := range []string{op.Endpoint().AuthURL, op.Endpoint().TokenURL, meta.JWKS, meta.UserInfo} {
		if u == "" {
			continue
		}
		if err := checkEndpoint(u); err != nil {
			return nil, fmt.Errorf("%w: provider %q: discovery: %v", ErrUnavailable, p.ID, err)
		}
	}
	// The key set fetches through a keySetGate of its own: once per
	// keySetRefetchInterval at most, however many tokens fail to verify.
	keys := oidc.ClientContext(context.WithoutCancel(ctx), v.keySetClient())
	r = &remote{oidc: op, verifier: op.VerifierContext(keys, &oidc.Config{ClientID: p.ClientID, Now: v.now}),
		issParam: string(meta.IssParam) == "true"}
	v.mu.Lock()
	v.remotes[p.ID] = r
	v.mu.Unlock()
	return r, nil
}

// issRequired reports whether p's discovery document advertises
// authorization_response_iss_parameter_supported: every authorization
// response of p then carries iss (RFC 9207 §3), so one without it was not
// made by p and is refused (§2.4). A provider that cannot be reached is an
// error wrapping ErrUnavailable.
func (v *Verifier) issRequired(ctx context.Context, p *Provider) (bool, error) {
	r, err := v.discover(ctx, p)
	if err != nil {
		return false, err
	}
	return r.issParam, nil
}

// checkEndpoint accepts https URLs and http on loopback IP literals.
func checkEndpoint(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	if u.Scheme == "https" || (u.Scheme == "http" && redirecturi.IsLoopbackIP(u.Hostname())) {
		return nil
	}
	return fmt.Errorf("%q is not https", raw)
}

// rawClaims are the id token claims read beside go-oidc's.
type rawClaims struct {
	Email         string          `json:"email"`
	EmailVerified json.RawMessage `json:"email_verified"`
	Name          string          `json:"name"`
	AMR           []string        `json:"amr"`
	AuthTime      json.Number     `json:"auth_time"`
	AZP           string          `json:"azp"`
}

// headerType is the JWS header's typ, lower case without an
// "application/" prefix; "" when absent or unreadable.
func headerType(raw string) string {
	head, _, ok := strings.Cut(raw, ".")
	if !ok {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		Typ string `json:"typ"`
	}
	if json.Unmarshal(b, &h) != nil {
		return ""
	}
	return strings.TrimPrefix(strings.ToLower(h.Typ), "application/")
}

// verifiedTrue reads email_verified: JSON true, or the string "true" some
// providers send; anything else (false, missing, garbage) is false.
func verifiedTrue(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && s == "true"
}

// VerifyIDToken verifies raw as an id token of p and returns its claims.
// nonce, when not empty, must equal the token's nonce (the browser path);
// the token-exchange path passes "". A refused token is an error wrapping
// ErrInvalidToken; a provider that cannot be reached one wrapping
// ErrUnavailable.
func (v *Verifier) VerifyIDToken(ctx context.Context, p *Provider, raw, nonce string) (Claims, error) {
	if typ := headerType(raw); typ != "" && typ != "jwt" {
		// An RFC 9068 access token (at+jwt), a logout token (logout+jwt)…
		// is never an id token, whatever its aud says (RFC 8725 §3.11).
		return Claims{}, fmt.Errorf("%w: a %q token is not an id token", ErrInvalidToken, typ)
	}
	r, err := v.discover(ctx, p)
	if err != nil {
		return Claims{}, err
	}
	tok, err := r.verifier.Verify(v.ctx(ctx), raw)
	if err != nil {
		var expired *oidc.TokenExpiredError
		if errors.As(err, &expired) {
			return Claims{}, fmt.Errorf("%w: expired", ErrInvalidToken)
		}
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(tok.Nonce), []byte(nonce)) != 1 {
		return Claims{}, fmt.Errorf("%w: the nonce does not match", ErrInvalidToken)
	}
	if tok.Subject == "" || len(tok.Subject) > 255 {
		return Claims{}, fmt.Errorf("%w: no usable sub", ErrInvalidToken)
	}
	if tok.IssuedAt.IsZero() {
		// OIDC Core §2: iat is required, and it is the sign-in's time when
		// the token has no auth_time (LoginTime).
		return Claims{}, fmt.Errorf("%w: no iat", ErrInvalidToken)
	}
	var rc rawClaims
	if err := tok.Claims(&rc); err != nil {
		return Claims{}, fmt.Errorf("%w: claims: %v", ErrInvalidToken, err)
	}
	// OIDC Core §3.1.3.7 (3, 4, 5): a token with audiences besides the
	// provider's client was issued to them too, and none of them is trusted
	// here: it is accepted only when its azp names the provider's client
	// (without azp, or with another client's, it is refused). A token with
	// the one audience keeps its azp unchecked: a provider's mobile app may
	// get an id token for its server's client (Google's azp is then the
	// app's client).
	if len(tok.Audience) > 1 && rc.AZP != p.ClientID {
		return Claims{}, fmt.Errorf("%w: several audiences, and azp does not name the provider's client", ErrInvalidToken)
	}
	c := Claims{Provider: p.ID, Subject: tok.Subject, Email: rc.Email, EmailVerified: rc.Email != "" && verifiedTrue(rc.EmailVerified),
		Name: rc.Name, AMR: rc.AMR, Expiry: tok.Expiry, IssuedAt: tok.IssuedAt}
	if at, err := rc.AuthTime.Int64(); err == nil && at > 0 {
		c.AuthTime = time.Unix(at, 0).UTC()
	}
	return c, nil
}

// LoginTime is when the person authenticated at the provider, the one
// time every session begun by an upstream id token starts at (the browser
// path and its second step, and the token exchange): auth_time, else iat
// (a token is issued at or after the sign-in it reports, so a provider
// that omits auth_time, though asked with max_age, has its sign-ins taken
// as made when the token was issued: the best known, and possibly later
// than the person really signed in there), at most now (a provider's clock
// ahead of ours); zero when the token has neither (VerifyIDToken refuses
// such a token).
// Both are whole seconds, so the sign-in is taken at the last millisecond
// of the second they name: one made just after "end every session" of the
// user, in the same second, is not refused for the provider's rounding.
func (c Claims) LoginTime(now time.Time) time.Time {
	at := c.AuthTime
	if at.IsZero() {
		at = c.IssuedAt
	}
	if at.IsZero() {
		return time.Time{}
	}
	at = at.Add(time.Second - time.Millisecond)
	if at.After(now) {
		return now
	}
	return at
}

// checkLoginAge refuses (ReasonStaleLogin) a sign-in by p whose login time
// (LoginTime) is older than store.MaxLoginAge at now, with
// freshnessLeeway for the provider's clock. A user's cut-off ("end every
// session") is kept for store.UserCutoffLifetime, which is longer: no
// login time older than a cut-off still kept can be presented, so an old
// session at the provider never signs in again once the cut-off is
// forgotten. Both upstream paths call it (Callback, ExchangeSubjectToken),
// whatever the request asked.
func checkLoginAge(p *Provider, c Claims, now time.Time) error {
	if at := c.LoginTime(now); now.Sub(at) > store.MaxLoginAge+freshnessLeeway {
		return refuse(ReasonStaleLogin, p, "", fmt.Errorf("the sign-in at the provider (%d) is older than %s", at.Unix(), store.MaxLoginAge))
	}
	return nil
}

// FillFromUserInfo completes c's email from the provider's userinfo
// endpoint when the id token had none: only a userinfo answer for the same
// sub counts (OIDC Core §5.3.2). Without a userinfo endpoint c is returned
// unchanged.
func (v *Verifier) FillFromUserInfo(ctx context.Context, p *Provider, c Claims, ts oauth2.TokenSource) (Claims, error) {
	if c.Email != "" {
		return c, nil
	}
	r, err := v.discover(ctx, p)
	if err != nil {
		return c, err
	}
	if r.oidc.UserInfoEndpoint() == "" {
		return c, nil
	}
	ui, err := r.oidc.UserInfo(v.ctx(ctx), ts)
	if err != nil {
		return c, fmt.Errorf("%w: provider %q: userinfo: %v", ErrUnavailable, p.ID, err)
	}
	if ui.Subject != c.Subject {
		return c, fmt.Errorf("%w: userinfo is about another sub", ErrInvalidToken)
	}
	var extra struct {
		EmailVerified json.RawMessage `json:"email_verified"`
	}
	_ = ui.Claims(&extra)
	c.Email, c.EmailVerified = ui.Email, ui.Email != "" && verifiedTrue(extra.EmailVerified)
	return c, nil
}

// oauth2Config is the provider's code flow client configuration.
func (v *Verifier) oauth2Config(ctx context.Context, p *Provider, redirectURL string) (*oauth2.Config, error) {
	r, err := v.discover(ctx, p)
	if err != nil {
		return nil, err
	}
	return &oauth2.Config{ClientID: p.ClientID, ClientSecret: p.ClientSecret.Reveal(), Endpoint: r.oidc.Endpoint(),
		RedirectURL: redirectURL, Scopes: slices.Clone(p.Scopes)}, nil
}
