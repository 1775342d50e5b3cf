package steadfast

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func open(t testing.TB, path string, stale time.Duration) *Client {
	t.Helper()
	c, err := Open(Options{PagePath: path, APISocket: path + ".sock", StaleAfter: stale})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitUntil(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAllowFollowsAdmitShedAndTheProbeRatio(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.page")
	w := createPage(t, path, []string{"db", "cache"}, []string{"pressure"})
	c := open(t, path, 0)
	if !c.Healthy() || !c.Allow("db") || !c.Allow("unknown") {
		t.Fatal("a fresh admitting page allows")
	}
	if v, ok := c.Signal("pressure"); v != 0 || !ok {
		t.Fatalf("signal %v %v", v, ok)
	}
	if _, ok := c.Signal("nope"); ok {
		t.Fatal("unknown signal")
	}
	w.set("db", 2, 0, 2)
	if c.Allow("db") || !c.Allow("cache") {
		t.Fatal("db sheds, cache admits")
	}
	b, ok := c.Breaker("db")
	if !ok || b.State != "shed" || b.AdmitRatio != 0 || b.Index != 2 {
		t.Fatalf("%+v %v", b, ok)
	}
	if pid, gen, ok := c.PageInfo(); pid != 4242 || gen != 7 || !ok {
		t.Fatal(pid, gen, ok)
	}
	w.set("db", 1, 0.25, 3)
	n, allowed := 200000, 0
	for i := 0; i < n; i++ {
		if c.Allow("db") {
			allowed++
		}
	}
	if share := float64(allowed) / float64(n); math.Abs(share-0.25) > 0.01 {
		t.Fatalf("probe at 0.25 let %v through", share)
	}
	w.set("pressure", 0, 0.7, 4)
	if v, _ := c.Signal("pressure"); v != 0.7 {
		t.Fatal(v)
	}
	snap, ok := c.Current()
	if !ok || snap.Index != 4 || snap.Breakers["db"].State != "probe" ||
		snap.Breakers["db"].ChangedIndex != 3 || snap.Signals["pressure"].Level != 0.7 {
		t.Fatalf("%+v", snap)
	}
}

func TestFailsOpenWithoutAPageWithAStaleOneAndAStoppedOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.page")
	c := open(t, path, 400*time.Millisecond)
	if c.Healthy() || !c.Allow("db") {
		t.Fatal("no page: fail open")
	}
	if v, ok := c.Signal("pressure"); v != 0 || ok {
		t.Fatal("no page: signals read 0")
	}
	if b, ok := c.Breaker("db"); ok || b.State != "admit" || b.AdmitRatio != 1 {
		t.Fatalf("%+v", b)
	}
	w := createPage(t, path, []string{"db"}, []string{"pressure"})
	w.set("db", 2, 0, 2)
	w.set("pressure", 0, 1, 3)
	waitUntil(t, "a healthy page", c.Healthy)
	if c.Allow("db") {
		t.Fatal("shed")
	}
	if v, _ := c.Signal("pressure"); v != 1 {
		t.Fatal(v)
	}
	w.updated(time.Now().Add(-time.Second))
	waitUntil(t, "a stale page", func() bool { return !c.Healthy() })
	if !c.Allow("db") {
		t.Fatal("stale: fail open")
	}
	if v, ok := c.Signal("pressure"); v != 0 || ok {
		t.Fatal("stale: signals read 0")
	}
	w.updated(time.Now())
	waitUntil(t, "a fresh page", c.Healthy)
	w.status(statusStopped)
	waitUntil(t, "a stopped page", func() bool { return !c.Healthy() })
	if !c.Allow("db") {
		t.Fatal("stopped: fail open")
	}
}

func TestANewFileIsMapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.page")
	old := createPage(t, path, []string{"db"}, nil)
	old.set("db", 2, 0, 2)
	c := open(t, path, 0)
	if c.Allow("db") {
		t.Fatal("shed")
	}
	next := createPage(t, path, []string{"cache", "db"}, nil)
	next.set("cache", 2, 0, 3)
	old.status(statusSuperseded)
	waitUntil(t, "the new file", func() bool { return !c.Allow("cache") })
	if !c.Allow("db") {
		t.Fatal("db admits in the new file")
	}
}

func TestNotAPageIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.page")
	w := createPage(t, path, nil, nil)
	copy(w.data, "garbage!")
	if _, err := Open(Options{PagePath: path}); !errors.Is(err, ErrFormat) {
		t.Fatal(err)
	}
}

// hammer updates a slot whose fields go in pairs (state = k%3, value = k, the slot's index =
// the header's index = k) while readers check every copy they get.
func hammer(t *testing.T, noSeqlock bool, d time.Duration) (reads, torn int64) {
	path := filepath.Join(t.TempDir(), "state.page")
	w := createPage(t, path, []string{"a", "b"}, nil)
	w.noSeqlock = noSeqlock
	c := open(t, path, 0)
	o := w.slot("b")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := uint64(11); ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			w.write(func() {
				atomic.StoreUint64(w.u64(32), k)
				atomic.StoreUint32(w.u32(o), uint32(k%3))
				for i := 0; i < 50; i++ {
					atomic.LoadUint64(w.u64(24))
				}
				atomic.StoreUint64(w.u64(o+8), float64bits(float64(k)))
				atomic.StoreUint64(w.u64(o+16), k)
			})
			for i := 0; i < 200; i++ {
				atomic.LoadUint64(w.u64(24))
			}
		}
	}()
	var rd sync.WaitGroup
	for r := 0; r < 2; r++ {
		rd.Add(1)
		go func() {
			defer rd.Done()
			end := time.Now().Add(d)
			for time.Now().Before(end) {
				for i := 0; i < 100; i++ {
					snap, ok := c.Current()
					if !ok {
						continue
					}
					atomic.AddInt64(&reads, 1)
					b, k := snap.Breakers["b"], snap.Index
					if k > 10 && (b.AdmitRatio != float64(k) || b.ChangedIndex != k || b.State != stateNames[k%3]) {
						atomic.AddInt64(&torn, 1)
					}
				}
			}
		}()
	}
	rd.Wait()
	close(stop)
	wg.Wait()
	return reads, torn
}

func TestTornReadsAreImpossible(t *testing.T) {
	reads, torn := hammer(t, false, 2*time.Second)
	t.Logf("seqlock: %d consistent reads under constant writes, %d torn", reads, torn)
	if reads < 1000 || torn != 0 {
		t.Fatalf("%d reads, %d torn", reads, torn)
	}
	reads, torn = hammer(t, true, 2*time.Second)
	t.Logf("without the seqlock: %d torn of %d reads", torn, reads)
	if torn == 0 {
		t.Fatal("the check must catch a writer without the seqlock")
	}
}

func TestMiddlewareAnswers503WithRetryAfter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.page")
	w := createPage(t, path, []string{"db"}, []string{"pressure"})
	c := open(t, path, 0)
	var served int64
	ok := http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { atomic.AddInt64(&served, 1) })
	srv := httptest.NewServer(c.Middleware(Guard{Breaker: "db", Signal: "pressure", Level: 0.8, RetryAfter: 1500 * time.Millisecond}, ok))
	defer srv.Close()
	get := func() (int, string) {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if code, _ := get(); code != 200 {
		t.Fatal(code)
	}
	w.set("db", 2, 0, 2)
	if code, ra := get(); code != 503 || ra != "2" {
		t.Fatal(code, ra)
	}
	w.set("db", 0, 1, 3)
	w.set("pressure", 0, 0.79, 4)
	if code, _ := get(); code != 200 {
		t.Fatal(code)
	}
	w.set("pressure", 0, 0.8, 5)
	if code, ra := get(); code != 503 || ra != "2" {
		t.Fatal(code, ra)
	}
	if served != 2 {
		t.Fatalf("the handler ran %d times, want 2", served)
	}
}

func TestRoundTripperRefusesWithoutDialing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.page")
	w := createPage(t, path, []string{"db"}, nil)
	c := open(t, path, 0)
	var conns int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			atomic.AddInt64(&conns, 1)
		}
	}
	srv.Start()
	defer srv.Close()
	base := &http.Transport{DisableKeepAlives: true}
	hc := &http.Client{Transport: c.RoundTripper("db", base)}
	w.set("db", 2, 0, 2)
	for i := 0; i < 5; i++ {
		_, err := hc.Get(srv.URL)
		var shed *ShedError
		if !errors.Is(err, ErrShed) || !errors.As(err, &shed) || shed.Breaker != "db" {
			t.Fatal(err)
		}
	}
	if n := atomic.LoadInt64(&conns); n != 0 {
		t.Fatalf("%d connections while shedding", n)
	}
	w.set("db", 0, 1, 3)
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitUntil(t, "the connection seen", func() bool { return atomic.LoadInt64(&conns) == 1 })
}

// fakeAPI serves blocking queries on a unix socket like the agent does.
type fakeAPI struct {
	mu      sync.Mutex
	index   uint64
	changed chan struct{}
	srv     *httptest.Server
}

func startAPI(t *testing.T, socket string, index uint64) *fakeAPI {
	a := &fakeAPI{index: index, changed: make(chan struct{})}
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		want, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
		a.mu.Lock()
		idx, ch := a.index, a.changed
		a.mu.Unlock()
		if idx <= want {
			select {
			case <-ch:
			case <-time.After(wait):
			case <-r.Context().Done():
			}
		}
		a.mu.Lock()
		idx = a.index
		a.mu.Unlock()
		fmt.Fprintf(rw, `{"index":%d,"breakers":{"db":{"state":"shed","admit_ratio":0.0,"forced":"open","openings":1,"since_unix_ms":1000,"reason":"forced open"}},"signals":{"host_protection":{"level":0.5,"source":"cpu_pressure"}}}`, idx)
	}))
	a.srv.Listener = l
	a.srv.Start()
	return a
}

func (a *fakeAPI) bump() {
	a.mu.Lock()
	a.index++
	close(a.changed)
	a.changed = make(chan struct{})
	a.mu.Unlock()
}

func TestWatchFollowsChangesAndRestarts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.page")
	c := open(t, path, 0)
	c.opts.APISocket = filepath.Join(dir, "api.sock")
	api := startAPI(t, c.opts.APISocket, 5)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := c.Watch(ctx)
	next := func() Snapshot {
		select {
		case s := <-ch:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("no snapshot within 5 s")
		}
		return Snapshot{}
	}
	s := next()
	if s.Index != 5 || s.Breakers["db"].Forced != "open" || s.Breakers["db"].Reason != "forced open" ||
		s.Signals["host_protection"].Source != "cpu_pressure" {
		t.Fatalf("%+v", s)
	}
	api.bump()
	if s := next(); s.Index != 6 {
		t.Fatal(s.Index)
	}
	// The agent restarts with a higher index: seen after the reconnect.
	api.srv.Close()
	api = startAPI(t, c.opts.APISocket, 2000)
	defer api.srv.Close()
	if s := next(); s.Index != 2000 {
		t.Fatal(s.Index)
	}
	cancel()
	waitUntil(t, "the channel closed", func() bool {
		select {
		case _, open := <-ch:
			return !open
		default:
			return false
		}
	})
}

func benchPage(b testing.TB, n int) (*Client, string) {
	path := filepath.Join(b.TempDir(), "state.page")
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("breaker-%04d", i)
	}
	w := createPage(b, path, names, []string{"pressure"})
	target := names[n/2]
	w.set(target, 2, 0, 2)
	// Like the agent: a page refreshed while it is read (a long run on a busy machine would
	// otherwise outlive the staleness limit).
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				w.updated(time.Now())
			}
		}
	}()
	b.Cleanup(func() { close(stop); <-done })
	return open(b, path, 0), target
}

// cpuNs is the process's CPU time: on a busy, shared machine wall time also counts the time
// the benchmark waited for a CPU.
func cpuNs() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func benchAllow(b *testing.B, n int) {
	c, target := benchPage(b, n)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuNs()
	refused := 0
	for i := 0; i < b.N; i++ {
		if !c.Allow(target) {
			refused++
		}
	}
	b.ReportMetric(float64(cpuNs()-cpu)/float64(b.N), "cpu-ns/op")
	if refused != b.N {
		b.Fatalf("the breaker shed %d of %d calls (healthy %v)", refused, b.N, c.Healthy())
	}
}

func BenchmarkAllow(b *testing.B)     { benchAllow(b, 1) }
func BenchmarkAllow1000(b *testing.B) { benchAllow(b, 1000) }

func BenchmarkAllowParallel(b *testing.B) {
	c, target := benchPage(b, 1000)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Allow(target)
		}
	})
}

func BenchmarkSignal(b *testing.B) {
	c, _ := benchPage(b, 1000)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c.Signal("pressure")
	}
}

// TestAllowIsAllocationFreeAndFast: no allocation, and nanoseconds (a generous bound for a
// shared machine; `cargo xtask bench` reports the figures).
func TestAllowIsAllocationFreeAndFast(t *testing.T) {
	for _, n := range []int{1, 1000} {
		c, target := benchPage(t, n)
		if c.Allow(target) || !c.Healthy() {
			t.Fatal("the breaker sheds on a healthy page")
		}
		if a := testing.AllocsPerRun(10000, func() { c.Allow(target); c.Signal("pressure") }); a != 0 {
			t.Fatalf("%v allocations per Allow+Signal with %d breakers", a, n)
		}
		r := testing.Benchmark(func(b *testing.B) { benchAllow(b, n) })
		t.Logf("Allow with %d breakers: %d ns/op, %d allocs/op", n, r.NsPerOp(), r.AllocsPerOp())
		if r.NsPerOp() > 1000 || r.AllocsPerOp() != 0 {
			t.Fatalf("Allow with %d breakers: %v", n, r)
		}
	}
}
