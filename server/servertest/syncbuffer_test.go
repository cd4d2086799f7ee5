package servertest

import (
	"testing"
	"time"
)

func TestSyncBufferWaitFor(t *testing.T) {
	t.Parallel()
	var b SyncBuffer
	_, _ = b.Write([]byte("listening\n"))
	if !b.WaitFor("listening", 0) {
		t.Fatal("WaitFor misses what is already written")
	}
	done := make(chan bool)
	go func() { done <- b.WaitFor("Next steps", time.Minute) }()
	_, _ = b.Write([]byte("something else\n")) // wakes the waiter, which waits again
	_, _ = b.Write([]byte("Next steps:\n"))
	if !<-done {
		t.Fatal("WaitFor missed a line written while it waited")
	}
	if b.WaitFor("never written", time.Millisecond) {
		t.Fatal("WaitFor found what was never written")
	}
}
