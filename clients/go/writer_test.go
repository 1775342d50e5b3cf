package steadfast

// A page writer built from the documented layout (docs/state-page.md), independent of the
// agent, for the tests.

import (
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

type writer struct {
	data      []byte
	names     []string
	noSeqlock bool // the negative control of the torn-read test
}

func createPage(t testing.TB, path string, breakers, signals []string) *writer {
	t.Helper()
	names := append(append([]string{}, breakers...), signals...)
	namesOff := 64 + 64*len(names)
	size := namesOff
	for _, n := range names {
		size += len(n)
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{data: data, names: names}
	copy(data, "STDFPAGE")
	atomic.StoreUint32(w.u32(8), 1)
	atomic.StoreUint64(w.u64(24), 7)
	atomic.StoreUint64(w.u64(32), 1)
	atomic.StoreUint64(w.u64(40), uint64(time.Now().UnixNano()))
	atomic.StoreUint32(w.u32(48), 4242)
	atomic.StoreUint32(w.u32(52), uint32(len(breakers)))
	atomic.StoreUint32(w.u32(56), uint32(len(signals)))
	atomic.StoreUint32(w.u32(60), uint32(namesOff))
	at := namesOff
	for i, n := range names {
		o := 64 + 64*i
		copy(data[at:], n)
		atomic.StoreUint32(w.u32(o+36), uint32(len(n)))
		atomic.StoreUint32(w.u32(o+40), uint32(at))
		if i < len(breakers) {
			atomic.StoreUint64(w.u64(o+8), float64bits(1))
		}
		at += len(n)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Munmap(data) })
	return w
}

func float64bits(f float64) uint64 { return *(*uint64)(unsafe.Pointer(&f)) }

func (w *writer) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&w.data[off])) }
func (w *writer) u64(off int) *uint64 { return (*uint64)(unsafe.Pointer(&w.data[off])) }

func (w *writer) slot(name string) int {
	for i, n := range w.names {
		if n == name {
			return 64 + 64*i
		}
	}
	panic("no slot " + name)
}

func (w *writer) write(f func()) {
	if w.noSeqlock {
		f()
		return
	}
	s := atomic.LoadUint64(w.u64(16))
	atomic.StoreUint64(w.u64(16), s+1)
	f()
	atomic.StoreUint64(w.u64(16), s+2)
}

func (w *writer) set(name string, state uint32, value float64, index uint64) {
	o := w.slot(name)
	w.write(func() {
		atomic.StoreUint32(w.u32(o), state)
		atomic.StoreUint64(w.u64(o+8), float64bits(value))
		atomic.StoreUint64(w.u64(o+16), index)
		atomic.StoreUint64(w.u64(32), index)
		atomic.StoreUint64(w.u64(40), uint64(time.Now().UnixNano()))
	})
}

func (w *writer) status(s uint32) { w.write(func() { atomic.StoreUint32(w.u32(12), s) }) }

func (w *writer) updated(t time.Time) {
	w.write(func() { atomic.StoreUint64(w.u64(40), uint64(t.UnixNano())) })
}
