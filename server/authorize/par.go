package authorize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/portcullis-auth/portcullis/server/apierr"
	"github.com/portcullis-auth/portcullis/server/token"
	"github.com/portcullis-auth/portcullis/store"
)

// Pushed authorization requests (RFC 9126).
const (
	// RequestURIPrefix starts every request_uri /oauth2/par issues (RFC 9126 §2.2).
	RequestURIPrefix = "urn:ietf:params:oauth:request_uri:"
	// PushedRequestTTL is how long a request_uri can be used: short, as
	// RFC 9126 §2.2 advises; the browser goes to /oauth2/authorize at once.
	PushedRequestTTL = 60 * time.Second
	// pushedRefBytes is the randomness of a request_uri's reference (256 bits).
	pushedRefBytes = 32
)

// Pushed is the answer of /oauth2/par (RFC 9126 §2.2).
type Pushed struct {
	RequestURI string `json:"request_uri"`
	ExpiresIn  int64  `json:"expires_in"`
}

// Push validates an authorization request pushed by client (already
// authenticated as at the token endpoint; a client_id in the body was
// checked to name it, token.ClientFromRequest) with the same steps as
// ParseRequest, keeps it once in env.Pushed under the hash of a new 256-bit
// reference until now+ttl, and returns its request_uri. Errors are
// *apierr.Error for a JSON answer (RFC 9126 §2.3), never a page or a
// redirect: what ParseRequest would show or deliver to the redirect URI is
// 400 with the same error code (invalid_request for what it shows on a
// page); a request_uri in the body is invalid_request.
func Push(ctx context.Context, form url.Values, client store.Client, env Env, ttl time.Duration, now time.Time) (Pushed, error) {
	if env.Pushed == nil || ttl <= 0 {
		return Pushed{}, apierr.ErrServer.WithCause(errors.New("push authorization request: no store or no lifetime"))
	}
	// The authorization request proper: the authenticated client, no secret.
	f := maps.Clone(form)
	delete(f, "client_secret")
	f["client_id"] = []string{client.ID}
	req, err := parse(ctx, f, env, now, true, nil)
	if err != nil {
		return Pushed{}, pushError(err)
	}
	val, err := store.EncodeOnce(req)
	if err != nil {
		return Pushed{}, apierr.ErrServer.WithCause(fmt.Errorf("push authorization request: %w", err))
	}
	ref := randomToken(pushedRefBytes)
	if err := env.Pushed.PutOnce(ctx, store.OncePushedRequest, token.HashSecret(ref), val, now.Add(ttl)); err != nil {
		return Pushed{}, apierr.ErrTemporarilyUnavailable.WithCause(fmt.Errorf("store pushed authorization request: %w", err))
	}
	return Pushed{RequestURI: RequestURIPrefix + ref, ExpiresIn: int64(ttl / time.Second)}, nil
}

// pushError is the JSON answer of /oauth2/par for an error of parse.
func pushError(err error) error {
	var re *RedirectError
	var pe *PageError
	switch {
	case errors.As(err, &re):
		return (&apierr.Error{Code: re.Code, Status: http.StatusBadRequest}).WithDescription("%s", apierr.SafeText(re.Description))
	case errors.As(err, &pe) && pe.Status >= http.StatusInternalServerError:
		return apierr.ErrTemporarilyUnavailable.WithCause(err)
	case errors.As(err, &pe):
		return apierr.ErrInvalidRequest.WithDescription("%s", apierr.SafeText(pe.Message))
	}
	return apierr.ErrServer.WithCause(err)
}

// pushedGone is the page of a request_uri that cannot be used.
const pushedGone = "This sign-in request has expired or was used already. Go back to the application and start again."

// takePushed takes the request pushed under requestURI, once: unknown,
// used, expired or pushed by another client than clientID is a *PageError
// (400; another client's is spent all the same). The request is received
// now (prompt=login and max_age count from here) and was made when it was
// pushed (PushedAt, the ReceivedAt it was kept with); its other fields are
// as pushed.
func takePushed(ctx context.Context, st PendingStore, clientID, requestURI string, now time.Time) (*Request, error) {
	ref := strings.TrimPrefix(requestURI, RequestURIPrefix)
	if ref == "" || len(ref) > 64 {
		return nil, pageError(pushedGone)
	}
	val, err := st.TakeOnce(ctx, store.OncePushedRequest, token.HashSecret(ref), now)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrTokenUsed):
		return nil, &PageError{Status: http.StatusBadRequest, Message: pushedGone, cause: err}
	default:
		return nil, &PageError{Status: http.StatusServiceUnavailable, Message: "The service is temporarily unavailable; try again shortly.",
			cause: fmt.Errorf("take pushed authorization request: %w", err)}
	}
	var req Request
	if err := json.Unmarshal(val, &req); err != nil {
		return nil, &PageError{Status: http.StatusBadRequest, Message: pushedGone, cause: fmt.Errorf("decode pushed authorization request: %w", err)}
	}
	if req.ClientID != clientID {
		return nil, pageError("This sign-in request was made by another application. Go back to the application and start again.")
	}
	if req.PushedAt.IsZero() {
		req.PushedAt = req.ReceivedAt
	}
	req.ReceivedAt = now
	return &req, nil
}
