// Package upstreamtest is a hostile OpenID provider for tests: an httptest
// server with discovery, JWKS, authorization, token and userinfo endpoints,
// built on go-jose, whose id tokens the test controls claim by claim (wrong
// iss, aud or nonce, expired, alg none, a key not in the JWKS, email
// changes…). It must never be used outside tests.
package upstreamtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Provider is a running test OpenID provider.
type Provider struct {
	// Issuer is its issuer (the server's URL).
	Issuer string
	// ClientID and ClientSecret are the one client it knows (the token
	// endpoint checks them).
	ClientID     string
	ClientSecret string

	server   *httptest.Server
	key      *rsa.PrivateKey
	kid      string
	stranger *rsa.PrivateKey // signs tokens with a key the JWKS does not hold

	mu        sync.Mutex
	now       func() time.Time
	next      *Token               // the claims of the next person to sign in
	codes     map[string]codeGrant // by code
	access    map[string]Token     // userinfo by access token
	userinfo  map[string]any       // overrides the userinfo answer when set
	discovery map[string]any       // extra or overriding discovery fields
	requests  map[string]int       // by path
	padding   map[string]padding   // by path
}

// padding is what Pad adds to an endpoint's answers.
type padding struct {
	n       int64
	declare bool
}

type codeGrant struct {
	tok         Token
	challenge   string
	redirectURI string
	used        bool
}

// Token is the claims of an id token and how to sign it. Zero fields take
// the provider's defaults: iss the provider, aud its client, a 5-minute
// lifetime from now.
type Token struct {
	Issuer   string
	Audience []string
	Subject  string
	Email    string
	// EmailVerified is the email_verified claim; nil leaves it out.
	EmailVerified *bool
	// EmailVerifiedRaw, when set, is sent as email_verified verbatim
	// (e.g. the string "true").
	EmailVerifiedRaw any
	Name             string
	Nonce            string
	AMR              []string
	AZP              string
	IssuedAt         time.Time
	Expiry           time.Time
	// Alg "none" sends an unsigned token; "HS256" signs with the client
	// secret; "" or "RS256" signs with the provider's key.
	Alg string
	// UnknownKey signs with a key that is not in the JWKS (same kid).
	UnknownKey bool
	// Typ is the JWS header's typ (default "JWT").
	Typ string
	// Extra claims, added last; a nil value leaves the claim out (such as
	// "iat").
	Extra map[string]any
}

// Bool returns a pointer to b (for Token.EmailVerified).
func Bool(b bool) *bool { return &b }

// New starts a provider that stops when the test ends.
func New(t testing.TB) *Provider {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{ClientID: "portcullis-test-client-" + random()[:8], ClientSecret: "upstream-client-secret-" + random(), key: key, kid: "k1",
		stranger: stranger, now: time.Now, codes: map[string]codeGrant{}, access: map[string]Token{},
		requests: map[string]int{}, padding: map[string]padding{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.serveDiscovery)
	mux.HandleFunc("GET /jwks", p.serveJWKS)
	mux.HandleFunc("GET /authorize", p.serveAuthorize)
	mux.HandleFunc("POST /token", p.serveToken)
	mux.HandleFunc("GET /userinfo", p.serveUserInfo)
	p.server = httptest.NewServer(mux)
	p.Issuer = p.server.URL
	t.Cleanup(p.server.Close)
	return p
}

// SetClock replaces the provider's clock (issued-at and expiry defaults).
func (p *Provider) SetClock(now func() time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.now = now
}

// SetDiscovery overrides or adds discovery fields (nil value removes one).
func (p *Provider) SetDiscovery(fields map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.discovery = fields
}

// SetUserInfo makes userinfo answer these claims (nil: the signed-in
// person's own sub, email and email_verified).
func (p *Provider) SetUserInfo(claims map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.userinfo = claims
}

// Pad makes the JSON answers of the endpoint at path (such as
// "/.well-known/openid-configuration", "/jwks", "/token", "/userinfo") end
// with n spaces, still valid JSON: a provider sending documents of any size.
// With declare the answer has a Content-Length; without, it is chunked and
// its size known only by reading it.
func (p *Provider) Pad(path string, n int64, declare bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.padding[path] = padding{n: n, declare: declare}
}

// RotateKey replaces the provider's signing key with a new one under a new
// kid; the JWKS publishes only the new one.
func (p *Provider) RotateKey(t testing.TB) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.key, p.kid = key, p.kid+"'"
}

// NextLogin sets who signs in at the next authorization request (the
// browser path): its code yields an id token with these claims and the
// request's nonce (unless tok.Nonce is set).
func (p *Provider) NextLogin(tok Token) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next = &tok
}

// IDToken mints an id token with tok's claims, signed as tok says.
func (p *Provider) IDToken(t testing.TB, tok Token) string {
	t.Helper()
	s, err := p.mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (p *Provider) claims(tok Token) map[string]any {
	p.mu.Lock()
	now := p.now()
	p.mu.Unlock()
	// A random jti makes every minted token distinct, as two real sign-ins
	// are (Portcullis spends an exchanged id token by its hash).
	jti := make([]byte, 12)
	_, _ = rand.Read(jti)
	c := map[string]any{"iss": p.Issuer, "aud": []string{p.ClientID}, "sub": tok.Subject, "iat": now.Unix(),
		"exp": now.Add(5 * time.Minute).Unix(), "jti": base64.RawURLEncoding.EncodeToString(jti)}
	if tok.Issuer != "" {
		c["iss"] = tok.Issuer
	}
	if tok.Audience != nil {
		c["aud"] = tok.Audience
	}
	if !tok.IssuedAt.IsZero() {
		c["iat"] = tok.IssuedAt.Unix()
	}
	if !tok.Expiry.IsZero() {
		c["exp"] = tok.Expiry.Unix()
	}
	for k, v := range map[string]string{"email": tok.Email, "name": tok.Name, "nonce": tok.Nonce, "azp": tok.AZP} {
		if v != "" {
			c[k] = v
		}
	}
	if tok.EmailVerified != nil {
		c["email_verified"] = *tok.EmailVerified
	}
	if tok.EmailVerifiedRaw != nil {
		c["email_verified"] = tok.EmailVerifiedRaw
	}
	if tok.AMR != nil {
		c["amr"] = tok.AMR
	}
	for k, v := range tok.Extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func (p *Provider) mint(tok Token) (string, error) {
	payload, err := json.Marshal(p.claims(tok))
	if err != nil {
		return "", err
	}
	switch tok.Alg {
	case "none":
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		return h + "." + base64.RawURLEncoding.EncodeToString(payload) + ".", nil
	case "HS256":
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte(p.ClientSecret)},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", p.kid))
		if err != nil {
			return "", err
		}
		return sign(signer, payload)
	}
	p.mu.Lock()
	key, kid := p.key, p.kid
	p.mu.Unlock()
	if tok.UnknownKey {
		key = p.stranger
	}
	typ := jose.ContentType("JWT")
	if tok.Typ != "" {
		typ = jose.ContentType(tok.Typ)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType(typ).WithHeader("kid", kid))
	if err != nil {
		return "", err
	}
	return sign(signer, payload)
}

func sign(s jose.Signer, payload []byte) (string, error) {
	jws, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Requests counts the requests the provider has served.
func (p *Provider) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.requests {
		n += c
	}
	return n
}

// RequestsTo counts the requests the provider has served at path (such as
// "/jwks").
func (p *Provider) RequestsTo(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests[path]
}

func (p *Provider) count(r *http.Request) {
	p.mu.Lock()
	p.requests[r.URL.Path]++
	p.mu.Unlock()
}

func (p *Provider) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	p.count(r)
	m := map[string]any{
		"issuer": p.Issuer, "authorization_endpoint": p.Issuer + "/authorize", "token_endpoint": p.Issuer + "/token",
		"userinfo_endpoint": p.Issuer + "/userinfo", "jwks_uri": p.Issuer + "/jwks",
		"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"}, "code_challenge_methods_supported": []string{"S256"},
	}
	p.mu.Lock()
	for k, v := range p.discovery {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	p.mu.Unlock()
	p.writeJSON(w, r, http.StatusOK, m)
}

func (p *Provider) serveJWKS(w http.ResponseWriter, r *http.Request) {
	p.count(r)
	p.mu.Lock()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: p.kid, Algorithm: "RS256", Use: "sig"}}}
	p.mu.Unlock()
	p.writeJSON(w, r, http.StatusOK, set)
}

// serveAuthorize signs in whoever NextLogin named, at once, and redirects
// back with a code, the state and iss (RFC 9207).
func (p *Provider) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	p.count(r)
	q := r.URL.Query()
	if q.Get("client_id") != p.ClientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") == "" || q.Get("redirect_uri") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	next := p.next
	p.mu.Unlock()
	if next == nil {
		http.Error(w, "nobody to sign in (NextLogin)", http.StatusBadRequest)
		return
	}
	tok := *next
	if tok.Nonce == "" {
		tok.Nonce = q.Get("nonce")
	}
	code := random()
	p.mu.Lock()
	p.codes[code] = codeGrant{tok: tok, challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri")}
	p.mu.Unlock()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	bq := back.Query()
	bq.Set("code", code)
	bq.Set("state", q.Get("state"))
	bq.Set("iss", p.Issuer)
	back.RawQuery = bq.Encode()
	http.Redirect(w, r, back.String(), http.StatusSeeOther)
}

func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	p.count(r)
	if err := r.ParseForm(); err != nil {
		p.writeJSON(w, r, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != p.ClientID || secret != p.ClientSecret {
		p.writeJSON(w, r, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	p.mu.Lock()
	g, found := p.codes[r.PostForm.Get("code")]
	if found {
		g.used = true
		p.codes[r.PostForm.Get("code")] = g
	}
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	if !found || r.PostForm.Get("grant_type") != "authorization_code" || g.redirectURI != r.PostForm.Get("redirect_uri") ||
		base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
		p.writeJSON(w, r, http.StatusBadRequest, map[string]string{"error": "invalid_grant"})
		return
	}
	idt, err := p.mint(g.tok)
	if err != nil {
		p.writeJSON(w, r, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	at := random()
	p.mu.Lock()
	p.access[at] = g.tok
	p.mu.Unlock()
	p.writeJSON(w, r, http.StatusOK, map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": 300, "id_token": idt})
}

func (p *Provider) serveUserInfo(w http.ResponseWriter, r *http.Request) {
	p.count(r)
	at, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p.mu.Lock()
	tok, found := p.access[at]
	override := p.userinfo
	p.mu.Unlock()
	if !ok || !found {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if override != nil {
		p.writeJSON(w, r, http.StatusOK, override)
		return
	}
	m := map[string]any{"sub": tok.Subject}
	if tok.Email != "" {
		m["email"] = tok.Email
	}
	if tok.EmailVerified != nil {
		m["email_verified"] = *tok.EmailVerified
	}
	p.writeJSON(w, r, http.StatusOK, m)
}

// spaces is what padded answers are written from, so that padding costs
// the provider no allocation.
var spaces = []byte(strings.Repeat(" ", 64<<10))

func (p *Provider) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.mu.Lock()
	pad := p.padding[r.URL.Path]
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if pad.declare {
		w.Header().Set("Content-Length", strconv.FormatInt(int64(len(body))+pad.n, 10))
	}
	w.WriteHeader(status)
	if _, err := w.Write(body); err != nil {
		return
	}
	for left := pad.n; left > 0; left -= int64(len(spaces)) {
		if _, err := w.Write(spaces[:min(left, int64(len(spaces)))]); err != nil {
			return // the client stopped reading
		}
	}
}

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ProviderYAML is a providers-file entry for this provider with id and the
// given extra lines (each already indented by four spaces, such as
// "    link: verified_email_auto").
func (p *Provider) ProviderYAML(id string, extra ...string) string {
	s := fmt.Sprintf("  - id: %s\n    name: Test %s\n    issuer: %s\n    client_id: %s\n    client_secret: %s\n",
		id, id, p.Issuer, p.ClientID, p.ClientSecret)
	for _, e := range extra {
		s += e + "\n"
	}
	return s
}
