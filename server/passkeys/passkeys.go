package passkeys

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/mfa"
	"github.com/portcullis-auth/portcullis/store"
)

// DefaultSessionTTL is how long a begun ceremony waits for its finish.
const DefaultSessionTTL = 5 * time.Minute

// MaxCredentials bounds the credentials one person may register.
const MaxCredentials = 20

// MaxNameLen bounds a credential's name, in characters.
const MaxNameLen = 64

// DefaultName names a credential registered without a name.
const DefaultName = "Passkey"

// Errors of the ceremonies. The HTTP-facing methods return them wrapped in
// an *apierr.Error (400 invalid_request, 404 or 409), so errors.Is works on
// both.
var (
	// ErrRefused: the browser's response failed verification (origin, RP
	// ID, challenge, signature, a counter that did not grow, a credential
	// that is not the user's) or could not be parsed.
	ErrRefused = errors.New("passkeys: WebAuthn response refused")
	// ErrCeremony: the handle names no waiting ceremony of this user and
	// kind (unknown, expired, or finished already).
	ErrCeremony = errors.New("passkeys: no such WebAuthn ceremony")
	// ErrNotFound: the user has no credential with this id.
	ErrNotFound = errors.New("passkeys: no such credential")
)

// Credentials stores WebAuthn credentials: the WebAuthn part of
// store.MFAFactors. DeleteWebAuthnCredential drops the recovery codes with
// the user's last factor, in the same write.
type Credentials interface {
	AddWebAuthnCredential(ctx context.Context, c store.WebAuthnCredential) error
	ListWebAuthnCredentials(ctx context.Context, userID string) ([]store.WebAuthnCredential, error)
	UseWebAuthnCredential(ctx context.Context, userID, id string, oldCount, signCount uint32, credential []byte, now time.Time) error
	DeleteWebAuthnCredential(ctx context.Context, userID, id string) error
}

// Auditor records security-relevant events (*app.Auditor).
type Auditor interface {
	Record(ctx context.Context, e store.AuditEvent)
}

// PendingLimiter bounds the records of interactive state kept for one
// client address (*ratelimit.Limiter.AllowPending): an error (429 past the
// budget) keeps nothing. A nil *ratelimit.Limiter (rate limits off) allows
// everything.
type PendingLimiter interface {
	AllowPending(ctx context.Context, ip string) error
}

// Config is the relying party.
type Config struct {
	// RPID is the WebAuthn relying party id (PORTCULLIS_WEBAUTHN_RP_ID): a
	// domain, the host of the pages or a registrable suffix of it.
	RPID string
	// Origins are the origins the browser may run the ceremonies at
	// (PORTCULLIS_WEBAUTHN_ORIGINS), such as https://auth.example.com.
	Origins []string
	// RPName is shown by the browser while registering (default
	// "Portcullis").
	RPName string
	// SessionTTL is how long a begun ceremony waits (default 5 minutes).
	SessionTTL time.Duration
}

// Deps are the collaborators of a Service; Pending and Now may be nil.
type Deps struct {
	Credentials Credentials
	Once        store.SingleUse
	Audit       Auditor
	// Pending counts each begun ceremony against its caller's address
	// (nil: no limit).
	Pending PendingLimiter
	Now     func() time.Time
}

// Service runs the WebAuthn ceremonies. It is safe for concurrent use.
type Service struct {
	wa      *webauthn.WebAuthn
	creds   Credentials
	once    store.SingleUse
	pending PendingLimiter
	audit   Auditor
	now     func() time.Time
	ttl     time.Duration
}

// New checks cfg and d and returns a Service.
func New(cfg Config, d Deps) (*Service, error) {
	if d.Credentials == nil || d.Once == nil || d.Audit == nil {
		return nil, errors.New("passkeys: Credentials, Once and Audit are required")
	}
	if cfg.RPName == "" {
		cfg.RPName = "Portcullis"
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	wa, err := webauthn.New(&webauthn.Config{
		RPID: cfg.RPID, RPDisplayName: cfg.RPName, RPOrigins: cfg.Origins,
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey: protocol.ResidentKeyRequirementPreferred, RequireResidentKey: protocol.ResidentKeyNotRequired(),
			UserVerification: protocol.VerificationPreferred,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("passkeys: relying party %q with origins %v: %w", cfg.RPID, cfg.Origins, err)
	}
	if cfg.RPID == "" {
		return nil, errors.New("passkeys: an RP ID is required")
	}
	s := &Service{wa: wa, creds: d.Credentials, once: d.Once, pending: d.Pending, audit: d.Audit, now: d.Now, ttl: cfg.SessionTTL}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Ceremony kinds, kept with the session data so that a handle of one kind
// never finishes the other.
const (
	kindRegister = "register"
	kindLogin    = "login"
)

// ceremony is what waits in the single-use store between begin and finish.
type ceremony struct {
	Kind    string               `json:"k"`
	UserID  string               `json:"u"`
	Session webauthn.SessionData `json:"s"`
}

// BeginRegistration starts registering a new credential for u (a signed-in
// person). optionsJSON is the argument of navigator.credentials.create:
// {"publicKey":{…}} with its binary members (challenge, user.id,
// excludeCredentials[].id) in base64url; the user's credentials are
// excluded, a resident key (passkey) and user verification are preferred,
// no attestation is asked for. handle goes back to FinishRegistration.
// The ceremony counts against m.IP's budget (begin).
func (s *Service) BeginRegistration(ctx context.Context, u store.User, m mfa.Meta) (optionsJSON []byte, handle string, err error) {
	list, err := s.creds.ListWebAuthnCredentials(ctx, u.ID)
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: list credentials: %w", err)
	}
	if len(list) >= MaxCredentials {
		return nil, "", apierr.ErrConflict.WithDescription(
			"You have %d passkeys and security keys, the most allowed; remove one first.", len(list))
	}
	user, err := newUser(u.ID, accountName(u), u.Name, list)
	if err != nil {
		return nil, "", err
	}
	creation, session, err := s.wa.BeginRegistration(user,
		webauthn.WithExclusions(webauthn.Credentials(user.creds).CredentialDescriptors()),
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementPreferred))
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: begin registration: %w", err)
	}
	return s.begin(ctx, kindRegister, u.ID, m, session, creation)
}

// FinishRegistration verifies the browser's answer to BeginRegistration
// (responseJSON: the PublicKeyCredential as JSON, binary members in
// base64url, as PublicKeyCredential.toJSON gives it) for u and stores the
// credential under name (trimmed; DefaultName when empty; at most
// MaxNameLen characters). The handle is used up whatever the outcome. It
// records mfa.enrolled (method webauthn). Errors: 400 invalid_request for a
// bad name, an unknown or used handle (ErrCeremony) or a refused response
// (ErrRefused); 409 when the credential is registered already.
func (s *Service) FinishRegistration(ctx context.Context, u store.User, handle, name string, responseJSON []byte, m mfa.Meta) (store.WebAuthnCredential, error) {
	name, err := credentialName(name)
	if err != nil {
		return store.WebAuthnCredential{}, err
	}
	c, err := s.take(ctx, handle, kindRegister, u.ID)
	if err != nil {
		return store.WebAuthnCredential{}, err
	}
	list, err := s.creds.ListWebAuthnCredentials(ctx, u.ID)
	if err != nil {
		return store.WebAuthnCredential{}, fmt.Errorf("passkeys: list credentials: %w", err)
	}
	user, err := newUser(u.ID, accountName(u), u.Name, list)
	if err != nil {
		return store.WebAuthnCredential{}, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(responseJSON)
	if err != nil {
		return store.WebAuthnCredential{}, s.refuseRegistration(ctx, u.ID, m, "unparseable", err)
	}
	cred, err := s.wa.CreateCredential(user, c.Session, parsed)
	if err != nil {
		return store.WebAuthnCredential{}, s.refuseRegistration(ctx, u.ID, m, "verification_failed", err)
	}
	raw, err := json.Marshal(cred)
	if err != nil {
		return store.WebAuthnCredential{}, fmt.Errorf("passkeys: encode credential: %w", err)
	}
	rec := store.WebAuthnCredential{ID: credentialID(cred.ID), UserID: u.ID, Name: name, Credential: raw,
		SignCount: cred.Authenticator.SignCount, CreatedAt: s.now().UTC()}
	if err := s.creds.AddWebAuthnCredential(ctx, rec); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return store.WebAuthnCredential{}, apierr.ErrConflict.WithDescription(
				"This passkey or security key is registered already.").WithCause(err)
		}
		return store.WebAuthnCredential{}, fmt.Errorf("passkeys: store credential: %w", err)
	}
	s.record(ctx, "mfa.enrolled", store.OutcomeSuccess, u.ID, m, map[string]string{"method": mfa.MethodWebAuthn, "credential_id": rec.ID})
	return rec, nil
}

// refuseRegistration records a refused registration and returns its 400.
func (s *Service) refuseRegistration(ctx context.Context, userID string, m mfa.Meta, reason string, cause error) error {
	s.record(ctx, "mfa.enrolled", store.OutcomeFailure, userID, m, map[string]string{"method": mfa.MethodWebAuthn, "reason": reason})
	return apierr.ErrInvalidRequest.WithDescription("The passkey or security key could not be registered: its response was refused.").
		WithCause(fmt.Errorf("%w: %w", ErrRefused, cause))
}

// BeginLogin starts proving one of the user's credentials (the second step
// of a login). optionsJSON is the argument of navigator.credentials.get:
// {"publicKey":{…}} with allowCredentials listing the user's credentials,
// binary members in base64url, user verification preferred. handle goes to
// Assertion. A user without credentials is an error wrapping
// mfa.ErrNotEnrolled (400). The ceremony counts against m.IP's budget
// (begin).
func (s *Service) BeginLogin(ctx context.Context, userID string, m mfa.Meta) (optionsJSON []byte, handle string, err error) {
	list, err := s.creds.ListWebAuthnCredentials(ctx, userID)
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: list credentials: %w", err)
	}
	if len(list) == 0 {
		return nil, "", apierr.ErrInvalidRequest.WithDescription("No passkey or security key is registered for this account.").
			WithCause(mfa.ErrNotEnrolled)
	}
	user, err := newUser(userID, "", "", list)
	if err != nil {
		return nil, "", err
	}
	assertion, session, err := s.wa.BeginLogin(user, webauthn.WithUserVerification(protocol.VerificationPreferred))
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: begin login: %w", err)
	}
	return s.begin(ctx, kindLogin, userID, m, session, assertion)
}

// Assertion is the browser's answer to BeginLogin (responseJSON: the
// PublicKeyCredential as JSON, binary members in base64url) as a second
// factor. Its Verify takes the ceremony (once), checks the assertion
// against the user's stored credential, refuses a signature counter that
// did not grow (unless stored and new are both 0; the library's clone
// warning too), and stores the new counter by compare-and-set (a lost race
// is a refusal). It proves ["hwk","user"] when the authenticator verified
// the user, ["hwk"] otherwise. Every refusal wraps mfa.ErrBadCode (and
// ErrRefused or ErrCeremony).
func (s *Service) Assertion(handle string, responseJSON []byte) mfa.Factor {
	return &assertion{s: s, handle: handle, response: responseJSON}
}

type assertion struct {
	s        *Service
	handle   string
	response []byte
}

// Method is mfa.MethodWebAuthn.
func (a *assertion) Method() string { return mfa.MethodWebAuthn }

// Verify implements mfa.Factor.
func (a *assertion) Verify(ctx context.Context, userID string) ([]string, error) {
	s := a.s
	c, err := s.take(ctx, a.handle, kindLogin, userID)
	if err != nil {
		return nil, badCode(err)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(a.response)
	if err != nil {
		return nil, badCode(fmt.Errorf("%w: unparseable assertion: %w", ErrRefused, err))
	}
	list, err := s.creds.ListWebAuthnCredentials(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("passkeys: list credentials: %w", err)
	}
	id := credentialID(parsed.RawID)
	var stored *store.WebAuthnCredential
	for i := range list {
		if list[i].ID == id {
			stored = &list[i]
		}
	}
	if stored == nil {
		return nil, badCode(fmt.Errorf("%w: the credential is not one of the user's", ErrRefused))
	}
	user, err := newUser(userID, "", "", list)
	if err != nil {
		return nil, err
	}
	cred, err := s.wa.ValidateLogin(user, c.Session, parsed)
	if err != nil {
		return nil, badCode(fmt.Errorf("%w: %w", ErrRefused, err))
	}
	count := parsed.Response.AuthenticatorData.Counter
	if cred.Authenticator.CloneWarning || !counterGrew(stored.SignCount, count) {
		return nil, badCode(fmt.Errorf("%w: the signature counter did not grow (stored %d, presented %d): a cloned authenticator",
			ErrRefused, stored.SignCount, count))
	}
	raw, err := json.Marshal(cred)
	if err != nil {
		return nil, fmt.Errorf("passkeys: encode credential: %w", err)
	}
	err = s.creds.UseWebAuthnCredential(ctx, userID, stored.ID, stored.SignCount, count, raw, s.now().UTC())
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		return nil, badCode(fmt.Errorf("%w: the credential changed meanwhile: %w", ErrRefused, err))
	case err != nil:
		return nil, fmt.Errorf("passkeys: record the assertion: %w", err)
	}
	if parsed.Response.AuthenticatorData.Flags.HasUserVerified() {
		return []string{mfa.AMRHardwareKey, mfa.AMRUserPresence}, nil
	}
	return []string{mfa.AMRHardwareKey}, nil
}

// counterGrew is the one rule for the signature counter (WebAuthn §7.2 step
// 21): the new count must exceed the stored one, unless both are 0 (an
// authenticator without a counter).
func counterGrew(stored, presented uint32) bool {
	return presented > stored || presented == 0 && stored == 0
}

func badCode(err error) error { return fmt.Errorf("%w: %w", mfa.ErrBadCode, err) }

// Remove deletes one of the user's credentials and records mfa.removed
// (method webauthn). When it was the user's last factor (no other
// credential, no authenticator app) the recovery codes go too, in the same
// store write (store.MFAFactors.DeleteWebAuthnCredential), as with
// mfa.Service.RemoveTOTP: they stand in for a lost factor and must not
// come back to life with the next one. An id that is not one of the user's
// is 404 (ErrNotFound), whether or not it exists. The caller has checked
// the person's current password.
func (s *Service) Remove(ctx context.Context, userID, id string, m mfa.Meta) error {
	if id == "" || len(id) > 1024 {
		return notFound()
	}
	if err := s.creds.DeleteWebAuthnCredential(ctx, userID, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound()
		}
		return fmt.Errorf("passkeys: delete credential: %w", err)
	}
	s.record(ctx, "mfa.removed", store.OutcomeSuccess, userID, m, map[string]string{"method": mfa.MethodWebAuthn, "credential_id": id})
	return nil
}

func notFound() error {
	return apierr.ErrNotFound.WithDescription("You have no passkey or security key with this id.").WithCause(ErrNotFound)
}

// begin keeps the session data under a new handle and returns the options
// as JSON. Every ceremony is kept through it, once the caller's address
// (m.IP) may have one more record kept (s.pending, as each pending
// authorization request is): past the budget its 429 is returned and
// nothing is kept. A person may begin any number of ceremonies, and the
// login page begins one each time it draws the second step.
func (s *Service) begin(ctx context.Context, kind, userID string, m mfa.Meta, session *webauthn.SessionData, options any) ([]byte, string, error) {
	opts, err := json.Marshal(options)
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: encode options: %w", err)
	}
	val, err := json.Marshal(ceremony{Kind: kind, UserID: userID, Session: *session})
	if err != nil {
		return nil, "", fmt.Errorf("passkeys: encode session: %w", err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, "", fmt.Errorf("passkeys: handle: %w", err)
	}
	handle := base64.RawURLEncoding.EncodeToString(b[:])
	if s.pending != nil {
		if err := s.pending.AllowPending(ctx, m.IP); err != nil {
			return nil, "", fmt.Errorf("passkeys: the address budget of kept ceremonies: %w", err)
		}
	}
	if err := s.once.PutOnce(ctx, store.OnceWebAuthnSession, handleKey(handle), val, s.now().Add(s.ttl)); err != nil {
		return nil, "", fmt.Errorf("passkeys: keep the ceremony: %w", err)
	}
	return opts, handle, nil
}

// take uses up the ceremony of handle, which must be of kind and begun for
// userID. Unknown, expired, taken, another kind or another user's: a 400
// wrapping ErrCeremony. A store failure is returned as is (wrapped).
func (s *Service) take(ctx context.Context, handle, kind, userID string) (ceremony, error) {
	refuse := func(why string) error {
		return apierr.ErrInvalidRequest.WithDescription("The passkey request expired or was used already; start again.").
			WithCause(fmt.Errorf("%w: %s", ErrCeremony, why))
	}
	if handle == "" || len(handle) > 128 {
		return ceremony{}, refuse("no handle")
	}
	val, err := s.once.TakeOnce(ctx, store.OnceWebAuthnSession, handleKey(handle), s.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ceremony{}, refuse("unknown or expired")
	case errors.Is(err, store.ErrTokenUsed):
		return ceremony{}, refuse("finished already")
	case err != nil:
		return ceremony{}, fmt.Errorf("passkeys: take the ceremony: %w", err)
	}
	var c ceremony
	if err := json.Unmarshal(val, &c); err != nil {
		return ceremony{}, fmt.Errorf("passkeys: decode the ceremony: %w", err)
	}
	if c.Kind != kind {
		return ceremony{}, refuse("begun as " + c.Kind)
	}
	if c.UserID != userID {
		return ceremony{}, refuse("begun for another user")
	}
	return c, nil
}

func handleKey(handle string) []byte {
	h := sha256.Sum256([]byte(handle))
	return h[:]
}

func (s *Service) record(ctx context.Context, action string, outcome store.Outcome, userID string, m mfa.Meta, details map[string]string) {
	actor := m.ActorID
	if actor == "" {
		actor = userID
	}
	s.audit.Record(ctx, store.AuditEvent{Action: action, Outcome: outcome, ActorID: actor, TargetID: userID,
		ClientID: m.ClientID, IP: m.IP, UserAgent: m.UserAgent, Details: m.WithVia(details)})
}

// credentialID is a credential id as the store keeps it: base64url without
// padding.
func credentialID(raw []byte) string { return base64.RawURLEncoding.EncodeToString(raw) }

// credentialName checks a credential's name.
func credentialName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return DefaultName, nil
	case !utf8.ValidString(name) || utf8.RuneCountInString(name) > MaxNameLen:
		return "", apierr.ErrInvalidRequest.WithDescription("A passkey's name is at most %d characters.", MaxNameLen)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return "", apierr.ErrInvalidRequest.WithDescription("A passkey's name must not hold control characters.")
	}
	return name, nil
}

// accountName is what the authenticator shows for the account: the email
// address, else the username, else the id.
func accountName(u store.User) string {
	switch {
	case u.Email != "":
		return u.Email
	case u.Username != "":
		return u.Username
	}
	return u.ID
}

// user is a person as the library sees them.
type user struct {
	id, name, display string
	creds             []webauthn.Credential
}

// newUser decodes the stored credentials; the stored counter, not the one in
// the JSON, is the one the library compares with.
func newUser(id, account, name string, list []store.WebAuthnCredential) (*user, error) {
	u := &user{id: id, name: account, display: name}
	if u.display == "" {
		u.display = account
	}
	for _, rec := range list {
		var c webauthn.Credential
		if err := json.Unmarshal(rec.Credential, &c); err != nil {
			return nil, fmt.Errorf("passkeys: decode credential %s: %w", rec.ID, err)
		}
		c.Authenticator.SignCount = rec.SignCount
		c.Authenticator.CloneWarning = false
		u.creds = append(u.creds, c)
	}
	return u, nil
}

func (u *user) WebAuthnID() []byte                         { return []byte(u.id) }
func (u *user) WebAuthnName() string                       { return u.name }
func (u *user) WebAuthnDisplayName() string                { return u.display }
func (u *user) WebAuthnCredentials() []webauthn.Credential { return u.creds }
