// Command testenv runs a command (normally `go test ./...`) with throwaway
// PostgreSQL and Redis servers of its own, exported to it as TEST_DATABASE_URL
// and TEST_REDIS_URL, and stops them afterwards. Servers named by those
// variables when already set are used as they are. It installs the Debian
// packages postgresql and redis-server first when they are missing and it may.
//
// It is a development tool for `make test` and `make bench`; it is not shipped.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/portcullis-auth/portcullis/store/testservers"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testenv COMMAND [ARGS...]")
		os.Exit(2)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	defer testservers.StopAll()
	env := os.Environ()
	if os.Getenv(testservers.EnvDatabaseURL) == "" {
		pg, err := testservers.StartPostgres()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testenv: PostgreSQL:", err)
			return 1
		}
		env = append(env, testservers.EnvDatabaseURL+"="+pg.URL())
		fmt.Fprintln(os.Stderr, "testenv: PostgreSQL on", pg.URL())
	}
	if os.Getenv(testservers.EnvRedisURL) == "" {
		rd, err := testservers.StartRedis()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testenv: Redis:", err)
			return 1
		}
		env = append(env, testservers.EnvRedisURL+"="+rd.URL())
		fmt.Fprintln(os.Stderr, "testenv: Redis on", rd.URL())
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, "testenv:", err)
		return 1
	}
	return 0
}
