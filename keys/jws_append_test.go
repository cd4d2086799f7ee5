package keys_test

import (
	"testing"
)

// selfEncoded are claims that write their own JSON (as token.AccessClaims
// does): the signer must sign exactly those bytes.
type selfEncoded struct{ Sub string }

func (c selfEncoded) AppendJSON(b []byte) []byte {
	return append(b, `{"sub":"`+c.Sub+`","by":"AppendJSON"}`...)
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
