package policy

import (
	goparser "go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the policy packages pure: no storage, server or key code, no database or Redis
// drivers, and no logging.
func TestImports(t *testing.T) {
	forbidden := []string{
		"github.com/portcullis-auth/portcullis/store",
		"github.com/portcullis-auth/portcullis/server",
		"github.com/portcullis-auth/portcullis/keys",
		"github.com/portcullis-auth/portcullis/cmd",
		"gorm.io/",
		"github.com/glebarez/",
		"github.com/redis/",
		"github.com/labstack/",
		"log",
		"log/slog",
		"database/sql",
		"net/http",
	}
	var files []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			files = append(files, path)
		}
		return err
	})
	if err != nil || len(files) < 8 {
		t.Fatalf("walk: %v (%d files)", err, len(files))
	}
	fset := token.NewFileSet()
	for _, file := range files {
		f, err := goparser.ParseFile(fset, file, nil, goparser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(path, bad)) || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %s", file, path)
				}
			}
		}
	}
}
