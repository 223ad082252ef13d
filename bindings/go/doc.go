// Package wv is the Go binding of wv, embeddable GPTQ LLaMA inference, over its C API
// (wv.h) and nothing else.
//
//	model, err := wv.Load("models/kjv-tiny", nil)
//	if err != nil { ... }
//	defer model.Close()
//	session, err := model.NewSession(nil)
//	if err != nil { ... }
//	defer session.Close()
//	for tok, err := range session.Chat(ctx, "Who made the heaven?", wv.Greedy(64)) {
//		if err != nil { ... }
//		fmt.Print(tok.Text)
//	}
//
// Generate and Chat return an iter.Seq2[Token, error]: range over it to stream tokens;
// cancelling the context cancels the generation (wv_session_cancel), and breaking out of the
// loop stops it. Errors are *Error values carrying the wv status code; compare them with
// errors.Is against ErrCancelled, ErrIO, ErrBusy and the other sentinels.
//
// Close every Model and Session you open; a cleanup frees forgotten ones when they are garbage
// collected, but only as a safety net. A Model is safe for concurrent use; a Session runs one
// call at a time (a concurrent call fails with ErrBusy), and different sessions run in
// parallel.
//
// # Finding libwv
//
// The binding is built with cgo against the wv.h in its include folder and opens libwv at run
// time, on first use, from: $WV_LIBRARY_PATH (the library file or its folder; nothing else is
// tried when it is set); the repository's target/release (when the package is used from a
// checkout of wv); the dynamic linker's search path (LD_LIBRARY_PATH, the ld.so cache); and
// /usr/local/lib, the documented install location. A libwv whose ABI version
// (wv_abi_version) does not match wv.h is refused with an error matching ErrABIMismatch.
package wv
