package app

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/portcullis-auth/portcullis/keys"
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

// TestKEKFileReadableByOthersWarned: a generated portcullis.kek that other
// users of the machine can read (restored from a backup, copied with cp
// under umask 022) is used with a warning naming it and its mode, as the
// SQLite file beside it is (one routine, sqlstore.WarnIfOthersCanRead);
// an owner-only file, and one generated now, are used quietly. Found by a
// review: it was used without a word.
func TestKEKFileReadableByOthersWarned(t *testing.T) {
	cases := []struct {
		name string
		mode os.FileMode // 0: no file, one is generated
		warn bool
	}{
		{"quiet/generated", 0, false},
		{"quiet/owner only", 0o600, false},
		{"quiet/owner read only", 0o400, false},
		{"warn/world readable", 0o644, true},
		{"warn/group readable", 0o640, true},
		{"warn/others write", 0o602, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "portcullis.kek")
			if tc.mode != 0 {
				k, err := keys.GenerateKEK()
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(k+"\n"), tc.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.mode); err != nil { // past the umask
					t.Fatal(err)
				}
			}
			var logged bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logged, nil))
			cfg := config.Config{DatabaseURL: "sqlite://" + filepath.Join(dir, "portcullis.db")}
			if _, err := keyEncryptionKey(cfg, log); err != nil {
				t.Fatal(err)
			}
			out := logged.String()
			if got := strings.Contains(out, "readable by other users"); got != tc.warn {
				t.Fatalf("mode %v: warned %v, want %v; the log:\n%s", tc.mode, got, tc.warn, out)
			}
			if tc.warn && (!strings.Contains(out, path) || !strings.Contains(out, tc.mode.String())) {
				t.Fatalf("the warning names neither the file nor its mode:\n%s", out)
			}
		})
	}
}
