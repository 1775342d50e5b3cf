// Command steadfast-page reads steadfast's state page and API with the Go client: a tool for
// people (what does the page say?) and for the test suite and benchmarks.
//
//	steadfast-page read   [-page P] [-breaker B] [-signal S]   one line, then exit (1: cannot read)
//	steadfast-page follow [-page P] -breaker B [-stale D] [-poll D]
//	    one line per change of (healthy, state, admit ratio), with the share of 10,000 Allow
//	    calls that returned true at that moment
//	steadfast-page snapshots [-page P] -for D   every distinct snapshot read in D
//	steadfast-page watch [-socket S] [-n N]    N snapshots from the API (blocking queries; 0: all)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	steadfast "example.invalid/steadfast/clients/go"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: steadfast-page read|follow|snapshots|watch [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	page := fs.String("page", steadfast.DefaultPagePath, "the state page")
	socket := fs.String("socket", steadfast.DefaultAPISocket, "the API socket")
	breaker := fs.String("breaker", "", "a breaker name")
	signal := fs.String("signal", "", "a signal name")
	stale := fs.Duration("stale", steadfast.DefaultStaleAfter, "staleness limit")
	poll := fs.Duration("poll", time.Millisecond, "how often follow looks")
	dur := fs.Duration("for", 5*time.Second, "how long snapshots reads")
	n := fs.Int("n", 1, "how many snapshots watch prints")
	_ = fs.Parse(os.Args[2:])
	c, err := steadfast.Open(steadfast.Options{PagePath: *page, APISocket: *socket, StaleAfter: *stale})
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	defer c.Close()
	switch os.Args[1] {
	case "read":
		level, known := c.Signal(*signal)
		b, _ := c.Breaker(*breaker)
		fmt.Printf("healthy=%v allow=%v state=%s ratio=%g index=%d level=%g known=%v\n",
			c.Healthy(), c.Allow(*breaker), b.State, b.AdmitRatio, b.Index, level, known)
	case "follow":
		follow(c, *breaker, *poll)
	case "snapshots":
		snapshots(c, *dur)
	case "watch":
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for snap := range c.Watch(ctx) {
			fmt.Println(line(snap))
			if *n--; *n == 0 {
				return
			}
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

func follow(c *steadfast.Client, breaker string, poll time.Duration) {
	type view struct {
		healthy bool
		state   string
		ratio   float64
	}
	var last *view
	for {
		b, _ := c.Breaker(breaker)
		v := view{c.Healthy(), b.State, b.AdmitRatio}
		if last == nil || v != *last {
			seen := time.Now().UnixNano()
			allowed := 0
			for i := 0; i < 10000; i++ {
				if c.Allow(breaker) {
					allowed++
				}
			}
			fmt.Printf("t=%d healthy=%v state=%s ratio=%g index=%d since=%d share=%.4f\n",
				seen, v.healthy, v.state, v.ratio, b.Index, b.Since.UnixNano(), float64(allowed)/10000)
			last = &v
		}
		time.Sleep(poll)
	}
}

// line prints a snapshot as "index=I name=state/ratio/forced/changed ... signal=level ...".
func line(s steadfast.Snapshot) string {
	var parts []string
	for name, b := range s.Breakers {
		forced := b.Forced
		if forced == "" {
			forced = "-"
		}
		parts = append(parts, fmt.Sprintf("%s=%s/%g/%s/%d", name, b.State, b.AdmitRatio, forced, b.ChangedIndex))
	}
	for name, v := range s.Signals {
		parts = append(parts, fmt.Sprintf("%s=%g", name, v.Level))
	}
	sort.Strings(parts)
	return fmt.Sprintf("index=%d %s", s.Index, strings.Join(parts, " "))
}

func snapshots(c *steadfast.Client, d time.Duration) {
	seen := map[string]bool{}
	reads := 0
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		s, ok := c.Current()
		if !ok {
			continue
		}
		reads++
		if l := line(s); !seen[l] {
			seen[l] = true
			fmt.Println(l)
		}
	}
	fmt.Printf("reads=%d\n", reads)
}
