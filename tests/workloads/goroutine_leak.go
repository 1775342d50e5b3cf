// Leaks goroutines at a steady pace, as a handler that forgets to close a channel does: every
// tick (argv[2] ms) it starts argv[1] goroutines that block forever. Prints
// "leaking <numgoroutine>" once the first batch is parked, and "total <numgoroutine>" for each
// line it reads; exits at EOF on stdin.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	per, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	tick, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	never := make(chan struct{})
	leak := func() {
		for i := 0; i < per; i++ {
			go func() { <-never }()
		}
	}
	leak()
	fmt.Printf("leaking %d\n", runtime.NumGoroutine())
	go func() {
		for range time.Tick(time.Duration(tick) * time.Millisecond) {
			leak()
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Printf("total %d\n", runtime.NumGoroutine())
	}
}
