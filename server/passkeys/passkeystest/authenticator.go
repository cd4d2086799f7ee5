// Package passkeystest is a software WebAuthn authenticator for tests: it
// answers the options of server/passkeys (navigator.credentials.create and
// .get) the way a browser and a security key would, with an ES256 key,
// "none" attestation and a signature counter, and lets a test break any
// part of the answer (origin, RP ID, counter, user verification). It is for
// tests only; it checks nothing.
package passkeystest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Authenticator is one credential on a software authenticator.
type Authenticator struct {
	// Origin is the origin the "browser" reports in clientDataJSON.
	Origin string
	// RPID is the relying party id whose hash the authenticator data
	// carries (set by Create from the options unless already set).
	RPID string
	// Counter is the signature counter; Get adds CounterStep to it first.
	Counter     uint32
	CounterStep uint32
	// NoUV leaves the user-verified flag out.
	NoUV bool

	ID         []byte
	UserHandle []byte
	key        *ecdsa.PrivateKey
}

// New returns an authenticator for origin with a fresh ES256 key and a
// random 32-byte credential id; its counter starts at 0 and grows by 1.
func New(origin string) (*Authenticator, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	return &Authenticator{Origin: origin, CounterStep: 1, ID: id, key: k}, nil
}

// Clone returns a copy holding the same key and counter (a cloned
// authenticator).
func (a *Authenticator) Clone() *Authenticator {
	c := *a
	return &c
}

type options struct {
	PublicKey struct {
		Challenge string `json:"challenge"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		RPID string `json:"rpId"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	} `json:"publicKey"`
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Create answers registration options (the JSON of
// navigator.credentials.create's argument) with the PublicKeyCredential
// JSON a browser would send.
func (a *Authenticator) Create(optionsJSON []byte) ([]byte, error) {
	var o options
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		return nil, fmt.Errorf("options: %w", err)
	}
	if a.RPID == "" {
		a.RPID = o.PublicKey.RP.ID
	}
	uh, err := base64.RawURLEncoding.DecodeString(o.PublicKey.User.ID)
	if err != nil {
		return nil, fmt.Errorf("user id: %w", err)
	}
	a.UserHandle = uh
	cdj := a.clientData("webauthn.create", o.PublicKey.Challenge)
	cose, err := cbor.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: pad32(a.key.X.Bytes()), -3: pad32(a.key.Y.Bytes())})
	if err != nil {
		return nil, err
	}
	ad := a.authData(0x40, a.Counter)
	ad = append(ad, make([]byte, 16)...) // AAGUID
	ad = binary.BigEndian.AppendUint16(ad, uint16(len(a.ID)))
	ad = append(ad, a.ID...)
	ad = append(ad, cose...)
	att, err := cbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": ad})
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"id": b64(a.ID), "rawId": b64(a.ID), "type": "public-key", "clientExtensionResults": map[string]any{},
		"response": map[string]any{"clientDataJSON": b64(cdj), "attestationObject": b64(att), "transports": []string{"internal"}},
	})
}

// Get answers login options (the JSON of navigator.credentials.get's
// argument) with the PublicKeyCredential JSON a browser would send, after
// adding CounterStep to the counter.
func (a *Authenticator) Get(optionsJSON []byte) ([]byte, error) {
	var o options
	if err := json.Unmarshal(optionsJSON, &o); err != nil {
		return nil, fmt.Errorf("options: %w", err)
	}
	if a.RPID == "" {
		a.RPID = o.PublicKey.RPID
	}
	a.Counter += a.CounterStep
	cdj := a.clientData("webauthn.get", o.PublicKey.Challenge)
	ad := a.authData(0, a.Counter)
	h := sha256.Sum256(cdj)
	digest := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, a.key, digest[:])
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"id": b64(a.ID), "rawId": b64(a.ID), "type": "public-key", "clientExtensionResults": map[string]any{},
		"response": map[string]any{"clientDataJSON": b64(cdj), "authenticatorData": b64(ad), "signature": b64(sig),
			"userHandle": b64(a.UserHandle)},
	})
}

func (a *Authenticator) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": a.Origin, "crossOrigin": false})
	return b
}

// authData is rpIdHash, flags (user present, user verified unless NoUV,
// plus extra) and the counter.
func (a *Authenticator) authData(extra byte, counter uint32) []byte {
	h := sha256.Sum256([]byte(a.RPID))
	flags := byte(0x01) | extra
	if !a.NoUV {
		flags |= 0x04
	}
	out := append(h[:], flags)
	return binary.BigEndian.AppendUint32(out, counter)
}

func pad32(b []byte) []byte {
	if len(b) >= 32 {
		return b
	}
	return append(make([]byte, 32-len(b)), b...)
}
