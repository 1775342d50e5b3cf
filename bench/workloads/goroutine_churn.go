// Starts and ends goroutines at a steady rate, for bench/goroutine_probe_cost.py. Arguments:
// RATE (goroutines a second) and SECONDS. Paced in 1 ms steps: each step starts RATE/1000
// goroutines that end at once, waits for them, then sleeps until the step's end. Prints
// "done <goroutines> <cpu_ns> <wall_ns>": the process's own CPU time (user + system, from
// getrusage, around the loop only) and the wall time of the loop. A uprobe's trap and program
// run in the thread that hits it, so the probes' cost is in <cpu_ns>.
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func cpuNs() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func main() {
	rate, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	secs, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	per := rate / 1000
	start := time.Now()
	cpu0 := cpuNs()
	total := 0
	for step := 0; step < secs*1000; step++ {
		var wg sync.WaitGroup
		wg.Add(per)
		for i := 0; i < per; i++ {
			go func() { wg.Done() }()
		}
		wg.Wait()
		total += per
		if d := time.Until(start.Add(time.Duration(step+1) * time.Millisecond)); d > 0 {
			time.Sleep(d)
		}
	}
	cpu := cpuNs() - cpu0
	fmt.Printf("done %d %d %d\n", total, cpu, time.Since(start).Nanoseconds())
}
