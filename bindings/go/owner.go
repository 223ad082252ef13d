package wv

import (
	"runtime"
	"sync"
	"unsafe"
)

// owner holds one wv handle for a Model or Session. Calls borrow the handle (acquire/release);
// Close marks it closed and frees it once no call is using it, so a Close racing a call never
// frees a handle under it. A cleanup (runtime.AddCleanup) frees a handle that was never closed,
// as a safety net only: close what you open.
type owner struct {
	mu      sync.Mutex
	ptr     unsafe.Pointer
	users   int
	closed  bool
	what    string               // "model" or "session", for messages
	free    func(unsafe.Pointer) // the wv *_free function
	cleanup runtime.Cleanup      // the safety net, stopped by close
	onClose func(unsafe.Pointer) // called (under mu) when closed while in use
}

// acquire borrows the handle for one call; release must follow.
func (o *owner) acquire(op string) (unsafe.Pointer, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.ptr == nil {
		return nil, &Error{Code: StatusInvalidArgument, Op: op, Message: "the " + o.what + " is closed", err: ErrClosed}
	}
	o.users++
	return o.ptr, nil
}

func (o *owner) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.users--
	if o.closed && o.users == 0 && o.ptr != nil {
		o.free(o.ptr)
		o.ptr = nil
	}
}

// with runs f with the handle, if it is still open (for Cancel: never an error).
func (o *owner) with(f func(unsafe.Pointer)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed && o.ptr != nil {
		f(o.ptr)
	}
}

func (o *owner) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.closed = true
	o.cleanup.Stop()
	if o.ptr == nil {
		return
	}
	if o.users == 0 {
		o.free(o.ptr)
		o.ptr = nil
	} else if o.onClose != nil {
		o.onClose(o.ptr)
	}
}
