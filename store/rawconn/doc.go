// Package rawconn wraps TCP connections so that their reads and writes do
// not enter the Go scheduler's system-call state.
//
// Go marks every read and write on a socket as a system call that may block,
// although the socket is non-blocking. When the thread is descheduled inside
// one (on a loaded machine the peer it just woke often takes its core), the
// runtime's monitor thread takes the processor back, hands it to another
// thread, and then keeps polling every 20 µs instead of every 10 ms. On the
// benchmark machine that monitor woke about 2,000 times a second during
// password logins, each wakeup costing the hashing core tens of
// microseconds: in an A/B the password grant ran at 86% of the argon2id
// bound with the usual connections and at 91.5% with these
// (docs/benchmarks.md, the sixteenth session).
//
// A wrapped connection reads and writes through its syscall.RawConn with
// raw system calls on the non-blocking socket: a call never blocks in the
// kernel (a full or empty socket answers EAGAIN, and the connection then
// waits in the network poller, deadlines included, as the standard one
// does); writes pass MSG_NOSIGNAL, so a closed peer is an EPIPE error and
// never a signal. Everything else (deadlines, CloseWrite, SyscallConn,
// addresses) is the wrapped *net.TCPConn's. On systems other than Linux,
// Wrap returns the connection unchanged.
package rawconn
