package accounts

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

// BrowserSessionLister lists a user's live browser sessions (the token
// state: *redisstate.State, *sqlstate.State).
type BrowserSessionLister interface {
	ListBrowserSessions(ctx context.Context, userID string, now time.Time) ([]store.BrowserSession, error)
}

// Consents lists and forgets remembered consents (*sqlstore.Store).
type Consents interface {
	GetConsent(ctx context.Context, userID, clientID string) (store.Consent, error)
	ListConsents(ctx context.Context, userID string) ([]store.Consent, error)
	DeleteConsent(ctx context.Context, userID, clientID string) error
}

// SessionEnder ends one browser session: the one routine of server/signout
// (signout.Ender.End, adapted in server/app because package signout
// imports this one). byAdmin picks the reason (signout.WhyAdmin, else
// signout.WhySelfService); actorID and m are the event's actor and request.
type SessionEnder interface {
	EndBrowserSession(ctx context.Context, bs store.BrowserSession, byAdmin bool, actorID string, m Meta) error
}

// details.via of consent.revoked: the person themself or an admin.
const (
	viaSelfService = "self_service"
	viaAdmin       = "admin"
)

// BrowserSession is a browser (SSO) session as the API shows it: never its
// cookie.
type BrowserSession struct {
	SID        string    `json:"sid"`
	ClientIDs  []string  `json:"client_ids"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	IP         string    `json:"ip"`
	UserAgent  string    `json:"user_agent"`
	AMR        []string  `json:"amr"`
}

func viewBrowserSession(bs store.BrowserSession) BrowserSession {
	return BrowserSession{SID: bs.ID, ClientIDs: nonNil(bs.ClientIDs), CreatedAt: bs.CreatedAt, LastUsedAt: bs.LastUsedAt,
		IP: bs.IP, UserAgent: bs.UserAgent, AMR: nonNil(bs.AMR)}
}

// Consent is a remembered consent as the API shows it.
type Consent struct {
	ClientID  string    `json:"client_id"`
	Scopes    []string  `json:"scopes"`
	GrantedAt time.Time `json:"granted_at"`
}

func viewConsent(c store.Consent) Consent {
	return Consent{ClientID: c.ClientID, Scopes: nonNil(c.Scopes), GrantedAt: c.GrantedAt}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

var (
	errSessionNotFound = apierr.ErrNotFound.WithDescription("No session of this user has this id.")
	errConsentNotFound = apierr.ErrNotFound.WithDescription("There is no remembered consent for this client.")
)

// ---- the person's own ----

// errThirdPartyToken refuses a third-party client's token at the
// self-service views: an application the person let act for them must not
// see their other sessions (IP addresses, browsers) or end them.
var errThirdPartyToken = apierr.ErrForbidden.WithDescription(
	"This token was issued to a third-party application, which cannot see or change your account itself: its sessions, consents, second factors, API keys or password.")

// errKeyTokenSelfService refuses a token exchanged from an API key at the
// self-service views: a key (perhaps a leaked read-only one) must not end
// its owner's sessions, enrol a second factor on the account or make keys.
var errKeyTokenSelfService = apierr.ErrForbidden.WithDescription(
	"A token obtained from an API key cannot manage the account's sessions, consents, second factors or API keys: sign in as a person.")

// loadSelf is loadActor for the self-service session, consent, second-factor
// and API key operations: the acting token must not come from a third-party
// application (token.ThirdPartyApp: a client the person grants access on
// the consent page, or one that signs them in by token exchange, without
// first_party), nor from an API key. The built-in client, first-party clients and the password-grant
// front-ends the person types their password into are theirs; Portcullis's
// own /account/sessions page acts with no client.
func (s *Service) loadSelf(ctx context.Context, actor Actor) (store.User, error) {
	if actor.APIKey != "" {
		return store.User{}, errKeyTokenSelfService
	}
	u, err := s.loadActor(ctx, actor)
	if err != nil || actor.ClientID == "" {
		return u, err
	}
	c, err := s.store.GetClient(ctx, actor.ClientID)
	if err != nil {
		return store.User{}, storeErr("load the token's client", err, errThirdPartyToken)
	}
	if token.ThirdPartyApp(c) {
		return store.User{}, errThirdPartyToken
	}
	return u, nil
}

// OwnSessions returns one page of the actor's live browser sessions,
// newest first.
func (s *Service) OwnSessions(ctx context.Context, actor Actor, cursor string, limit int) (Page[BrowserSession], error) {
	a, err := s.loadSelf(ctx, actor)
	if err != nil {
		return Page[BrowserSession]{}, err
	}
	return s.sessionPage(ctx, a.ID, cursor, limit)
}

// EndOwnSession ends one of the actor's browser sessions (signout reason
// self_service). A sid that is not one of the actor's live sessions is 404,
// whether or not it exists.
func (s *Service) EndOwnSession(ctx context.Context, actor Actor, sid string) error {
	a, err := s.loadSelf(ctx, actor)
	if err != nil {
		return err
	}
	return s.endSession(ctx, a.ID, sid, false, actor)
}

// OwnConsents returns one page of the actor's remembered consents, newest
// first.
func (s *Service) OwnConsents(ctx context.Context, actor Actor, cursor string, limit int) (Page[Consent], error) {
	a, err := s.loadSelf(ctx, actor)
	if err != nil {
		return Page[Consent]{}, err
	}
	return s.consentPage(ctx, a.ID, cursor, limit)
}

// WithdrawOwnConsent forgets the actor's consent to clientID (404 when there
// is none), so that the client's next authorization request asks again,
// and ends the client's grants to the actor: its sessions, the access
// tokens it was given and the codes it holds (EndClientGrants, before the
// consent is deleted and again after).
func (s *Service) WithdrawOwnConsent(ctx context.Context, actor Actor, clientID string) error {
	a, err := s.loadSelf(ctx, actor)
	if err != nil {
		return err
	}
	return s.withdrawConsent(ctx, a.ID, clientID, viaSelfService, actor)
}

// ---- an admin's view of a user ----

// UserSessions returns one page of a user's live browser sessions (404 for
// an unknown user), like GetUser: reading needs only the route's
// permission.
func (s *Service) UserSessions(ctx context.Context, userID, cursor string, limit int) (Page[BrowserSession], error) {
	t, err := s.loadTarget(ctx, userID)
	if err != nil {
		return Page[BrowserSession]{}, err
	}
	return s.sessionPage(ctx, t.ID, cursor, limit)
}

// UserSessionsAs is UserSessions for actor: inside an organisation only of
// the organisation's own account (ownAccount: a session shows where else
// the person signs in).
func (s *Service) UserSessionsAs(ctx context.Context, actor Actor, userID, cursor string, limit int) (Page[BrowserSession], error) {
	t, err := s.accountAs(ctx, actor, userID)
	if err != nil {
		return Page[BrowserSession]{}, err
	}
	return s.sessionPage(ctx, t.ID, cursor, limit)
}

// EndUserSession ends one browser session of a user the actor may manage
// (the privilege ceiling of RevokeSessions: strictly above them, never
// themself); signout reason admin. Another user's sid is 404.
func (s *Service) EndUserSession(ctx context.Context, actor Actor, userID, sid string) error {
	a, t, err := s.actorAndTarget(ctx, actor, userID)
	if err != nil {
		return err
	}
	return s.endSession(ctx, t.ID, sid, true, Actor{ID: a.ID, Meta: actor.Meta})
}

// UserConsents returns one page of a user's remembered consents (404 for an
// unknown user).
func (s *Service) UserConsents(ctx context.Context, userID, cursor string, limit int) (Page[Consent], error) {
	t, err := s.loadTarget(ctx, userID)
	if err != nil {
		return Page[Consent]{}, err
	}
	return s.consentPage(ctx, t.ID, cursor, limit)
}

// UserConsentsAs is UserConsents for actor, confined as UserSessionsAs.
func (s *Service) UserConsentsAs(ctx context.Context, actor Actor, userID, cursor string, limit int) (Page[Consent], error) {
	t, err := s.accountAs(ctx, actor, userID)
	if err != nil {
		return Page[Consent]{}, err
	}
	return s.consentPage(ctx, t.ID, cursor, limit)
}

// WithdrawUserConsent forgets a consent of a user the actor may manage
// (the privilege ceiling of RevokeSessions), as WithdrawOwnConsent does.
func (s *Service) WithdrawUserConsent(ctx context.Context, actor Actor, userID, clientID string) error {
	a, t, err := s.actorAndTarget(ctx, actor, userID)
	if err != nil {
		return err
	}
	return s.withdrawConsent(ctx, t.ID, clientID, viaAdmin, Actor{ID: a.ID, Meta: actor.Meta})
}

// ---- shared ----

func (s *Service) sessionPage(ctx context.Context, userID, cursor string, limit int) (Page[BrowserSession], error) {
	if s.browser == nil {
		return Page[BrowserSession]{}, internal("list browser sessions", errors.New("no browser session store"))
	}
	list, err := s.browser.ListBrowserSessions(ctx, userID, s.now())
	if err != nil {
		return Page[BrowserSession]{}, storeErr("list browser sessions", err, nil)
	}
	// Newest first, then by id (the token states' order, made certain).
	order := func(a, b pageKey) int { return cmp.Or(b.T.Compare(a.T), strings.Compare(b.I, a.I)) }
	return paginate(list, func(bs store.BrowserSession) pageKey { return pageKey{bs.CreatedAt, bs.ID} }, order,
		viewBrowserSession, cursor, limit)
}

func (s *Service) consentPage(ctx context.Context, userID, cursor string, limit int) (Page[Consent], error) {
	if s.consents == nil {
		return Page[Consent]{}, internal("list consents", errors.New("no consent store"))
	}
	list, err := s.consents.ListConsents(ctx, userID)
	if err != nil {
		return Page[Consent]{}, storeErr("list consents", err, nil)
	}
	// Newest first, then by client id (the store's order, made certain).
	order := func(a, b pageKey) int { return cmp.Or(b.T.Compare(a.T), strings.Compare(a.I, b.I)) }
	return paginate(list, func(c store.Consent) pageKey { return pageKey{c.GrantedAt, c.ClientID} }, order,
		viewConsent, cursor, limit)
}

// endSession ends the live browser session sid of userID through the one
// signout routine. A sid that is not one of userID's live sessions is 404,
// so another user's session is never revealed.
func (s *Service) endSession(ctx context.Context, userID, sid string, byAdmin bool, actor Actor) error {
	if s.browser == nil || s.ender == nil {
		return internal("end a browser session", errors.New("no browser session store or ender"))
	}
	if sid == "" || len(sid) > maxIDLen {
		return errSessionNotFound
	}
	list, err := s.browser.ListBrowserSessions(ctx, userID, s.now())
	if err != nil {
		return storeErr("list browser sessions", err, nil)
	}
	i := slices.IndexFunc(list, func(bs store.BrowserSession) bool { return bs.ID == sid })
	if i < 0 {
		return errSessionNotFound
	}
	if err := s.ender.EndBrowserSession(ctx, list[i], byAdmin, actor.ID, actor.Meta); err != nil {
		return storeErr("end a browser session", err, nil)
	}
	return nil
}

// withdrawConsent ends userID's grants at clientID (their sessions end and
// every access token the client holds for them, with or without a
// session, dies on every instance), then forgets the consent and
// records consent.revoked: withdrawing consent takes the client's access
// away, not only its next consent screen. Grants end first, so a failure
// leaves the consent in place to withdraw again; an unknown consent
// changes nothing.
func (s *Service) withdrawConsent(ctx context.Context, userID, clientID, via string, actor Actor) error {
	if s.consents == nil {
		return internal("withdraw a consent", errors.New("no consent store"))
	}
	if clientID == "" || len(clientID) > maxIDLen {
		return errConsentNotFound
	}
	if _, err := s.consents.GetConsent(ctx, userID, clientID); err != nil {
		return storeErr("withdraw a consent", err, errConsentNotFound)
	}
	if err := s.sessions.EndClientGrants(ctx, userID, clientID); err != nil {
		return err
	}
	if err := s.consents.DeleteConsent(ctx, userID, clientID); err != nil {
		return storeErr("withdraw a consent", err, errConsentNotFound)
	}
	s.record(ctx, "consent.revoked", store.OutcomeSuccess, actor.ID, userID, actor.Meta,
		map[string]string{"client_id": clientID, "via": via})
	// An authorization request that read the consent between the first
	// end and its deletion got a code after that end's cut-off: a second
	// end, now that no request can read the consent, moves the cut-off
	// past it (the first end, before the deletion, keeps the consent for a
	// retry should the grants not end). The consent is gone either way, so
	// a failure here is logged and answered, not undone.
	if err := s.sessions.EndClientGrants(ctx, userID, clientID); err != nil {
		s.log.Error("consent withdrawn, but the client's grants made while it was being withdrawn could not be ended",
			"user_id", userID, "client_id", clientID, "err", err)
		return err
	}
	return nil
}

// pageKey is an item's position in a list held in memory: its sort time and id.
type pageKey struct {
	T time.Time
	I string
}

// paginate returns the page of list after cursor, in order, of at most
// limit items (sqlstore's default and maximum page sizes). The cursor is
// the last item's key (opaque to callers, like the stores' cursors), so
// items added or removed between pages neither repeat nor skip the others.
func paginate[T, V any](list []T, key func(T) pageKey, order func(a, b pageKey) int, view func(T) V,
	cursor string, limit int) (Page[V], error) {
	slices.SortFunc(list, func(a, b T) int { return order(key(a), key(b)) })
	start := 0
	if cursor != "" {
		t, id, _, err := sqlstore.DecodeCursor(cursor)
		if err != nil {
			return Page[V]{}, listErr("read the cursor", err)
		}
		after := pageKey{T: t, I: id}
		start = len(list)
		for i, it := range list {
			if order(key(it), after) > 0 {
				start = i
				break
			}
		}
	}
	switch {
	case limit <= 0:
		limit = sqlstore.DefaultPageLimit
	case limit > sqlstore.MaxPageLimit:
		limit = sqlstore.MaxPageLimit
	}
	end := min(start+limit, len(list))
	out := Page[V]{Items: make([]V, 0, end-start)}
	for _, it := range list[start:end] {
		out.Items = append(out.Items, view(it))
	}
	if end < len(list) {
		last := key(list[end-1])
		out.NextCursor = sqlstore.EncodeCursor(last.T, last.I)
	}
	return out, nil
}

// ClientNames returns the display names of the clients among ids that
// exist (a deleted client is left out), for pages that list sessions and
// consents to people.
func (s *Service) ClientNames(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for _, id := range ids {
		if _, done := out[id]; done {
			continue
		}
		c, err := s.store.GetClient(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			return nil, storeErr("load a client", err, nil)
		}
		out[id] = c.Name
	}
	return out, nil
}
