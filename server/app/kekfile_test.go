package app

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis-auth/portcullis/server/config"
)

// TestGeneratedKEKOnceForConcurrentStarts: two embedded-mode processes
// starting together on a fresh directory use one generated key-encryption
// key, the one in the file. Each generated one and the second write
// replaced the first (27 of 200 rounds used two keys), so what the first
// process sealed could no longer be opened.
func TestGeneratedKEKOnceForConcurrentStarts(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for round := 0; round < 200; round++ {
		dir := filepath.Join(t.TempDir(), "data")
		cfg := config.Config{DatabaseURL: "sqlite://" + filepath.Join(dir, "portcullis.db")}
		var (
			wg   sync.WaitGroup
			got  [2]string
			errs [2]error
		)
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], errs[i] = keyEncryptionKey(cfg, log)
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("round %d: %v, %v", round, errs[0], errs[1])
		}
		file, err := os.ReadFile(filepath.Join(dir, "portcullis.kek"))
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != got[1] || strings.TrimSpace(string(file)) != got[0] {
			t.Fatalf("round %d: two processes starting together use different key-encryption keys (or not the file's)", round)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Fatalf("round %d: the directory holds %d files, want the key alone", round, len(entries))
		}
	}
}

// TestGeneratedKEKFileRefusedWhenUnusable: an existing portcullis.kek that
// is empty or not a key is an error naming the file, never replaced (what
// was sealed under the lost key would be lost for good) nor used as it is.
func TestGeneratedKEKFileRefusedWhenUnusable(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name    string
		content string
		wantErr string
	}{
		{"fail/empty", "", "is empty"},
		{"fail/blank", " \n", "is empty"},
		{"fail/not_a_key", "hello\n", "not valid base64"},
		{"fail/short_key", "c2hvcnQ=\n", "decodes to 5 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "portcullis.kek")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := config.Config{DatabaseURL: "sqlite://" + filepath.Join(dir, "portcullis.db")}
			k, err := keyEncryptionKey(cfg, log)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("keyEncryptionKey = %q, %v; want an error naming %s and saying %q", k, err, path, tt.wantErr)
			}
			if b, _ := os.ReadFile(path); string(b) != tt.content {
				t.Fatalf("the file was changed to %q", b)
			}
		})
	}
}
