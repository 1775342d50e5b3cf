// Package steadfast reads the circuit breakers and degrade signals of the steadfast agent on
// this host from its state page (/run/steadfast/state.page, layout in docs/state-page.md):
//
//	c, err := steadfast.Open(steadfast.Options{})
//	if err != nil { ... }        // the page exists but cannot be read (permission denied)
//	defer c.Close()
//	if c.Allow("db-writes") {
//		// call the database
//	} else {
//		// fallback
//	}
//
// Allow is a few memory loads: no syscall, no lock, no allocation. A background goroutine
// looks at the page every 100 ms: it notices a new file (a changed breaker set, a restarted
// agent) and decides whether the page is healthy.
//
// The client fails open: with no page, a stopped agent, or a page older than
// Options.StaleAfter, Allow returns true, signals read 0 and Healthy returns false. An
// unknown breaker is allowed too.
//
// Watch follows the snapshot over the agent's local API (blocking queries on its unix
// socket), with the reasons and sources the page does not carry. Middleware and RoundTripper
// put breakers and signals in front of net/http servers and clients.
package steadfast

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// DefaultPagePath is where the agent writes its state page by default.
	DefaultPagePath = "/run/steadfast/state.page"
	// DefaultAPISocket is the agent's local API socket by default.
	DefaultAPISocket = "/run/steadfast/api.sock"
	// DefaultStaleAfter: a page not refreshed for this long counts as a dead agent (the agent
	// refreshes it twice a second).
	DefaultStaleAfter = 5 * time.Second
	// CheckInterval is how often the background goroutine looks at the page.
	CheckInterval = 100 * time.Millisecond
)

// Options configure a Client; zero values take the defaults.
type Options struct {
	// PagePath is the state page (default /run/steadfast/state.page).
	PagePath string
	// APISocket is the agent's API socket, for Watch (default /run/steadfast/api.sock).
	APISocket string
	// StaleAfter is how old the page may be before the client fails open (default 5 s).
	StaleAfter time.Duration
}

// BreakerState is a breaker as the page (or the API) shows it.
type BreakerState struct {
	// State is "admit" (closed), "probe" (half-open) or "shed" (open).
	State string
	// AdmitRatio is the share of calls to let through: 1 admit, 0 shed, the ramp step in probe.
	AdmitRatio float64
	// Index is the snapshot index this was read at.
	Index uint64
	// ChangedIndex is the snapshot index of the breaker's last change (page only).
	ChangedIndex uint64
	// Forced is "open", "close" or "" (no manual override).
	Forced string
	// Openings counts consecutive openings.
	Openings uint32
	// Since is the time of the last state change (the engine's decision).
	Since time.Time
	// InputsUnknown: the rule engine could not evaluate the breaker's inputs (state held).
	InputsUnknown bool
	// UnknownReason says why, e.g. "volume: no series matched (no data, or stale)" (API only).
	UnknownReason string
	// Reason says why it is in this state (API only; empty from the page).
	Reason string
}

// SignalState is a degrade signal as the page (or the API) shows it.
type SignalState struct {
	// Level is in [0, 1]: 0 all is well, 1 shed everything optional.
	Level        float64
	ChangedIndex uint64
	Since        time.Time
	// InputsUnknown: the rule engine could not evaluate the signal's expression (level held).
	InputsUnknown bool
	// UnknownReason says why (API only).
	UnknownReason string
	// Source says what set it (API only; empty from the page).
	Source string
}

// Snapshot is every breaker and signal at one snapshot index.
type Snapshot struct {
	Index    uint64
	Breakers map[string]BreakerState
	Signals  map[string]SignalState
}

// Client reads the state page. Its methods are safe for concurrent use.
type Client struct {
	opts    Options
	cur     atomic.Pointer[mapping]
	healthy atomic.Bool
	seed    atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// Open maps the page and starts the background check. A missing page is not an error (the
// client fails open until the agent writes one); a page that exists but cannot be read
// (permission denied: it is readable by root and the API socket's group) or is not a state
// page is.
func Open(opts Options) (*Client, error) {
	if opts.PagePath == "" {
		opts.PagePath = DefaultPagePath
	}
	if opts.APISocket == "" {
		opts.APISocket = DefaultAPISocket
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = DefaultStaleAfter
	}
	c := &Client{opts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	c.seed.Store(uint64(time.Now().UnixNano()) ^ uint64(os.Getpid())<<32)
	if err := c.refresh(); err != nil {
		return nil, err
	}
	go c.loop()
	return c, nil
}

func (c *Client) loop() {
	defer close(c.done)
	t := time.NewTicker(CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			_ = c.refresh()
		}
	}
}

// refresh re-opens the page if the file changed or was superseded, and decides whether it is
// healthy. It returns the error of a file that exists but cannot be used.
func (c *Client) refresh() error {
	var result error
	m := c.cur.Load()
	fi, err := os.Stat(c.opts.PagePath)
	replaced := false
	if err == nil {
		switch {
		case m == nil:
			replaced = true
		default:
			st, _ := fi.Sys().(*syscall.Stat_t)
			if st != nil && (uint64(st.Dev) != m.dev || st.Ino != m.ino) {
				replaced = true
			} else if atomic.LoadUint32(m.u32(hStatus)) == statusSuperseded {
				replaced = true
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		result = err
	}
	if replaced {
		next, err := openMapping(c.opts.PagePath)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				result = err
			}
		} else {
			c.cur.Store(next)
			m = next
		}
	}
	healthy := false
	if m != nil {
		var h rawHeader
		if m.read(func() { h = m.header() }) {
			age := time.Now().UnixNano() - int64(h.updated)
			healthy = h.status == statusRunning && age <= int64(c.opts.StaleAfter)
		}
	}
	runtime.KeepAlive(m)
	c.healthy.Store(healthy)
	return result
}

// Healthy reports whether the page is there, says running, and is fresher than StaleAfter.
func (c *Client) Healthy() bool { return c.healthy.Load() }

// Close stops the background goroutine. The page is unmapped once no call uses it any more.
func (c *Client) Close() error {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		c.healthy.Store(false)
		c.cur.Store(nil)
	})
	return nil
}

// coin returns a uniform number in [0, 1) (splitmix64 over an atomic counter: lock-free).
func (c *Client) coin() float64 {
	z := c.seed.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}

// Allow says whether to make a call guarded by breaker: Admit -> true, Shed -> false, Probe
// -> true with probability AdmitRatio. True for an unknown breaker and whenever the client
// fails open. Nanoseconds, no syscall, no allocation.
func (c *Client) Allow(breaker string) bool {
	if !c.healthy.Load() {
		return true
	}
	m := c.cur.Load()
	if m == nil {
		return true
	}
	o, found := m.breakers[breaker]
	if !found {
		return true
	}
	state, ratio, ok := m.stateValue(o)
	runtime.KeepAlive(m)
	if !ok {
		return true
	}
	switch state {
	case 2:
		return false
	case 1:
		return c.coin() < ratio
	}
	return true
}

var stateNames = [...]string{"admit", "probe", "shed"}

func breakerFrom(r rawSlot, index uint64) BreakerState {
	b := BreakerState{
		State:         "admit",
		AdmitRatio:    r.value,
		Index:         index,
		ChangedIndex:  r.changed,
		Openings:      r.openings,
		Since:         time.Unix(0, int64(r.since)),
		InputsUnknown: r.flags&flagInputsUnknown != 0,
	}
	if int(r.state) < len(stateNames) {
		b.State = stateNames[r.state]
	}
	switch {
	case r.flags&flagForcedOpen != 0:
		b.Forced = "open"
	case r.flags&flagForcedClose != 0:
		b.Forced = "close"
	}
	return b
}

func signalFrom(r rawSlot) SignalState {
	return SignalState{
		Level:         r.value,
		ChangedIndex:  r.changed,
		Since:         time.Unix(0, int64(r.since)),
		InputsUnknown: r.flags&flagInputsUnknown != 0,
	}
}

// Breaker returns a breaker's state; ok is false for an unknown breaker and when the client
// fails open (the state is then "admit" with AdmitRatio 1).
func (c *Client) Breaker(name string) (BreakerState, bool) {
	open := BreakerState{State: "admit", AdmitRatio: 1}
	if !c.healthy.Load() {
		return open, false
	}
	m := c.cur.Load()
	if m == nil {
		return open, false
	}
	o, found := m.breakers[name]
	if !found {
		return open, false
	}
	var r rawSlot
	var index uint64
	ok := m.read(func() { r, index = m.slot(o), atomic.LoadUint64(m.u64(hIndex)) })
	runtime.KeepAlive(m)
	if !ok {
		return open, false
	}
	return breakerFrom(r, index), true
}

// Signal returns a signal's level in [0, 1]; 0 and false for an unknown signal and when the
// client fails open.
func (c *Client) Signal(name string) (float64, bool) {
	if !c.healthy.Load() {
		return 0, false
	}
	m := c.cur.Load()
	if m == nil {
		return 0, false
	}
	o, found := m.signals[name]
	if !found {
		return 0, false
	}
	_, level, ok := m.stateValue(o)
	runtime.KeepAlive(m)
	if !ok || math.IsNaN(level) {
		return 0, false
	}
	return level, true
}

// Current returns every breaker and signal from the page, read in one consistent copy; ok is
// false when the client fails open.
func (c *Client) Current() (Snapshot, bool) {
	if !c.healthy.Load() {
		return Snapshot{}, false
	}
	m := c.cur.Load()
	if m == nil {
		return Snapshot{}, false
	}
	raws := make([]rawSlot, len(m.slots))
	var index uint64
	ok := m.read(func() {
		index = atomic.LoadUint64(m.u64(hIndex))
		for i, s := range m.slots {
			raws[i] = m.slot(s.off)
		}
	})
	runtime.KeepAlive(m)
	if !ok {
		return Snapshot{}, false
	}
	snap := Snapshot{Index: index, Breakers: map[string]BreakerState{}, Signals: map[string]SignalState{}}
	for i, s := range m.slots {
		if s.breaker {
			snap.Breakers[s.name] = breakerFrom(raws[i], index)
		} else {
			snap.Signals[s.name] = signalFrom(raws[i])
		}
	}
	return snap, true
}

// PageInfo returns the agent's pid and the page's generation, if a page is mapped.
func (c *Client) PageInfo() (pid uint32, generation uint64, ok bool) {
	m := c.cur.Load()
	if m == nil {
		return 0, 0, false
	}
	return m.pid, m.generation, true
}
