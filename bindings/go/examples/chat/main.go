// Command chat streams a reply from a wv model; Ctrl-C or -timeout cancel it through the
// context.
//
//	go run ./examples/chat -model ../../models/kjv-tiny "Who made the heaven?"
//	go run ./examples/chat -raw -max-tokens 40 "In the beginning God created"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	wv "github.com/wv-project/wv/bindings/go"
)

func main() {
	modelDir := flag.String("model", "../../models/kjv-tiny", "checkpoint folder")
	device := flag.String("device", "auto", `"auto", "cpu", "cuda" or "cuda:N"`)
	raw := flag.Bool("raw", false, "continue the text instead of chatting")
	maxTokens := flag.Int("max-tokens", 128, "the most tokens to generate (0: no limit)")
	temperature := flag.Float64("temperature", 0, "sampling temperature (0: greedy)")
	timeout := flag.Duration("timeout", 0, "cancel the generation after this long (0: never)")
	flag.Parse()
	prompt := strings.Join(flag.Args(), " ")
	if prompt == "" {
		prompt = "Who made the heaven and the earth?"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	model, err := wv.Load(*modelDir, &wv.LoadOptions{Device: *device})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer model.Close()
	session, err := model.NewSession(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer session.Close()

	opts := &wv.GenerateOptions{MaxTokens: *maxTokens, Temperature: float32(*temperature), Seed: wv.SeedRandom}
	if *temperature > 0 {
		defaults, _ := wv.DefaultGenerateOptions()
		opts.TopK, opts.TopP, opts.RepetitionPenalty = defaults.TopK, defaults.TopP, defaults.RepetitionPenalty
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	gen := session.Chat
	if *raw {
		gen = session.Generate
	}

	start, n := time.Now(), 0
	for tok, err := range gen(ctx, prompt, opts) {
		if errors.Is(err, wv.ErrCancelled) {
			fmt.Fprintf(os.Stderr, "\n[cancelled: %v]\n", context.Cause(ctx))
			break
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "\n", err)
			os.Exit(1)
		}
		fmt.Print(tok.Text)
		n++
	}
	fmt.Fprintf(os.Stderr, "\n[%d tokens in %v]\n", n, time.Since(start).Round(time.Millisecond))
}
