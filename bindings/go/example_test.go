package wv_test

import (
	"context"
	"fmt"

	wv "github.com/wv-project/wv/bindings/go"
)

func Example() {
	model, err := wv.Load("../../models/kjv-tiny", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer model.Close()
	session, err := model.NewSession(nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer session.Close()

	for tok, err := range session.Generate(context.Background(), "In the beginning God created", wv.Greedy(8)) {
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Print(tok.Text)
	}
	fmt.Println()
	// Output: the heavens, and the heavens
}

func ExampleSession_Generate_cancel() {
	model, _ := wv.Load("../../models/kjv-tiny", nil)
	defer model.Close()
	session, _ := model.NewSession(nil)
	defer session.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	for tok, err := range session.Generate(ctx, "In the beginning God created", wv.Greedy(0)) {
		if err != nil {
			fmt.Println("\nstopped:", err)
			return
		}
		fmt.Print(tok.Text)
		if n++; n == 3 {
			cancel() // from anywhere: a timeout, a closed HTTP request, ...
		}
	}
	// Output:
	// the heavens
	// stopped: wv: wv_generate: cancelled: the context is done: context canceled
}
