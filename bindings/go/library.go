package wv

/*
#cgo CFLAGS: -I${SRCDIR}/include
#cgo linux LDFLAGS: -ldl
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// Compile-time checks that the Status values are wv.h's.
var (
	_ [StatusInvalidArgument - C.WV_ERR_INVALID_ARGUMENT]struct{}
	_ [C.WV_ERR_INVALID_ARGUMENT - StatusInvalidArgument]struct{}
	_ [StatusBufferTooSmall - C.WV_ERR_BUFFER_TOO_SMALL]struct{}
	_ [C.WV_ERR_BUFFER_TOO_SMALL - StatusBufferTooSmall]struct{}
	_ [StatusCancelled - C.WV_ERR_CANCELLED]struct{}
	_ [C.WV_ERR_CANCELLED - StatusCancelled]struct{}
	_ [StatusTimeout - C.WV_TIMEOUT]struct{}
	_ [C.WV_TIMEOUT - StatusTimeout]struct{}
)

// HeaderABIVersion is the ABI version of the wv.h this binding was built with
// (major<<16 | minor). A libwv is usable when its major is the same and its minor at least this
// one's.
const HeaderABIVersion = uint32(C.WV_ABI_VERSION_MAJOR)<<16 | uint32(C.WV_ABI_VERSION_MINOR)

// LibraryName is libwv's file name on this system.
var LibraryName = func() string {
	switch runtime.GOOS {
	case "darwin":
		return "libwv.dylib"
	case "windows":
		return "wv.dll"
	}
	return "libwv.so"
}()

var lib struct {
	sync.Mutex
	path string
}

// libraryCandidates lists where libwv is looked for, in order: WV_LIBRARY_PATH (the library
// file or its folder; nothing else is tried when it is set), the repository's
// target/release when this package is used from a checkout of wv, the dynamic linker's search
// (LD_LIBRARY_PATH, the ld.so cache, /usr/lib), and /usr/local/lib.
func libraryCandidates() (paths []string, explicit bool) {
	if p := os.Getenv("WV_LIBRARY_PATH"); p != "" {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			p = filepath.Join(p, LibraryName)
		}
		return []string{p}, true
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dev := filepath.Join(filepath.Dir(file), "..", "..", "target", "release", LibraryName)
		if _, err := os.Stat(dev); err == nil {
			paths = append(paths, filepath.Clean(dev))
		}
	}
	return append(paths, LibraryName, filepath.Join("/usr/local/lib", LibraryName)), false
}

// openLibrary opens libwv once (a failure is retried by the next call) and checks its ABI.
func openLibrary() (string, error) {
	lib.Lock()
	defer lib.Unlock()
	if lib.path != "" {
		return lib.path, nil
	}
	paths, explicit := libraryCandidates()
	var tried []string
	for _, p := range paths {
		cp := C.CString(p)
		var abi C.uint32_t
		var buf [512]C.char
		rc := C.wvgo_open(cp, &abi, &buf[0], C.size_t(len(buf)))
		C.free(unsafe.Pointer(cp))
		switch rc {
		case 0:
			lib.path = p
			return p, nil
		case 2:
			v := uint32(abi)
			return "", &Error{Code: StatusUnsupported, Op: "wv_abi_version", err: ErrABIMismatch,
				Message: fmt.Sprintf("%s has ABI version %d.%d, but this binding was built for %d.%d "+
					"(it needs the same major and at least that minor): use a matching libwv",
					p, v>>16, v&0xffff, HeaderABIVersion>>16, HeaderABIVersion&0xffff)}
		default:
			tried = append(tried, C.GoString(&buf[0]))
		}
	}
	hint := "set WV_LIBRARY_PATH to libwv or its folder, or install it in /usr/local/lib"
	if explicit {
		hint = "WV_LIBRARY_PATH is " + os.Getenv("WV_LIBRARY_PATH")
	}
	return "", &Error{Code: StatusIO, Op: "dlopen", err: ErrLibraryNotFound,
		Message: fmt.Sprintf("cannot open libwv (%s): %s", hint, strings.Join(tried, "; "))}
}

// LibraryPath opens libwv if it is not open yet and returns the path it was opened from.
func LibraryPath() (string, error) { return openLibrary() }

// ABIVersion is the ABI version of the libwv in use (major<<16 | minor), opening it if needed.
func ABIVersion() (uint32, error) {
	if _, err := openLibrary(); err != nil {
		return 0, err
	}
	return uint32(C.wvgo_wv_abi_version()), nil
}

// Version is libwv's version ("0.1.0"), opening it if needed.
func Version() (string, error) {
	if _, err := openLibrary(); err != nil {
		return "", err
	}
	return C.GoString(C.wvgo_wv_version()), nil
}

// call runs f, a wv call, on one OS thread together with wv_last_error (which is per thread),
// and turns a failure into an *Error.
func call(op string, f func() C.wv_status) error {
	runtime.LockOSThread()
	st := f()
	var msg string
	if st != C.WV_OK {
		msg = C.GoString(C.wvgo_wv_last_error())
	}
	runtime.UnlockOSThread()
	if st == C.WV_OK {
		return nil
	}
	return &Error{Code: Status(st), Op: op, Message: msg}
}

// cString is s as a C string (free it with C.free); a NUL inside s is an error, since C would
// silently cut the string there.
func cString(op, what, s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, newError(StatusInvalidArgument, op, "%s contains a NUL byte", what)
	}
	return C.CString(s), nil
}
