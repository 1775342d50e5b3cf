// Runs garbage collections back to back, for bench/gc_probe_cost.py. Arguments: CYCLES, and
// HEAP (live bytes kept in small objects, so each cycle marks something). Prints "started",
// waits for a line on stdin (the agent's attach), then calls runtime.GC() CYCLES times and
// prints "done <cycles> <cpu_ns> <wall_ns>": the change of runtime.NumGC, the process's own CPU
// time (user + system, getrusage, around the loop only) and the loop's wall time. A uprobe's
// trap and program run in the thread that hits it, so the probes' cost is in <cpu_ns>.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
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

type node struct {
	next *node
	pad  [48]byte
}

var live *node

func main() {
	cycles, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	heap, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	debug.SetGCPercent(-1)
	for i := 0; i < heap/64; i++ {
		live = &node{next: live}
	}
	fmt.Println("started")
	bufio.NewReader(os.Stdin).ReadString('\n')
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	gc0 := m.NumGC
	start := time.Now()
	cpu0 := cpuNs()
	for i := 0; i < cycles; i++ {
		runtime.GC()
	}
	cpu := cpuNs() - cpu0
	wall := time.Since(start).Nanoseconds()
	runtime.ReadMemStats(&m)
	fmt.Printf("done %d %d %d\n", m.NumGC-gc0, cpu, wall)
}
