package config

import (
	"strings"
	"testing"

	"github.com/portcullis-auth/portcullis/store/redisstate"
)

// TestRedisURLSchemes: PORTCULLIS_REDIS_URL takes every URL scheme the Redis
// client takes (redisstate.NewClient), the TLS forms of Sentinel and Cluster
// included, and refuses what the client refuses. Found by a review: the
// setting refused rediss-sentinel:// and rediss-cluster://, so Sentinel and
// Cluster could only be reached in plain text.
func TestRedisURLSchemes(t *testing.T) {
	cases := []struct {
		name string
		url  string
		ok   bool
	}{
		{"ok/redis", "redis://:s3cret@127.0.0.1:6379/0", true},
		{"ok/rediss", "rediss://:s3cret@redis.internal:6380/0", true},
		{"ok/sentinel", "redis-sentinel://:s3cret@sentinel-a.internal:26379,sentinel-b.internal:26379/mymaster", true},
		{"ok/sentinel over TLS", "rediss-sentinel://:s3cret@sentinel-a.internal:26379,sentinel-b.internal:26379/mymaster", true},
		{"ok/cluster", "redis-cluster://:s3cret@redis-a.internal:6379,redis-b.internal:6379", true},
		{"ok/cluster over TLS", "rediss-cluster://:s3cret@redis-a.internal:6379,redis-b.internal:6379", true},
		{"ok/upper-case scheme", "REDISS-CLUSTER://:s3cret@redis-a.internal:6379", true},
		{"fail/http", "http://:s3cret@redis.internal:6379", false},
		{"fail/unix", "unix:///run/redis.sock", false},
		{"fail/no scheme", "redis.internal:6379", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, clientErr := redisstate.NewClient(tc.url)
			if (clientErr == nil) != tc.ok {
				t.Fatalf("redisstate.NewClient: %v (want ok %v): the case is wrong", clientErr, tc.ok)
			}
			_, err := Load(nil, envOf(map[string]string{"PORTCULLIS_REDIS_URL": tc.url}))
			if tc.ok && err != nil {
				t.Fatalf("the client takes it but the setting refuses it: %v", err)
			}
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "PORTCULLIS_REDIS_URL") {
					t.Fatalf("refused by the client, accepted by the setting: %v", err)
				}
				for _, s := range redisstate.Schemes() {
					if !strings.Contains(err.Error(), s+"://") {
						t.Errorf("the refusal does not name %s://: %v", s, err)
					}
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("the refusal shows the password: %v", err)
				}
			}
		})
	}
}
