package pages

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/accounts"
	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/authorize"
	"github.com/portcullis-auth/portcullis/store"
)

// AuthorizeFlow is the Flow of browser sign-in over server/authorize: it
// parses and keeps requests, weighs the session, the user and the
// remembered consent with authorize.Decide, and issues codes. It holds no
// rule of its own beyond remembering the consent the person gave.
type AuthorizeFlow struct {
	Issuer      string
	Clients     authorize.Clients
	Hints       authorize.HintVerifier
	Permissions authorize.Permissions
	// Once keeps pending requests (store.SingleUse); codes are stored with
	// their grants through Sessions.
	Once store.SingleUse
	// Sessions stores each code with its grant's record in its browser
	// session (one round trip on Redis), so that ending the session can end
	// the grant.
	Sessions interface {
		AddBrowserSessionGrantWithCode(ctx context.Context, userID, id string, g store.SessionGrant, code store.OnceRecord) ([]store.SessionGrant, error)
	}
	// Dropped ends the grants a session drops beyond
	// store.MaxSessionGrants as ending the session would have ended them
	// (*signout.Ender.EndDropped: their families without offline_access,
	// back-channel logout for all of them).
	Dropped interface {
		EndDropped(ctx context.Context, userID string, dropped []store.SessionGrant) error
	}
	// Users reads the session's user as stored, given the user's version
	// read with the session (store.BrowserSession.UserVersion), so that a
	// copy kept in memory is checked without another round trip
	// (*usercache.Cache).
	Users interface {
		GetUserAt(ctx context.Context, id string, v store.UserVersion) (store.User, error)
	}
	Consents interface {
		GetConsent(ctx context.Context, userID, clientID string) (store.Consent, error)
		PutConsent(ctx context.Context, c store.Consent) error
	}
	// SecondFactors says whether a session's login lacks the second factor
	// the roles of a code for the request would require
	// (*token.Service.SecondFactorOwed); nil: never.
	SecondFactors interface {
		SecondFactorOwed(ctx context.Context, clientID string, u store.User, tenant string, amr []string) (bool, error)
	}
	Audit Auditor
	// Pending counts each request kept (pending, or pushed by a public
	// client) for the caller's address (*ratelimit.Limiter; nil: no
	// limit).
	Pending PendingLimiter
	// Codes counts each code minted for the browser session that mints it
	// (*ratelimit.Limiter.AllowCode; nil: no limit), single sign-on
	// included.
	Codes CodeLimiter
	// CodeTTL is PORTCULLIS_AUTH_CODE_TTL, RequestTTL PORTCULLIS_AUTHORIZE_REQUEST_TTL.
	CodeTTL    time.Duration
	RequestTTL time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
}

var _ Flow = (*AuthorizeFlow)(nil)

// CodeLimiter bounds the authorization codes one browser session mints
// (*ratelimit.Limiter.AllowCode): 429 past its budget.
type CodeLimiter interface {
	AllowCode(ctx context.Context, sessionID string) error
}

func (f *AuthorizeFlow) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *AuthorizeFlow) log() *slog.Logger {
	if f.Logger != nil {
		return f.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Authorize implements Flow: the query of a GET, the form body of a POST.
func (f *AuthorizeFlow) Authorize(ctx context.Context, r *http.Request, m accounts.Meta) (string, *Step, error) {
	now := f.now()
	req, _, stop, err := f.parse(ctx, r, now)
	if stop != nil || err != nil {
		return "", stop, err
	}
	id, err := f.save(ctx, req, m, now)
	if err != nil {
		return "", nil, err
	}
	return id, nil, nil
}

// save keeps req as pending for a page (authorize.SavePending) once the
// caller's address may have one more record kept (f.Pending: 429 past its
// budget, nothing kept). Every pending request is kept through it; an
// answer given at once keeps no pending request (its code counts against
// its browser session: issueWithGrant).
func (f *AuthorizeFlow) save(ctx context.Context, req *authorize.Request, m accounts.Meta, now time.Time) (string, error) {
	if f.Pending != nil {
		if err := f.Pending.AllowPending(ctx, m.IP); err != nil {
			return "", err
		}
	}
	id, err := authorize.SavePending(ctx, f.Once, req, f.RequestTTL, now)
	if err != nil {
		return "", apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	return id, nil
}

// AuthorizeNow implements Flow: a request the browser session answers at
// once (single sign-on, or an error such as login_required) is answered
// without storing a pending request; one that needs a page is stored and
// its page step returned. The client parse read is the one the answer is
// checked against (refusedRead): the request reads it once.
func (f *AuthorizeFlow) AuthorizeNow(ctx context.Context, r *http.Request, bs *store.BrowserSession, m accounts.Meta) (Step, error) {
	now := f.now()
	req, client, stop, err := f.parse(ctx, r, now)
	if stop != nil || err != nil {
		return derefStep(stop, err)
	}
	to, stop, err := f.refusedRead(ctx, req, client)
	if stop != nil || err != nil {
		return derefStep(stop, err)
	}
	return f.next(ctx, "", req, to, bs, DoneNothing, m, now)
}

// parse reads and validates the authorization request r (the query of a
// GET, the form body of a POST): the request and its client as read
// (authorize.ParseRequestClient), or the Step that ends it at once (the
// error page, or an error delivered to the redirect URI).
func (f *AuthorizeFlow) parse(ctx context.Context, r *http.Request, now time.Time) (*authorize.Request, store.Client, *Step, error) {
	var form url.Values
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			return nil, store.Client{}, &Step{Kind: StepError, Status: http.StatusBadRequest, Message: "The request could not be read (too large, or not a form)."}, nil
		}
		form = r.PostForm
	} else {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return nil, store.Client{}, &Step{Kind: StepError, Status: http.StatusBadRequest, Message: "The request's query string is malformed."}, nil
		}
		form = q
	}
	req, client, err := authorize.ParseRequestClient(ctx, form, f.env(), now)
	if err != nil {
		s, err := f.stop(ctx, err)
		return nil, store.Client{}, s, err
	}
	return req, client, nil, nil
}

// env is what authorize checks requests against; pushed requests are kept
// in f.Once.
func (f *AuthorizeFlow) env() authorize.Env {
	return authorize.Env{Issuer: f.Issuer, Clients: f.Clients, Hints: f.Hints, Permissions: f.Permissions, Pushed: f.Once}
}

// Push serves /oauth2/par for client, authenticated by the caller at
// address ip: the request is validated as at Authorize and kept once for
// authorize.PushedRequestTTL (authorize.Push). A public client proves
// nothing but its client_id, so its pushes count against the caller's
// address (f.Pending, 429 past its budget) as pending requests do; a
// confidential client's backend pushes for all its users, from one
// address, with its secret.
func (f *AuthorizeFlow) Push(ctx context.Context, form url.Values, client store.Client, ip string) (authorize.Pushed, error) {
	if client.Public && f.Pending != nil {
		if err := f.Pending.AllowPending(ctx, ip); err != nil {
			return authorize.Pushed{}, err
		}
	}
	return authorize.Push(ctx, form, client, f.env(), authorize.PushedRequestTTL, f.now())
}

// stop turns an error of server/authorize into the Step that answers it:
// an error for the client goes to its redirect URI through toClient; an
// *apierr.Error (an answer that failed in send) is returned as it is.
func (f *AuthorizeFlow) stop(ctx context.Context, err error) (*Step, error) {
	var pe *authorize.PageError
	var re *authorize.RedirectError
	var ae *apierr.Error
	switch {
	case errors.As(err, &re):
		s, err := f.toClient(ctx, re.ClientID, re.RedirectURI, re.MadeAt, func() (authorize.Response, error) { return re.Response(), nil })
		if err != nil {
			return nil, err
		}
		return &s, nil
	case errors.As(err, &pe):
		if pe.Status >= 500 {
			f.log().Error("authorization request failed", "err", err)
		}
		return &Step{Kind: StepError, Status: pe.Status, Message: pe.Message}, nil
	case errors.Is(err, authorize.ErrPendingDone):
		return &Step{Kind: StepError, Status: http.StatusOK, Heading: "You are signed in",
			Message: "This sign-in is complete. Return to the application; you can close this page."}, nil
	case errors.As(err, &ae):
		return nil, err
	}
	return nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
}

// toClient is the answer at a redirect URI of a request whose client was
// not checked in this request (stop's errors for the client: a request
// failing after step 3, access_denied on expiry): it checks the client as
// it is now (refused) and sends answer's response (send). The answers
// decided by next are checked by next and sent by finish.
func (f *AuthorizeFlow) toClient(ctx context.Context, clientID, redirectURI string, madeAt time.Time,
	answer func() (authorize.Response, error)) (Step, error) {
	to, s, err := f.refused(ctx, clientID, redirectURI, madeAt)
	if s != nil || err != nil {
		return derefStep(s, err)
	}
	return f.send(ctx, to, answer)
}

// checked is an answer's destination that refused (or refusedRead) let
// through in this request: the client as it is now and the redirect URI
// it still registers. Only they make one, and send takes one, so every
// answer sent to a redirect URI was checked in the request that sends it,
// once: the check that lets an answer be decided is the one that lets it
// be sent.
type checked struct {
	client      store.Client
	redirectURI string
}

// send is the one routine that sends anything to a client's redirect URI,
// by 303 or form_post: a code, or an error (a request failing after step
// 3, a refusal such as prompt=none's login_required, access_denied on deny
// or on expiry), to the destination to that was checked in this request.
// answer (which may take the pending request and issue the code, recording
// its grant in the browser session) is called only then. Errors of answer
// are answered as stop answers them.
func (f *AuthorizeFlow) send(ctx context.Context, to checked, answer func() (authorize.Response, error)) (Step, error) {
	r, err := answer()
	if err != nil {
		return f.stopped(ctx, err)
	}
	s := Step{Request: Pending{RedirectURI: to.redirectURI}}
	if r.Status == http.StatusSeeOther {
		s.Kind, s.Location = StepRedirect, r.Location
		return s, nil
	}
	s.Kind, s.FormPost, s.CSP = StepFormPost, r.Body, r.CSP
	return s, nil
}

// refused is the check before any answer is decided or sent to a redirect
// URI: it reads the client as it is now and checks it
// (authorize.CheckRedirect through f.Clients): it still exists, was
// created by madeAt (not deleted and created again since the request was
// made), still has the authorization_code grant and still registers
// redirectURI. It returns where the answer may go, else the error page
// that answers instead (400; 503 when the client cannot be read). A
// request that waited for the person (pending up to
// PORTCULLIS_AUTHORIZE_REQUEST_TTL, its expiry answer an hour longer) so
// answers nothing to a client deleted or changed meanwhile. f.Clients is
// the instance's client cache (clients.Cache): a change made through this
// instance counts at once, one made elsewhere within its TTL
// (app.ClientCacheTTL), as at the authorization and token endpoints.
func (f *AuthorizeFlow) refused(ctx context.Context, clientID, redirectURI string, madeAt time.Time) (checked, *Step, error) {
	c, err := authorize.CheckRedirect(ctx, f.Clients, clientID, redirectURI, madeAt)
	return f.checkedOr(ctx, c, redirectURI, err)
}

// refusedReq is refused for req, whose answer is being decided.
func (f *AuthorizeFlow) refusedReq(ctx context.Context, req *authorize.Request) (checked, *Step, error) {
	return f.refused(ctx, req.ClientID, req.RedirectURI, req.MadeAt())
}

// refusedRead is refusedReq for a request just parsed, with client, its
// client as parse read it in this request: the same rule
// (authorize.CheckClient), without reading the client again.
func (f *AuthorizeFlow) refusedRead(ctx context.Context, req *authorize.Request, client store.Client) (checked, *Step, error) {
	return f.checkedOr(ctx, client, req.RedirectURI, authorize.CheckClient(client, req.ClientID, req.RedirectURI, req.MadeAt()))
}

// checkedOr is the destination of refused's answers (c at redirectURI)
// when err is nil, else the Step that answers err (stop).
func (f *AuthorizeFlow) checkedOr(ctx context.Context, c store.Client, redirectURI string, err error) (checked, *Step, error) {
	if err != nil {
		s, err := f.stop(ctx, err)
		return checked{}, s, err
	}
	return checked{client: c, redirectURI: redirectURI}, nil, nil
}

// Lookup implements Flow.
func (f *AuthorizeFlow) Lookup(ctx context.Context, id string) (Pending, *Step, error) {
	req, err := authorize.LoadPending(ctx, f.Once, id, f.now())
	if err != nil {
		s, err := f.stop(ctx, err)
		return Pending{}, s, err
	}
	p, err := f.view(ctx, id, req)
	return p, nil, err
}

// PasswordChange implements Flow: the step is due when Decide, given the
// session and the account counted as chosen (the person is answering a
// page of this request), shows the change-password step; so a session too
// old for the request's prompt=login or max_age, or of a user who need not
// change the password, is refused it. Like every decision it weighs the
// client as it is now: a request whose client may no longer be answered
// (refused) is answered with the error page instead.
func (f *AuthorizeFlow) PasswordChange(ctx context.Context, id string, bs *store.BrowserSession) (PasswordChange, *Step, error) {
	now := f.now()
	req, err := authorize.LoadPending(ctx, f.Once, id, now)
	if err != nil {
		s, err := f.stop(ctx, err)
		return PasswordChange{}, s, err
	}
	if bs == nil {
		p, err := f.view(ctx, id, req)
		return PasswordChange{Request: p}, nil, err
	}
	to, stop, err := f.refusedReq(ctx, req)
	if stop != nil || err != nil {
		return PasswordChange{}, stop, err
	}
	pc := PasswordChange{Request: viewOf(id, req, to.client)}
	in, _, err := f.inputs(ctx, req, true, to.client, bs, DonePasswordChanged, accounts.Meta{}, now)
	if err != nil {
		return PasswordChange{}, nil, err
	}
	pc.Due = authorize.Decide(req, in, now).Action == authorize.ShowChangePassword
	pc.SignedInDuring = req.SignedInDuring(bs.AuthTime)
	return pc, nil, nil
}

// view is what the pages show of req, reading its client for its name
// and logo: for a page shown without a check of the client in the same
// request (Lookup, and PasswordChange without a browser session). A client
// deleted meanwhile shows its id; the answer is then the error page
// (refused), never a redirect.
func (f *AuthorizeFlow) view(ctx context.Context, id string, req *authorize.Request) (Pending, error) {
	c, err := f.Clients.GetClient(ctx, req.ClientID)
	switch {
	case err == nil:
		return viewOf(id, req, c), nil
	case errors.Is(err, store.ErrNotFound):
		return viewOf(id, req, store.Client{}), nil
	default:
		return Pending{}, apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
}

// viewOf is what the pages show of req with c, its client as read (the
// zero Client for one that no longer exists: the pages show the id). A
// page step whose client was checked in this request (next, PasswordChange)
// shows the client of that check, so the request reads it once.
func viewOf(id string, req *authorize.Request, c store.Client) Pending {
	p := Pending{ID: id, Client: Client{ID: req.ClientID, Name: c.Name, LogoURI: c.LogoURI, ClientURI: c.ClientURI},
		Scopes: slices.Clone(req.Scopes), RedirectURI: req.RedirectURI, LoginHint: req.LoginHint, Tenant: req.Tenant}
	if req.Prompt.Login {
		p.Freshness.Since = req.ReceivedAt.Truncate(time.Second)
	}
	p.Freshness.MaxAge, p.Freshness.HasMaxAge = req.MaxAge, req.HasMaxAge
	return p
}

// Proceed implements Flow: the pending request id's client is read and
// checked once (refusedReq), before anything is decided.
func (f *AuthorizeFlow) Proceed(ctx context.Context, id string, bs *store.BrowserSession, done Done, m accounts.Meta) (Step, error) {
	now := f.now()
	req, err := authorize.LoadPending(ctx, f.Once, id, now)
	if err != nil {
		return f.stopped(ctx, err)
	}
	to, stop, err := f.refusedReq(ctx, req)
	if stop != nil || err != nil {
		return derefStep(stop, err)
	}
	return f.next(ctx, id, req, to, bs, done, m, now)
}

// next decides what comes next for req given the browser session and what
// the person just did: a code or an error at the redirect URI (taking the
// pending request id first, when there is one), or a page (storing req as
// pending first when id is ""). The caller checked the client in this
// request (to, from refusedReq or refusedRead): the decision weighs the
// client as it is now, once it may still be answered, so a consent is
// remembered, and a page shown, only for such a client, and its
// first-party and public flags, not those it had when the request
// arrived, say whether consent is asked; the answer goes to to (finish)
// without another read of the client, so there is no moment between the
// check and the answer at which a client deleted or changed could slip
// through.
func (f *AuthorizeFlow) next(ctx context.Context, id string, req *authorize.Request, to checked, bs *store.BrowserSession, done Done,
	m accounts.Meta, now time.Time) (Step, error) {
	if done == DoneDeny {
		return f.finish(ctx, id, req, to, now, func(r *authorize.Request) (authorize.Response, error) {
			return r.Fail(authorize.ErrAccessDenied, "The user denied the request.").Response(), nil
		})
	}
	in, user, err := f.inputs(ctx, req, id != "", to.client, bs, done, m, now)
	if err != nil {
		return Step{}, err
	}
	dec := authorize.Decide(req, in, now)
	switch dec.Action {
	case authorize.ActIssueCode:
		return f.finish(ctx, id, req, to, now, func(r *authorize.Request) (authorize.Response, error) {
			code, err := authorize.PrepareCode(r, authorize.Login{UserID: bs.UserID, AuthTime: bs.AuthTime,
				AMR: bs.AMR, BrowserSessionID: bs.ID, BrowserLineage: bs.Lineage, BrowserSessionExpiry: bs.AbsoluteExpiry,
				User: user}, f.CodeTTL, now)
			if err != nil {
				return authorize.Response{}, apierr.ErrTemporarilyUnavailable.WithCause(err)
			}
			if err := f.issueWithGrant(ctx, bs, code, now); err != nil {
				return authorize.Response{}, err
			}
			return r.Success(code.Code), nil
		})
	case authorize.Refuse:
		return f.finish(ctx, id, req, to, now, func(*authorize.Request) (authorize.Response, error) {
			return dec.Error.Response(), nil
		})
	}
	if id == "" {
		if id, err = f.save(ctx, req, m, now); err != nil {
			return Step{}, err
		}
	}
	s := Step{Request: viewOf(id, req, to.client)}
	switch dec.Action {
	case authorize.ShowLogin:
		s.Kind = StepLogin
	case authorize.ShowConsent:
		s.Kind = StepConsent
	case authorize.ShowChangePassword:
		s.Kind = StepChangePassword
	case authorize.SelectAccount:
		s.Kind = StepSelectAccount
	default:
		return Step{}, apierr.ErrServer.WithDescription("unknown decision %v", dec.Action)
	}
	return s, nil
}

// issueWithGrant stores code and records its grant in browser session bs
// (one store call), and hands the grants the session drops to make room to
// Dropped. It fails closed: a grant not recorded could not be ended with
// the session, so its code is never answered (if stored, it stays unused
// until it expires); nor is it when a dropped grant could not be ended.
//
// It is the one routine that keeps a code, so it first counts the code
// against its browser session's budget (f.Codes): past it, the limiter's
// 429 (the error page, as for the flow's other budgets, never a redirect)
// and nothing is kept. A request answered at once (single sign-on) is
// otherwise counted nowhere. A pending request answered here was taken
// before (finish): a refused one is not kept either, and the person starts
// again from the application.
func (f *AuthorizeFlow) issueWithGrant(ctx context.Context, bs *store.BrowserSession, code authorize.PreparedCode, now time.Time) error {
	if f.Codes != nil {
		if err := f.Codes.AllowCode(ctx, bs.ID); err != nil {
			return fmt.Errorf("count the code against its browser session: %w", err)
		}
	}
	rec := code.Record
	dropped, err := f.Sessions.AddBrowserSessionGrantWithCode(ctx, bs.UserID, bs.ID, store.SessionGrant{SID: rec.SID, ClientID: rec.ClientID,
		Offline: rec.Offline, GrantedAt: now}, code.Once)
	if err != nil {
		err = apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("store the code and record its grant in its browser session: %w", err))
	}
	// A dropped grant could no longer be ended with its session, so it ends
	// now (even when the code failed: the grant may have landed).
	if eerr := f.Dropped.EndDropped(ctx, bs.UserID, dropped); eerr != nil && err == nil {
		err = apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("end grants dropped from their browser session: %w", eerr))
	}
	return err
}

// inputs gathers what authorize.Decide weighs besides the request: the
// client as it is now (checked by the caller), the session's user, whether its login owes the second factor the code's
// roles require, the remembered consent (after remembering the one just
// given), and whether the account was chosen during this request. It also
// returns the user as read (nil: none), which a code issued now carries.
func (f *AuthorizeFlow) inputs(ctx context.Context, req *authorize.Request, kept bool, client store.Client, bs *store.BrowserSession, done Done,
	m accounts.Meta, now time.Time) (authorize.Inputs, *store.User, error) {
	in := authorize.Inputs{Client: client, Session: bs}
	if bs == nil {
		return in, nil, nil
	}
	// Only a request kept for a page can have had a login during it: one
	// answered as it arrives (AuthorizeNow) comes after the session's login
	// however close its auth time, which SignedInDuring rounds down to the
	// second for stores and providers that keep whole seconds.
	in.SignedInDuring = kept && req.SignedInDuring(bs.AuthTime)
	var user *store.User
	u, err := f.Users.GetUserAt(ctx, bs.UserID, bs.UserVersion)
	switch {
	case errors.Is(err, store.ErrNotFound):
		in.User = authorize.StateOf(nil)
	case err != nil:
		return in, nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
	default:
		in.User, user = authorize.StateOf(&u), &u
		if f.SecondFactors != nil && u.Active {
			if in.SecondFactorOwed, err = f.SecondFactors.SecondFactorOwed(ctx, req.ClientID, u, req.Tenant, bs.AMR); err != nil {
				return in, nil, err
			}
		}
	}
	if done == DoneConsent && in.User.Exists && in.User.Active && !in.User.MustChangePassword && !client.FirstParty {
		if err := f.remember(ctx, bs.UserID, req, now, m); err != nil {
			return in, nil, err
		}
	}
	if !client.FirstParty {
		c, err := f.Consents.GetConsent(ctx, bs.UserID, req.ClientID)
		switch {
		case err == nil:
			in.Consent = &c
		case !errors.Is(err, store.ErrNotFound):
			return in, nil, apierr.ErrTemporarilyUnavailable.WithCause(err)
		}
	}
	// The account is chosen when the person signed in during this request
	// or answered a page of it (the chooser comes before consent).
	in.AccountSelected = done != DoneNothing || !bs.AuthTime.Before(req.ReceivedAt)
	in.ConsentGiven = done == DoneConsent
	return in, user, nil
}

// stopped is Proceed's answer to a request that cannot go on.
func (f *AuthorizeFlow) stopped(ctx context.Context, err error) (Step, error) {
	return derefStep(f.stop(ctx, err))
}

// derefStep is the Step of stop's answer (s when err is nil).
func derefStep(s *Step, err error) (Step, error) {
	if err != nil {
		return Step{}, err
	}
	return *s, nil
}

// finish answers req at to, its redirect URI as checked in this request
// (next's caller; a request refused for its client never gets here: it
// stays pending, and is refused again if answered again), through send: a
// stored pending request id is taken (once: a second submit or a racing
// tab gets "you are signed in", never a second answer); a request answered
// at once (id "") was never stored. The record under id is the request as
// loaded (never rewritten), so what was checked is what is answered.
func (f *AuthorizeFlow) finish(ctx context.Context, id string, req *authorize.Request, to checked, now time.Time,
	answer func(*authorize.Request) (authorize.Response, error)) (Step, error) {
	return f.send(ctx, to, func() (authorize.Response, error) {
		if id != "" {
			taken, err := authorize.FinishPending(ctx, f.Once, id, now)
			if err != nil {
				return authorize.Response{}, err
			}
			req = taken
		}
		return answer(req)
	})
}

// remember keeps the consent the person gave to req's client, all or
// nothing, adding the scopes asked to those remembered.
func (f *AuthorizeFlow) remember(ctx context.Context, userID string, req *authorize.Request, now time.Time, m accounts.Meta) error {
	scopes := slices.Clone(req.Scopes)
	if old, err := f.Consents.GetConsent(ctx, userID, req.ClientID); err == nil {
		scopes = append(scopes, old.Scopes...)
	} else if !errors.Is(err, store.ErrNotFound) {
		return apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	if err := f.Consents.PutConsent(ctx, store.Consent{UserID: userID, ClientID: req.ClientID, Scopes: scopes, GrantedAt: now}); err != nil {
		return apierr.ErrTemporarilyUnavailable.WithCause(err)
	}
	if f.Audit != nil {
		f.Audit.Record(ctx, store.AuditEvent{Action: "consent.granted", Outcome: store.OutcomeSuccess, ActorID: userID,
			TargetID: userID, ClientID: req.ClientID, IP: m.IP, UserAgent: m.UserAgent,
			Details: map[string]string{"scopes": strings.Join(req.Scopes, " ")}})
	}
	return nil
}
