package steadfast

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// The agent's API snapshot (GET /v1/snapshot).
type apiSnapshot struct {
	Index    uint64 `json:"index"`
	Breakers map[string]struct {
		State         string  `json:"state"`
		AdmitRatio    float64 `json:"admit_ratio"`
		Forced        *string `json:"forced"`
		Openings      uint32  `json:"openings"`
		SinceUnixMs   int64   `json:"since_unix_ms"`
		Reason        string  `json:"reason"`
		InputsUnknown bool    `json:"inputs_unknown"`
		UnknownReason *string `json:"unknown_reason"`
	} `json:"breakers"`
	Signals map[string]struct {
		Level         float64 `json:"level"`
		Source        string  `json:"source"`
		InputsUnknown bool    `json:"inputs_unknown"`
		UnknownReason *string `json:"unknown_reason"`
	} `json:"signals"`
}

func (s *apiSnapshot) snapshot() Snapshot {
	out := Snapshot{Index: s.Index, Breakers: map[string]BreakerState{}, Signals: map[string]SignalState{}}
	for name, b := range s.Breakers {
		forced := ""
		if b.Forced != nil {
			forced = *b.Forced
		}
		out.Breakers[name] = BreakerState{
			State: b.State, AdmitRatio: b.AdmitRatio, Index: s.Index, Forced: forced,
			Openings: b.Openings, Since: time.UnixMilli(b.SinceUnixMs), Reason: b.Reason,
			InputsUnknown: b.InputsUnknown, UnknownReason: deref(b.UnknownReason),
		}
	}
	for name, v := range s.Signals {
		out.Signals[name] = SignalState{Level: v.Level, Source: v.Source, InputsUnknown: v.InputsUnknown,
			UnknownReason: deref(v.UnknownReason)}
	}
	return out
}

// apiClient talks HTTP over the agent's unix socket.
func (c *Client) apiClient() *http.Client {
	socket := c.opts.APISocket
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}}
}

// Query asks the API for the snapshot once its index passes index, waiting at most wait (a
// blocking query; wait 0 answers at once).
func (c *Client) Query(ctx context.Context, index uint64, wait time.Duration) (Snapshot, error) {
	return c.query(ctx, c.apiClient(), index, wait)
}

func (c *Client) query(ctx context.Context, hc *http.Client, index uint64, wait time.Duration) (Snapshot, error) {
	url := "http://steadfast/v1/snapshot?index=" + strconv.FormatUint(index, 10) +
		"&wait=" + strconv.FormatInt(wait.Milliseconds(), 10) + "ms"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Snapshot{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Snapshot{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return Snapshot{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Snapshot{}, fmt.Errorf("steadfast API: %s: %s", resp.Status, body)
	}
	var s apiSnapshot
	if err := json.Unmarshal(body, &s); err != nil {
		return Snapshot{}, fmt.Errorf("steadfast API: bad snapshot: %w", err)
	}
	return s.snapshot(), nil
}

// Watch follows the snapshot over the API socket with blocking queries: one snapshot now,
// then one per change, until ctx ends (then the channel is closed). It retries after errors
// and agent restarts (with backoff up to 5 s); the agent's index never goes backwards across
// restarts, so a restart is answered at once. If an agent lost its state (a smaller index),
// the watch takes the new index instead of waiting.
func (c *Client) Watch(ctx context.Context) <-chan Snapshot {
	ch := make(chan Snapshot, 1)
	hc := c.apiClient()
	go func() {
		defer close(ch)
		var index uint64
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			snap, err := c.query(ctx, hc, index, time.Minute)
			if err != nil {
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				if backoff *= 2; backoff > 5*time.Second {
					backoff = 5 * time.Second
				}
				continue
			}
			backoff = 100 * time.Millisecond
			if snap.Index == index {
				continue
			}
			index = snap.Index
			select {
			case ch <- snap:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
