package wv

/*
#include "shim.h"
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// LoadOptions are the options of Load. The zero value (or nil) means the defaults.
type LoadOptions struct {
	// Device is "auto" (the GPU when usable, else the CPU; also ""), "cpu", "cuda" or "cuda:N".
	Device string
	// Progress, when set, is called on the loading goroutine with the fraction of the weights
	// loaded (0 to 1); returning false aborts the load, which then fails with ErrCancelled.
	Progress func(fraction float32) bool
}

// ModelInfo describes a loaded model (wv_model_info).
type ModelInfo struct {
	ContextLength     int    // maximum context, in tokens
	VocabSize         int    // rows of the embedding matrix
	Layers            int    // transformer layers
	HiddenSize        int    // width of the hidden state
	Heads             int    // attention heads
	KVHeads           int    // key/value heads
	QuantBits         int    // GPTQ bits per weight; 0 for a dense checkpoint
	QuantGroupSize    int    // GPTQ group size; -1 for one group; 0 when dense
	QuantActOrder     bool   // act-order (desc_act)
	BOSToken          int32  // beginning-of-sequence token id
	EOSToken          int32  // end-of-sequence token id
	Device            string // "cpu" or "cuda"
	DeviceDescription string // what the device is
	WeightBytes       uint64 // bytes of weights held by the backend
	KVBytesPerToken   uint64 // bytes of KV cache per token of context in a session
}

// Model is a loaded checkpoint (wv_model). It is immutable and safe for concurrent use by any
// number of goroutines and sessions. Close it when done; sessions made from it keep its weights
// alive until they are closed too.
type Model struct {
	o owner
}

// progressCall is what the progress callback's cgo.Handle refers to.
type progressCall struct {
	fn    func(float32) bool
	panic any
}

// Load loads the GPTQ (or dense) LLaMA checkpoint in the folder dir (config.json,
// quantize_config.json, *.safetensors, tokenizer.model or tokenizer.json). opts may be nil.
// It opens libwv first (see LibraryPath) and refuses one of another ABI (ErrABIMismatch).
// Errors are *Error: ErrIO (a missing folder or file), ErrModelFormat, ErrUnsupported,
// ErrOutOfMemory, ErrDevice, ErrInvalidArgument (a bad device string), ErrCancelled.
func Load(dir string, opts *LoadOptions) (*Model, error) {
	if _, err := openLibrary(); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &LoadOptions{}
	}
	cdir, err := cString("wv_load", "the model folder", dir)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cdir))
	device := opts.Device
	if device == "" {
		device = "auto"
	}
	cdevice, err := cString("wv_load", "the device", device)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cdevice))

	var lo C.struct_wv_load_options
	C.wvgo_load_defaults(&lo)
	lo.device = cdevice
	var progress C.uintptr_t
	var pc *progressCall
	if opts.Progress != nil {
		pc = &progressCall{fn: opts.Progress}
		h := cgo.NewHandle(pc)
		defer h.Delete()
		progress = C.uintptr_t(h)
	}
	var ptr *C.struct_wv_model
	err = call("wv_load", func() C.wv_status { return C.wvgo_load(cdir, &lo, progress, &ptr) })
	if pc != nil && pc.panic != nil {
		if err == nil {
			C.wvgo_wv_model_free(ptr)
		}
		panic(pc.panic)
	}
	if err != nil {
		return nil, err
	}
	return newModel(ptr), nil
}

func newModel(ptr *C.struct_wv_model) *Model {
	m := &Model{o: owner{ptr: unsafe.Pointer(ptr), what: "model",
		free: func(p unsafe.Pointer) { C.wvgo_wv_model_free((*C.struct_wv_model)(p)) }}}
	m.o.cleanup = runtime.AddCleanup(m, func(p unsafe.Pointer) {
		C.wvgo_wv_model_free((*C.struct_wv_model)(p))
	}, m.o.ptr)
	return m
}

// Close frees the model (wv_model_free). Sessions made from it stay usable. Closing twice is
// a no-op; using a closed model returns an error matching ErrClosed.
func (m *Model) Close() error {
	m.o.close()
	return nil
}

func (m *Model) use(op string, f func(*C.struct_wv_model) C.wv_status) error {
	p, err := m.o.acquire(op)
	if err != nil {
		return err
	}
	defer m.o.release()
	return call(op, func() C.wv_status { return f((*C.struct_wv_model)(p)) })
}

// Info describes the model.
func (m *Model) Info() (ModelInfo, error) {
	var i C.struct_wv_model_info
	i.struct_size = C.uint32_t(unsafe.Sizeof(i))
	var info ModelInfo
	err := m.use("wv_model_get_info", func(p *C.struct_wv_model) C.wv_status {
		st := C.wvgo_wv_model_get_info(p, &i)
		if st == C.WV_OK { // the strings live as long as the handle, which we hold
			info.Device = C.GoString(i.device)
			info.DeviceDescription = C.GoString(i.device_description)
		}
		return st
	})
	if err != nil {
		return ModelInfo{}, err
	}
	info.ContextLength = int(i.context_length)
	info.VocabSize = int(i.vocab_size)
	info.Layers = int(i.n_layers)
	info.HiddenSize = int(i.hidden_size)
	info.Heads = int(i.n_heads)
	info.KVHeads = int(i.n_kv_heads)
	info.QuantBits = int(i.quant_bits)
	info.QuantGroupSize = int(i.quant_group_size)
	info.QuantActOrder = i.quant_act_order != 0
	info.BOSToken = int32(i.bos_token)
	info.EOSToken = int32(i.eos_token)
	info.WeightBytes = uint64(i.weight_bytes)
	info.KVBytesPerToken = uint64(i.kv_bytes_per_token)
	return info, nil
}

// Tokenize returns the token ids of text; with addSpecial, BOS (and EOS if the tokenizer
// config says so) are added.
func (m *Model) Tokenize(text string, addSpecial bool) ([]int32, error) {
	ctext, err := cString("wv_tokenize", "the text", text)
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(ctext))
	var ids []int32
	err = m.use("wv_tokenize", func(p *C.struct_wv_model) C.wv_status {
		var n C.size_t
		if st := C.wvgo_wv_tokenize(p, ctext, C.bool(addSpecial), nil, 0, &n); st != C.WV_OK || n == 0 {
			return st
		}
		ids = make([]int32, n)
		st := C.wvgo_wv_tokenize(p, ctext, C.bool(addSpecial), (*C.int32_t)(unsafe.Pointer(&ids[0])), n, &n)
		ids = ids[:n]
		return st
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// Detokenize returns the text of token ids (special tokens are skipped).
func (m *Model) Detokenize(ids []int32) (string, error) {
	var ptr *C.int32_t
	if len(ids) > 0 {
		ptr = (*C.int32_t)(unsafe.Pointer(&ids[0]))
	}
	var text string
	err := m.use("wv_detokenize", func(p *C.struct_wv_model) C.wv_status {
		var n C.size_t
		if st := C.wvgo_wv_detokenize(p, ptr, C.size_t(len(ids)), nil, 0, &n); st != C.WV_OK {
			return st
		}
		buf := make([]byte, n)
		st := C.wvgo_wv_detokenize(p, ptr, C.size_t(len(ids)), (*C.char)(unsafe.Pointer(&buf[0])), n, &n)
		if st == C.WV_OK {
			text = string(buf[:n-1])
		}
		return st
	})
	return text, err
}

// TokenPiece returns the vocabulary string of one token id ("▁Hello", "<0x0A>", "</s>").
func (m *Model) TokenPiece(id int32) (string, error) {
	var piece string
	err := m.use("wv_token_to_piece", func(p *C.struct_wv_model) C.wv_status {
		var n C.size_t
		if st := C.wvgo_wv_token_to_piece(p, C.int32_t(id), nil, 0, &n); st != C.WV_OK {
			return st
		}
		buf := make([]byte, n)
		st := C.wvgo_wv_token_to_piece(p, C.int32_t(id), (*C.char)(unsafe.Pointer(&buf[0])), n, &n)
		if st == C.WV_OK {
			piece = string(buf[:n-1])
		}
		return st
	})
	return piece, err
}
