// A program that reacts to the agent: it prints what it would do each time the disk-writes
// breaker or the host_protection signal changes (run it as root or in the steadfast group).
package main

import (
	"fmt"
	"log"
	"time"

	steadfast "example.invalid/steadfast/clients/go"
)

func main() {
	c, err := steadfast.Open(steadfast.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	last := ""
	for range time.Tick(100 * time.Millisecond) {
		b, _ := c.Breaker("disk-writes")
		level, _ := c.Signal("host_protection")
		now := fmt.Sprintf("agent healthy=%v disk-writes=%s (admit %.0f%%) host_protection=%.2f",
			c.Healthy(), b.State, b.AdmitRatio*100, level)
		if now != last {
			action := "write to disk"
			if !c.Allow("disk-writes") {
				action = "fallback: queue the write"
			}
			fmt.Println(time.Now().Format("15:04:05.000"), now, "->", action)
			last = now
		}
	}
}
