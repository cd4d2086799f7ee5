package redisstate

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store/storetest"
	"github.com/portcullis-auth/portcullis/store/testservers"
)

// startClusterNode starts a one-node Redis Cluster holding every slot. Redis
// refuses, in cluster mode, any command or script whose keys span slots, so
// the conformance suite on it proves the key layout keeps every script on
// one slot.
func startClusterNode(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		// Let testservers install it (or say what to install).
		testservers.RedisURL(t)
		if bin, err = exec.LookPath("redis-server"); err != nil {
			t.Fatalf("redis-server not found: %v", err)
		}
	}
	dir := t.TempDir()
	var port int
	for {
		if port, err = testservers.FreePort(); err != nil {
			t.Fatal(err)
		}
		if port+10000 <= 65535 { // the cluster bus listens on port+10000
			break
		}
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
		"--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no")
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start cluster node: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logf.Close()
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	admin := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
	defer admin.Close()
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for admin.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("cluster node did not start: %s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := admin.ClusterAddSlotsRange(ctx, 0, 16383).Err(); err != nil {
		t.Fatalf("CLUSTER ADDSLOTSRANGE: %v", err)
	}
	for {
		info, err := admin.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster did not become ok: %v %s", err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTokenStateConformanceCluster(t *testing.T) {
	addr := startClusterNode(t)
	c := openClient(t, "redis-cluster://"+addr)
	if _, ok := c.(*redis.ClusterClient); !ok {
		t.Fatalf("client %T, want a cluster client", c)
	}
	// Cross-slot access is refused, so the suite below can fail on layout.
	err := c.Eval(context.Background(), "return redis.call('MGET', KEYS[1], KEYS[2])", []string{"{a}x", "{b}x"}).Err()
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cluster accepted a cross-slot script (%v): the test proves nothing", err)
	}
	n := 0
	log, _ := revocationLog(t) // as in production, so the suite's rebuild cases run on Cluster too
	t.Run("redis-cluster", func(t *testing.T) {
		var mu sync.Mutex
		storetest.RunTokenStateTests(t, func(t *testing.T, cfg storetest.Config) storetest.Backend {
			mu.Lock()
			n++
			prefix := fmt.Sprintf("c%d:", n)
			mu.Unlock()
			return conformanceBackend(c, prefix, log, cfg)
		})
	})
}
