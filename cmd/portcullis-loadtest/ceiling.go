package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// The HTTP ceiling is what the machine allows for the cheapest possible
// request: a bare net/http server (no Echo, no middleware, no storage)
// answering with the bytes and headers the real server gave for its JWKS,
// in a process of its own, loaded by this driver with the same workers.
// Measured in the same run as the scenarios, it is the bound every path
// shares on this machine: no request Portcullis answers can be cheaper than
// this one, and the driver's own cost is in it too.

// replay is a recorded response the ceiling server sends for every request.
type replay struct {
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

// recordJWKS fetches the real server's JWKS response into a file for the
// ceiling server.
func recordJWKS(base, path string) error {
	resp, err := http.Get(base + "/.well-known/jwks.json")
	if err != nil {
		return fmt.Errorf("record the JWKS response: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("record the JWKS response: status %d: %v", resp.StatusCode, err)
	}
	h := resp.Header.Clone()
	h.Del("Date")           // net/http adds its own
	h.Del("Content-Length") // and this one
	b, err := json.Marshal(replay{Header: h, Body: body})
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// serveCeiling runs the bare server on addr, replaying the response in
// file, until the process is killed.
func serveCeiling(addr, file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var r replay
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("ceiling response %s: %w", file, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: r}
	return srv.Serve(ln)
}

// ServeHTTP answers every request with the recorded response, as cheaply
// as net/http allows.
func (r replay) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	for k, v := range r.Header {
		h[k] = v
	}
	_, _ = w.Write(r.Body)
}

// startCeiling starts this binary as the bare server on a free loopback
// port (killed with its parent) and returns its base URL, a stop func and
// its process id.
func startCeiling(file string, port int) (string, func(), int, error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, 0, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(self, "-serve-ceiling", addr, "-ceiling-response", file)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, 0, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/.well-known/jwks.json")
		if err == nil {
			resp.Body.Close()
			return base, stop, cmd.Process.Pid, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, 0, fmt.Errorf("ceiling server on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
