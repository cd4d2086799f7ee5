package servertest

import "sync"

// AtOnce runs fn(0) … fn(n-1) on n goroutines released together (each
// blocks until all are started), and returns when every one has returned:
// the shape of a race test with real concurrency.
func AtOnce(n int, fn func(i int)) {
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			fn(i)
		}()
	}
	start.Done()
	done.Wait()
}
