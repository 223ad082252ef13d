package wv_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	wv "github.com/wv-project/wv/bindings/go"
)

const (
	prompt = "In the beginning God created"
	// The start of the model's greedy continuation of prompt (models/kjv-tiny/golden.json).
	greedyPrefix = " the heavens, and the heavens"
)

func modelDir(t testing.TB) string {
	if d := os.Getenv("WV_TEST_MODEL"); d != "" {
		return d
	}
	d, err := filepath.Abs(filepath.Join("..", "..", "models", "kjv-tiny"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var shared struct {
	once  sync.Once
	model *wv.Model
	err   error
}

// model is one model for the whole test binary: models are shared by sessions and goroutines.
func model(t testing.TB) *wv.Model {
	t.Helper()
	shared.once.Do(func() { shared.model, shared.err = wv.Load(modelDir(t), &wv.LoadOptions{Device: "cpu"}) })
	if shared.err != nil {
		t.Fatalf("loading the test model: %v", shared.err)
	}
	return shared.model
}

func session(t testing.TB, opts *wv.SessionOptions) *wv.Session {
	t.Helper()
	s, err := model(t).NewSession(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// collect runs a generation to the end: the text, the number of tokens, the error.
func collect(seq func(func(wv.Token, error) bool)) (string, int, error) {
	var b strings.Builder
	n := 0
	for tok, err := range seq {
		if err != nil {
			return b.String(), n, err
		}
		b.WriteString(tok.Text)
		n++
	}
	return b.String(), n, nil
}

func wantCode(t *testing.T, err error, sentinel error, code wv.Status) *wv.Error {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want an error matching %v", err, sentinel)
	}
	var e *wv.Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not a *wv.Error", err)
	}
	if e.Code != code {
		t.Fatalf("code %v, want %v", e.Code, code)
	}
	return e
}

// The binding ------------------------------------------------------------------------------

func TestVendoredHeaderIsTheRepositorysWvH(t *testing.T) {
	repo, err := os.ReadFile(filepath.Join("..", "..", "include", "wv.h"))
	if err != nil {
		t.Skipf("not in a checkout of wv: %v", err)
	}
	ours, err := os.ReadFile(filepath.Join("include", "wv.h"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(repo, ours) {
		t.Fatal("bindings/go/include/wv.h differs from include/wv.h: cp include/wv.h bindings/go/include/")
	}
}

func TestLibrary(t *testing.T) {
	path, err := wv.LibraryPath()
	if err != nil {
		t.Fatal(err)
	}
	abi, err := wv.ABIVersion()
	if err != nil {
		t.Fatal(err)
	}
	if abi>>16 != wv.HeaderABIVersion>>16 || abi&0xffff < wv.HeaderABIVersion&0xffff {
		t.Fatalf("ABI %#x accepted for header %#x", abi, wv.HeaderABIVersion)
	}
	v, err := wv.Version()
	if err != nil || v == "" {
		t.Fatalf("version %q, %v", v, err)
	}
	t.Logf("libwv %s (ABI %d.%d) from %s", v, abi>>16, abi&0xffff, path)
}

func TestStatusNames(t *testing.T) {
	if wv.StatusCancelled.String() != "cancelled" || wv.StatusIO.String() != "i/o error" || wv.Status(99).String() != "unknown status" {
		t.Fatal("status names")
	}
	err := error(&wv.Error{Code: wv.StatusBusy, Op: "wv_generate", Message: "the session is in use"})
	if !errors.Is(err, wv.ErrBusy) || errors.Is(err, wv.ErrIO) {
		t.Fatal("errors.Is against sentinels")
	}
	if err.Error() != "wv: wv_generate: busy: the session is in use" {
		t.Fatal(err.Error())
	}
}

// Loading ----------------------------------------------------------------------------------

func TestLoadErrors(t *testing.T) {
	_, err := wv.Load("/nonexistent/wv-model", nil)
	e := wantCode(t, err, wv.ErrIO, wv.StatusIO)
	if e.Op != "wv_load" || !strings.Contains(e.Message, "/nonexistent/wv-model") {
		t.Fatalf("%#v", e)
	}

	_, err = wv.Load(modelDir(t), &wv.LoadOptions{Device: "tpu:7"})
	wantCode(t, err, wv.ErrInvalidArgument, wv.StatusInvalidArgument)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte("{ not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = wv.Load(dir, nil)
	wantCode(t, err, wv.ErrModelFormat, wv.StatusModelFormat)

	_, err = wv.Load("models\x00kjv", nil)
	wantCode(t, err, wv.ErrInvalidArgument, wv.StatusInvalidArgument)
}

func TestLoadProgress(t *testing.T) {
	var seen []float32
	m, err := wv.Load(modelDir(t), &wv.LoadOptions{Device: "cpu", Progress: func(f float32) bool {
		seen = append(seen, f)
		return true
	}})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if len(seen) == 0 || seen[len(seen)-1] != 1 {
		t.Fatalf("progress %v", seen)
	}

	_, err = wv.Load(modelDir(t), &wv.LoadOptions{Device: "cpu", Progress: func(float32) bool { return false }})
	wantCode(t, err, wv.ErrCancelled, wv.StatusCancelled)

	func() {
		defer func() {
			if r := recover(); r != "from progress" {
				t.Fatalf("recovered %v", r)
			}
		}()
		wv.Load(modelDir(t), &wv.LoadOptions{Device: "cpu", Progress: func(float32) bool { panic("from progress") }})
		t.Fatal("no panic")
	}()
}

// The library search and the ABI check run in a child process each (the library is opened
// once per process).
func TestLoadRefusesOtherLibraries(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler to build the fake libraries")
	}
	dir := t.TempDir()
	build := func(name, src string) string {
		c := filepath.Join(dir, name+".c")
		so := filepath.Join(dir, name+".so")
		if err := os.WriteFile(c, []byte("#include <stdint.h>\n"+src), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", so, c).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return so
	}
	cases := []struct {
		name, lib, want string
		sentinel        error
	}{
		{"abi-major", build("abi2", "uint32_t wv_abi_version(void) { return 2u << 16; }"),
			"has ABI version 2.0, but this binding was built for 1.", wv.ErrABIMismatch},
		{"missing-functions", build("abi1", "uint32_t wv_abi_version(void) { return 1u << 16; }"),
			"has no wv_", wv.ErrLibraryNotFound},
		{"not-a-library", filepath.Join(dir, "nothing-here.so"), "WV_LIBRARY_PATH is", wv.ErrLibraryNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestChildLoad$", "-test.v")
			cmd.Env = append(os.Environ(), "WV_LIBRARY_PATH="+c.lib, "WV_GO_TEST_CHILD=1",
				"WV_GO_TEST_WANT="+c.want, "WV_GO_TEST_SENTINEL="+c.sentinel.Error())
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS: TestChildLoad") {
				t.Fatalf("child: %v\n%s", err, out)
			}
		})
	}
}

func TestChildLoad(t *testing.T) {
	if os.Getenv("WV_GO_TEST_CHILD") == "" {
		t.Skip("run by TestLoadRefusesOtherLibraries")
	}
	_, err := wv.Load(modelDir(t), nil)
	if err == nil {
		t.Fatal("loaded with a wrong library")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), os.Getenv("WV_GO_TEST_WANT")) {
		t.Fatalf("error %q does not say %q", err, os.Getenv("WV_GO_TEST_WANT"))
	}
	for _, s := range []error{wv.ErrABIMismatch, wv.ErrLibraryNotFound} {
		if s.Error() == os.Getenv("WV_GO_TEST_SENTINEL") && !errors.Is(err, s) {
			t.Fatalf("%v does not match %v", err, s)
		}
	}
	if errors.Is(err, wv.ErrABIMismatch) {
		wantCode(t, err, wv.ErrUnsupported, wv.StatusUnsupported)
	} else {
		wantCode(t, err, wv.ErrIO, wv.StatusIO)
	}
}

func TestModelInfoAndTokens(t *testing.T) {
	info, err := model(t).Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.ContextLength != 512 || info.VocabSize != 32000 || info.QuantBits != 4 || info.BOSToken != 1 || info.Device != "cpu" {
		t.Fatalf("%+v", info)
	}
	ids, err := model(t).Tokenize(prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int32{1, 512, 278, 6763, 4177, 2825}; !equalIDs(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	text, err := model(t).Detokenize(ids)
	if err != nil || text != prompt {
		t.Fatalf("%q %v", text, err)
	}
	piece, err := model(t).TokenPiece(2)
	if err != nil || piece != "</s>" {
		t.Fatalf("%q %v", piece, err)
	}
	_, err = model(t).TokenPiece(1 << 30)
	wantCode(t, err, wv.ErrInvalidArgument, wv.StatusInvalidArgument)
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Generation -------------------------------------------------------------------------------

func TestGenerateGreedy(t *testing.T) {
	s := session(t, nil)
	text, n, err := collect(s.Generate(context.Background(), prompt, wv.Greedy(12)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text, greedyPrefix) || n != 12 {
		t.Fatalf("%d tokens: %q", n, text)
	}
	if c, _ := s.TokenCount(); c != 6+12 {
		t.Fatalf("token count %d", c)
	}
	// Deterministic: another session says the same.
	again, _, err := collect(session(t, nil).Generate(context.Background(), prompt, wv.Greedy(12)))
	if err != nil || again != text {
		t.Fatalf("%q != %q (%v)", again, text, err)
	}
	// And the conversation continues where it stopped.
	more, _, err := collect(s.Generate(context.Background(), "", wv.Greedy(4)))
	if err != nil || more == "" {
		t.Fatalf("%q %v", more, err)
	}
}

func TestChatAndOptions(t *testing.T) {
	s := session(t, nil)
	reply, n, err := collect(s.Chat(context.Background(), "Who made the heaven?", wv.Greedy(24)))
	if err != nil || reply == "" || n == 0 {
		t.Fatalf("%q %v", reply, err)
	}
	o := wv.Greedy(40)
	o.Stop = []string{"and"}
	text, _, err := collect(session(t, nil).Generate(context.Background(), prompt, o))
	if err != nil || text != " the heavens, " {
		t.Fatalf("%q %v", text, err)
	}
	d, err := wv.DefaultGenerateOptions()
	if err != nil || d.MaxTokens != 512 || d.Temperature != 0.7 || d.TopK != 40 || d.Seed != wv.SeedRandom {
		t.Fatalf("%+v %v", d, err)
	}
	d.MaxTokens, d.Seed = 8, 42
	s2 := session(t, nil)
	a, _, _ := collect(s2.Generate(context.Background(), prompt, d))
	s2.Reset()
	b, _, _ := collect(s2.Generate(context.Background(), prompt, d))
	if a != b || a == "" {
		t.Fatalf("seeded sampling differs: %q %q", a, b)
	}
	_, _, err = collect(s2.Generate(context.Background(), "a\x00b", nil))
	wantCode(t, err, wv.ErrInvalidArgument, wv.StatusInvalidArgument)
	_, _, err = collect(s2.Generate(context.Background(), "x", &wv.GenerateOptions{MaxTokens: -1}))
	wantCode(t, err, wv.ErrInvalidArgument, wv.StatusInvalidArgument)
}

func TestContextFull(t *testing.T) {
	s := session(t, &wv.SessionOptions{ContextLength: 16})
	_, n, err := collect(s.Generate(context.Background(), prompt, wv.Greedy(0)))
	wantCode(t, err, wv.ErrContextFull, wv.StatusContextFull)
	if n == 0 {
		t.Fatal("no tokens before the context filled up")
	}
}

// Cancellation -----------------------------------------------------------------------------

func TestCancelContextMidStream(t *testing.T) {
	s := session(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	var last error
	for _, err := range s.Generate(ctx, prompt, wv.Greedy(0)) {
		if err != nil {
			last = err
			break
		}
		if n++; n == 3 {
			cancel()
		}
	}
	e := wantCode(t, last, wv.ErrCancelled, wv.StatusCancelled)
	if !errors.Is(last, context.Canceled) {
		t.Fatalf("%v does not match context.Canceled", e)
	}
	if n != 3 {
		t.Fatalf("%d tokens after cancelling at 3", n)
	}
	// The tokens generated stay; the session is free for the next call.
	if c, _ := s.TokenCount(); c < 6+3 || c > 6+5 {
		t.Fatalf("token count %d", c)
	}
	if _, _, err := collect(s.Generate(context.Background(), " and", wv.Greedy(2))); err != nil {
		t.Fatal(err)
	}
}

func TestCancelByDeadline(t *testing.T) {
	s := session(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := collect(s.Generate(ctx, prompt, wv.Greedy(0)))
	wantCode(t, err, wv.ErrCancelled, wv.StatusCancelled)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v does not match context.DeadlineExceeded", err)
	}
}

func TestCancelledBeforeStart(t *testing.T) {
	s := session(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, n, err := collect(s.Generate(ctx, prompt, wv.Greedy(8)))
	wantCode(t, err, wv.ErrCancelled, wv.StatusCancelled)
	if n != 0 {
		t.Fatalf("%d tokens", n)
	}
	if c, _ := s.TokenCount(); c != 0 {
		t.Fatalf("token count %d", c)
	}
}

func TestSessionCancelFromAnotherGoroutine(t *testing.T) {
	s := session(t, nil)
	var n atomic.Int32
	go func() {
		for n.Load() < 5 {
			time.Sleep(time.Millisecond)
		}
		s.Cancel()
	}()
	var last error
	for _, err := range s.Generate(context.Background(), prompt, wv.Greedy(0)) {
		if err != nil {
			last = err
			break
		}
		n.Add(1)
	}
	wantCode(t, last, wv.ErrCancelled, wv.StatusCancelled)
	if errors.Is(last, context.Canceled) {
		t.Fatal("not a context cancellation")
	}
}

func TestBreakStopsGeneration(t *testing.T) {
	s := session(t, nil)
	n := 0
	for _, err := range s.Generate(context.Background(), prompt, wv.Greedy(0)) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 2 {
			break
		}
	}
	// At most one token beyond the ones seen was generated, and the session is free.
	if c, _ := s.TokenCount(); c < 6+2 || c > 6+3 {
		t.Fatalf("token count %d", c)
	}
	if _, _, err := collect(s.Generate(context.Background(), "", wv.Greedy(2))); err != nil {
		t.Fatal(err)
	}
}

func TestPanicInTheLoopLeavesTheSessionUsable(t *testing.T) {
	s := session(t, nil)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v", r)
			}
		}()
		for range s.Generate(context.Background(), prompt, wv.Greedy(0)) {
			panic("boom")
		}
	}()
	if _, _, err := collect(s.Generate(context.Background(), "", wv.Greedy(2))); err != nil {
		t.Fatal(err)
	}
}

// Sessions ---------------------------------------------------------------------------------

func TestTwoSessionsOnOneModelAtOnce(t *testing.T) {
	want, _, err := collect(session(t, nil).Generate(context.Background(), prompt, wv.Greedy(24)))
	if err != nil {
		t.Fatal(err)
	}
	var inFlight, overlap atomic.Int32
	got := make([]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range 2 {
		s := session(t, nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			inFlight.Add(1)
			defer inFlight.Add(-1)
			var b strings.Builder
			for tok, err := range s.Generate(context.Background(), prompt, wv.Greedy(24)) {
				if err != nil {
					errs[i] = err
					return
				}
				if inFlight.Load() == 2 {
					overlap.Add(1)
				}
				b.WriteString(tok.Text)
			}
			got[i] = b.String()
		}()
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil || got[i] != want {
			t.Fatalf("session %d: %q, %v; want %q", i, got[i], errs[i], want)
		}
	}
	if overlap.Load() == 0 {
		t.Fatal("the two generations did not run at the same time")
	}
}

func TestBusySession(t *testing.T) {
	s := session(t, nil)
	var inner error
	for _, err := range s.Generate(context.Background(), prompt, wv.Greedy(4)) {
		if err != nil {
			t.Fatal(err)
		}
		if inner == nil {
			_, _, inner = collect(s.Generate(context.Background(), "x", wv.Greedy(1)))
		}
	}
	wantCode(t, inner, wv.ErrBusy, wv.StatusBusy)
}

func TestClose(t *testing.T) {
	m, err := wv.Load(modelDir(t), &wv.LoadOptions{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.NewSession(nil)
	if err != nil {
		t.Fatal(err)
	}
	// A session outlives its model.
	m.Close()
	m.Close()
	_, err = m.NewSession(nil)
	wantCode(t, err, wv.ErrInvalidArgument, wv.StatusInvalidArgument)
	if !errors.Is(err, wv.ErrClosed) {
		t.Fatal(err)
	}
	text, _, err := collect(s.Generate(context.Background(), prompt, wv.Greedy(6)))
	if err != nil || !strings.HasPrefix(text, " the heavens") {
		t.Fatalf("%q %v", text, err)
	}
	// Closing a session mid-generation cancels it; the loop sees ErrCancelled.
	n := 0
	var last error
	for _, err := range s.Generate(context.Background(), "", wv.Greedy(0)) {
		if err != nil {
			last = err
			break
		}
		if n++; n == 2 {
			s.Close()
		}
	}
	wantCode(t, last, wv.ErrCancelled, wv.StatusCancelled)
	_, _, err = collect(s.Generate(context.Background(), "", wv.Greedy(2)))
	if !errors.Is(err, wv.ErrClosed) {
		t.Fatal(err)
	}
	s.Cancel() // no effect, no crash
	s.Close()
}

func TestForgottenHandlesAreCollected(t *testing.T) {
	m, err := wv.Load(modelDir(t), &wv.LoadOptions{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	for range 8 {
		if _, err := m.NewSession(&wv.SessionOptions{ContextLength: 64}); err != nil {
			t.Fatal(err)
		}
	}
	m = nil
	runtime.GC()
	runtime.GC()
}

func TestStateAndTokens(t *testing.T) {
	s := session(t, nil)
	if _, _, err := collect(s.Generate(context.Background(), prompt, wv.Greedy(4))); err != nil {
		t.Fatal(err)
	}
	state, err := s.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	ids, err := s.Tokens()
	if err != nil || len(ids) != 10 {
		t.Fatalf("%v %v", ids, err)
	}
	next, _, _ := collect(s.Generate(context.Background(), "", wv.Greedy(6)))
	s2 := session(t, nil)
	if err := s2.RestoreState(state); err != nil {
		t.Fatal(err)
	}
	again, _, _ := collect(s2.Generate(context.Background(), "", wv.Greedy(6)))
	if again != next {
		t.Fatalf("%q != %q", again, next)
	}
	path := filepath.Join(t.TempDir(), "state.wv")
	if err := s.SaveFile(path); err != nil {
		t.Fatal(err)
	}
	if err := s2.RestoreFile(path); err != nil {
		t.Fatal(err)
	}
	if err := s2.RestoreState([]byte("garbage!")); !errors.Is(err, wv.ErrModelFormat) {
		t.Fatal(err)
	}
	if err := s2.SetTokens(ids[:6]); err != nil {
		t.Fatal(err)
	}
	if err := s2.Truncate(3); err != nil {
		t.Fatal(err)
	}
	if n, _ := s2.ContextLength(); n != 512 {
		t.Fatal(n)
	}
}

func TestLogger(t *testing.T) {
	var n atomic.Int32
	if err := wv.SetLogger(wv.LogDebug, func(wv.LogLevel, string) { n.Add(1) }); err != nil {
		t.Fatal(err)
	}
	m, err := wv.Load(modelDir(t), &wv.LoadOptions{Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	if err := wv.SetLogger(wv.LogWarn, nil); err != nil {
		t.Fatal(err)
	}
	if n.Load() == 0 {
		t.Fatal("no log messages")
	}
}
