package rawconn

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// conn is a TCP connection whose Read and Write are raw system calls on the
// non-blocking socket, through its syscall.RawConn.
type conn struct {
	*net.TCPConn
	raw syscall.RawConn

	rmu   sync.Mutex // one Read at a time owns rbuf, rn, rerr
	rbuf  []byte
	rn    int
	rerr  error
	readF func(fd uintptr) bool

	wmu    sync.Mutex // one Write at a time owns wbuf, wn, werr
	wbuf   []byte
	wn     int
	werr   error
	writeF func(fd uintptr) bool
}

// wrapTCP wraps tc, or returns it as it is when it has no raw connection.
func wrapTCP(tc *net.TCPConn) net.Conn {
	raw, err := tc.SyscallConn()
	if err != nil {
		return tc
	}
	c := &conn{TCPConn: tc, raw: raw}
	c.readF, c.writeF = c.readOnce, c.writeAll
	return c
}

// Read reads into b: 0 and io.EOF when the peer has closed its side.
func (c *conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerr = b, 0, nil
	err := c.raw.Read(c.readF)
	n, rerr := c.rn, c.rerr
	c.rbuf = nil
	if err == nil && rerr == io.EOF {
		return 0, io.EOF
	}
	return c.result("read", n, err, rerr)
}

// readOnce is one read(2); false asks the poller to wait for data.
func (c *conn) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case 0:
			c.rn = int(n)
			if n == 0 {
				c.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = e
			return true
		}
	}
}

// Write writes all of b, waiting in the poller while the socket is full.
func (c *conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werr = b, 0, nil
	err := c.raw.Write(c.writeF)
	n, werr := c.wn, c.werr
	c.wbuf = nil
	return c.result("write", n, err, werr)
}

// result is what Read or Write (op) answers: n, and the poller's error
// (err: a deadline, a closed connection) or the system call's (errno), each
// as the standard connection reports it.
func (c *conn) result(op string, n int, err, errno error) (int, error) {
	switch {
	case err != nil:
		return n, opError(err, op)
	case errno != nil:
		return n, &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
	}
	return n, nil
}

// writeAll sends what is left of wbuf; false asks the poller to wait for
// room. MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE.
func (c *conn) writeAll(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}
