package password

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/text/unicode/norm"

	"github.com/portcullis-auth/portcullis/policy/password/internal/argon2"
)

// Errors of Verify. Neither ever carries the hash or the password.
var (
	// ErrMalformedHash means the stored hash is not a well-formed hash of a supported algorithm.
	ErrMalformedHash = errors.New("password: malformed password hash")
	// ErrUnsupportedHash means the stored hash uses an algorithm or version Portcullis cannot verify.
	ErrUnsupportedHash = errors.New("password: unsupported password hash algorithm")
	// ErrBusy means no hash ran because the caller's context ended first:
	// before the call, or while it waited for a hashing slot (every slot
	// taken by other hashes). Verify never returns it once one of its hashes
	// has run: its answer is then a verdict. The error also wraps the context's error
	// (context.DeadlineExceeded or context.Canceled). Hash, Verify and
	// DummyVerify return it alike, whatever the password or the hash, so a
	// caller can answer it the same for every account.
	ErrBusy = errors.New("password: no hashing slot before the context ended")
)

// MaxInputBytes bounds the passwords Hash and Verify accept. Longer input is refused by Hash and
// never verifies (without being hashed). It is far above any length Rules allow.
const MaxInputBytes = 16 << 10

// Bounds on argon2 parameters, for configured parameters and for stored hashes alike (a stored hash
// with absurd parameters must not exhaust memory or CPU when someone logs in).
const (
	MaxMemoryKiB = 1 << 20 // 1 GiB
	MaxTime      = 64
	minSaltLen   = 8
	maxSaltLen   = 64
	minKeyLen    = 16
	maxKeyLen    = 128
)

// Params are argon2id parameters.
type Params struct {
	Memory     uint32 // KiB
	Time       uint32 // iterations
	Threads    uint8  // degree of parallelism
	SaltLength uint32 // bytes
	KeyLength  uint32 // bytes of derived key
}

// DefaultParams returns the argon2id parameters the OWASP Password Storage Cheat Sheet recommends
// as its first option: "a minimum configuration of 19 MiB of memory, an iteration count of 2, and 1
// degree of parallelism" (m=19456 KiB, t=2, p=1), with a 16-byte salt and a 32-byte hash (RFC 9106
// §3.1).
func DefaultParams() Params {
	return Params{Memory: 19456, Time: 2, Threads: 1, SaltLength: 16, KeyLength: 32}
}

// Validate checks that the parameters are usable.
func (p Params) Validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxTime:
		return fmt.Errorf("argon2id time (iterations) must be between 1 and %d, got %d", MaxTime, p.Time)
	case p.Threads < 1:
		return fmt.Errorf("argon2id threads must be at least 1")
	case p.Memory < 8*uint32(p.Threads) || p.Memory > MaxMemoryKiB:
		return fmt.Errorf("argon2id memory must be between %d and %d KiB, got %d", 8*uint32(p.Threads), MaxMemoryKiB, p.Memory)
	case p.SaltLength < 16 || p.SaltLength > maxSaltLen:
		return fmt.Errorf("argon2id salt length must be between 16 and %d bytes, got %d", maxSaltLen, p.SaltLength)
	case p.KeyLength < minKeyLen || p.KeyLength > maxKeyLen:
		return fmt.Errorf("argon2id key length must be between %d and %d bytes, got %d", minKeyLen, maxKeyLen, p.KeyLength)
	}
	return nil
}

// MeetsOWASP reports whether the parameters are at least as strong as one of the OWASP Password
// Storage Cheat Sheet's argon2id configurations (m=47104/t=1, m=19456/t=2, m=12288/t=3,
// m=9216/t=4, m=7168/t=5, all p=1): memory at least 7168 KiB and memory × iterations at least
// 7168 × 5. A server may warn at start when this is false.
func (p Params) MeetsOWASP() bool {
	return p.Memory >= 7168 && uint64(p.Memory)*uint64(p.Time) >= 7168*5
}

// String renders the parameters as in a PHC string, m=…,t=…,p=….
func (p Params) String() string {
	return fmt.Sprintf("m=%d,t=%d,p=%d", p.Memory, p.Time, p.Threads)
}

// Hasher hashes and verifies passwords with fixed argon2id parameters. It is safe for concurrent use.
type Hasher struct {
	params Params
	dummy  string // a hash of a random password, verified by DummyVerify
	// slots bounds the hashes computed at once to the number of CPUs: each
	// argon2id run takes Memory KiB, and running more at once than there are
	// cores only adds memory churn and cache misses, not throughput. A slot
	// is the working memory its hash runs in, kept for the next (up to
	// Memory KiB; a stored hash with more memory allocates its own): the
	// hasher holds slots × Memory KiB instead of making that much garbage
	// per hash, which cost a garbage collection every few logins. A slot's
	// memory holds its last hash's blocks until the next hash overwrites
	// them, as the garbage held them until reused before.
	slots   chan *argon2.Memory
	waiting atomic.Int64  // callers waiting for a slot (Load)
	runs    atomic.Uint64 // hashes computed, counted for the tests
}

// Load reports the hashes running now (slots taken) and the callers
// waiting for a slot: how saturated the instance's hashing is, for its
// metrics (portcullis_password_hashes_running and _waiting).
func (h *Hasher) Load() (running, waiting int) {
	return cap(h.slots) - len(h.slots), int(h.waiting.Load())
}

// compute runs one hash under a slot and returns how long the hash ran:
// the time f took once it had its slot, never the wait for one, so a queue
// of concurrent hashes does not lengthen it. It never starts a hash for a
// request that is already gone: it returns ctx's error when ctx is done
// before a slot is free, or once it has one (a hash, once started, runs to
// its end). Each of those errors is ErrBusy, wrapping ctx's error.
func (h *Hasher) compute(ctx context.Context, f func(mem *argon2.Memory)) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBusy, err)
	}
	var mem *argon2.Memory
	h.waiting.Add(1)
	select {
	case mem = <-h.slots:
		h.waiting.Add(-1)
	case <-ctx.Done():
		h.waiting.Add(-1)
		return 0, fmt.Errorf("%w: waiting for a hashing slot: %w", ErrBusy, ctx.Err())
	}
	defer func() { h.slots <- mem }()
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBusy, err)
	}
	h.runs.Add(1)
	start := time.Now()
	f(mem)
	return time.Since(start), nil
}

// NewHasher returns a Hasher for the parameters; it computes one dummy hash, so it costs one hash.
func NewHasher(p Params) (*Hasher, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("password hasher: %w", err)
	}
	h := &Hasher{params: p, slots: make(chan *argon2.Memory, runtime.GOMAXPROCS(0))}
	for range cap(h.slots) {
		h.slots <- argon2.NewMemory(p.Memory) // allocated by its first hash
	}
	dummy, err := h.Hash(context.Background(), rand.Text())
	if err != nil {
		return nil, fmt.Errorf("password hasher: dummy hash: %w", err)
	}
	h.dummy = dummy
	return h, nil
}

// Params returns the parameters new hashes use.
func (h *Hasher) Params() Params { return h.params }

// Hash returns the PHC string of the argon2id hash of the NFKC-normalized password under a fresh
// random salt. It returns ErrBusy (wrapping ctx's error) without hashing
// when ctx is done before the hash starts.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	if len(password) > MaxInputBytes {
		return "", fmt.Errorf("password: longer than %d bytes", MaxInputBytes)
	}
	salt := make([]byte, h.params.SaltLength)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password: salt: %w", err)
	}
	p := h.params
	var key []byte
	if _, err := h.compute(ctx, func(mem *argon2.Memory) {
		key = mem.IDKey([]byte(norm.NFKC.String(password)), salt, p.Time, p.Memory, p.Threads, p.KeyLength)
	}); err != nil {
		return "", err
	}
	return encodePHC("argon2id", p, salt, key), nil
}

func encodePHC(alg string, p Params, salt, key []byte) string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$%s$v=%d$%s$%s$%s", alg, argon2.Version, p, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// VerifyOption says what Verify knows of the stored hash (ForeignHash) and what it must cost
// (ForeignCost). The zero value is a hash Hash made, verified at its own cost.
type VerifyOption struct{ foreign, cost bool }

// ForeignHash marks, when foreign is true, a stored hash that Hash may not have made: one imported
// from another system, which may be of the password as typed rather than of its NFKC form. Verify
// then also tries the password as typed when its NFKC form differs and does not match (a second
// run of the hash), and asks for a rehash whenever the password matches, so the hash becomes one
// of Hash's. Hash has hashed the NFKC form since Portcullis began: only foreign hashes need this.
func ForeignHash(foreign bool) VerifyOption { return VerifyOption{foreign: foreign} }

// ForeignCost makes, when cost is true, a verification cost what it would for a foreign hash
// (ForeignHash) whatever the hash: for a password that NFKC changes and whose NFKC form does not
// match, Verify also runs the hash on the password as typed and discards that run's answer unless
// the hash is marked ForeignHash (Hash's hashes are of NFKC forms, which the typed form is not);
// DummyVerify runs the dummy twice. A caller passes it to every verification while some stored
// hash may be foreign, so that no refusal costs fewer runs than a foreign hash's would.
func ForeignCost(cost bool) VerifyOption { return VerifyOption{cost: cost} }

// foreign reports whether opts mark the hash foreign.
func foreign(opts []VerifyOption) bool {
	for _, o := range opts {
		if o.foreign {
			return true
		}
	}
	return false
}

// RunsTwice reports whether a verification with opts of a password whose NFKC form does not match
// a readable hash runs the hash twice: the one rule of the second run, for a password that NFKC
// changes and a hash marked ForeignHash, or any hash under ForeignCost. Verify, DummyVerify and
// VerifyClass follow it; a caller that times the dummy verification names its class by it.
func RunsTwice(password string, opts ...VerifyOption) bool {
	return len(password) <= MaxInputBytes && triesRawForm(password, norm.NFKC.String(password), opts)
}

// triesRawForm is RunsTwice for a password whose NFKC form the caller has.
func triesRawForm(password, normalized string, opts []VerifyOption) bool {
	if normalized == password {
		return false
	}
	for _, o := range opts {
		if o.foreign || o.cost {
			return true
		}
	}
	return false
}

// Verify checks password against a stored hash (argon2id, argon2i or bcrypt) in constant time.
// It hashes the NFKC form of the password, as Hash does; for a hash marked ForeignHash it also
// tries the password as typed (see ForeignHash), never otherwise (ForeignCost runs the hash on
// the typed form too, for its cost only: its answer counts only for a foreign hash). ok is true when the password
// matches; needsRehash is true when it matched but the hash uses another algorithm, other
// parameters, or is foreign: the caller should then store Hash(password). took is how long its
// hashing ran (see compute: without the wait for a hashing slot; 0 when nothing was hashed), the
// time a verification of its class (VerifyClass) costs. A wrong password is (false, false, took,
// nil); err is ErrMalformedHash or ErrUnsupportedHash (wrapped) when the stored hash cannot be
// checked, or ErrBusy (wrapping ctx's error) when ctx is done before its first hash starts, and
// only then: once a hash has run the answer is a verdict (a second run ignores ctx's end).
func (h *Hasher) Verify(ctx context.Context, hash, password string, opts ...VerifyOption) (ok, needsRehash bool, took time.Duration, err error) {
	if len(password) > MaxInputBytes {
		return false, false, 0, nil
	}
	normalized := norm.NFKC.String(password)
	ok, needsRehash, took, err = h.verifyOne(ctx, hash, normalized)
	if err != nil || ok || !triesRawForm(password, normalized, opts) {
		return ok, needsRehash || ok && foreign(opts), took, err
	}
	// A foreign hash may be of the password as typed: it still verifies, and is then replaced by
	// a hash of the normalized form. The first run has tested the guess, so the answer is a
	// verdict, never ErrBusy (which says no hash ran): the second runs to its end whatever ctx
	// does, as a started hash does.
	ok, _, again, err := h.verifyOne(context.WithoutCancel(ctx), hash, password)
	if err != nil {
		return false, false, took, fmt.Errorf("password: the typed form: %w", err)
	}
	ok = ok && foreign(opts) // under ForeignCost alone, a run for its cost
	return ok, ok, took + again, nil
}

// DummyVerify performs a verification against a precomputed hash of a random password and discards
// the result, so a request for an unknown account costs what a real one costs (and, like Verify,
// nothing once ctx is done): one run of the hash at the current parameters, or, as Verify with opts
// would, two for a password that NFKC changes under ForeignCost or ForeignHash (RunsTwice). It
// returns how long its hashing ran, as Verify does, and ErrBusy (wrapping ctx's error), as Verify
// does, when ctx is done before its first hash starts: a caller answers that the same whether it
// verified a real hash or the dummy.
func (h *Hasher) DummyVerify(ctx context.Context, password string, opts ...VerifyOption) (time.Duration, error) {
	_, _, took, err := h.Verify(ctx, h.dummy, password, opts...)
	return took, err
}

// NeedsRehash reports whether a stored hash should be replaced by a hash with the current
// parameters (also true for hashes that cannot be parsed).
func (h *Hasher) NeedsRehash(hash string) bool {
	if !strings.HasPrefix(hash, "$argon2id$") {
		return true
	}
	p, salt, key, err := decodeArgon2(strings.TrimPrefix(hash, "$argon2id$"))
	return err != nil || h.differs(p, salt, key)
}

func (h *Hasher) differs(p Params, salt, key []byte) bool {
	c := h.params
	return p.Memory != c.Memory || p.Time != c.Time || p.Threads != c.Threads ||
		len(salt) != int(c.SaltLength) || len(key) != int(c.KeyLength)
}

// verifyOne checks one form of the password; took is how long its hashing ran.
func (h *Hasher) verifyOne(ctx context.Context, hash, password string) (ok, needsRehash bool, took time.Duration, err error) {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		p, salt, key, err := decodeArgon2(strings.TrimPrefix(hash, "$argon2id$"))
		if err != nil {
			return false, false, 0, err
		}
		var got []byte
		took, err := h.compute(ctx, func(mem *argon2.Memory) {
			got = mem.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
		})
		if err != nil {
			return false, false, 0, err
		}
		if subtle.ConstantTimeCompare(got, key) != 1 {
			return false, false, took, nil
		}
		return true, h.differs(p, salt, key), took, nil
	case strings.HasPrefix(hash, "$argon2i$"):
		p, salt, key, err := decodeArgon2(strings.TrimPrefix(hash, "$argon2i$"))
		if err != nil {
			return false, false, 0, err
		}
		var got []byte
		took, err := h.compute(ctx, func(mem *argon2.Memory) {
			got = mem.Key([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
		})
		if err != nil {
			return false, false, 0, err
		}
		ok := subtle.ConstantTimeCompare(got, key) == 1
		return ok, ok, took, nil
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		var err error
		took, cerr := h.compute(ctx, func(*argon2.Memory) { err = bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) })
		if cerr != nil {
			return false, false, 0, cerr
		}
		switch {
		case err == nil:
			return true, true, took, nil
		case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
			return false, false, took, nil
		default:
			return false, false, 0, fmt.Errorf("%w: bcrypt: %s", ErrMalformedHash, bcryptProblem(err))
		}
	case strings.HasPrefix(hash, "$argon2d$"):
		return false, false, 0, fmt.Errorf("%w: argon2d", ErrUnsupportedHash)
	case strings.HasPrefix(hash, "$"):
		alg, _, _ := strings.Cut(hash[1:], "$")
		if len(alg) > 16 || strings.ContainsFunc(alg, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			alg = "unknown"
		}
		return false, false, 0, fmt.Errorf("%w: %q", ErrUnsupportedHash, alg)
	default:
		return false, false, 0, fmt.Errorf("%w: not a PHC or modular crypt string", ErrMalformedHash)
	}
}

// bcryptProblem describes a bcrypt error without echoing the hash.
func bcryptProblem(err error) string {
	var cost bcrypt.InvalidCostError
	var prefix bcrypt.InvalidHashPrefixError
	switch {
	case errors.Is(err, bcrypt.ErrHashTooShort):
		return "hash too short"
	case errors.As(err, &cost):
		return fmt.Sprintf("invalid cost %d", int(cost))
	case errors.As(err, &prefix):
		return "invalid prefix"
	default:
		return "invalid hash"
	}
}

// decodeArgon2 parses "v=19$m=…,t=…,p=…$salt$hash" (the part after "$argon2id$" or "$argon2i$").
func decodeArgon2(s string) (Params, []byte, []byte, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 4 {
		return Params{}, nil, nil, fmt.Errorf("%w: argon2: want v=, parameters, salt and hash", ErrMalformedHash)
	}
	if parts[0] != "v=19" {
		if strings.HasPrefix(parts[0], "v=") {
			return Params{}, nil, nil, fmt.Errorf("%w: argon2 version other than 19", ErrUnsupportedHash)
		}
		return Params{}, nil, nil, fmt.Errorf("%w: argon2: missing version", ErrMalformedHash)
	}
	var p Params
	fields := strings.Split(parts[1], ",")
	if len(fields) != 3 {
		return Params{}, nil, nil, fmt.Errorf("%w: argon2: want m=,t=,p=", ErrMalformedHash)
	}
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(fields[i], name+"=")
		if !ok || v == "" || (len(v) > 1 && v[0] == '0') {
			return Params{}, nil, nil, fmt.Errorf("%w: argon2: want m=,t=,p=", ErrMalformedHash)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return Params{}, nil, nil, fmt.Errorf("%w: argon2: parameter %s is not a number", ErrMalformedHash, name)
		}
		switch name {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return Params{}, nil, nil, fmt.Errorf("%w: argon2: parallelism above 255", ErrMalformedHash)
			}
			p.Threads = uint8(n)
		}
	}
	if p.Time < 1 || p.Time > MaxTime || p.Threads < 1 || p.Memory < 8*uint32(p.Threads) || p.Memory > MaxMemoryKiB {
		return Params{}, nil, nil, fmt.Errorf("%w: argon2: parameters out of range (%s)", ErrMalformedHash, p)
	}
	b64 := base64.RawStdEncoding.Strict()
	salt, err := b64.DecodeString(parts[2])
	if err != nil || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return Params{}, nil, nil, fmt.Errorf("%w: argon2: bad salt", ErrMalformedHash)
	}
	key, err := b64.DecodeString(parts[3])
	if err != nil || len(key) < minKeyLen || len(key) > maxKeyLen {
		return Params{}, nil, nil, fmt.Errorf("%w: argon2: bad hash", ErrMalformedHash)
	}
	p.SaltLength, p.KeyLength = uint32(len(salt)), uint32(len(key))
	return p, salt, key, nil
}

// HashClass names the cost class of a stored hash: its algorithm and the
// parameters its verification time depends on ("argon2id m=65536,t=3,p=4",
// "bcrypt cost 10"), never its salt or key. A hash that cannot be parsed is
// "unreadable" (it is refused before any hashing).
func HashClass(hash string) string {
	for _, alg := range []string{"argon2id", "argon2i"} {
		if rest, ok := strings.CutPrefix(hash, "$"+alg+"$"); ok {
			p, _, key, err := decodeArgon2(rest)
			if err != nil {
				return "unreadable"
			}
			return fmt.Sprintf("%s %s,k=%d", alg, p, len(key))
		}
	}
	if strings.HasPrefix(hash, "$2a$") || strings.HasPrefix(hash, "$2b$") || strings.HasPrefix(hash, "$2y$") {
		if cost, err := bcrypt.Cost([]byte(hash)); err == nil {
			return fmt.Sprintf("bcrypt cost %d", cost)
		}
	}
	return "unreadable"
}

// VerifyClass names the cost class of a refusal by Verify(hash, password, opts...): HashClass(hash),
// which costs one run of the hash, or, when that verification runs the hash twice (RunsTwice: a
// password that NFKC changes and a foreign hash, or ForeignCost), that class followed by " twice",
// its own class.
func VerifyClass(hash, password string, opts ...VerifyOption) string {
	class := HashClass(hash)
	if class != "unreadable" && RunsTwice(password, opts...) {
		return class + " twice"
	}
	return class
}
