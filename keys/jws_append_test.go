package keys_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// selfEncoded are claims that write their own JSON (as token.AccessClaims
// does): the signer must sign exactly those bytes.
type selfEncoded struct{ Sub string }

func (c selfEncoded) AppendJSON(b []byte) []byte {
	b = append(b, `{"sub":"`...)
	b = append(b, c.Sub...)
	return append(b, `","by":"AppendJSON"}`...)
}

func TestSignUsesClaimsOwnJSON(t *testing.T) {
	t.Parallel()
	m := initManager(t, openStore(t, "sqlite"), ring(t, kek(t)), "EdDSA", newClock())
	tok, err := m.Sign(selfEncoded{Sub: "user-1"}, "at+jwt")
	if err != nil {
		t.Fatal(err)
	}
	payload, _, err := m.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"sub":"user-1","by":"AppendJSON"}`; string(payload) != want {
		t.Fatalf("signed payload %s, want %s", payload, want)
	}
}

// TestSignAllocations: with claims that write their own JSON, an EdDSA
// signature allocates only the token's string and ed25519.Sign's
// signature; the payload and the signing input live in a pooled buffer.
func TestSignAllocations(t *testing.T) {
	m := initManager(t, openStore(t, "sqlite"), ring(t, kek(t)), "EdDSA", newClock())
	var n int
	var claims any = selfEncoded{Sub: "user-1"} // boxed once, outside the count
	allocs := testing.AllocsPerRun(1000, func() {
		tok, err := m.Sign(claims, "at+jwt")
		if err != nil {
			t.Fatal(err)
		}
		n += len(tok)
	})
	if allocs > 2 {
		t.Fatalf("Sign allocates %.1f times per call, want at most 2 (the token and the signature)", allocs)
	}
}

// TestSignConcurrent: tokens signed at once from many goroutines, sharing
// the pooled buffers, each verify with their own claims.
func TestSignConcurrent(t *testing.T) {
	t.Parallel()
	m := initManager(t, openStore(t, "sqlite"), ring(t, kek(t)), "EdDSA", newClock())
	const workers, each = 8, 200
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				sub := strings.Repeat("x", (w*each+i)%300) + "-" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
				tok, err := m.Sign(selfEncoded{Sub: sub}, "at+jwt")
				if err != nil {
					errs <- err
					return
				}
				payload, _, err := m.Verify(tok)
				if err != nil {
					errs <- err
					return
				}
				if want := `{"sub":"` + sub + `","by":"AppendJSON"}`; string(payload) != want {
					errs <- fmt.Errorf("signed payload %s, want %s", payload, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
