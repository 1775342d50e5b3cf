// Garbage collections counted by the runtime, for tests/go_versions.rs. Built together with
// goroutines.go (same package); with the arguments "gc K" this file's init takes over before
// main runs. Protocol over stdin/stdout:
//
//	"before <numgc> <pauses>"  then waits for a line
//	(runs runtime.GC() K times, each followed by a runtime.ReadMemStats)
//	"after <numgc> <pauses>"   then waits for a line or EOF, and exits
//
// <numgc> is runtime.NumGC (MemStats.NumGC), <pauses> the count of the runtime's own
// /gc/pauses:seconds histogram (runtime/metrics). Automatic collections are off
// (debug.SetGCPercent(-1)), so only the forced ones happen while the test reads. Each
// ReadMemStats stops the world too, for its own reason: those stops are not GC pauses, and
// the runtime does not count them in /gc/pauses:seconds.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
)

func init() {
	if len(os.Args) < 3 || os.Args[1] != "gc" {
		return
	}
	k, err := strconv.Atoi(os.Args[2])
	if err != nil {
		panic(err)
	}
	debug.SetGCPercent(-1)
	in := bufio.NewReader(os.Stdin)
	report := func(what string) {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		s := []metrics.Sample{{Name: "/gc/pauses:seconds"}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindFloat64Histogram {
			panic("no /gc/pauses:seconds")
		}
		var pauses uint64
		for _, c := range s[0].Value.Float64Histogram().Counts {
			pauses += c
		}
		fmt.Printf("%s %d %d\n", what, m.NumGC, pauses)
	}
	report("before")
	in.ReadString('\n')
	var m runtime.MemStats
	for i := 0; i < k; i++ {
		runtime.GC()
		runtime.ReadMemStats(&m)
	}
	report("after")
	in.ReadString('\n')
	os.Exit(0)
}
