package store_test

import (
	"encoding/json"
	"testing"

	"github.com/portcullis-auth/portcullis/store"
)

// TestEncodeOnce: a single-use record's JSON keeps <, > and & as they are
// (json.Marshal writes each as six bytes), has no final newline and reads
// back whole.
func TestEncodeOnce(t *testing.T) {
	in := map[string]string{"state": `<a href="x">&</a>`}
	b, err := store.EncodeOnce(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"state":"<a href=\"x\">&</a>"}`; string(b) != want {
		t.Fatalf("EncodeOnce = %s, want %s", b, want)
	}
	var out map[string]string
	if err := json.Unmarshal(b, &out); err != nil || out["state"] != in["state"] {
		t.Fatalf("read back %v, %v", out, err)
	}
}
