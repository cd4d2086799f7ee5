package redisstate

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/portcullis-auth/portcullis/store/testservers"
)

// TestDialerTLS runs Redis commands over TLS through dialer against a real
// redis-server listening for TLS: the TLS connection sits on a raw one
// (store/rawconn), and a server the configuration does not trust, or one
// that never answers the handshake, is refused.
func TestDialerTLS(t *testing.T) {
	t.Parallel()
	rd := testservers.NewTLSRedis(t)
	trusted := &tls.Config{RootCAs: rd.RootCAs(), MinVersion: tls.VersionTLS12}
	ctx := context.Background()

	t.Run("ok/commands", func(t *testing.T) {
		c := redis.NewClient(&redis.Options{Addr: rd.TLSAddr(), Protocol: 2, Dialer: dialer(DialTimeout, trusted)})
		defer c.Close()
		// Larger than a TLS record and the socket buffers, both ways.
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18)
		if err := c.Set(ctx, "big", big, time.Minute).Err(); err != nil {
			t.Fatalf("SET over TLS: %v", err)
		}
		got, err := c.Get(ctx, "big").Bytes()
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("GET over TLS: %d bytes, %v; want the %d written", len(got), err, len(big))
		}
	})

	t.Run("ok/raw_under_tls", func(t *testing.T) {
		conn, err := dialer(DialTimeout, trusted)(ctx, "tcp", rd.TLSAddr())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		tc, ok := conn.(*tls.Conn)
		if !ok {
			t.Fatalf("a TLS dial returned %T, want *tls.Conn", conn)
		}
		if _, std := tc.NetConn().(*net.TCPConn); std == (runtime.GOOS == "linux") {
			t.Fatalf("under TLS: %T (on %s)", tc.NetConn(), runtime.GOOS)
		}
		if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
			t.Fatalf("write: %v", err)
		}
		buf := make([]byte, 7)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "+PONG\r\n" {
			t.Fatalf("PING over TLS read %q, %v", buf, err)
		}
	})

	t.Run("fail/untrusted_certificate", func(t *testing.T) {
		_, err := dialer(DialTimeout, &tls.Config{MinVersion: tls.VersionTLS12})(ctx, "tcp", rd.TLSAddr())
		var unknown x509.UnknownAuthorityError
		if err == nil || !errors.As(err, &unknown) {
			t.Fatalf("dial with system roots = %v, want an unknown-authority refusal", err)
		}
	})

	t.Run("fail/rediss_url_untrusted", func(t *testing.T) {
		c, err := NewClient("rediss://" + rd.TLSAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("PING through rediss:// to an untrusted server = %v, want a certificate refusal", err)
		}
	})

	t.Run("fail/handshake_never_answered", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		silent := make(chan net.Conn, 1)
		go func() { // accepts once, never speaks
			c, _ := l.Accept()
			silent <- c
		}()
		defer func() {
			l.Close()
			if c := <-silent; c != nil {
				c.Close()
			}
		}()
		const timeout = 200 * time.Millisecond
		start := time.Now()
		_, err = dialer(timeout, trusted)(ctx, "tcp", l.Addr().String())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("handshake with a silent server = %v, want the dial timeout", err)
		}
		if took := time.Since(start); took > 10*timeout {
			t.Fatalf("the handshake gave up after %v, want about %v", took, timeout)
		}
	})
}
