package usercache_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/redisstate"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
	"github.com/portcullis-auth/portcullis/store/testservers"
	"github.com/portcullis-auth/portcullis/store/usercache"
)

func TestMain(m *testing.M) { testservers.Main(m) }

// countingSource counts the reads that reach the database.
type countingSource struct {
	usercache.Source
	reads atomic.Int64
}

func (c *countingSource) GetUser(ctx context.Context, id string) (store.User, error) {
	c.reads.Add(1)
	return c.Source.GetUser(ctx, id)
}

// instance is what one server process has: its own database pool, Redis
// client and token state, with its store's user writes announced to Redis.
func instance(t *testing.T, dbURL, redisURL, prefix string) (*sqlstore.Store, *countingSource, *usercache.Cache) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	client, err := redisstate.NewClient(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	rs := redisstate.New(client, redisstate.Options{Prefix: prefix})
	st.SetUserWriteHooks(rs)
	src := &countingSource{Source: st}
	return st, src, usercache.New(src, rs, usercache.Options{})
}

// TestCacheAcrossInstancesUnderConcurrentWrites runs, on real PostgreSQL
// and Redis, one instance writing a user as fast as it can while readers
// on another instance read the user through their cache: a read that
// starts after a write returned always sees that write (or a later one),
// as a read of the database would. Once the writes stop, the readers use
// their copy (the cache is in use, not merely bypassed).
func TestCacheAcrossInstancesUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testservers.PostgresURL(t)
	redisURL, prefix := testservers.RedisURL(t)
	writer, _, _ := instance(t, dbURL, redisURL, prefix)
	if _, err := writer.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	_, readSrc, cache := instance(t, dbURL, redisURL, prefix)
	u := store.User{Email: "race@example.com", Name: "0", Active: true}
	if err := writer.CreateUser(ctx, &u); err != nil {
		t.Fatal(err)
	}

	const writes, readers = 150, 4
	var done atomic.Int64 // the last write that returned
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, readers)
	var reads atomic.Int64
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				floor := done.Load()
				got, err := cache.GetUser(ctx, u.ID)
				if err != nil {
					errs <- err.Error()
					return
				}
				reads.Add(1)
				if n, _ := strconv.ParseInt(got.Name, 10, 64); n < floor {
					errs <- "read name " + got.Name + " after write " + strconv.FormatInt(floor, 10) + " returned"
					return
				}
			}
		}()
	}
	for i := int64(1); i <= writes; i++ {
		if _, err := writer.UpdateUser(ctx, u.ID, func(x *store.User) error { x.Name = strconv.FormatInt(i, 10); return nil }); err != nil {
			t.Fatal(err)
		}
		done.Store(i)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	if reads.Load() < writes {
		t.Fatalf("only %d reads during %d writes: the race was not run", reads.Load(), writes)
	}

	before := readSrc.reads.Load()
	for range 50 {
		got, err := cache.GetUser(ctx, u.ID)
		if err != nil || got.Name != strconv.Itoa(writes) {
			t.Fatalf("after the writes: %+v, %v", got, err)
		}
	}
	if n := readSrc.reads.Load() - before; n > 1 {
		t.Fatalf("%d database reads for 50 reads of an unchanged user, want at most 1", n)
	}
}
