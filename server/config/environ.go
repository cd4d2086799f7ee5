package config

import (
	"fmt"
	"strings"
)

// UnknownEnvironment returns a warning for every PORTCULLIS_ variable of
// environ (os.Environ's KEY=value form) that no setting has, naming the
// closest setting, in environ's order. Such a variable is ignored, so a
// misspelt name would otherwise leave its setting at the default without
// a word. The warnings never contain the values.
func UnknownEnvironment(environ []string) []string {
	var ws []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "PORTCULLIS_") || isSetting(name) {
			continue
		}
		ws = append(ws, fmt.Sprintf("%s is set but is no Portcullis setting, so it is ignored: did you mean %s? "+
			"(portcullis serve --help lists the settings)", name, closestSetting(name)))
	}
	return ws
}

func isSetting(env string) bool {
	for _, s := range settings {
		if s.Env == env {
			return true
		}
	}
	return false
}

// closestSetting is the setting whose environment variable is the fewest
// edits from name (the first listed of equals).
func closestSetting(name string) string {
	best, bestDist := "", -1
	for _, s := range settings {
		if d := editDistance(name, s.Env); bestDist < 0 || d < bestDist {
			best, bestDist = s.Env, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
