// Starts and ends goroutines without a pause (100 at a time) until a line arrives on stdin.
// Protocol over stdin/stdout:
//
//	"churning <gomaxprocs>"          after a first GC cycle (so the runtime's own goroutines
//	                                 are all there: 5 + GOMAXPROCS with main), while churning
//	(a line)                         stops; waits until only main is left
//	"stopped <numgoroutine>"
//	(waits for a line or EOF)        exits
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	runtime.GC()
	in := bufio.NewReader(os.Stdin)
	var stop atomic.Bool
	go func() {
		in.ReadString('\n')
		stop.Store(true)
	}()
	fmt.Printf("churning %d\n", runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for !stop.Load() {
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go wg.Done()
		}
		wg.Wait()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("stopped %d\n", runtime.NumGoroutine())
	in.ReadString('\n')
}
