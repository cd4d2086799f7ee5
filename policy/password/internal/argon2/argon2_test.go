package argon2

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	xargon2 "golang.org/x/crypto/argon2"
)

// RFC 9106 section 5: the test vectors of the three variants (t=3, m=32
// KiB, p=4, with a secret and associated data).
var (
	katPassword = bytes.Repeat([]byte{0x01}, 32)
	katSalt     = bytes.Repeat([]byte{0x02}, 16)
	katSecret   = bytes.Repeat([]byte{0x03}, 8)
	katAAD      = bytes.Repeat([]byte{0x04}, 12)
	katTags     = []struct {
		name string
		mode int
		tag  string
	}{
		{"argon2d", argon2d, "512b391b6f1162975371d30919734294f868e3be3984f3c1a13a4db9fabe4acb"},
		{"argon2i", argon2i, "c814d9d1dc7f37aa13f0d77f2494bda1c8de6b016dd388d29952a4c4672b6ce8"},
		{"argon2id", argon2id, "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"},
	}
)

// dirty returns working memory that keeps keep KiB and already holds keep
// blocks of garbage, as after an earlier derivation.
func dirty(keep uint32, seed uint64) *Memory {
	m := NewMemory(keep)
	r := rand.New(rand.NewPCG(seed, seed))
	for i, b := range m.blocksFor(keep) {
		for j := range b {
			m.blocks[i][j] = r.Uint64()
		}
	}
	return m
}

// withEachImplementation runs f with the assembly compression function (when
// the CPU has it) and with the generic one.
func withEachImplementation(t *testing.T, f func(t *testing.T)) {
	defer func(sse4, lsx bool) { useSSE4, useLSX = sse4, lsx }(useSSE4, useLSX)
	if useSSE4 || useLSX {
		t.Run("assembly", f)
	}
	useSSE4, useLSX = false, false
	t.Run("generic", f)
}

// TestRFC9106Vectors derives the RFC's tags in fresh memory (nil Memory),
// in memory holding garbage, and again in the same memory (holding the
// first derivation's blocks).
func TestRFC9106Vectors(t *testing.T) {
	withEachImplementation(t, func(t *testing.T) {
		for _, v := range katTags {
			want, _ := hex.DecodeString(v.tag)
			reused := dirty(64, 1)
			for _, c := range []struct {
				name string
				m    *Memory
			}{{"fresh", nil}, {"dirty", reused}, {"reused", reused}, {"above_keep", NewMemory(8)}} {
				got := c.m.deriveKey(v.mode, katPassword, katSalt, katSecret, katAAD, 3, 32, 4, 32)
				if !bytes.Equal(got, want) {
					t.Errorf("%s/%s: %x, want %x", v.name, c.name, got, want)
				}
			}
		}
	})
}

// TestMatchesXCrypto compares Argon2id and Argon2i with x/crypto's on
// random passwords, salts and parameters, computed in one Memory that is
// never cleared: it grows, shrinks and holds the previous derivation's
// blocks each time, and some derivations are larger than it keeps.
func TestMatchesXCrypto(t *testing.T) {
	withEachImplementation(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 7))
		m := dirty(256, 2)
		for i := range 60 {
			password := make([]byte, r.IntN(40))
			salt := make([]byte, 8+r.IntN(24))
			for _, b := range [][]byte{password, salt} {
				for j := range b {
					b[j] = byte(r.Uint32())
				}
			}
			time, memory := 1+r.Uint32N(3), 8+r.Uint32N(320)
			threads, keyLen := uint8(1+r.IntN(4)), 4+r.Uint32N(80)
			name := fmt.Sprintf("%d: t=%d m=%d p=%d len=%d", i, time, memory, threads, keyLen)
			if got, want := m.IDKey(password, salt, time, memory, threads, keyLen),
				xargon2.IDKey(password, salt, time, memory, threads, keyLen); !bytes.Equal(got, want) {
				t.Fatalf("IDKey %s: %x, x/crypto %x", name, got, want)
			}
			if got, want := m.Key(password, salt, time, memory, threads, keyLen),
				xargon2.Key(password, salt, time, memory, threads, keyLen); !bytes.Equal(got, want) {
				t.Fatalf("Key %s: %x, x/crypto %x", name, got, want)
			}
		}
	})
}

// TestMemoryKeepsAtMostKeep: a derivation within keep reuses the memory;
// one above it allocates its own and leaves the kept memory as it was.
func TestMemoryKeepsAtMostKeep(t *testing.T) {
	m := NewMemory(64)
	m.IDKey([]byte("pw"), []byte("somesalt"), 1, 64, 1, 32)
	kept := &m.blocks[0]
	if len(m.blocks) != 64 {
		t.Fatalf("kept %d blocks, want 64", len(m.blocks))
	}
	m.IDKey([]byte("pw"), []byte("somesalt"), 1, 32, 1, 32)
	if &m.blocks[0] != kept {
		t.Fatal("a smaller derivation did not reuse the memory")
	}
	m.IDKey([]byte("pw"), []byte("somesalt"), 1, 128, 1, 32)
	if &m.blocks[0] != kept || cap(m.blocks) != 64 {
		t.Fatalf("a derivation above keep replaced the kept memory (cap %d)", cap(m.blocks))
	}
	// x/crypto's hashing allocates a few small buffers; the 64 KiB of
	// blocks are not allocated again.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 5 {
		m.IDKey([]byte("pw"), []byte("somesalt"), 1, 64, 1, 32)
	}
	runtime.ReadMemStats(&after)
	if perRun := (after.TotalAlloc - before.TotalAlloc) / 5; perRun > 16<<10 {
		t.Fatalf("%d bytes allocated per derivation in kept memory of 64 KiB", perRun)
	}
}

// BenchmarkIDKey is the default password parameters (m=19456 KiB, t=2,
// p=1) in reused memory and, for comparison, in x/crypto's fresh memory.
func BenchmarkIDKey(b *testing.B) {
	password, salt := []byte("correct horse battery staple"), []byte("0123456789abcdef")
	b.Run("reused", func(b *testing.B) {
		m := NewMemory(19456)
		b.ReportAllocs()
		for b.Loop() {
			m.IDKey(password, salt, 2, 19456, 1, 32)
		}
	})
	b.Run("x_crypto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			xargon2.IDKey(password, salt, 2, 19456, 1, 32)
		}
	})
}
