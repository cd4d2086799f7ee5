package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// directTransport is the driver's HTTP/1.1 transport: keep-alive
// connections used by the goroutine that sends the request, which writes
// it and reads the answer itself. net/http's Transport hands every request
// to two goroutines of its connection (one writes, one reads) and back.
// On this 2-core machine the driver competes with the server for the CPU,
// and those hand-offs and the scheduling they cause cost: in alternating
// sso runs the driver's CPU per round trip was 271-335 µs with net/http's
// Transport and 198-240 µs with this one, time given back to the server
// being measured. The bytes on the wire are the same: requests
// are written by http.Request.Write and answers parsed by
// http.ReadResponse. Plain http only (the driver loads loopback
// addresses); no proxies, no HTTP/2.
type directTransport struct {
	dialer  net.Dialer
	timeout time.Duration // per request, when its context has no earlier deadline

	mu   sync.Mutex
	idle map[string][]*directConn // by host:port
}

// newDirectTransport returns a transport whose requests time out after
// timeout (or their context's deadline, when sooner).
func newDirectTransport(timeout time.Duration) *directTransport {
	return &directTransport{timeout: timeout, idle: map[string][]*directConn{}}
}

// directConn is one keep-alive connection with its buffers.
type directConn struct {
	nc   net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	host string
}

// RoundTrip implements http.RoundTripper. A request that finds a reused
// connection closed by the server before any byte of the answer arrived
// is sent again once on a new connection, when its body can be replayed
// (as net/http's Transport does).
func (t *directTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		return nil, fmt.Errorf("direct transport: %q is not plain http", req.URL.Scheme)
	}
	dl := t.deadline(req.Context())
	for attempt := 0; ; attempt++ {
		c, reused, err := t.conn(req.Context(), req.URL.Host)
		if err != nil {
			return nil, dl.explain(err)
		}
		resp, err := t.exchange(c, req, dl)
		if err == nil {
			return resp, nil
		}
		c.nc.Close()
		if !reused || attempt > 0 || !errors.Is(err, errNoAnswer) || req.Context().Err() != nil {
			return nil, dl.explain(err)
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

// requestDeadline is when a request's connection times out, and whether
// that is its context's deadline.
type requestDeadline struct {
	at      time.Time
	ctx     context.Context
	fromCtx bool
}

// deadline is the sooner of the transport's timeout and ctx's deadline.
func (t *directTransport) deadline(ctx context.Context) requestDeadline {
	dl := requestDeadline{at: time.Now().Add(t.timeout), ctx: ctx}
	if d, ok := ctx.Deadline(); ok && d.Before(dl.at) {
		dl.at, dl.fromCtx = d, true
	}
	return dl
}

// explain returns err, or the context's error when err is the connection
// timing out at the context's deadline. The connection's timer can fire
// before the context's own: a worker that then saw a nil ctx.Err() would
// count the failure and, its deadline past, fail again at once, over and
// over until the context caught up (hundreds of errors at the end of a
// run). net/http's Transport answers with the context's error too.
func (dl requestDeadline) explain(err error) error {
	if dl.fromCtx && !time.Now().Before(dl.at) {
		<-dl.ctx.Done() // due now: its timer has fired or is about to
		return dl.ctx.Err()
	}
	return err
}

// errNoAnswer is a connection that ended before the first byte of an answer.
var errNoAnswer = errors.New("direct transport: connection closed before an answer")

// exchange writes req on c and reads the answer's head; the body is read
// from c by the caller, and c goes back to the idle list when it is read
// to the end (or closed: see directBody).
func (t *directTransport) exchange(c *directConn, req *http.Request, dl requestDeadline) (*http.Response, error) {
	if err := c.nc.SetDeadline(dl.at); err != nil {
		return nil, err
	}
	if err := req.Write(c.bw); err != nil {
		return nil, sendFailed(err)
	}
	if err := c.bw.Flush(); err != nil {
		return nil, sendFailed(err)
	}
	if _, err := c.br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
			return nil, fmt.Errorf("%w: %v", errNoAnswer, err)
		}
		return nil, err
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return nil, err
	}
	resp.Body = &directBody{rc: resp.Body, t: t, c: c, dl: dl, reuse: !resp.Close && !req.Close}
	return resp, nil
}

// sendFailed is a request the connection would not take: a connection the
// server closed shows it by refusing the write, or by ending before an
// answer (the read below).
func sendFailed(err error) error {
	if errors.Is(err, syscall.EPIPE) || isReset(err) {
		return fmt.Errorf("%w: %v", errNoAnswer, err)
	}
	return err
}

// isReset reports a connection reset by the peer.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// conn returns an idle connection to host (reused true) or a new one.
func (t *directTransport) conn(ctx context.Context, host string) (*directConn, bool, error) {
	t.mu.Lock()
	if l := t.idle[host]; len(l) > 0 {
		c := l[len(l)-1]
		t.idle[host] = l[:len(l)-1]
		t.mu.Unlock()
		return c, true, nil
	}
	t.mu.Unlock()
	nc, err := t.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, false, err
	}
	return &directConn{nc: nc, br: bufio.NewReaderSize(nc, 16<<10), bw: bufio.NewWriterSize(nc, 4<<10), host: host}, false, nil
}

// put returns c to the idle list.
func (t *directTransport) put(c *directConn) {
	t.mu.Lock()
	t.idle[c.host] = append(t.idle[c.host], c)
	t.mu.Unlock()
}

// CloseIdleConnections closes every idle connection (http.Client calls it).
func (t *directTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*directConn{}
	t.mu.Unlock()
	for _, l := range idle {
		for _, c := range l {
			c.nc.Close()
		}
	}
}

// maxDrain is how much of an unread body Close reads to keep the
// connection; a longer rest closes it instead.
const maxDrain = 256 << 10

// directBody is an answer's body: read to its end, or closed (after
// reading what is left, up to maxDrain), it gives the connection back for
// the next request, once.
type directBody struct {
	rc    io.ReadCloser
	t     *directTransport
	c     *directConn
	dl    requestDeadline
	reuse bool
	done  bool
}

func (b *directBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
		err = b.dl.explain(err)
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.done {
		return nil
	}
	n, err := io.CopyN(io.Discard, b.rc, maxDrain+1)
	b.finish(err == io.EOF && n <= maxDrain)
	return nil
}

// finish ends the body: the connection goes back to the idle list when
// the whole body was read and the answer allows keep-alive, else it is
// closed.
func (b *directBody) finish(complete bool) {
	b.done = true
	if complete && b.reuse {
		_ = b.rc.Close()
		b.t.put(b.c)
		return
	}
	b.c.nc.Close() // first: closing the body would read the rest
	_ = b.rc.Close()
}
