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
	r, w side
}

// side is one direction of a conn: the raw connection's Read or Write, and
// the system call it runs on the socket.
type side struct {
	raw  func(f func(fd uintptr) bool) error // syscall.RawConn's Read or Write
	step func(fd uintptr) bool               // readOnce or writeAll; false asks the poller to wait

	mu    sync.Mutex // one call at a time owns buf, n, errno
	buf   []byte
	n     int
	errno error
}

// wrapTCP wraps tc, or returns it as it is when it has no raw connection.
func wrapTCP(tc *net.TCPConn) net.Conn {
	raw, err := tc.SyscallConn()
	if err != nil {
		return tc
	}
	c := &conn{TCPConn: tc}
	c.r.raw, c.r.step = raw.Read, c.r.readOnce
	c.w.raw, c.w.step = raw.Write, c.w.writeAll
	return c
}

// run takes b through the side: how many bytes moved, the poller's error
// (a deadline, a closed connection) and the system call's.
func (s *side) run(b []byte) (n int, pollErr, errno error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf, s.n, s.errno = b, 0, nil
	pollErr = s.raw(s.step)
	n, errno = s.n, s.errno
	s.buf = nil
	return n, pollErr, errno
}

// Read reads into b: 0 and io.EOF when the peer has closed its side.
func (c *conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, pollErr, errno := c.r.run(b)
	if pollErr == nil && errno == io.EOF {
		return 0, io.EOF
	}
	return c.result("read", n, pollErr, errno)
}

// Write writes all of b, waiting in the poller while the socket is full.
func (c *conn) Write(b []byte) (int, error) {
	n, pollErr, errno := c.w.run(b)
	return c.result("write", n, pollErr, errno)
}

// result is what Read or Write (op) answers: n, and the poller's error or
// the system call's, each as the standard connection reports it.
func (c *conn) result(op string, n int, pollErr, errno error) (int, error) {
	switch {
	case pollErr != nil:
		return n, opError(pollErr, op)
	case errno != nil:
		return n, &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
	}
	return n, nil
}

// readOnce is one read(2) into buf; false asks the poller to wait for data.
func (s *side) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)))
		switch e {
		case 0:
			s.n = int(n)
			if n == 0 {
				s.errno = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			s.errno = e
			return true
		}
	}
}

// writeAll sends what is left of buf; false asks the poller to wait for
// room. MSG_NOSIGNAL: a closed peer is EPIPE, never SIGPIPE.
func (s *side) writeAll(fd uintptr) bool {
	for s.n < len(s.buf) {
		rest := s.buf[s.n:]
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			s.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.errno = e
			return true
		}
	}
	return true
}
