// Holds exactly G goroutines (argv[1]) blocked on a channel. Protocol over stdin/stdout:
//
//	"started", then waits for a line     only with a second argument "wait"
//	"ready <numgoroutine> <gomaxprocs>"  once the G goroutines are parked
//	(waits for a line)                   releases them, waits until every one has exited
//	"done <numgoroutine>"
//	(waits for a line or EOF)            exits, unless the line is a number K > 0:
//	"more <numgoroutine>"                once K new goroutines are parked
//	(waits for a line or EOF)            exits
//
// runtime.NumGoroutine() counts the main goroutine and user goroutines, not the runtime's own
// ("system") goroutines, which a probe on goroutine creation (runtime.newproc1) sees too:
// forcegchelper, bgsweep, bgscavenge, the finalizer goroutine (runfinq, started when package
// os sets finalizers on stdin/stdout/stderr) and one GC mark worker per P (GOMAXPROCS), which
// exist from the first GC cycle on. runtime.GC() below starts that cycle before anything is
// counted, so the runtime's goroutines stay fixed while the test reads the gauge.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	g, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	in := bufio.NewReader(os.Stdin)
	if len(os.Args) > 2 && os.Args[2] == "wait" {
		fmt.Println("started")
		in.ReadString('\n')
	}
	runtime.GC()
	release := make(chan struct{})
	var parked, wg sync.WaitGroup
	parked.Add(g)
	wg.Add(g)
	for i := 0; i < g; i++ {
		go func() {
			defer wg.Done()
			parked.Done()
			<-release
		}()
	}
	parked.Wait()
	fmt.Printf("ready %d %d\n", runtime.NumGoroutine(), runtime.GOMAXPROCS(0))
	in.ReadString('\n')

	before := runtime.NumGoroutine()
	close(release)
	wg.Wait()
	// wg.Done runs before a goroutine has fully exited: wait until all of them are gone.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before-g && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("done %d\n", runtime.NumGoroutine())
	line, _ := in.ReadString('\n')
	if k, err := strconv.Atoi(strings.TrimSpace(line)); err == nil && k > 0 {
		hold := make(chan struct{})
		var more sync.WaitGroup
		more.Add(k)
		for i := 0; i < k; i++ {
			go func() {
				more.Done()
				<-hold
			}()
		}
		more.Wait()
		fmt.Printf("more %d\n", runtime.NumGoroutine())
		in.ReadString('\n')
	}
}
