//go:build !linux

package rawconn

import "net"

func wrapTCP(tc *net.TCPConn) net.Conn { return tc }
