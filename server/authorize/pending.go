package authorize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// PendingStore keeps pending requests (store.SingleUse, kind store.OnceAuthRequest).
type PendingStore interface {
	PutOnce(ctx context.Context, kind string, keyHash, value []byte, expiresAt time.Time) error
	PeekOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error)
	TakeOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error)
}

// TombstoneTTL is how long after its expiry a pending request can still be
// answered with access_denied and its state (so the client restarts): an
// hour, long enough for a person who comes back to a forgotten tab, short
// enough that what unauthenticated callers make the store keep stays
// proportionate to the request's own lifetime (it was a day, which held
// each request's tombstone 49 times as long as the request).
const TombstoneTTL = time.Hour

// ErrPendingDone: the pending request was completed already (the back
// button, or a second submit): the HTTP layer shows "You are signed in",
// never a second code.
var ErrPendingDone = errors.New("authorize: the authorization request was already completed")

// tombstone is what survives a pending request for TombstoneTTL.
type tombstone struct {
	// ClientID is checked again (CheckRedirect) before the answer is sent;
	// a tombstone written before it was kept has none and is answered with
	// the error page.
	ClientID string `json:"client_id"`
	// MadeAt is the request's Request.MadeAt, checked with ClientID; a
	// tombstone written before it was kept has none and is answered with
	// the error page too.
	MadeAt      time.Time `json:"made_at,omitzero"`
	RedirectURI string    `json:"redirect_uri"`
	Mode        string    `json:"mode"`
	State       string    `json:"state,omitempty"`
	Issuer      string    `json:"issuer"`
}

// SavePending keeps req server-side until now+ttl under a new opaque id (128
// random bits; only its hash is a key) and returns the id for the login or
// consent page to carry. Each request gets its own id, so two tabs signing
// in at once both complete.
func SavePending(ctx context.Context, st PendingStore, req *Request, ttl time.Duration, now time.Time) (string, error) {
	if ttl <= 0 {
		return "", errors.New("save pending request: the lifetime must be positive")
	}
	val, err := store.EncodeOnce(req)
	if err != nil {
		return "", fmt.Errorf("save pending request: %w", err)
	}
	ts, err := store.EncodeOnce(tombstone{ClientID: req.ClientID, MadeAt: req.MadeAt(), RedirectURI: req.RedirectURI, Mode: req.ResponseMode, State: req.State, Issuer: req.Issuer})
	if err != nil {
		return "", fmt.Errorf("save pending request: %w", err)
	}
	id := randomToken(16)
	if err := st.PutOnce(ctx, store.OnceAuthRequest, tombstoneKey(id), ts, now.Add(ttl+TombstoneTTL)); err != nil {
		return "", fmt.Errorf("save pending request: %w", err)
	}
	if err := st.PutOnce(ctx, store.OnceAuthRequest, token.HashSecret(id), val, now.Add(ttl)); err != nil {
		return "", fmt.Errorf("save pending request: %w", err)
	}
	return id, nil
}

// LoadPending returns the pending request id without completing it (the
// login and consent pages read it). An expired request is a *RedirectError
// access_denied carrying its client and state (to be sent only after
// CheckRedirect, like any answer to a request that waited); an unknown id a
// *PageError; a completed one ErrPendingDone.
func LoadPending(ctx context.Context, st PendingStore, id string, now time.Time) (*Request, error) {
	return loadPending(ctx, st, id, now, st.PeekOnce)
}

// FinishPending takes the pending request id for completion (issuing the
// code or an error): of any number of concurrent calls exactly one gets
// the request; the others get ErrPendingDone. Errors as LoadPending.
func FinishPending(ctx context.Context, st PendingStore, id string, now time.Time) (*Request, error) {
	return loadPending(ctx, st, id, now, st.TakeOnce)
}

func loadPending(ctx context.Context, st PendingStore, id string, now time.Time,
	get func(context.Context, string, []byte, time.Time) ([]byte, error)) (*Request, error) {
	if id == "" || len(id) > 64 {
		return nil, pageError("This sign-in link is not valid. Go back to the application and start again.")
	}
	val, err := get(ctx, store.OnceAuthRequest, token.HashSecret(id), now)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrTokenUsed):
		return nil, ErrPendingDone
	case errors.Is(err, store.ErrNotFound):
		return nil, expired(ctx, st, id, now)
	default:
		return nil, &PageError{Status: http.StatusServiceUnavailable, Message: "The service is temporarily unavailable; try again shortly.",
			cause: fmt.Errorf("load pending request: %w", err)}
	}
	var req Request
	if err := json.Unmarshal(val, &req); err != nil {
		return nil, &PageError{Status: http.StatusInternalServerError, Message: "This sign-in could not be continued. Start again.",
			cause: fmt.Errorf("decode pending request: %w", err)}
	}
	return &req, nil
}

// expired answers a pending request that is gone: access_denied with its
// state while the tombstone lasts (sent only if CheckRedirect still allows
// it), else the error page.
func expired(ctx context.Context, st PendingStore, id string, now time.Time) error {
	val, err := st.PeekOnce(ctx, store.OnceAuthRequest, tombstoneKey(id), now)
	var ts tombstone
	if err != nil || json.Unmarshal(val, &ts) != nil || ts.RedirectURI == "" || ts.ClientID == "" {
		return pageError("This sign-in has expired. Go back to the application and start again.")
	}
	return &RedirectError{ClientID: ts.ClientID, MadeAt: ts.MadeAt, RedirectURI: ts.RedirectURI, Mode: ts.Mode, Code: ErrAccessDenied,
		Description: "The sign-in took too long. Start again.", State: ts.State, Issuer: ts.Issuer}
}

func tombstoneKey(id string) []byte { return token.HashSecret("tombstone:" + id) }
