package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/portcullis-auth/portcullis/store"
)

// snapshot is an immutable view of the key state, built by Sync and read by
// the hot paths without locks.
type snapshot struct {
	active      *activeKey            // nil when no key is active
	published   map[string]*publicKey // kid → key, for every key in the JWKS
	revoked     map[string]struct{}   // kids of revoked keys
	jwks        []byte                // the JWKS document
	etag        string                // strong ETag of jwks
	algs        []string              // algorithms of the published keys
	activatedAt time.Time             // when the active key became active
	// loadedAt is when the records were read from the store (just before
	// the read): from loadedAt + staleAfter every use of the snapshot is
	// ErrStale (Manager.current).
	loadedAt time.Time
}

// publicKey is a published verification key.
type publicKey struct {
	kid   string
	alg   string
	rsa   *rsa.PublicKey
	ec    *ecdsa.PublicKey
	ed    ed25519.PublicKey
	until time.Time // zero: no end (next, active)
}

// activeKey is the decrypted key that signs, with its JWS headers precomputed
// for the common token types.
type activeKey struct {
	key     *PrivateKey
	headers map[string]string // typ → base64url of the protected header
}

// commonTypes are the typ values whose headers are precomputed.
var commonTypes = []string{"at+jwt", "JWT"}

// emptyJWKS is served before any key is loaded.
var emptyJWKS = []byte(`{"keys":[]}`)

// buildSnapshot turns the stored records into a snapshot at now. It reuses
// prev's decrypted active key when the active kid did not change.
func buildSnapshot(recs []store.SigningKey, ring KEKRing, t timing, now time.Time, prev *snapshot) (*snapshot, error) {
	recs = append([]store.SigningKey(nil), recs...)
	sort.SliceStable(recs, func(i, j int) bool {
		if !recs[i].CreatedAt.Equal(recs[j].CreatedAt) {
			return recs[i].CreatedAt.Before(recs[j].CreatedAt)
		}
		return recs[i].KID < recs[j].KID
	})
	s := &snapshot{
		published: make(map[string]*publicKey),
		revoked:   make(map[string]struct{}),
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, rec := range recs {
		if rec.State == store.KeyRevoked {
			s.revoked[rec.KID] = struct{}{}
			continue
		}
		if rec.State == store.KeyActive {
			if s.active != nil {
				return nil, fmt.Errorf("keys %s and %s are both active", s.active.key.kid, rec.KID)
			}
			if prev != nil && prev.active != nil && prev.active.key.kid == rec.KID && prev.active.key.alg == rec.Alg {
				s.active = prev.active
			} else {
				pk, err := openPrivateKey(ring, rec)
				if err != nil {
					return nil, err
				}
				if s.active, err = newActiveKey(pk); err != nil {
					return nil, err
				}
			}
			if rec.ActivatedAt != nil {
				s.activatedAt = *rec.ActivatedAt
			} else {
				s.activatedAt = rec.CreatedAt
			}
		}
		if !inJWKS(rec, now) {
			continue
		}
		jwk, pub, err := parsePublicJWK(rec)
		if err != nil {
			return nil, err
		}
		if rec.State == store.KeyRetired {
			pub.until = *rec.PublishedUntil
		}
		s.published[rec.KID] = pub
		set.Keys = append(set.Keys, jwk)
		s.algs = appendUnique(s.algs, rec.Alg)
	}
	if s.active != nil {
		if _, ok := s.published[s.active.key.kid]; !ok {
			return nil, fmt.Errorf("active key %s is not published", s.active.key.kid)
		}
	}
	body, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("marshal JWKS: %w", err)
	}
	s.jwks = body
	s.etag = etagOf(body)
	sort.Slice(s.algs, func(i, j int) bool { return algRank(s.algs[i]) < algRank(s.algs[j]) })
	return s, nil
}

// parsePublicJWK parses a stored public JWK, checks it is public, of the
// record's algorithm and matches its kid, and returns the JWK to publish.
func parsePublicJWK(rec store.SigningKey) (jose.JSONWebKey, *publicKey, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(rec.PublicJWK); err != nil {
		return jose.JSONWebKey{}, nil, fmt.Errorf("public key %s: %w", rec.KID, err)
	}
	if !jwk.IsPublic() {
		return jose.JSONWebKey{}, nil, fmt.Errorf("public key %s: stored JWK is not a public key", rec.KID)
	}
	if err := checkKeyType(rec.Alg, jwk.Key); err != nil {
		return jose.JSONWebKey{}, nil, fmt.Errorf("public key %s: %w", rec.KID, err)
	}
	kid, err := Thumbprint(jwk.Key)
	if err != nil {
		return jose.JSONWebKey{}, nil, fmt.Errorf("public key %s: %w", rec.KID, err)
	}
	if kid != rec.KID {
		return jose.JSONWebKey{}, nil, fmt.Errorf("public key %s: the key does not match its kid", rec.KID)
	}
	pub := &publicKey{kid: rec.KID, alg: rec.Alg}
	switch k := jwk.Key.(type) {
	case *rsa.PublicKey:
		pub.rsa = k
	case *ecdsa.PublicKey:
		pub.ec = k
	case ed25519.PublicKey:
		pub.ed = k
	}
	return publicJWK(jwk.Key, rec.KID, rec.Alg), pub, nil
}

func newActiveKey(pk *PrivateKey) (*activeKey, error) {
	a := &activeKey{key: pk, headers: make(map[string]string, len(commonTypes))}
	for _, typ := range commonTypes {
		h, err := encodeHeader(pk.alg, pk.kid, typ)
		if err != nil {
			return nil, err
		}
		a.headers[typ] = h
	}
	return a, nil
}

// etagOf returns a strong ETag derived from the body, so every instance
// serving the same key set answers with the same ETag.
func etagOf(body []byte) string {
	sum := sha256.Sum256(body)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func algRank(alg string) int {
	for i, a := range Algorithms() {
		if a == alg {
			return i
		}
	}
	return len(Algorithms())
}
