// Package app turns command-line arguments and configuration into a running
// profile: it parses the command, loads the configuration, starts the real
// parts each profile needs and runs them together until the context ends.
package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Commands.
const (
	cmdRun            = "run"
	cmdMigrate        = "migrate"
	cmdEnvoyBootstrap = "envoy-bootstrap"
	cmdSampleBackend  = "sample-backend"
	cmdRotateKeys     = "rotate-keys"
	cmdVersion        = "version"
)

// options are the parsed command line.
type options struct {
	command    string
	configFile string
	profile    string
	// envoy-bootstrap
	out       string
	nodeID    string
	adminPort int
	// sample-backend
	address string
}

const usage = `usage: apim [command] [flags]

commands:
  run              run the configured profile (default)
  migrate          apply the database migrations and exit
  rotate-keys      make a new token signing key active; the old one verifies until its tokens expire
  envoy-bootstrap  write the bootstrap an Envoy beside this gateway starts with
  sample-backend   serve the small echo backend used by make run and the tests
  version          print the version

flags:
`

// parseArgs parses args (without the program name).
func parseArgs(args []string, stderr io.Writer) (options, error) {
	o := options{command: cmdRun}
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		o.command, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("apim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.configFile, "config", "", "configuration file (YAML); APIM_* environment variables override it")
	fs.StringVar(&o.profile, "profile", "", "profile: all-in-one, control-plane, gateway or traffic-manager (overrides the config)")
	switch o.command {
	case cmdRun, cmdMigrate, cmdVersion, cmdRotateKeys:
	case cmdEnvoyBootstrap:
		fs.StringVar(&o.out, "out", "", "file to write the bootstrap to (required)")
		fs.StringVar(&o.nodeID, "node-id", "apim-gateway", "Envoy node id")
		fs.IntVar(&o.adminPort, "admin-port", 9901, "Envoy admin port on 127.0.0.1")
	case cmdSampleBackend:
		fs.StringVar(&o.address, "address", "127.0.0.1:9080", "address to serve on")
	default:
		fs.Usage()
		return o, fmt.Errorf("unknown command %q", o.command)
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.command == cmdEnvoyBootstrap && o.out == "" {
		return o, errors.New("envoy-bootstrap: -out is required")
	}
	return o, nil
}
