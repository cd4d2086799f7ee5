package verify_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportGraph: a resource server importing the verifier (or its Echo
// adapter) pulls in neither GORM, Redis, a database driver nor any
// Portcullis package outside keys/verify.
func TestImportGraph(t *testing.T) {
	const self = "github.com/portcullis-auth/portcullis/keys/verify"
	for _, pkg := range []string{self, self + "/echoguard"} {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 10 {
				t.Fatalf("implausibly few dependencies: %v", deps)
			}
			forbidden := []string{"gorm.io/", "github.com/redis/", "github.com/jackc/", "github.com/glebarez/", "modernc.org/", "database/sql"}
			for _, d := range deps {
				for _, f := range forbidden {
					if strings.HasPrefix(d, f) {
						t.Errorf("%s depends on %s", pkg, d)
					}
				}
				if strings.HasPrefix(d, "github.com/portcullis-auth/portcullis/") && d != self && !strings.HasPrefix(d, self+"/") {
					t.Errorf("%s depends on the Portcullis package %s", pkg, d)
				}
			}
			if !contains(deps, self) {
				t.Fatalf("go list did not list %s itself: %v", self, deps)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
