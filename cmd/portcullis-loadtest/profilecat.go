package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// A category is a share of the server's CPU profile that says what the
// time was spent on. Each sample counts once: for the first category in
// categories one of whose prefixes starts a function on the sample's
// stack, else for the last, "other".
type category struct {
	name     string
	prefixes []string
}

// categories, in the order a sample is tested against them: a signature
// computed inside a JSON call would be signing, a system call made by the
// Redis client is Redis.
var categories = []category{
	{"signing and verifying", []string{"crypto/ed25519.", "crypto/rsa.", "crypto/ecdsa.", "crypto/internal/fips140/ed25519.",
		"crypto/internal/fips140/rsa.", "crypto/internal/fips140/ecdsa."}},
	{"password hashing", []string{"github.com/portcullis-auth/portcullis/policy/password/internal/argon2.", "golang.org/x/crypto/bcrypt."}},
	{"Redis client, its system calls included", []string{"github.com/redis/go-redis/"}},
	{"PostgreSQL client, its system calls included", []string{"github.com/jackc/pgx/", "gorm.io/", "database/sql."}},
	{"JSON", []string{"encoding/json."}},
	{"garbage collection", []string{"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge"}},
	{"handlers and middleware (Echo and Portcullis)", []string{"github.com/labstack/echo/v4.(*Echo).ServeHTTP"}},
	{"HTTP server: reading requests, writing responses", []string{"net/http.(*conn).serve"}},
	{"other (scheduler, timers, background work)", nil},
}

// CPUShare is one category's share of a profile.
type CPUShare struct {
	Category string
	Share    float64 // of all samples
}

// categorize splits the CPU profile in file by categories.
func categorize(file string) ([]CPUShare, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
	}
	vi := len(p.SampleType) - 1 // cpu nanoseconds
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	sums := make([]int64, len(categories))
	var total int64
	for _, s := range p.Sample {
		v := s.Value[vi]
		total += v
		sums[categoryOf(s)] += v
	}
	if total == 0 {
		return nil, fmt.Errorf("%s: no samples", file)
	}
	out := make([]CPUShare, 0, len(categories))
	for i, c := range categories {
		out = append(out, CPUShare{Category: c.name, Share: float64(sums[i]) / float64(total)})
	}
	return out, nil
}

// categoryOf is the index in categories of sample s.
func categoryOf(s *profile.Sample) int {
	for ci, c := range categories {
		for _, loc := range s.Location {
			for _, line := range loc.Line {
				if line.Function == nil {
					continue
				}
				for _, p := range c.prefixes {
					if strings.HasPrefix(line.Function.Name, p) {
						return ci
					}
				}
			}
		}
	}
	return len(categories) - 1
}

// shareTable renders the categories of a profile with what each costs
// per request, given the server's CPU per request.
func shareTable(shares []CPUShare, perRequest time.Duration) string {
	sorted := append([]CPUShare(nil), shares...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Share > sorted[j].Share })
	var w strings.Builder
	w.WriteString("| where the server's CPU went | share | per request |\n|---|---:|---:|\n")
	for _, s := range sorted {
		if s.Share < 0.005 {
			continue
		}
		per := ""
		if perRequest > 0 {
			per = time.Duration(s.Share * float64(perRequest)).Round(time.Microsecond).String()
		}
		fmt.Fprintf(&w, "| %s | %.0f%% | %s |\n", s.Category, 100*s.Share, per)
	}
	return w.String()
}
