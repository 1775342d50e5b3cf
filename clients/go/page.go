package steadfast

// The state page as a reader sees it (layout: docs/state-page.md): a read-only shared
// mapping, a name index built once per file, and seqlock reads made of atomic loads only.

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unicode/utf8"
	"unsafe"
)

const (
	pageMagic   = "STDFPAGE"
	pageVersion = 1
	headerBytes = 64
	slotBytes   = 64

	statusRunning    = 0
	statusStopped    = 1
	statusSuperseded = 2

	hVersion    = 8
	hStatus     = 12
	hSequence   = 16
	hGeneration = 24
	hIndex      = 32
	hUpdated    = 40
	hPid        = 48
	hBreakers   = 52
	hSignals    = 56
	hNames      = 60

	sState    = 0
	sFlags    = 4
	sValue    = 8
	sChanged  = 16
	sSince    = 24
	sOpenings = 32
	sNameLen  = 36
	sNameOff  = 40

	flagInputsUnknown = 1
	flagForcedOpen    = 2
	flagForcedClose   = 4

	// Retries while the agent is mid-write before a reader gives up (and fails open). A
	// write takes well under a microsecond.
	maxTries = 10000
)

// ErrFormat: the file is not a state page this client can read.
var ErrFormat = errors.New("steadfast: not a readable state page")

type slotRef struct {
	name    string
	off     uintptr
	breaker bool
}

// mapping is one mapped file. It is unmapped by a finalizer once nothing refers to it, so a
// reader that loaded it (and keeps it alive until its last load) never reads unmapped memory.
type mapping struct {
	data       []byte
	base       unsafe.Pointer
	breakers   map[string]uintptr
	signals    map[string]uintptr
	slots      []slotRef
	generation uint64
	pid        uint32
	dev, ino   uint64
}

func (m *mapping) u32(off uintptr) *uint32 { return (*uint32)(unsafe.Add(m.base, off)) }
func (m *mapping) u64(off uintptr) *uint64 { return (*uint64)(unsafe.Add(m.base, off)) }

func openMapping(path string) (*mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < headerBytes || size > 1<<32-1 {
		return nil, fmt.Errorf("%w: %s: size %d", ErrFormat, path, size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, &os.PathError{Op: "mmap", Path: path, Err: err}
	}
	m := &mapping{
		data:     data,
		base:     unsafe.Pointer(&data[0]),
		breakers: map[string]uintptr{},
		signals:  map[string]uintptr{},
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		m.dev, m.ino = uint64(st.Dev), st.Ino
	}
	bad := func(what string) (*mapping, error) {
		_ = syscall.Munmap(data)
		return nil, fmt.Errorf("%w: %s: %s", ErrFormat, path, what)
	}
	if string(data[:8]) != pageMagic {
		return bad("magic")
	}
	if v := atomic.LoadUint32(m.u32(hVersion)); v != pageVersion {
		return bad(fmt.Sprintf("layout version %d, this client reads %d", v, pageVersion))
	}
	m.generation = atomic.LoadUint64(m.u64(hGeneration))
	m.pid = atomic.LoadUint32(m.u32(hPid))
	nb := uint64(atomic.LoadUint32(m.u32(hBreakers)))
	ns := uint64(atomic.LoadUint32(m.u32(hSignals)))
	names := uint64(atomic.LoadUint32(m.u32(hNames)))
	if headerBytes+(nb+ns)*slotBytes > names || names > uint64(size) {
		return bad("slot counts and name table disagree")
	}
	for i := uint64(0); i < nb+ns; i++ {
		o := uintptr(headerBytes + i*slotBytes)
		n := uint64(atomic.LoadUint32(m.u32(o + sNameLen)))
		at := uint64(atomic.LoadUint32(m.u32(o + sNameOff)))
		if at < names || at+n > uint64(size) {
			return bad("a name outside the name table")
		}
		name := string(data[at : at+n])
		if !utf8.ValidString(name) {
			return bad("a name that is not UTF-8")
		}
		if i < nb {
			m.breakers[name] = o
		} else {
			m.signals[name] = o
		}
		m.slots = append(m.slots, slotRef{name: name, off: o, breaker: i < nb})
	}
	runtime.SetFinalizer(m, func(m *mapping) { _ = syscall.Munmap(m.data) })
	return m, nil
}

// stateValue is a seqlock read of one slot's state and value; ok is false when the agent
// seems stuck mid-write.
func (m *mapping) stateValue(o uintptr) (state uint32, value float64, ok bool) {
	seq := m.u64(hSequence)
	for i := 0; i < maxTries; i++ {
		s1 := atomic.LoadUint64(seq)
		if s1&1 == 0 {
			state = atomic.LoadUint32(m.u32(o + sState))
			bits := atomic.LoadUint64(m.u64(o + sValue))
			if atomic.LoadUint64(seq) == s1 {
				return state, float64frombits(bits), true
			}
		}
	}
	return 0, 0, false
}

type rawSlot struct {
	state, flags, openings uint32
	value                  float64
	changed, since         uint64
}

// slot reads every field of a slot (inside a seqlock read).
func (m *mapping) slot(o uintptr) rawSlot {
	return rawSlot{
		state:    atomic.LoadUint32(m.u32(o + sState)),
		flags:    atomic.LoadUint32(m.u32(o + sFlags)),
		value:    float64frombits(atomic.LoadUint64(m.u64(o + sValue))),
		changed:  atomic.LoadUint64(m.u64(o + sChanged)),
		since:    atomic.LoadUint64(m.u64(o + sSince)),
		openings: atomic.LoadUint32(m.u32(o + sOpenings)),
	}
}

type rawHeader struct {
	status         uint32
	index, updated uint64
}

func (m *mapping) header() rawHeader {
	return rawHeader{
		status:  atomic.LoadUint32(m.u32(hStatus)),
		index:   atomic.LoadUint64(m.u64(hIndex)),
		updated: atomic.LoadUint64(m.u64(hUpdated)),
	}
}

// read runs f in a seqlock read: its copy counts only if the sequence was even and unchanged
// around it.
func (m *mapping) read(f func()) bool {
	seq := m.u64(hSequence)
	for i := 0; i < maxTries; i++ {
		s1 := atomic.LoadUint64(seq)
		if s1&1 == 0 {
			f()
			if atomic.LoadUint64(seq) == s1 {
				return true
			}
		}
	}
	return false
}

func float64frombits(b uint64) float64 { return math.Float64frombits(b) }
