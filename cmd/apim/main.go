// Command apim is the API manager: one binary whose profiles run the control
// plane, the gateway sidecar, the traffic manager, or all of them at once.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/apim-dev/apim/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Main(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "apim:", err)
		os.Exit(1)
	}
}
