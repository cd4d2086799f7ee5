package rawconn

import (
	"context"
	"errors"
	"net"
)

// Wrap returns c reading and writing with raw system calls when it is a
// TCP connection on Linux, and c itself otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	return wrapTCP(tc)
}

// DialFunc is the shape of pgx's DialFunc and go-redis's Dialer.
type DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// WrapDial returns dial with every connection it makes wrapped: the dial
// itself (timeouts, keep-alives, TLS) is dial's. A TLS connection it
// returns is not a *net.TCPConn and stays as it is.
func WrapDial(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return Wrap(c), nil
	}
}

// Listener wraps every connection its net.Listener accepts.
type Listener struct{ net.Listener }

// Accept waits for the next connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// opError renames the raw connection's "raw-read" and "raw-write" errors
// to the "read" and "write" the standard connection reports; the error
// they wrap (a deadline, a closed connection) is unchanged.
func opError(err error, op string) error {
	var oe *net.OpError
	if errors.As(err, &oe) && (oe.Op == "raw-read" || oe.Op == "raw-write") {
		c := *oe
		c.Op = op
		return &c
	}
	return err
}
