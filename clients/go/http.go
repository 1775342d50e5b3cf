package steadfast

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Guard says when Middleware refuses a request.
type Guard struct {
	// Breaker: refuse while Allow(Breaker) is false (shed; a share of requests in probe).
	Breaker string
	// Signal and Level: refuse while the signal is at or above Level (Level 0 means 1).
	Signal string
	Level  float64
	// RetryAfter is sent in the Retry-After header, rounded up to seconds (default 1 s).
	RetryAfter time.Duration
}

// Middleware answers 503 Service Unavailable with Retry-After, without calling next, while
// the guard's breaker sheds or its signal is at or above its level. It fails open like the
// client: without a healthy agent every request goes through.
func (c *Client) Middleware(g Guard, next http.Handler) http.Handler {
	level := g.Level
	if level <= 0 {
		level = 1
	}
	secs := int64(math.Ceil(g.RetryAfter.Seconds()))
	if secs < 1 {
		secs = 1
	}
	retryAfter := []string{strconv.FormatInt(secs, 10)}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refused := g.Breaker != "" && !c.Allow(g.Breaker)
		if !refused && g.Signal != "" {
			v, _ := c.Signal(g.Signal)
			refused = v >= level
		}
		if refused {
			w.Header()["Retry-After"] = retryAfter
			http.Error(w, "503 service unavailable: shedding load", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ErrShed is what a RoundTripper returns (wrapped in a *ShedError) for a call it refused.
var ErrShed = errors.New("steadfast: breaker sheds")

// ShedError is a call refused by a breaker, without dialing.
type ShedError struct{ Breaker string }

func (e *ShedError) Error() string        { return "steadfast: breaker " + e.Breaker + " sheds this call" }
func (e *ShedError) Is(target error) bool { return target == ErrShed }

type roundTripper struct {
	c       *Client
	breaker string
	base    http.RoundTripper
}

// RoundTripper wraps base (nil: http.DefaultTransport) so that a call is refused with a
// *ShedError, without dialing, while Allow(breaker) is false.
func (c *Client) RoundTripper(breaker string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &roundTripper{c: c, breaker: breaker, base: base}
}

func (t *roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if !t.c.Allow(t.breaker) {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, &ShedError{Breaker: t.breaker}
	}
	return t.base.RoundTrip(r)
}
