package pages_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
	"gorm.io/gorm"

	"github.com/portcullis-auth/portcullis/server/clients"
	st "github.com/portcullis-auth/portcullis/server/servertest"
	"github.com/portcullis-auth/portcullis/server/upstream"
	"github.com/portcullis-auth/portcullis/server/upstream/upstreamtest"
	"github.com/portcullis-auth/portcullis/store"
)

// newFedDeploymentOn is a deployment on backend b with the test provider
// "corp" ("Corp Login", allowed_domains example.com, no just-in-time
// creation) and the first-party client "notes".
func newFedDeploymentOn(t *testing.T, b st.Backend) *fedDeployment {
	t.Helper()
	op := upstreamtest.New(t)
	file := filepath.Join(t.TempDir(), "providers.yaml")
	if err := os.WriteFile(file, []byte("providers:\n  - id: corp\n    name: Corp Login\n    issuer: "+op.Issuer+
		"\n    client_id: "+op.ClientID+"\n    client_secret: "+op.ClientSecret+"\n    allowed_domains: [example.com]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newDeploymentOn(t, b, map[string]string{"PORTCULLIS_IDENTITY_PROVIDERS_FILE": file})
	secret := d.fx.Client(t, clients.Spec{ID: "notes", Name: "Notes", Grants: []string{"authorization_code"},
		RedirectURIs: []string{d.in.URL + "/healthz"}, FirstParty: true})
	return &fedDeployment{deployment: d, op: op, notesSecret: secret}
}

var csrfField = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// follow sends the browser hc to u at the test provider and returns where
// the provider sends it back (the callback URL).
func follow(t *testing.T, hc *http.Client, u string) string {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the provider answered %d", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// TestUpstreamInvitePage accepts an invitation over HTTP with the /invite
// page's "Accept with Corp Login" button and the test provider: the
// account is created with the invite's role, no password and the identity
// linked, and then signs in with the provider at a client; a wrong or
// unverified email, a used invitation, a missing CSRF token and an
// unknown provider are refused with a 4xx page, and the invite token
// never leaves the server (not in a Location, not in the log).
func TestUpstreamInvitePage(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedDeploymentOn(t, b)
			ctx := context.Background()
			verified := upstreamtest.Bool(true)
			// open opens an invite link in a new browser and returns it and
			// the /invite page's CSRF token, checking the provider button.
			open := func(link string) (*http.Client, string) {
				t.Helper()
				hc := browserClient(t)
				if pg := get(t, hc, link); pg.StatusCode != http.StatusSeeOther {
					t.Fatalf("invite link: %d", pg.StatusCode)
				}
				pg := get(t, hc, d.in.URL+"/invite")
				if pg.StatusCode != http.StatusOK {
					t.Fatalf("/invite: %d %s", pg.StatusCode, pg.Body)
				}
				mustContain(t, "the invite page", pg.Body, `action="/invite/corp"`, "Accept with Corp Login")
				if csp := pg.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' "+d.op.Issuer) {
					t.Fatalf("the invite page's CSP %q does not let its forms go to the provider", csp)
				}
				m := csrfField.FindStringSubmatch(pg.Body)
				if m == nil {
					t.Fatal("no CSRF token on the invite page")
				}
				return hc, html.UnescapeString(m[1])
			}
			// accept presses the button, signs in at the provider as tok and
			// returns the page the callback answers.
			accept := func(hc *http.Client, csrf string, tok upstreamtest.Token, invite string) page {
				t.Helper()
				pg := post(t, hc, d.in.URL+"/invite/corp", url.Values{"csrf_token": {csrf}})
				loc := pg.Header.Get("Location")
				if pg.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, d.op.Issuer+"/authorize") {
					t.Fatalf("POST /invite/corp: %d %q %s", pg.StatusCode, loc, pg.Body)
				}
				if strings.Contains(loc, invite) {
					t.Fatal("the invite token is in the provider's URL")
				}
				d.op.NextLogin(tok)
				return get(t, hc, follow(t, hc, loc))
			}

			// An email address other than the invite's, then the invite's
			// unverified: refused, audited, nothing created.
			link := d.invite(t, "ivy@example.com", "admin")
			inv := tokenOf(t, link)
			hc, csrf := open(link)
			for _, c := range []struct {
				tok    upstreamtest.Token
				reason string
			}{
				{upstreamtest.Token{Subject: "sub-other", Email: "other@example.com", EmailVerified: verified}, upstream.ReasonInviteMismatch},
				{upstreamtest.Token{Subject: "sub-ivy", Email: "ivy@example.com"}, upstream.ReasonEmailUnverified},
			} {
				pg := accept(hc, csrf, c.tok, inv)
				if pg.StatusCode != http.StatusForbidden || !strings.Contains(pg.Body, "The invitation was not accepted") {
					t.Fatalf("%s: %d %s", c.reason, pg.StatusCode, pg.Body)
				}
				if ev := d.lastFailure(t); ev.Details["method"] != "upstream" || ev.Details["reason"] != c.reason {
					t.Fatalf("%s: login.failed %+v", c.reason, ev)
				}
			}
			for _, e := range []string{"ivy@example.com", "other@example.com"} {
				if _, err := d.in.App.Core.Store.GetUserByEmail(ctx, e); err == nil {
					t.Fatalf("a refused acceptance created %s", e)
				}
			}

			// No CSRF token, or an unknown provider: refused before the provider.
			before := d.op.RequestsTo("/authorize")
			if pg := post(t, hc, d.in.URL+"/invite/corp", url.Values{}); pg.StatusCode != http.StatusForbidden {
				t.Fatalf("no CSRF token: %d", pg.StatusCode)
			}
			if pg := post(t, browserClient(t), d.in.URL+"/invite/corp", url.Values{"csrf_token": {csrf}}); pg.StatusCode != http.StatusForbidden {
				t.Fatalf("another browser's CSRF token: %d", pg.StatusCode)
			}
			if pg := post(t, hc, d.in.URL+"/invite/nope", url.Values{"csrf_token": {csrf}}); pg.StatusCode != http.StatusNotFound {
				t.Fatalf("unknown provider: %d", pg.StatusCode)
			}

			// Two sign-ins begun for the invite: the first accepts it.
			pg := post(t, hc, d.in.URL+"/invite/corp", url.Values{"csrf_token": {csrf}})
			second := pg.Header.Get("Location")
			if pg.StatusCode != http.StatusSeeOther {
				t.Fatalf("second start: %d", pg.StatusCode)
			}
			pg = accept(hc, csrf, upstreamtest.Token{Subject: "sub-ivy", Email: "Ivy@Example.com", EmailVerified: verified}, inv)
			if pg.StatusCode != http.StatusOK {
				t.Fatalf("accept: %d %s", pg.StatusCode, pg.Body)
			}
			mustContain(t, "the accepted page", pg.Body, "Your invitation is accepted", "sign in with Corp Login")
			if d.op.RequestsTo("/authorize") != before+1 {
				t.Fatal("a refused start reached the provider")
			}
			u, err := d.in.App.Core.Store.GetUserByEmail(ctx, "ivy@example.com")
			if err != nil || u.PasswordHash != "" || !u.EmailVerified || len(u.Roles) != 1 || u.Roles[0] != "admin" {
				t.Fatalf("invited user %+v, %v", u, err)
			}
			if ids, err := d.in.App.Core.Store.ListFederatedIdentities(ctx, u.ID); err != nil || len(ids) != 1 || ids[0].Subject != "sub-ivy" {
				t.Fatalf("identities %+v, %v", ids, err)
			}

			// The invite is used: the other sign-in, and the button, are refused.
			d.op.NextLogin(upstreamtest.Token{Subject: "sub-ivy2", Email: "ivy@example.com", EmailVerified: verified})
			if pg := get(t, hc, follow(t, hc, second)); pg.StatusCode != http.StatusBadRequest ||
				!strings.Contains(pg.Body, "This invitation link cannot be used") {
				t.Fatalf("used invite at the callback: %d %s", pg.StatusCode, pg.Body)
			}
			hc2 := browserClient(t)
			get(t, hc2, link)
			if pg := get(t, hc2, d.in.URL+"/invite"); pg.StatusCode != http.StatusBadRequest {
				t.Fatalf("used invite page: %d", pg.StatusCode)
			}
			get(t, hc2, link)
			if pg := post(t, hc2, d.in.URL+"/invite/corp", url.Values{"csrf_token": {csrf}}); pg.StatusCode != http.StatusForbidden {
				t.Fatalf("used invite, CSRF of another browser: %d", pg.StatusCode)
			}
			hc3, csrf3 := browserClient(t), ""
			get(t, hc3, d.in.URL+"/forgot-password")
			if m := csrfField.FindStringSubmatch(get(t, hc3, d.in.URL+"/forgot-password").Body); m != nil {
				csrf3 = html.UnescapeString(m[1])
			}
			get(t, hc3, link)
			if pg := post(t, hc3, d.in.URL+"/invite/corp", url.Values{"csrf_token": {csrf3}}); pg.StatusCode != http.StatusBadRequest ||
				!strings.Contains(pg.Body, "This invitation link cannot be used") {
				t.Fatalf("used invite at the button: %d %s", pg.StatusCode, pg.Body)
			}

			// The invited person signs in with the provider at a client.
			bc := browserClient(t)
			verifier := oauth2.GenerateVerifier()
			pg = get(t, bc, d.oauth().AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)))
			for pg.StatusCode == http.StatusSeeOther && !strings.Contains(pg.Header.Get("Location"), "/login/corp") {
				loc, err := url.Parse(pg.Header.Get("Location"))
				if err != nil {
					t.Fatal(err)
				}
				pg = get(t, bc, d.in.URL+loc.RequestURI())
			}
			m := regexp.MustCompile(`href="(/login/corp\?[^"]+)"`).FindStringSubmatch(pg.Body)
			if m == nil {
				t.Fatalf("no provider button on the login page: %d %s", pg.StatusCode, pg.Body)
			}
			start := get(t, bc, d.in.URL+html.UnescapeString(m[1]))
			d.op.NextLogin(upstreamtest.Token{Subject: "sub-ivy", Email: "ivy@example.com", EmailVerified: verified})
			back := get(t, bc, follow(t, bc, start.Header.Get("Location")))
			loc, err := url.Parse(back.Header.Get("Location"))
			if back.StatusCode != http.StatusSeeOther || err != nil || loc.Query().Get("code") == "" {
				t.Fatalf("sign-in at the client: %d %q %s", back.StatusCode, back.Header.Get("Location"), back.Body)
			}
			tok, err := d.oauth().Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
			if err != nil || tok.AccessToken == "" {
				t.Fatalf("exchange: %v", err)
			}
			d.assertNoSecretInLogs(t, inv)
		})
	}
}

// TestUpstreamInviteRecordHoldsNoToken: the server-side record of a
// sign-in begun with "Accept with Corp Login" (the token state: Redis
// keys, or the SQL once_records table) holds no part of the emailed invite
// token, encoded or not, only what finds the invite by its stored hash;
// reading the token state gives nobody an invite to accept with a
// password. A record in the older form, holding the raw token (written by
// an instance of the previous release during a rolling upgrade), still
// accepts the invite. Found by a review: the record kept the raw token.
func TestUpstreamInviteRecordHoldsNoToken(t *testing.T) {
	for _, b := range []st.Backend{st.PostgresRedis, st.SQLite} {
		t.Run(b.String(), func(t *testing.T) {
			t.Parallel()
			d := newFedDeploymentOn(t, b)
			rs := openRecords(t, d, b)
			for _, c := range []struct {
				name   string
				legacy bool
			}{{"ok/record_holds_no_token", false}, {"ok/older_record_with_the_token", true}} {
				t.Run(c.name, func(t *testing.T) {
					email := strings.ReplaceAll(strings.TrimPrefix(c.name, "ok/"), "_", "-") + "@example.com"
					link := d.invite(t, email, "user")
					inv := tokenOf(t, link)
					_, secret, _ := strings.Cut(inv, ".")
					hc := browserClient(t)
					get(t, hc, link)
					m := csrfField.FindStringSubmatch(get(t, hc, d.in.URL+"/invite").Body)
					if m == nil {
						t.Fatal("no CSRF token on the invite page")
					}
					before := rs.keys(t)
					pg := post(t, hc, d.in.URL+"/invite/corp", url.Values{"csrf_token": {html.UnescapeString(m[1])}})
					if pg.StatusCode != http.StatusSeeOther {
						t.Fatalf("POST /invite/corp: %d %s", pg.StatusCode, pg.Body)
					}
					var key string
					for k := range rs.keys(t) {
						if !before[k] {
							key = k
						}
					}
					if key == "" {
						t.Fatal("the sign-in stored no record")
					}
					rec := rs.get(t, key)
					for _, s := range []string{inv, secret} {
						if holds(rec, s, 3) {
							t.Fatalf("the upstream sign-in's record holds the invite token: %s", rec)
						}
					}
					if c.legacy {
						rs.set(t, key, olderRecord(t, rec, inv))
					}
					d.op.NextLogin(upstreamtest.Token{Subject: "sub-" + email, Email: email, EmailVerified: upstreamtest.Bool(true)})
					pg = get(t, hc, follow(t, hc, pg.Header.Get("Location")))
					if pg.StatusCode != http.StatusOK || !strings.Contains(pg.Body, "Your invitation is accepted") {
						t.Fatalf("accept: %d %s", pg.StatusCode, pg.Body)
					}
					if u, err := d.in.App.Core.Store.GetUserByEmail(context.Background(), email); err != nil || len(u.Roles) != 1 || u.Roles[0] != "user" {
						t.Fatalf("invited user %+v, %v", u, err)
					}
				})
			}
		})
	}
}

// holds reports whether b holds s: as it is, or inside a base64 string
// (standard or URL alphabet) of the JSON b is, to depth levels.
func holds(b []byte, s string, depth int) bool {
	if bytes.Contains(b, []byte(s)) {
		return true
	}
	var v any
	if depth == 0 || json.Unmarshal(b, &v) != nil {
		return false
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				if raw, err := enc.DecodeString(v); err == nil && holds(raw, s, depth-1) {
					return true
				}
			}
		case map[string]any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		case []any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

// olderRecord is the upstream sign-in record rec as the previous release
// wrote it for an invite: the pages' data (field "a", base64 of JSON)
// holding the raw invite token inv (field "i") and no reference.
func olderRecord(t *testing.T, rec []byte, inv string) []byte {
	t.Helper()
	var pl map[string]any
	if err := json.Unmarshal(rec, &pl); err != nil {
		t.Fatal(err)
	}
	s, _ := pl["a"].(string)
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("record data %q: %v", s, err)
	}
	var ret map[string]any
	if err := json.Unmarshal(raw, &ret); err != nil {
		t.Fatal(err)
	}
	delete(ret, "j")
	ret["i"] = inv
	if raw, err = json.Marshal(ret); err != nil {
		t.Fatal(err)
	}
	pl["a"] = base64.StdEncoding.EncodeToString(raw)
	out, err := json.Marshal(pl)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// records reads and writes the upstream sign-in records straight in a
// deployment's token state, as someone who can read it would: Redis keys
// (PostgreSQL+Redis), or the once_records table (SQLite).
type records struct {
	redis  *redis.Client
	prefix string
	db     *gorm.DB
}

func openRecords(t *testing.T, d *fedDeployment, b st.Backend) records {
	t.Helper()
	if b != st.PostgresRedis {
		return records{db: d.in.App.Core.Store.DB()}
	}
	opts, err := redis.ParseURL(d.in.Config.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return records{redis: c, prefix: d.in.Config.RedisKeyPrefix + "{o:" + store.OnceUpstreamLogin + ":"}
}

// keys are the upstream records' keys (Redis key, or hex key hash).
func (r records) keys(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	if r.redis != nil {
		ks, err := r.redis.Keys(context.Background(), r.prefix+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range ks {
			out[k] = true
		}
		return out
	}
	var hashes [][]byte
	if err := r.db.Raw("SELECT key_hash FROM once_records WHERE kind = ?", store.OnceUpstreamLogin).Scan(&hashes).Error; err != nil {
		t.Fatal(err)
	}
	for _, h := range hashes {
		out[hex.EncodeToString(h)] = true
	}
	return out
}

func (r records) get(t *testing.T, key string) []byte {
	t.Helper()
	if r.redis != nil {
		v, err := r.redis.HGet(context.Background(), key, "v").Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	h, _ := hex.DecodeString(key)
	var v []byte
	if err := r.db.Raw("SELECT value FROM once_records WHERE kind = ? AND key_hash = ?", store.OnceUpstreamLogin, h).Row().Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (r records) set(t *testing.T, key string, v []byte) {
	t.Helper()
	if r.redis != nil {
		if err := r.redis.HSet(context.Background(), key, "v", v).Err(); err != nil {
			t.Fatal(err)
		}
		return
	}
	h, _ := hex.DecodeString(key)
	if err := r.db.Exec("UPDATE once_records SET value = ? WHERE kind = ? AND key_hash = ?", v, store.OnceUpstreamLogin, h).Error; err != nil {
		t.Fatal(err)
	}
}
