package password

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	xargon2 "golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/portcullis-auth/portcullis/policy/password/internal/argon2"
)

// ctx is the context of the tests that are not about cancellation.
var ctx = context.Background()

// fastParams keep the unit tests quick; DefaultParams are exercised by TestDefaultParams and the
// benchmarks.
var fastParams = Params{Memory: 64, Time: 1, Threads: 1, SaltLength: 16, KeyLength: 32}

func newHasher(t testing.TB, p Params) *Hasher {
	t.Helper()
	h, err := NewHasher(p)
	if err != nil {
		t.Fatalf("NewHasher: %v", err)
	}
	return h
}

func TestDefaultParams(t *testing.T) {
	p := DefaultParams()
	if p.Memory != 19456 || p.Time != 2 || p.Threads != 1 {
		t.Fatalf("DefaultParams = %+v, want the OWASP m=19456,t=2,p=1", p)
	}
	if err := p.Validate(); err != nil || !p.MeetsOWASP() {
		t.Fatalf("DefaultParams invalid or below OWASP: %v", err)
	}
	h := newHasher(t, p)
	hash, err := h.Hash(ctx, "correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q is not a PHC argon2id string with the default parameters", hash)
	}
	ok, rehash, _, err := h.Verify(ctx, hash, "correct horse battery staple")
	if !ok || rehash || err != nil {
		t.Fatalf("Verify = %v, %v, %v", ok, rehash, err)
	}
}

func TestParamsValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Params
		ok   bool
	}{
		{"ok/default", DefaultParams(), true},
		{"ok/fast", fastParams, true},
		{"ok/owasp 46 MiB t=1", Params{Memory: 47104, Time: 1, Threads: 1, SaltLength: 16, KeyLength: 32}, true},
		{"fail/zero time", Params{Memory: 64, Time: 0, Threads: 1, SaltLength: 16, KeyLength: 32}, false},
		{"fail/zero threads", Params{Memory: 64, Time: 1, Threads: 0, SaltLength: 16, KeyLength: 32}, false},
		{"fail/memory below 8 per thread", Params{Memory: 15, Time: 1, Threads: 2, SaltLength: 16, KeyLength: 32}, false},
		{"fail/memory above the bound", Params{Memory: MaxMemoryKiB + 1, Time: 1, Threads: 1, SaltLength: 16, KeyLength: 32}, false},
		{"fail/short salt", Params{Memory: 64, Time: 1, Threads: 1, SaltLength: 8, KeyLength: 32}, false},
		{"fail/short key", Params{Memory: 64, Time: 1, Threads: 1, SaltLength: 16, KeyLength: 8}, false},
		{"fail/too many iterations", Params{Memory: 64, Time: MaxTime + 1, Threads: 1, SaltLength: 16, KeyLength: 32}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v", tt.p, err)
			}
			if _, herr := NewHasher(tt.p); (herr == nil) != tt.ok {
				t.Fatalf("NewHasher(%+v) = %v", tt.p, herr)
			}
		})
	}
	if fastParams.MeetsOWASP() {
		t.Fatal("64 KiB meets OWASP")
	}
	if !(Params{Memory: 7168, Time: 5, Threads: 1}).MeetsOWASP() || (Params{Memory: 7168, Time: 4, Threads: 1}).MeetsOWASP() {
		t.Fatal("MeetsOWASP boundary wrong")
	}
}

func TestHashVerify(t *testing.T) {
	h := newHasher(t, fastParams)
	a, err := h.Hash(ctx, "hunter2 hunter2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := h.Hash(ctx, "hunter2 hunter2")
	if a == b {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	if strings.Contains(a, "hunter2") {
		t.Fatal("hash contains the password")
	}
	tests := []struct {
		name   string
		pw     string
		ok     bool
		rehash bool
	}{
		{"ok/same password", "hunter2 hunter2", true, false},
		{"fail/other password", "hunter2 hunter3", false, false},
		{"fail/case differs", "Hunter2 hunter2", false, false},
		{"fail/empty", "", false, false},
		{"fail/prefix", "hunter2", false, false},
		{"fail/too long is never hashed", strings.Repeat("x", MaxInputBytes+1), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, rehash, _, err := h.Verify(ctx, a, tt.pw)
			if err != nil || ok != tt.ok || rehash != tt.rehash {
				t.Fatalf("Verify = %v, %v, %v; want %v, %v, nil", ok, rehash, err, tt.ok, tt.rehash)
			}
		})
	}
	if _, err := h.Hash(ctx, strings.Repeat("x", MaxInputBytes+1)); err == nil {
		t.Fatal("Hash accepted an over-long password")
	}
	if h.NeedsRehash(a) {
		t.Fatal("fresh hash needs a rehash")
	}
}

func TestUnicodeNormalization(t *testing.T) {
	h := newHasher(t, fastParams)
	composed := "caf\u00e9 au lait" // é as one code point
	decomposed := "cafe\u0301 au lait"
	hash, err := h.Hash(ctx, decomposed)
	if err != nil {
		t.Fatal(err)
	}
	ok, rehash, _, err := h.Verify(ctx, hash, composed)
	if !ok || rehash || err != nil {
		t.Fatalf("composed form does not verify against the decomposed hash: %v %v %v", ok, rehash, err)
	}

	// A hash made without normalization (imported, marked foreign) still verifies and asks to be
	// replaced.
	salt := []byte("0123456789abcdef")
	key := xargon2.IDKey([]byte(decomposed), salt, fastParams.Time, fastParams.Memory, fastParams.Threads, fastParams.KeyLength)
	legacy := encodePHC("argon2id", fastParams, salt, key)
	ok, rehash, _, err = h.Verify(ctx, legacy, decomposed, ForeignHash(true))
	if !ok || !rehash || err != nil {
		t.Fatalf("unnormalized legacy hash: %v %v %v; want ok and rehash", ok, rehash, err)
	}
	ok, _, _, _ = h.Verify(ctx, legacy, "cafe au lait", ForeignHash(true))
	if ok {
		t.Fatal("wrong password verified")
	}
}

func TestVerifyRehash(t *testing.T) {
	h := newHasher(t, fastParams)
	phc := func(alg string, p Params, pw string) string {
		salt := make([]byte, p.SaltLength)
		var key []byte
		if alg == "argon2i" {
			key = xargon2.Key([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLength)
		} else {
			key = xargon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLength)
		}
		return encodePHC(alg, p, salt, key)
	}
	bc := func(prefix string) string {
		b, err := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return prefix + string(b[4:])
	}
	other := fastParams
	other.Memory = 128
	longer := fastParams
	longer.KeyLength = 64
	tests := []struct {
		name   string
		hash   string
		pw     string
		ok     bool
		rehash bool
	}{
		{"ok/current parameters", phc("argon2id", fastParams, "s3cret pass"), "s3cret pass", true, false},
		{"ok/other memory needs rehash", phc("argon2id", other, "s3cret pass"), "s3cret pass", true, true},
		{"ok/other key length needs rehash", phc("argon2id", longer, "s3cret pass"), "s3cret pass", true, true},
		{"ok/argon2i needs rehash", phc("argon2i", fastParams, "s3cret pass"), "s3cret pass", true, true},
		{"ok/bcrypt 2a needs rehash", bc("$2a$"), "s3cret pass", true, true},
		{"ok/bcrypt 2b needs rehash", bc("$2b$"), "s3cret pass", true, true},
		{"ok/bcrypt 2y needs rehash", bc("$2y$"), "s3cret pass", true, true},
		{"fail/argon2id wrong password", phc("argon2id", other, "s3cret pass"), "s3cret pas", false, false},
		{"fail/argon2i wrong password", phc("argon2i", fastParams, "s3cret pass"), "nope nope", false, false},
		{"fail/bcrypt wrong password", bc("$2b$"), "s3cret pasS", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, rehash, _, err := h.Verify(ctx, tt.hash, tt.pw)
			if err != nil || ok != tt.ok || rehash != tt.rehash {
				t.Fatalf("Verify = %v, %v, %v; want %v, %v, nil", ok, rehash, err, tt.ok, tt.rehash)
			}
			if tt.ok && h.NeedsRehash(tt.hash) != tt.rehash {
				t.Fatalf("NeedsRehash = %v", !tt.rehash)
			}
		})
	}
}

func TestVerifyMalformed(t *testing.T) {
	h := newHasher(t, fastParams)
	good, _ := h.Hash(ctx, "a good password")
	parts := strings.Split(good, "$") // "", argon2id, v=19, m=..., salt, hash
	b64 := base64.RawStdEncoding
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	tests := []struct {
		name string
		hash string
		want error
	}{
		{"fail/empty", "", ErrMalformedHash},
		{"fail/plain text", "a good password", ErrMalformedHash},
		{"fail/unknown algorithm", "$pbkdf2-sha256$29000$abc$def", ErrUnsupportedHash},
		{"fail/argon2d", "$argon2d$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA", ErrUnsupportedHash},
		{"fail/bcrypt 2x", "$2x$10$abcdefghijklmnopqrstuuOKc3zOPOm2RF9mQ0fgqTRHMYRdd7J2K", ErrUnsupportedHash},
		{"fail/argon2 version 16", with(2, "v=16"), ErrUnsupportedHash},
		{"fail/missing version", strings.Replace(good, "v=19$", "", 1), ErrMalformedHash},
		{"fail/params out of order", with(3, "t=1,m=64,p=1"), ErrMalformedHash},
		{"fail/extra param", with(3, "m=64,t=1,p=1,k=2"), ErrMalformedHash},
		{"fail/leading zero", with(3, "m=064,t=1,p=1"), ErrMalformedHash},
		{"fail/negative", with(3, "m=-64,t=1,p=1"), ErrMalformedHash},
		{"fail/huge memory", with(3, fmt.Sprintf("m=%d,t=1,p=1", MaxMemoryKiB+1)), ErrMalformedHash},
		{"fail/huge time", with(3, "m=64,t=1000000,p=1"), ErrMalformedHash},
		{"fail/zero parallelism", with(3, "m=64,t=1,p=0"), ErrMalformedHash},
		{"fail/parallelism above 255", with(3, "m=65536,t=1,p=256"), ErrMalformedHash},
		{"fail/padded salt", with(4, parts[4]+"=="), ErrMalformedHash},
		{"fail/short salt", with(4, b64.EncodeToString([]byte("abc"))), ErrMalformedHash},
		{"fail/short hash", with(5, b64.EncodeToString([]byte("abc"))), ErrMalformedHash},
		{"fail/bad base64", with(5, "!!!!"), ErrMalformedHash},
		{"fail/truncated", strings.Join(parts[:5], "$"), ErrMalformedHash},
		{"fail/bcrypt truncated", "$2b$10$abc", ErrMalformedHash},
		{"fail/bcrypt bad cost", "$2b$99$abcdefghijklmnopqrstuuOKc3zOPOm2RF9mQ0fgqTRHMYRdd7J2K", ErrMalformedHash},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, rehash, _, err := h.Verify(ctx, tt.hash, "a good password")
			if ok || rehash || !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, %v, %v; want %v", ok, rehash, err, tt.want)
			}
			if len(tt.hash) > 12 && strings.Contains(err.Error(), tt.hash[len(tt.hash)-12:]) {
				t.Fatalf("error %q echoes the hash", err)
			}
			if !h.NeedsRehash(tt.hash) {
				t.Fatal("an unusable hash does not need a rehash")
			}
		})
	}
}

// TestDummyVerifyCost checks that DummyVerify costs about what a real verification costs, so a
// request naming an unknown account is not faster than one naming a real account.
func TestDummyVerifyCost(t *testing.T) {
	p := Params{Memory: 4096, Time: 2, Threads: 1, SaltLength: 16, KeyLength: 32}
	h := newHasher(t, p)
	hash, err := h.Hash(ctx, "some user password")
	if err != nil {
		t.Fatal(err)
	}
	// Interleave the two measurements so that load from other processes affects both alike.
	var real, dummy []time.Duration
	for range 15 {
		start := time.Now()
		_, _, _, _ = h.Verify(ctx, hash, "a wrong password")
		real = append(real, time.Since(start))
		start = time.Now()
		h.DummyVerify(ctx, "a wrong password")
		dummy = append(dummy, time.Since(start))
	}
	ratio := float64(median(dummy)) / float64(median(real))
	if ratio < 0.5 || ratio > 2 {
		t.Fatalf("DummyVerify median %v vs Verify median %v (ratio %.2f)", median(dummy), median(real), ratio)
	}
	if !strings.HasPrefix(h.dummy, "$argon2id$v=19$"+p.String()+"$") {
		t.Fatalf("dummy hash does not use the current parameters: %q", h.dummy)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func BenchmarkHash(b *testing.B) {
	h := newHasher(b, DefaultParams())
	for b.Loop() {
		if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	h := newHasher(b, DefaultParams())
	hash, err := h.Hash(ctx, "correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, _, _, _ := h.Verify(ctx, hash, "correct horse battery staple"); !ok {
			b.Fatal("no match")
		}
	}
}

func BenchmarkVerifyBcryptCost10(b *testing.B) {
	h := newHasher(b, DefaultParams())
	hash, err := bcrypt.GenerateFromPassword([]byte("correct horse battery staple"), 10)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, _, _, _ := h.Verify(ctx, string(hash), "correct horse battery staple"); !ok {
			b.Fatal("no match")
		}
	}
}

// TestHashHonoursCancellation: a request that is gone starts no hash. With
// every slot taken, Hash, Verify and DummyVerify waiting for a slot return
// when their context is cancelled, and a context cancelled before the call
// returns at once even when a slot is free; each returns ErrBusy wrapping
// the context's error (DummyVerify threw it away before ErrBusy, so a
// login for an unknown account could not answer it as a known one's).
func TestHashHonoursCancellation(t *testing.T) {
	h := newHasher(t, fastParams)
	good, err := h.Hash(ctx, "a good password")
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func(context.Context) error{
		"hash": func(c context.Context) error { _, err := h.Hash(c, "a good password"); return err },
		"verify": func(c context.Context) error {
			ok, _, _, err := h.Verify(c, good, "a good password")
			if ok {
				return errors.New("verified under a cancelled context")
			}
			return err
		},
		"dummy": func(c context.Context) error { _, err := h.DummyVerify(c, "a good password"); return err },
	}
	for name, call := range calls {
		t.Run("fail/cancelled_before/"+name, func(t *testing.T) {
			c, cancel := context.WithCancel(ctx)
			cancel()
			if err := call(c); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrBusy) {
				t.Fatalf("err = %v, want ErrBusy and context.Canceled", err)
			}
		})
		t.Run("fail/cancelled_while_waiting/"+name, func(t *testing.T) {
			// Take every slot, so the call waits.
			var held []*argon2.Memory
			for range cap(h.slots) {
				held = append(held, <-h.slots)
			}
			defer func() {
				for _, m := range held {
					h.slots <- m
				}
			}()
			inner, cancel := context.WithCancel(ctx)
			c := waitingCtx{Context: inner, waiting: make(chan struct{}, 1)}
			done := make(chan error, 1)
			go func() { done <- call(c) }()
			<-c.waiting // the call is waiting for a slot
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) || !errors.Is(err, ErrBusy) {
				t.Fatalf("err = %v, want ErrBusy and context.Canceled", err)
			}
			if len(h.slots) != 0 {
				t.Fatal("a cancelled call gave back a slot it did not take")
			}
		})
	}
	// With the slots free again, the hasher works.
	if ok, _, _, err := h.Verify(ctx, good, "a good password"); !ok || err != nil {
		t.Fatalf("Verify after cancellations: %v %v", ok, err)
	}
}

// waitingCtx reports when someone starts waiting on its Done channel.
type waitingCtx struct {
	context.Context
	waiting chan struct{}
}

func (c waitingCtx) Done() <-chan struct{} {
	select {
	case c.waiting <- struct{}{}:
	default:
	}
	return c.Context.Done()
}

// TestHashesInReusedMemory: the hasher's hashes run in working memory kept
// between them (internal/argon2). Concurrent hashes and verifications, more
// than there are slots, each with its own password and parameters (some
// above the kept memory), all come out as x/crypto computes them: no hash
// sees another's memory, and no stale block changes a result.
func TestHashesInReusedMemory(t *testing.T) {
	h := newHasher(t, Params{Memory: 256, Time: 2, Threads: 1, SaltLength: 16, KeyLength: 32})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Go(func() {
			pw := fmt.Sprintf("password number %d", i)
			for j := range 4 {
				hash, err := h.Hash(ctx, pw)
				if err != nil {
					errs <- err
					return
				}
				p, salt, key, err := decodeArgon2(strings.TrimPrefix(hash, "$argon2id$"))
				if err != nil {
					errs <- err
					return
				}
				if want := xargon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLength); !slices.Equal(key, want) {
					errs <- fmt.Errorf("%d/%d: the hash's key differs from x/crypto's", i, j)
				}
				// A stored hash with other parameters, above the kept memory.
				other := Params{Memory: 512 + uint32(64*j), Time: 1, Threads: uint8(1 + j%2), SaltLength: 16, KeyLength: 32}
				stored := encodePHC("argon2id", other, salt, xargon2.IDKey([]byte(pw), salt, other.Time, other.Memory, other.Threads, other.KeyLength))
				for _, c := range []struct {
					hash, pw string
					want     bool
				}{{hash, pw, true}, {hash, pw + "!", false}, {stored, pw, true}, {stored, "not " + pw, false}} {
					if ok, _, _, err := h.Verify(ctx, c.hash, c.pw); ok != c.want || err != nil {
						errs <- fmt.Errorf("%d/%d: Verify = %v, %v; want %v", i, j, ok, err, c.want)
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// FuzzDecodeArgon2: a stored hash is input Portcullis did not necessarily
// write (imported from another system): decoding never panics, refuses what
// it cannot use with ErrMalformedHash or ErrUnsupportedHash, bounds the
// cost it accepts, and what it accepts encodes back to the same string
// (less carriage returns and newlines, which base64 decoding skips).
func FuzzDecodeArgon2(f *testing.F) {
	f.Add("v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g")
	f.Add("v=16$m=8,t=1,p=1$c2FsdA$aGFzaA")
	f.Add("v=19$m=4294967295,t=1,p=1$$")
	f.Add("v=19$m=08,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := decodeArgon2(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedHash) && !errors.Is(err, ErrUnsupportedHash) {
				t.Fatalf("%q: %v, want ErrMalformedHash or ErrUnsupportedHash", s, err)
			}
			return
		}
		if p.Memory > MaxMemoryKiB || p.Time > MaxTime || p.Threads < 1 {
			t.Fatalf("%q: accepted parameters %s", s, p)
		}
		if got := strings.TrimPrefix(encodePHC("argon2id", p, salt, key), "$argon2id$"); got != strings.NewReplacer("\r", "", "\n", "").Replace(s) {
			t.Fatalf("%q decodes to %s, which encodes as %q", s, p, got)
		}
	})
}

// TestHashClass: a hash's class is its algorithm and cost parameters, the
// same for two hashes of one class whatever their salts and passwords, and
// "unreadable" for what Verify refuses before hashing.
func TestHashClass(t *testing.T) {
	h := newHasher(t, fastParams)
	a, _ := h.Hash(ctx, "one password")
	b, _ := h.Hash(ctx, "another password")
	bc, err := bcrypt.GenerateFromPassword([]byte("s3cret pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	salt := make([]byte, 16)
	cffi := encodePHC("argon2id", Params{Memory: 65536, Time: 3, Threads: 4}, salt, make([]byte, 32))
	for _, tt := range []struct{ name, hash, want string }{
		{"current", a, "argon2id m=64,t=1,p=1,k=32"},
		{"current, another salt", b, "argon2id m=64,t=1,p=1,k=32"},
		{"foreign argon2id", cffi, "argon2id m=65536,t=3,p=4,k=32"},
		{"argon2i", encodePHC("argon2i", fastParams, salt, make([]byte, 32)), "argon2i m=64,t=1,p=1,k=32"},
		{"bcrypt", string(bc), fmt.Sprintf("bcrypt cost %d", bcrypt.MinCost)},
		{"bcrypt 2y", "$2y$" + string(bc[4:]), fmt.Sprintf("bcrypt cost %d", bcrypt.MinCost)},
		{"malformed argon2id", "$argon2id$v=19$m=0$x$y", "unreadable"},
		{"malformed bcrypt", "$2b$xx", "unreadable"},
		{"unknown algorithm", "$scrypt$abc", "unreadable"},
		{"empty", "", "unreadable"},
	} {
		if got := HashClass(tt.hash); got != tt.want {
			t.Errorf("%s: HashClass = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestVerifyTookExcludesTheQueue: the time Verify and DummyVerify report is
// the hash's own run, never the wait for a hashing slot, so a burst of
// concurrent verifications cannot make a class look slower than its hash
// (the refusal floor of server/passcheck learns from it). Found by a
// review: the floor was learnt from the wall time, queue included. The
// slots are held for a while first: the wait under test.
func TestVerifyTookExcludesTheQueue(t *testing.T) {
	p := Params{Memory: 4096, Time: 1, Threads: 1, SaltLength: 16, KeyLength: 32}
	h := newHasher(t, p)
	hash, err := h.Hash(ctx, "some user password")
	if err != nil {
		t.Fatal(err)
	}
	for name, verify := range map[string]func() time.Duration{
		"verify": func() time.Duration { _, _, took, _ := h.Verify(ctx, hash, "a wrong password"); return took },
		"dummy":  func() time.Duration { took, _ := h.DummyVerify(ctx, "a wrong password"); return took },
	} {
		t.Run(name, func(t *testing.T) {
			held := make([]*argon2.Memory, 0, cap(h.slots))
			for range cap(h.slots) {
				held = append(held, <-h.slots)
			}
			const queue = 300 * time.Millisecond
			done := make(chan [2]time.Duration)
			go func() {
				start := time.Now()
				took := verify()
				done <- [2]time.Duration{took, time.Since(start)}
			}()
			time.Sleep(queue) // the queue: every slot busy
			for _, m := range held {
				h.slots <- m
			}
			r := <-done
			took, wall := r[0], r[1]
			if took <= 0 || took >= queue || took > wall-queue {
				t.Fatalf("took %s for a verification that waited %s for a slot (wall %s): want the hash's time only", took, queue, wall)
			}
		})
	}
}

// TestDummyVerifyCostsOneHashWhateverThePassword: a guess whose NFKC form
// differs from itself (one U+FB01 ligature) costs the dummy verification
// of an unknown account what a plain guess costs, one argon2id run. Found
// by a review: Verify retried the password as typed for every hash, the
// dummy included, so such a guess cost two runs (42.4 ms plain against
// 86.1 ms with the ligature), doubling the CPU of every guess.
func TestDummyVerifyCostsOneHashWhateverThePassword(t *testing.T) {
	h := newHasher(t, DefaultParams())
	// The fastest of several runs each: other load only slows a run, so the
	// minimum is the hash's own cost.
	plain, lig := time.Duration(1<<62), time.Duration(1<<62)
	dummy := func(pw string) time.Duration {
		took, err := h.DummyVerify(ctx, pw)
		if err != nil {
			t.Fatal(err)
		}
		return took
	}
	for range 7 {
		plain = min(plain, dummy("correct horse battery staple fi"))
		lig = min(lig, dummy("correct horse battery staple \ufb01"))
	}
	t.Logf("fastest DummyVerify: plain %s, ligature %s", plain, lig)
	if float64(lig) > 1.5*float64(plain) {
		t.Errorf("a password with one ligature costs %.2fx the hashing of a plain one", float64(lig)/float64(plain))
	}
}

// TestVerifyTriesTheTypedFormOnlyForForeignHashes counts the runs of the
// hash each verification makes: a password that NFKC changes (one U+FB01
// ligature) is tried as typed too only against a hash marked ForeignHash,
// never against the dummy or a hash Hash made (Hash has hashed the NFKC form
// since Portcullis began); a foreign hash of the typed form still verifies
// and asks to be replaced, as does a foreign hash the NFKC form matches.
// Found by a review: every verification of such a password ran the hash
// twice, the dummy of an unknown account included.
func TestVerifyTriesTheTypedFormOnlyForForeignHashes(t *testing.T) {
	h := newHasher(t, fastParams)
	const lig = "correct horse battery staple \ufb01" // NFKC: "... fi"
	own, err := h.Hash(ctx, lig)
	if err != nil {
		t.Fatal(err)
	}
	salt := []byte("0123456789abcdef")
	raw := encodePHC("argon2id", fastParams, salt,
		xargon2.IDKey([]byte(lig), salt, fastParams.Time, fastParams.Memory, fastParams.Threads, fastParams.KeyLength))
	rawBcrypt, err := bcrypt.GenerateFromPassword([]byte(lig), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dummy := func(pw string, opts ...VerifyOption) func() (bool, bool) {
		return func() (bool, bool) { h.DummyVerify(ctx, pw, opts...); return false, false }
	}
	verify := func(hash, pw string, opts ...VerifyOption) func() (bool, bool) {
		return func() (bool, bool) {
			ok, rehash, _, err := h.Verify(ctx, hash, pw, opts...)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			return ok, rehash
		}
	}
	for _, tt := range []struct {
		name       string
		run        func() (ok, rehash bool)
		ok, rehash bool
		runs       uint64
	}{
		{"ok/dummy_ligature_one_run", dummy(lig), false, false, 1},
		{"ok/dummy_plain_one_run", dummy("a wrong password"), false, false, 1},
		{"ok/own_hash_wrong_ligature_one_run", verify(own, "wrong \ufb01"), false, false, 1},
		{"ok/own_hash_marked_own_one_run", verify(own, "wrong \ufb01", ForeignHash(false)), false, false, 1},
		{"ok/own_hash_right_ligature", verify(own, lig), true, false, 1},
		{"ok/foreign_raw_hash_right_ligature_rehash", verify(raw, lig, ForeignHash(true)), true, true, 2},
		{"ok/foreign_raw_bcrypt_right_ligature_rehash", verify(string(rawBcrypt), lig, ForeignHash(true)), true, true, 2},
		{"ok/foreign_hash_of_nfkc_form_rehash", verify(own, lig, ForeignHash(true)), true, true, 1},
		{"ok/foreign_hash_wrong_ligature_two_runs", verify(raw, "wrong \ufb01", ForeignHash(true)), false, false, 2},
		{"ok/foreign_hash_wrong_plain_one_run", verify(raw, "a wrong password", ForeignHash(true)), false, false, 1},
		{"fail/raw_hash_unmarked_not_tried_as_typed", verify(raw, lig), false, false, 1},
		// ForeignCost: the cost of a foreign hash's verification, whatever
		// the hash; the typed form's answer counts only for a foreign one.
		{"ok/dummy_ligature_foreign_cost_two_runs", dummy(lig, ForeignCost(true)), false, false, 2},
		{"ok/dummy_plain_foreign_cost_one_run", dummy("a wrong password", ForeignCost(true)), false, false, 1},
		{"ok/dummy_ligature_foreign_cost_off_one_run", dummy(lig, ForeignCost(false)), false, false, 1},
		{"ok/own_hash_wrong_ligature_foreign_cost_two_runs", verify(own, "wrong \ufb01", ForeignCost(true)), false, false, 2},
		{"ok/own_hash_right_ligature_foreign_cost_one_run_no_rehash", verify(own, lig, ForeignCost(true)), true, false, 1},
		{"ok/foreign_raw_hash_right_ligature_with_cost", verify(raw, lig, ForeignHash(true), ForeignCost(true)), true, true, 2},
		{"fail/raw_hash_unmarked_under_foreign_cost_not_accepted", verify(raw, lig, ForeignCost(true)), false, false, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := h.runs.Load()
			ok, rehash := tt.run()
			if runs := h.runs.Load() - before; ok != tt.ok || rehash != tt.rehash || runs != tt.runs {
				t.Fatalf("ok %v, rehash %v, %d runs of the hash; want %v, %v, %d", ok, rehash, runs, tt.ok, tt.rehash, tt.runs)
			}
		})
	}
}

// TestVerifyClass: a verification that runs the hash twice (a foreign hash
// and a password NFKC changes) is its own class, so the refusal floor of
// server/passcheck learns its time apart; every other is the hash's class.
func TestVerifyClass(t *testing.T) {
	h := newHasher(t, fastParams)
	hash, _ := h.Hash(ctx, "one password")
	const class = "argon2id m=64,t=1,p=1,k=32"
	for _, tt := range []struct {
		name, hash, pw string
		opts           []VerifyOption
		want           string
	}{
		{"own hash, ligature", hash, "x\ufb01", nil, class},
		{"own hash marked own, ligature", hash, "x\ufb01", []VerifyOption{ForeignHash(false)}, class},
		{"foreign hash, plain", hash, "xfi", []VerifyOption{ForeignHash(true)}, class},
		{"foreign hash, ligature", hash, "x\ufb01", []VerifyOption{ForeignHash(true)}, class + " twice"},
		{"foreign hash, fullwidth", hash, "\uff41bc", []VerifyOption{ForeignHash(true)}, class + " twice"},
		{"unreadable foreign hash, ligature", "$scrypt$abc", "x\ufb01", []VerifyOption{ForeignHash(true)}, "unreadable"},
		{"own hash at a foreign cost, ligature", hash, "x\ufb01", []VerifyOption{ForeignHash(false), ForeignCost(true)}, class + " twice"},
		{"own hash at a foreign cost, plain", hash, "xfi", []VerifyOption{ForeignCost(true)}, class},
		{"own hash, foreign cost off, ligature", hash, "x\ufb01", []VerifyOption{ForeignCost(false)}, class},
	} {
		if got := VerifyClass(tt.hash, tt.pw, tt.opts...); got != tt.want {
			t.Errorf("%s: VerifyClass = %q, want %q", tt.name, got, tt.want)
		}
		if twice := RunsTwice(tt.pw, tt.opts...); tt.want != "unreadable" && twice != strings.HasSuffix(tt.want, " twice") {
			t.Errorf("%s: RunsTwice = %v, want it to agree with VerifyClass %q", tt.name, twice, tt.want)
		}
	}
}

// TestLoad: Load counts the hashes holding a slot and the callers queued
// for one, and a caller that gives up waiting leaves the queue.
func TestLoad(t *testing.T) {
	h := newHasher(t, Params{Memory: 64, Time: 1, Threads: 1, SaltLength: 16, KeyLength: 32})
	slots := cap(h.slots)
	release := make(chan struct{})
	held := make(chan struct{}, slots)
	for range slots {
		go h.compute(ctx, func(*argon2.Memory) { held <- struct{}{}; <-release })
	}
	for range slots {
		<-held
	}
	if r, w := h.Load(); r != slots || w != 0 {
		t.Fatalf("every slot held: Load() = %d running, %d waiting; want %d, 0", r, w, slots)
	}
	wctx, cancel := context.WithCancel(ctx)
	gave := make(chan error)
	go func() { _, err := h.compute(wctx, func(*argon2.Memory) {}); gave <- err }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, w := h.Load(); w == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the queued caller never showed as waiting")
		}
		runtime.Gosched()
	}
	cancel()
	if err := <-gave; !errors.Is(err, ErrBusy) {
		t.Fatalf("the caller that gave up: %v, want ErrBusy", err)
	}
	if r, w := h.Load(); r != slots || w != 0 {
		t.Fatalf("after the caller gave up: Load() = %d running, %d waiting; want %d, 0", r, w, slots)
	}
	close(release)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if r, _ := h.Load(); r == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slots were never given back")
		}
		runtime.Gosched()
	}
}
