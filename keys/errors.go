package keys

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by Verify and VerifyTyped. Callers test them with errors.Is;
// each means the token must be refused.
var (
	// ErrMalformed means the token is not a well-formed compact JWS that
	// Portcullis could have issued (too large, bad encoding, unsupported alg, crit header).
	ErrMalformed = errors.New("keys: malformed token")
	// ErrUnknownKey means the token's kid names no key currently published.
	ErrUnknownKey = errors.New("keys: unknown signing key")
	// ErrRevokedKey means the token was signed by a revoked (compromised) key.
	ErrRevokedKey = errors.New("keys: signing key revoked")
	// ErrBadSignature means the signature does not verify, or the token's alg is
	// not the algorithm of the key its kid names.
	ErrBadSignature = errors.New("keys: bad signature")
	// ErrWrongType means the token's typ header is not the one required.
	ErrWrongType = errors.New("keys: wrong token type")
)

// Errors returned by the Manager.
var (
	// ErrNotReady means the Manager has no key state yet (Init has not succeeded).
	ErrNotReady = errors.New("keys: signing keys not loaded")
	// ErrStale means the Manager's key state has not been reloaded from the
	// store for too long (Refresh): it may miss a revocation made elsewhere,
	// so no key is used (a dependency is down: the answer is 503, never a
	// judgement of the token).
	ErrStale = errors.New("keys: signing keys not reloaded for too long; they may miss a revocation")
	// ErrKeyNotFound means no signing key has the given kid.
	ErrKeyNotFound = errors.New("keys: no signing key with this kid")
	// ErrDecrypt means no configured key-encryption key opens the sealed data,
	// or the data was altered.
	ErrDecrypt = errors.New("keys: cannot decrypt with any configured key-encryption key")
	// ErrReloadAfterCommit means a rotation or revocation was stored (it
	// happened: every instance takes it at its next sync) but this instance
	// could not reload the keys after it, and goes on with the keys it held
	// until a sync succeeds. Rotate and Revoke return their result with it.
	ErrReloadAfterCommit = errors.New("keys: the change was stored, but this instance could not reload the signing keys")
)

// TooEarlyError is returned by Rotate (without force) while the next key has
// not been published for long enough: verifiers may still hold a cached JWKS
// without it. SafeAt is when rotating will be safe.
type TooEarlyError struct {
	SafeAt time.Time
}

// Error says when rotation will be safe.
func (e *TooEarlyError) Error() string {
	return fmt.Sprintf("keys: the next key is not yet published long enough to sign; rotating is safe from %s (or force it, which breaks verifiers that cached the JWKS until they refetch)",
		e.SafeAt.UTC().Format(time.RFC3339))
}
