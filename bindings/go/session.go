package wv

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"iter"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"unsafe"
)

// SessionOptions are the options of NewSession. The zero value (or nil) means the defaults.
type SessionOptions struct {
	// ContextLength is the number of positions the KV cache holds; 0 means the model's full
	// context.
	ContextLength int
	// SystemPrompt is the chat system line used by Chat; "" means Vicuna's ("A chat between a
	// curious user and an artificial intelligence assistant. ...") unless NoSystemPrompt is set.
	SystemPrompt string
	// NoSystemPrompt makes Chat use no system line at all.
	NoSystemPrompt bool
}

// SeedRandom as GenerateOptions.Seed seeds the sampler from the clock.
const SeedRandom uint64 = C.WV_SEED_RANDOM

// NoToken is Token.ID for text released at the end of generation without a token of its own.
const NoToken int32 = C.WV_NO_TOKEN

// GenerateOptions are the settings of one generation (wv_generate_options). As in C, every
// field is used as it is and zero means "off": Temperature 0 is greedy decoding, MaxTokens 0 no
// limit, TopK/TopP/RepetitionPenalty 0 disabled, Seed 0 a fixed seed. Passing nil instead
// means the model card's defaults, which DefaultGenerateOptions returns for changing.
type GenerateOptions struct {
	MaxTokens         int      // the most tokens to generate; 0: until end of sequence, a stop string or a full context
	Temperature       float32  // 0: greedy (the arg-max; TopK, TopP and RepetitionPenalty not applied)
	TopK              int      // keep the k most likely tokens; 0 disables
	TopP              float32  // nucleus sampling in (0, 1]; 0 or 1 disables
	RepetitionPenalty float32  // > 0; 0 or 1 disables
	Seed              uint64   // the sampler's seed; SeedRandom seeds from the clock
	Stop              []string // stop strings: never yielded, not even in part
}

// DefaultGenerateOptions returns the model card's defaults (wv_generate_options_init):
// MaxTokens 512, Temperature 0.7, TopK 40, TopP 0.95, RepetitionPenalty 1.1, Seed SeedRandom.
func DefaultGenerateOptions() (*GenerateOptions, error) {
	if _, err := openLibrary(); err != nil {
		return nil, err
	}
	var c C.struct_wv_generate_options
	C.wvgo_generate_defaults(&c)
	return &GenerateOptions{
		MaxTokens:         int(c.max_tokens),
		Temperature:       float32(c.temperature),
		TopK:              int(c.top_k),
		TopP:              float32(c.top_p),
		RepetitionPenalty: float32(c.repetition_penalty),
		Seed:              uint64(c.seed),
	}, nil
}

// Greedy returns options for greedy decoding of at most maxTokens tokens (0: no limit).
func Greedy(maxTokens int) *GenerateOptions { return &GenerateOptions{MaxTokens: maxTokens} }

// toC fills c from o (nil: the library's defaults); free releases the stop strings.
func (o *GenerateOptions) toC(op string, c *C.struct_wv_generate_options) (free func(), err error) {
	C.wvgo_generate_defaults(c)
	if o == nil {
		return func() {}, nil
	}
	if o.MaxTokens < 0 || o.TopK < 0 || int64(o.MaxTokens) > 0xffffffff || int64(o.TopK) > 0xffffffff {
		return nil, newError(StatusInvalidArgument, op, "MaxTokens and TopK must be between 0 and 2^32-1")
	}
	c.max_tokens = C.uint32_t(o.MaxTokens)
	c.temperature = C.float(o.Temperature)
	c.top_k = C.uint32_t(o.TopK)
	c.top_p = C.float(o.TopP)
	c.repetition_penalty = C.float(o.RepetitionPenalty)
	c.seed = C.uint64_t(o.Seed)
	if len(o.Stop) == 0 {
		return func() {}, nil
	}
	n := C.size_t(len(o.Stop))
	arr := C.wvgo_strings_new(n)
	for i, s := range o.Stop {
		cs, err := cString(op, "a stop string", s)
		if err != nil {
			C.wvgo_strings_free(arr, n)
			return nil, err
		}
		C.wvgo_strings_set(arr, C.size_t(i), cs)
	}
	c.stop = (**C.char)(unsafe.Pointer(arr))
	c.n_stop = n
	return func() { C.wvgo_strings_free(arr, n) }, nil
}

// Session is one conversation on a model (wv_session): its tokens and KV cache. A session
// runs one call at a time: a second call while one runs (another goroutine's, or one made from
// inside a Generate loop on the same session) fails with ErrBusy. Different sessions are
// independent and run in parallel, on one model or several.
type Session struct {
	o owner
}

// NewSession makes a session on the model. opts may be nil.
func (m *Model) NewSession(opts *SessionOptions) (*Session, error) {
	if opts == nil {
		opts = &SessionOptions{}
	}
	var so C.struct_wv_session_options
	C.wvgo_session_defaults(&so)
	if opts.ContextLength < 0 || int64(opts.ContextLength) > 0xffffffff {
		return nil, newError(StatusInvalidArgument, "wv_session_new", "ContextLength out of range: %d", opts.ContextLength)
	}
	so.context_length = C.uint32_t(opts.ContextLength)
	if opts.NoSystemPrompt || opts.SystemPrompt != "" {
		cs, err := cString("wv_session_new", "the system prompt", opts.SystemPrompt)
		if err != nil {
			return nil, err
		}
		defer C.free(unsafe.Pointer(cs))
		so.system_prompt = cs
	}
	var ptr *C.struct_wv_session
	err := m.use("wv_session_new", func(p *C.struct_wv_model) C.wv_status {
		return C.wvgo_wv_session_new(p, &so, &ptr)
	})
	if err != nil {
		return nil, err
	}
	s := &Session{o: owner{ptr: unsafe.Pointer(ptr), what: "session",
		free: func(p unsafe.Pointer) { C.wvgo_wv_session_free((*C.struct_wv_session)(p)) },
		// Closing a session in use cancels what runs on it.
		onClose: func(p unsafe.Pointer) { C.wvgo_wv_session_cancel((*C.struct_wv_session)(p)) }}}
	s.o.cleanup = runtime.AddCleanup(s, func(p unsafe.Pointer) {
		C.wvgo_wv_session_free((*C.struct_wv_session)(p))
	}, s.o.ptr)
	return s, nil
}

// Close frees the session (wv_session_free). A generation still running on it is cancelled,
// and the memory goes when it has stopped. Closing twice is a no-op; using a closed session
// returns an error matching ErrClosed.
func (s *Session) Close() error {
	s.o.close()
	return nil
}

func (s *Session) use(op string, f func(*C.struct_wv_session) C.wv_status) error {
	p, err := s.o.acquire(op)
	if err != nil {
		return err
	}
	defer s.o.release()
	return call(op, func() C.wv_status { return f((*C.struct_wv_session)(p)) })
}

// Token is one generated token: its id (NoToken for trailing text released without a token)
// and the UTF-8 text it completes, which may be empty (a token can end inside a character, and
// text that could begin a stop string is held back). The texts concatenated are the reply.
type Token struct {
	ID   int32
	Text string
}

// Generate appends raw prompt text to the session (BOS first in an empty session) and
// generates, yielding each token as it comes:
//
//	for tok, err := range session.Generate(ctx, "In the beginning", wv.Greedy(40)) {
//		if err != nil {
//			return err
//		}
//		fmt.Print(tok.Text)
//	}
//
// The generation runs on its own goroutine and hands the tokens over one at a time (it runs at
// most one token ahead of the loop). A failure is yielded once, as the last pair, with a zero
// Token: an *Error (ErrContextFull, ErrBusy, ...). Cancelling ctx cancels the generation
// (wv_session_cancel) within one decode step; the error then matches both ErrCancelled and
// ctx.Err(), and no token is yielded after the cancellation. Breaking out of the loop stops
// the generation without an error. Either way the
// tokens generated so far stay in the session, so the next call continues the text.
func (s *Session) Generate(ctx context.Context, prompt string, opts *GenerateOptions) iter.Seq2[Token, error] {
	return s.generate(ctx, "wv_generate", 0, prompt, opts)
}

// Chat adds one user turn in the Vicuna v1.1 template ("{system} USER: {message} ASSISTANT:")
// and generates the assistant's reply, yielding tokens as Generate does.
func (s *Session) Chat(ctx context.Context, message string, opts *GenerateOptions) iter.Seq2[Token, error] {
	return s.generate(ctx, "wv_chat", 1, message, opts)
}

// genCall is one running generation; the token callback finds it through a cgo.Handle.
type genCall struct {
	ctx     context.Context
	tokens  chan Token    // to the consuming loop, unbuffered
	stop    chan struct{} // closed when the loop has gone (break, panic)
	stopped atomic.Bool   // the callback stopped generation because ctx was done
	panic   any           // a panic in the callback (a bug), re-raised in the loop

	mu      sync.Mutex
	running bool           // wv_generate may still be running: cancelling is allowed
	session unsafe.Pointer // valid while running
}

// cancel cancels the session's running call if this call is still the one running.
func (c *genCall) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		C.wvgo_wv_session_cancel((*C.struct_wv_session)(c.session))
	}
}

func (c *genCall) finish() {
	c.mu.Lock()
	c.running = false
	c.mu.Unlock()
}

func cancelledError(op string, ctx context.Context) *Error {
	return &Error{Code: StatusCancelled, Op: op, Message: "the context is done: " + ctx.Err().Error(),
		err: context.Cause(ctx)}
}

func (s *Session) generate(ctx context.Context, op string, chat C.int, text string, opts *GenerateOptions) iter.Seq2[Token, error] {
	return func(yield func(Token, error) bool) {
		if ctx == nil {
			ctx = context.Background()
		}
		if ctx.Err() != nil {
			yield(Token{}, cancelledError(op, ctx))
			return
		}
		p, err := s.o.acquire(op)
		if err != nil {
			yield(Token{}, err)
			return
		}
		defer s.o.release()
		ctext, err := cString(op, "the prompt", text)
		if err != nil {
			yield(Token{}, err)
			return
		}
		defer C.free(unsafe.Pointer(ctext))
		var copts C.struct_wv_generate_options
		freeOpts, err := opts.toC(op, &copts)
		if err != nil {
			yield(Token{}, err)
			return
		}
		defer freeOpts()

		c := &genCall{ctx: ctx, tokens: make(chan Token), stop: make(chan struct{}), running: true, session: p}
		h := cgo.NewHandle(c)
		done := make(chan error, 1)
		go func() {
			done <- call(op, func() C.wv_status {
				return C.wvgo_generate((*C.struct_wv_session)(p), chat, ctext, &copts, C.uintptr_t(h))
			})
		}()
		stopAfter := context.AfterFunc(ctx, c.cancel)
		finished := false
		defer func() {
			if !finished { // the loop broke out or panicked: stop the generation and wait for it
				close(c.stop)
				<-done
			}
			stopAfter()
			c.finish()
			h.Delete()
		}()
		for {
			select {
			case tok := <-c.tokens:
				if ctx.Err() != nil {
					continue // cancelled: yield nothing more; the end follows at once
				}
				if !yield(tok, nil) {
					return
				}
			case err := <-done:
				finished = true
				c.finish()
				if c.panic != nil {
					panic(c.panic)
				}
				// Cancelled through ctx, by wv_session_cancel or by the callback: the same error.
				if e, ok := err.(*Error); ok && e.Code == StatusCancelled && ctx.Err() != nil ||
					err == nil && c.stopped.Load() {
					err = cancelledError(op, ctx)
				}
				if err != nil {
					yield(Token{}, err)
				}
				return
			}
		}
	}
}

// Cancel cancels the call running on the session, from any goroutine: it fails with
// ErrCancelled within one decode step. With nothing running it has no effect. (Cancelling the
// context of a Generate does the same for that call.)
func (s *Session) Cancel() {
	s.o.with(func(p unsafe.Pointer) { C.wvgo_wv_session_cancel((*C.struct_wv_session)(p)) })
}

// Reset forgets the conversation.
func (s *Session) Reset() error {
	return s.use("wv_session_reset", func(p *C.struct_wv_session) C.wv_status { return C.wvgo_wv_session_reset(p) })
}

// Truncate keeps only the first n tokens of the conversation.
func (s *Session) Truncate(n int) error {
	if n < 0 {
		return newError(StatusInvalidArgument, "wv_session_truncate", "negative token count %d", n)
	}
	return s.use("wv_session_truncate", func(p *C.struct_wv_session) C.wv_status {
		return C.wvgo_wv_session_truncate(p, C.size_t(n))
	})
}

// TokenCount is the number of tokens in the conversation (BOS, prompts and replies).
func (s *Session) TokenCount() (int, error) {
	var n C.size_t
	err := s.use("wv_session_token_count", func(p *C.struct_wv_session) C.wv_status {
		return C.wvgo_wv_session_token_count(p, &n)
	})
	return int(n), err
}

// ContextLength is the session's context length in tokens.
func (s *Session) ContextLength() (int, error) {
	var n C.size_t
	err := s.use("wv_session_context_length", func(p *C.struct_wv_session) C.wv_status {
		return C.wvgo_wv_session_context_length(p, &n)
	})
	return int(n), err
}

// Tokens returns the conversation's token ids.
func (s *Session) Tokens() ([]int32, error) {
	var ids []int32
	err := s.use("wv_session_get_tokens", func(p *C.struct_wv_session) C.wv_status {
		var n C.size_t
		if st := C.wvgo_wv_session_get_tokens(p, nil, 0, &n); st != C.WV_OK || n == 0 {
			return st
		}
		ids = make([]int32, n)
		st := C.wvgo_wv_session_get_tokens(p, (*C.int32_t)(unsafe.Pointer(&ids[0])), n, &n)
		ids = ids[:n]
		return st
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// SetTokens replaces the conversation with these token ids (BOS is not added).
func (s *Session) SetTokens(ids []int32) error {
	var ptr *C.int32_t
	if len(ids) > 0 {
		ptr = (*C.int32_t)(unsafe.Pointer(&ids[0]))
	}
	return s.use("wv_session_set_tokens", func(p *C.struct_wv_session) C.wv_status {
		return C.wvgo_wv_session_set_tokens(p, ptr, C.size_t(len(ids)))
	})
}

// SaveState returns the session's state (system prompt and tokens) for RestoreState.
func (s *Session) SaveState() ([]byte, error) {
	var buf []byte
	err := s.use("wv_session_save_state", func(p *C.struct_wv_session) C.wv_status {
		var n C.size_t
		if st := C.wvgo_wv_session_save_state(p, nil, 0, &n); st != C.WV_OK {
			return st
		}
		buf = make([]byte, n)
		st := C.wvgo_wv_session_save_state(p, (*C.uint8_t)(unsafe.Pointer(&buf[0])), n, &n)
		buf = buf[:n]
		return st
	})
	if err != nil {
		return nil, err
	}
	return buf, nil
}

// RestoreState replaces the conversation with a state from SaveState or SaveFile.
func (s *Session) RestoreState(state []byte) error {
	var ptr *C.uint8_t
	if len(state) > 0 {
		ptr = (*C.uint8_t)(unsafe.Pointer(&state[0]))
	}
	return s.use("wv_session_restore_state", func(p *C.struct_wv_session) C.wv_status {
		return C.wvgo_wv_session_restore_state(p, ptr, C.size_t(len(state)))
	})
}

// SaveFile saves the session's state to a file (written under a temporary name and renamed).
func (s *Session) SaveFile(path string) error {
	cp, err := cString("wv_session_save_file", "the path", path)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cp))
	return s.use("wv_session_save_file", func(p *C.struct_wv_session) C.wv_status {
		return C.wvgo_wv_session_save_file(p, cp)
	})
}

// RestoreFile restores a state saved by SaveFile.
func (s *Session) RestoreFile(path string) error {
	cp, err := cString("wv_session_restore_file", "the path", path)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cp))
	return s.use("wv_session_restore_file", func(p *C.struct_wv_session) C.wv_status {
		return C.wvgo_wv_session_restore_file(p, cp)
	})
}
