package password

import (
	_ "embed"
	"strings"
	"sync"

	"golang.org/x/text/unicode/norm"
)

//go:embed common-passwords.txt
var commonPasswordsFile string

// commonSet is the embedded list as a set of lower-cased, NFKC-normalized entries.
var commonSet = sync.OnceValue(func() map[string]struct{} {
	set := make(map[string]struct{}, 6000)
	for line := range strings.Lines(commonPasswordsFile) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		set[strings.ToLower(norm.NFKC.String(line))] = struct{}{}
	}
	return set
})

// IsCommon reports whether the password (compared case-insensitively after NFKC normalization) is
// in the embedded list of common passwords.
func IsCommon(password string) bool {
	_, ok := commonSet()[strings.ToLower(norm.NFKC.String(password))]
	return ok
}

// CommonPasswordCount returns the number of entries of the embedded common-password list.
func CommonPasswordCount() int { return len(commonSet()) }
