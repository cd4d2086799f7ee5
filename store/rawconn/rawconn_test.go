package rawconn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a loopback TCP connection, each wrapped: the
// server's through Listener, the client's through WrapDial.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := Listener{Listener: inner}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	var d net.Dialer
	client, err = WrapDial(d.DialContext)(context.Background(), "tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestWrapsTCPOnly: on Linux a TCP connection is wrapped (and still offers
// SyscallConn and CloseWrite); any other connection is returned as it is.
func TestWrapsTCPOnly(t *testing.T) {
	t.Parallel()
	client, server := pair(t)
	for _, c := range []net.Conn{client, server} {
		_, isTCP := c.(*net.TCPConn)
		if wrapped := !isTCP; wrapped != (runtime.GOOS == "linux") {
			t.Errorf("%T: wrapped %v on %s", c, wrapped, runtime.GOOS)
		}
		if _, ok := c.(interface{ CloseWrite() error }); !ok {
			t.Errorf("%T has no CloseWrite", c)
		}
		if _, ok := c.(syscall.Conn); !ok { // go-redis checks idle connections through it
			t.Errorf("%T has no SyscallConn", c)
		}
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if Wrap(p1) != p1 {
		t.Error("a pipe was wrapped")
	}
	sock := filepath.Join(t.TempDir(), "s")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	uc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	if Wrap(uc) != uc {
		t.Error("a unix socket was wrapped")
	}
}

// TestLargeTransfer: 16 MiB, more than the socket buffers hold, arrives
// whole and in order both ways at once, through writes that wait for room
// and reads that wait for data.
func TestLargeTransfer(t *testing.T) {
	t.Parallel()
	client, server := pair(t)
	payload := make([]byte, 16<<20)
	for i := range payload {
		payload[i] = byte(i*7 + i>>9)
	}
	want := sha256.Sum256(payload)
	var wg sync.WaitGroup
	check := func(name string, r net.Conn) {
		defer wg.Done()
		h := sha256.New()
		if n, err := io.CopyN(h, r, int64(len(payload))); err != nil || n != int64(len(payload)) {
			t.Errorf("%s read %d bytes: %v", name, n, err)
			return
		}
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Errorf("%s received different bytes", name)
		}
	}
	send := func(name string, w net.Conn) {
		defer wg.Done()
		if n, err := w.Write(payload); err != nil || n != len(payload) {
			t.Errorf("%s wrote %d bytes: %v", name, n, err)
		}
	}
	wg.Add(4)
	go check("server", server)
	go check("client", client)
	go send("client", client)
	go send("server", server)
	wg.Wait()
}

// TestEnds: a closed peer reads as io.EOF; a read or write on a closed
// connection is net.ErrClosed; empty reads and writes do nothing.
func TestEnds(t *testing.T) {
	t.Parallel()
	client, server := pair(t)
	if n, err := client.Write(nil); n != 0 || err != nil {
		t.Errorf("empty write: %d, %v", n, err)
	}
	if n, err := client.Read(nil); n != 0 || err != nil {
		t.Errorf("empty read: %d, %v", n, err)
	}
	if _, err := client.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := io.ReadFull(server, buf[:3]); n != 3 || err != nil || string(buf[:3]) != "bye" {
		t.Fatalf("server read %q, %v", buf[:n], err)
	}
	server.Close() // nothing unread: a FIN, not a reset
	if n, err := client.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("read after the peer closed: %d, %v; want 0, io.EOF", n, err)
	}
	client.Close()
	if _, err := client.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on a closed connection: %v", err)
	}
	if _, err := client.Write(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write on a closed connection: %v", err)
	}
}

// TestDeadlines: a read with no data and a write with no room end at their
// deadlines with the errors the standard connection gives (a timeout,
// os.ErrDeadlineExceeded, ops "read" and "write").
func TestDeadlines(t *testing.T) {
	t.Parallel()
	client, _ := pair(t)
	tests := []struct {
		op string
		do func() (int, error)
	}{
		{"read", func() (int, error) {
			client.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			return client.Read(make([]byte, 8))
		}},
		{"write", func() (int, error) { // the peer never reads: the buffers fill
			client.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			return client.Write(make([]byte, 64<<20))
		}},
	}
	for _, tt := range tests {
		_, err := tt.do()
		var ne net.Error
		var oe *net.OpError
		if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s past its deadline: %v, want a timeout", tt.op, err)
		}
		if !errors.As(err, &oe) || oe.Op != tt.op {
			t.Errorf("%s past its deadline: op %v", tt.op, err)
		}
	}
}

// TestWriteToResetPeer: writing to a peer that reset the connection is an
// error (EPIPE or ECONNRESET), never a SIGPIPE that would end the process.
func TestWriteToResetPeer(t *testing.T) {
	t.Parallel()
	client, server := pair(t)
	if tc, ok := server.(interface{ SetLinger(int) error }); ok {
		tc.SetLinger(0) // close sends RST
	}
	server.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := client.Write(make([]byte, 64<<10))
		if err != nil {
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "write" {
				t.Errorf("write to a reset peer: %v, want a write OpError", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a reset peer kept succeeding")
		}
		time.Sleep(time.Millisecond)
	}
}
