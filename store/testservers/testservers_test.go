package testservers

import (
	"context"
	"database/sql"
	"net"
	"testing"
	"time"
)

func TestMain(m *testing.M) { Main(m) }

func TestPostgresDatabasePerTest(t *testing.T) {
	u1, u2 := PostgresURL(t), PostgresURL(t)
	if u1 == u2 {
		t.Fatal("two tests got the same database")
	}
	db, err := sql.Open("pgx", u1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
}

func TestPrivateRedisStopStart(t *testing.T) {
	rd := NewRedis(t)
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", rd.Addr(), 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("redis still accepting after Stop")
	}
	if err := rd.Start(); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", rd.Addr(), time.Second)
	if err != nil {
		t.Fatalf("redis not back after Start: %v", err)
	}
	c.Close()
}

func TestPrivatePostgresStopStart(t *testing.T) {
	pg := NewPostgres(t)
	ping := func() error {
		db, err := sql.Open("pgx", pg.URL())
		if err != nil {
			return err
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return db.PingContext(ctx)
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if ping() == nil {
		t.Fatal("postgres answers after Stop")
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err != nil {
		t.Fatalf("postgres not back after Start: %v", err)
	}
}
