package wv

/*
#include "shim.h"
*/
import "C"

import (
	"runtime/cgo"
	"sync/atomic"
)

// The Go side of wv's callbacks. user_data is always a cgo.Handle, never a Go pointer.
// Nothing here may panic into C: a panic is recovered, stops the call, and is re-raised on the
// goroutine that made it.

//export wvgoOnToken
func wvgoOnToken(h C.uintptr_t, token C.int32_t, text *C.char, n C.size_t) (ret C.int32_t) {
	c := cgo.Handle(h).Value().(*genCall)
	defer func() {
		if r := recover(); r != nil {
			c.panic = r
			ret = 1
		}
	}()
	if c.ctx.Err() != nil { // a cancel that came before wv_generate started would be lost
		c.stopped.Store(true)
		return 1
	}
	tok := Token{ID: int32(token), Text: C.GoStringN(text, C.int(n))}
	select {
	case c.tokens <- tok:
		return 0
	case <-c.stop:
		return 1
	case <-c.ctx.Done():
		c.stopped.Store(true)
		return 1
	}
}

//export wvgoOnProgress
func wvgoOnProgress(h C.uintptr_t, fraction C.float) (ret C.int32_t) {
	p := cgo.Handle(h).Value().(*progressCall)
	defer func() {
		if r := recover(); r != nil {
			p.panic = r
			ret = 1
		}
	}()
	if p.fn(float32(fraction)) {
		return 0
	}
	return 1
}

// LogLevel is the severity of a log message (WV_LOG_*).
type LogLevel int32

// Log levels, from the most to the least severe.
const (
	LogError LogLevel = C.WV_LOG_ERROR
	LogWarn  LogLevel = C.WV_LOG_WARN
	LogInfo  LogLevel = C.WV_LOG_INFO
	LogDebug LogLevel = C.WV_LOG_DEBUG
)

var logger atomic.Pointer[func(LogLevel, string)]

// SetLogger sends wv's log messages at level or more severe to fn (process-wide); nil
// silences wv (the default). fn may be called from any goroutine or thread, concurrently; it
// must not call SetLogger. A panic in fn is recovered and dropped.
func SetLogger(level LogLevel, fn func(level LogLevel, message string)) error {
	if _, err := openLibrary(); err != nil {
		return err
	}
	if fn == nil {
		logger.Store(nil)
	} else {
		logger.Store(&fn)
	}
	on := C.int(0)
	if fn != nil {
		on = 1
	}
	return call("wv_set_log_callback", func() C.wv_status { return C.wvgo_set_log(on, C.int32_t(level)) })
}

//export wvgoOnLog
func wvgoOnLog(level C.int32_t, message *C.char) {
	fn := logger.Load()
	if fn == nil {
		return
	}
	defer func() { _ = recover() }()
	(*fn)(LogLevel(level), C.GoString(message))
}
