package clients

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis-auth/portcullis/store"
	"github.com/portcullis-auth/portcullis/store/sqlstore"
)

func TestCache(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Create(ctx, st, Spec{ID: "web"}); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	c := NewCache(st, 2*time.Second)
	c.now = func() time.Time { return now }
	if _, err := c.GetClient(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown client: %v", err)
	}
	if _, _, err := Create(ctx, st, Spec{ID: "ghost"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetClient(ctx, "ghost"); err != nil {
		t.Fatalf("unknown ids must not be cached: %v", err)
	}
	if _, err := c.GetClient(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteClient(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetClient(ctx, "web"); err != nil {
		t.Fatalf("within the TTL the cached client is served: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := c.GetClient(ctx, "web"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted client served after the TTL: %v", err)
	}
	if err := st.DeleteClient(ctx, "ghost"); err != nil {
		t.Fatal(err)
	}
	c.Forget("ghost")
	if _, err := c.GetClient(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("forgotten client still served: %v", err)
	}
}
