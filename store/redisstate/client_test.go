package redisstate

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const secret = "s3cr3t-P@ss"

func TestNewClient(t *testing.T) {
	tests := []struct {
		name  string
		url   string
		check func(t *testing.T, c redis.UniversalClient)
	}{
		{"ok/redis", "redis://:" + secret + "@127.0.0.1:6390/2", func(t *testing.T, c redis.UniversalClient) {
			o := single(t, c)
			if o.Addr != "127.0.0.1:6390" || o.DB != 2 || o.Password != secret || o.TLSConfig != nil {
				t.Fatalf("options %+v", o)
			}
			wantTimeouts(t, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout)
			if o.MaxRetries != 0 || o.DialerRetries != 1 {
				t.Fatalf("retries %d, dial attempts %d; want none and 1", o.MaxRetries, o.DialerRetries)
			}
		}},
		{"ok/rediss", "rediss://user:" + secret + "@cache.example:6380", func(t *testing.T, c redis.UniversalClient) {
			o := single(t, c)
			if o.Addr != "cache.example:6380" || o.Username != "user" || o.TLSConfig == nil {
				t.Fatalf("options %+v", o)
			}
		}},
		{"ok/redis_url_options_win", "redis://127.0.0.1:6390/0?dial_timeout=3s&read_timeout=2s", func(t *testing.T, c redis.UniversalClient) {
			o := single(t, c)
			if o.DialTimeout != 3*time.Second || o.ReadTimeout != 2*time.Second || o.PoolTimeout != PoolTimeout {
				t.Fatalf("timeouts dial %v read %v pool %v", o.DialTimeout, o.ReadTimeout, o.PoolTimeout)
			}
		}},
		{"ok/cluster", "redis-cluster://:" + secret + "@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3", func(t *testing.T, c redis.UniversalClient) {
			cc, ok := c.(*redis.ClusterClient)
			if !ok {
				t.Fatalf("client %T, want *redis.ClusterClient", c)
			}
			o := cc.Options()
			if strings.Join(o.Addrs, ",") != "10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:6379" || o.Password != secret || o.TLSConfig != nil {
				t.Fatalf("options %+v", o)
			}
			wantTimeouts(t, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout)
		}},
		{"ok/cluster_one_seed_tls", "rediss-cluster://10.0.0.1:7000", func(t *testing.T, c redis.UniversalClient) {
			cc, ok := c.(*redis.ClusterClient)
			if !ok {
				t.Fatalf("client %T, want *redis.ClusterClient", c)
			}
			if o := cc.Options(); len(o.Addrs) != 1 || o.TLSConfig == nil {
				t.Fatalf("options %+v", o)
			}
		}},
		{"ok/sentinel", "redis-sentinel://:" + secret + "@10.0.0.1:26380,10.0.0.2/mymaster?db=3", func(t *testing.T, c redis.UniversalClient) {
			if _, ok := c.(*redis.Client); !ok {
				t.Fatalf("client %T, want the failover *redis.Client", c)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if err != nil {
				t.Fatalf("NewClient: %v", err)
			}
			defer c.Close()
			tc.check(t, c)
		})
	}
}

func TestParseSentinelAndCluster(t *testing.T) {
	o, err := parseMultiHost("rediss-sentinel://admin:" + secret + "@10.0.0.1:26380,10.0.0.2/mymaster?db=3&sentinel_password=sp")
	if err != nil {
		t.Fatal(err)
	}
	if o.MasterName != "mymaster" || o.DB != 3 || o.Username != "admin" || o.Password != secret ||
		o.SentinelPassword != "sp" || o.TLSConfig == nil || o.IsClusterMode ||
		strings.Join(o.Addrs, ",") != "10.0.0.1:26380,10.0.0.2:26379" {
		t.Fatalf("sentinel options %+v", o)
	}
	wantTimeouts(t, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout)
	o, err = parseMultiHost("redis-cluster://[::1]:7000,[::2]")
	if err != nil {
		t.Fatal(err)
	}
	if !o.IsClusterMode || o.MasterName != "" || strings.Join(o.Addrs, ",") != "[::1]:7000,[::2]:6379" {
		t.Fatalf("cluster options %+v", o)
	}
}

func TestNewClientRefuses(t *testing.T) {
	for _, tc := range []struct{ name, url string }{
		{"fail/no_scheme", "127.0.0.1:6379"},
		{"fail/unknown_scheme", "http://:" + secret + "@127.0.0.1:6379"},
		{"fail/bad_port", "redis://:" + secret + "@127.0.0.1:notaport/0"},
		{"fail/bad_db", "redis://:" + secret + "@127.0.0.1:6379/x"},
		{"fail/unknown_option", "redis://:" + secret + "@127.0.0.1:6379/0?frobnicate=1"},
		{"fail/sentinel_without_master", "redis-sentinel://:" + secret + "@10.0.0.1:26379"},
		{"fail/sentinel_bad_db", "redis-sentinel://:" + secret + "@10.0.0.1:26379/m?db=-1"},
		{"fail/sentinel_unknown_option", "redis-sentinel://:" + secret + "@10.0.0.1/m?pool_size=3"},
		{"fail/sentinel_password_in_query", "redis-sentinel://10.0.0.1/m?sentinel_password=" + secret + "&bogus=1"},
		{"fail/cluster_with_path", "redis-cluster://:" + secret + "@10.0.0.1:7000/1"},
		{"fail/cluster_option", "redis-cluster://:" + secret + "@10.0.0.1:7000?read_only=true"},
		{"fail/cluster_bad_port", "redis-cluster://:" + secret + "@10.0.0.1:7000,10.0.0.2:99999"},
		{"fail/cluster_no_host", "redis-cluster://:" + secret + "@"},
		{"fail/cluster_empty_host", "redis-cluster://:" + secret + "@:7000"},
		{"fail/bad_escape", "redis://:" + secret + "%zz@127.0.0.1:6379/0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if err == nil {
				c.Close()
				t.Fatalf("NewClient(%q) succeeded", tc.url)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func single(t *testing.T, c redis.UniversalClient) *redis.Options {
	t.Helper()
	sc, ok := c.(*redis.Client)
	if !ok {
		t.Fatalf("client %T, want *redis.Client", c)
	}
	return sc.Options()
}

func wantTimeouts(t *testing.T, dial, read, write, pool time.Duration) {
	t.Helper()
	if dial != DialTimeout || read != ReadTimeout || write != WriteTimeout || pool != PoolTimeout {
		t.Fatalf("timeouts dial %v read %v write %v pool %v, want %v %v %v %v",
			dial, read, write, pool, DialTimeout, ReadTimeout, WriteTimeout, PoolTimeout)
	}
}
