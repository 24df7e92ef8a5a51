package app

import (
	"io"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	tests := map[string]struct {
		args    []string
		want    options
		wantErr string
	}{
		"default run":   {args: nil, want: options{command: cmdRun}},
		"run flags":     {args: []string{"-config", "c.yaml", "-profile", "gateway"}, want: options{command: cmdRun, configFile: "c.yaml", profile: "gateway"}},
		"migrate":       {args: []string{"migrate", "-config", "c.yaml"}, want: options{command: cmdMigrate, configFile: "c.yaml"}},
		"bootstrap":     {args: []string{"envoy-bootstrap", "-out", "b.yaml"}, want: options{command: cmdEnvoyBootstrap, out: "b.yaml", nodeID: "apim-gateway", adminPort: 9901}},
		"bootstrap out": {args: []string{"envoy-bootstrap"}, wantErr: "-out is required"},
		"backend":       {args: []string{"sample-backend", "-address", ":1"}, want: options{command: cmdSampleBackend, address: ":1"}},
		"unknown cmd":   {args: []string{"serve"}, wantErr: `unknown command "serve"`},
		"unknown flag":  {args: []string{"-verbose"}, wantErr: "flag provided but not defined"},
		"extra arg":     {args: []string{"run", "x"}, wantErr: `unexpected argument "x"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseArgs(tc.args, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
