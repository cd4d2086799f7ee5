package signout

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/portcullis-auth/portcullis/keys"
	"github.com/portcullis-auth/portcullis/server/redirecturi"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// HeldStore keeps logout requests between a POST and the browser's GET
// (store.SingleUse, kind store.OnceLogoutRequest).
type HeldStore interface {
	PutOnce(ctx context.Context, kind string, keyHash, value []byte, expiresAt time.Time) error
	TakeOnce(ctx context.Context, kind string, keyHash []byte, now time.Time) ([]byte, error)
}

// HeldTTL is how long a held logout request waits for its GET. The browser
// follows the 303 at once; the margin is for a slow network, and an expired
// request is only asked for again by the application.
const HeldTTL = 5 * time.Minute

// ErrHeldGone: the held logout request is unknown, expired or was taken
// already.
var ErrHeldGone = errors.New("signout: the logout request is unknown, expired or used")

// NotHeldError is Hold's refusal of a logout request no client could have
// sent (a parameter longer than anything it can be, or a state that is
// not VSCHAR).
type NotHeldError struct {
	// Reason says which parameter, in a sentence for the error page.
	Reason string
}

// Error implements error.
func (e *NotHeldError) Error() string {
	return "signout: the logout request cannot be kept: " + e.Reason
}

// holdable is Hold's rule: each parameter within what a real one can be,
// so that what a POST makes the store keep is bounded. An id_token_hint
// longer than any token we sign (keys.MaxTokenSize) could never verify; a
// post_logout_redirect_uri longer than a registered URI
// (redirecturi.MaxLen) or a client_id longer than any client's
// (token.MaxClientIDBytes) could never match; state is what the
// authorization request's is (token.ValidState), as it is echoed to the
// client the same way.
func holdable(req LogoutRequest) *NotHeldError {
	switch {
	case len(req.IDTokenHint) > keys.MaxTokenSize:
		return &NotHeldError{Reason: fmt.Sprintf("the id_token_hint is longer than %d bytes", keys.MaxTokenSize)}
	case len(req.ClientID) > token.MaxClientIDBytes:
		return &NotHeldError{Reason: fmt.Sprintf("the client_id is longer than %d bytes", token.MaxClientIDBytes)}
	case len(req.PostLogoutRedirectURI) > redirecturi.MaxLen:
		return &NotHeldError{Reason: fmt.Sprintf("the post_logout_redirect_uri is longer than %d bytes", redirecturi.MaxLen)}
	case req.State != "" && !token.ValidState(req.State):
		return &NotHeldError{Reason: fmt.Sprintf("the state must be at most %d printable ASCII characters", token.MaxStateBytes)}
	}
	return nil
}

// heldRequest is a held LogoutRequest as stored.
type heldRequest struct {
	IDTokenHint           string `json:"id_token_hint,omitempty"`
	ClientID              string `json:"client_id,omitempty"`
	PostLogoutRedirectURI string `json:"post_logout_redirect_uri,omitempty"`
	State                 string `json:"state,omitempty"`
}

// Hold keeps req until now+HeldTTL under a new opaque id (128 random bits;
// only its hash is a key) and returns the id. A logout request POSTed from
// the application's site comes without the SameSite=Lax session cookie, so
// it is decided only at the browser's same-site GET carrying the id, as a
// POSTed authorization request is (authorize.SavePending). A request no
// client could have sent is refused with a *NotHeldError (holdable), before
// anything is kept.
func Hold(ctx context.Context, st HeldStore, req LogoutRequest, now time.Time) (string, error) {
	if err := holdable(req); err != nil {
		return "", err
	}
	val, err := store.EncodeOnce(heldRequest(req))
	if err != nil {
		return "", fmt.Errorf("hold logout request: %w", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("hold logout request: %w", err)
	}
	id := base64.RawURLEncoding.EncodeToString(b)
	if err := st.PutOnce(ctx, store.OnceLogoutRequest, token.HashSecret(id), val, now.Add(HeldTTL)); err != nil {
		return "", fmt.Errorf("hold logout request: %w", err)
	}
	return id, nil
}

// TakeHeld takes the logout request held under id: once, so a reloaded or
// replayed link decides nothing again. ErrHeldGone when it is unknown,
// expired or taken; any other error is the store's.
func TakeHeld(ctx context.Context, st HeldStore, id string, now time.Time) (LogoutRequest, error) {
	if id == "" || len(id) > 64 {
		return LogoutRequest{}, ErrHeldGone
	}
	val, err := st.TakeOnce(ctx, store.OnceLogoutRequest, token.HashSecret(id), now)
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed):
		return LogoutRequest{}, ErrHeldGone
	case err != nil:
		return LogoutRequest{}, fmt.Errorf("take held logout request: %w", err)
	}
	var h heldRequest
	if err := json.Unmarshal(val, &h); err != nil {
		return LogoutRequest{}, fmt.Errorf("decode held logout request: %w", err)
	}
	return LogoutRequest(h), nil
}
