// Command gethydra builds the Ory Hydra binary the tests of external key
// managers run (hydratest.Binary), unless it is built already, and prints
// its path. `make hydra` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/apim-dev/apim/internal/hydratest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	bin, err := hydratest.Binary(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(bin)
}
