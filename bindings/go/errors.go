package wv

import (
	"errors"
	"fmt"
)

// Status is a wv status code (wv_status in wv.h). The values are wv.h's and never change.
type Status int32

// The status codes of wv.h.
const (
	StatusOK              Status = 0  // WV_OK
	StatusInvalidArgument Status = 1  // WV_ERR_INVALID_ARGUMENT
	StatusIO              Status = 2  // WV_ERR_IO
	StatusModelFormat     Status = 3  // WV_ERR_MODEL_FORMAT
	StatusUnsupported     Status = 4  // WV_ERR_UNSUPPORTED
	StatusOutOfMemory     Status = 5  // WV_ERR_OUT_OF_MEMORY
	StatusDevice          Status = 6  // WV_ERR_DEVICE
	StatusContextFull     Status = 7  // WV_ERR_CONTEXT_FULL
	StatusCancelled       Status = 8  // WV_ERR_CANCELLED
	StatusBusy            Status = 9  // WV_ERR_BUSY
	StatusInternal        Status = 10 // WV_ERR_INTERNAL
	StatusDone            Status = 11 // WV_DONE (not an error)
	StatusTimeout         Status = 12 // WV_TIMEOUT (not an error)
	StatusBufferTooSmall  Status = 13 // WV_ERR_BUFFER_TOO_SMALL
)

var statusNames = [...]string{
	"ok", "invalid argument", "i/o error", "model format error", "unsupported",
	"out of memory", "device error", "context full", "cancelled", "busy", "internal error",
	"done", "timeout", "buffer too small",
}

// String is the status's stable short name, as wv_status_name gives it.
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown status"
}

// Error is a failed wv call: the status code, the wv function that failed, and
// wv_last_error()'s message. Compare it with errors.Is against the Err* sentinels:
//
//	if errors.Is(err, wv.ErrCancelled) { ... }
//
// A generation cancelled through its context.Context also matches the context's error
// (context.Canceled or context.DeadlineExceeded); an error on a closed Model or Session matches
// ErrClosed; a libwv of another ABI matches ErrABIMismatch.
type Error struct {
	Code    Status // why it failed
	Op      string // the wv function that failed ("wv_load", "wv_generate", ...)
	Message string // what wv_last_error() said (or the binding's own explanation)
	err     error  // the underlying cause, for errors.Is and errors.As
	isCode  bool   // a sentinel: matches every *Error with its Code
}

func (e *Error) Error() string {
	if e.isCode {
		return "wv: " + e.Code.String()
	}
	s := "wv: "
	if e.Op != "" {
		s += e.Op + ": "
	}
	s += e.Code.String()
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is the sentinel of e's Code (ErrIO for StatusIO, ...).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.isCode && t.Code == e.Code
}

// Unwrap returns the cause: the context's error for a cancelled generation, ErrClosed,
// ErrABIMismatch or ErrLibraryNotFound; nil for errors reported by libwv.
func (e *Error) Unwrap() error { return e.err }

func sentinel(code Status) *Error { return &Error{Code: code, isCode: true} }

// Sentinels for errors.Is, one per error status.
var (
	ErrInvalidArgument = sentinel(StatusInvalidArgument)
	ErrIO              = sentinel(StatusIO)
	ErrModelFormat     = sentinel(StatusModelFormat)
	ErrUnsupported     = sentinel(StatusUnsupported)
	ErrOutOfMemory     = sentinel(StatusOutOfMemory)
	ErrDevice          = sentinel(StatusDevice)
	ErrContextFull     = sentinel(StatusContextFull)
	ErrCancelled       = sentinel(StatusCancelled)
	ErrBusy            = sentinel(StatusBusy)
	ErrInternal        = sentinel(StatusInternal)
)

var (
	// ErrClosed: the Model or Session was closed (the *Error's Code is StatusInvalidArgument).
	ErrClosed = errors.New("wv: use of a closed handle")
	// ErrABIMismatch: libwv speaks another ABI than the wv.h this binding was built with (the
	// *Error's Code is StatusUnsupported).
	ErrABIMismatch = errors.New("wv: libwv's ABI does not match this binding")
	// ErrLibraryNotFound: libwv could not be opened (the *Error's Code is StatusIO).
	ErrLibraryNotFound = errors.New("wv: libwv not found")
)

func newError(code Status, op, format string, args ...any) *Error {
	return &Error{Code: code, Op: op, Message: fmt.Sprintf(format, args...)}
}
