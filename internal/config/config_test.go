package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	tests := map[string]struct {
		yaml    string
		env     []string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		"defaults": {
			check: func(t *testing.T, c Config) {
				if c.Profile != ProfileAllInOne || c.Gateway.ListenerPort != 8280 || c.HTTP.Address != "0.0.0.0:9443" {
					t.Errorf("defaults = %+v", c)
				}
			},
		},
		"file and env overlay": {
			yaml: "profile: gateway\nkafka:\n  brokers: [a:9092]\ngateway:\n  token: 0123456789abcdef0123456789abcdef\n  listener_port: 9000\n",
			env:  []string{"APIM_GATEWAY_LISTENER_PORT=9100", "APIM_KAFKA_BROKERS=b:1, c:2", "APIM_KEY_MANAGER_ACCESS_TOKEN_TTL=2h", "OTHER=x"},
			check: func(t *testing.T, c Config) {
				if c.Profile != ProfileGateway || c.Gateway.ListenerPort != 9100 {
					t.Errorf("profile %q port %d", c.Profile, c.Gateway.ListenerPort)
				}
				if strings.Join(c.Kafka.Brokers, ",") != "b:1,c:2" {
					t.Errorf("brokers = %v", c.Kafka.Brokers)
				}
				if c.KeyManager.AccessTokenTTL != 2*time.Hour {
					t.Errorf("ttl = %v", c.KeyManager.AccessTokenTTL)
				}
			},
		},
		"unknown key":         {yaml: "gatway:\n  listener_port: 1\n", wantErr: "field gatway not found"},
		"bad env number":      {env: []string{"APIM_GATEWAY_LISTENER_PORT=x"}, wantErr: "APIM_GATEWAY_LISTENER_PORT: want a whole number"},
		"unknown profile":     {yaml: "profile: edge\n", wantErr: `profile: unknown profile "edge"`},
		"gateway needs kafka": {yaml: "profile: gateway\ngateway:\n  token: t\n", wantErr: "kafka.brokers: the gateway profile needs"},
		"short gateway token": {env: []string{"APIM_GATEWAY_TOKEN=short"}, wantErr: "gateway.token: must be at least 32 characters"},
		"control plane needs db": {
			yaml:    "profile: control-plane\nkafka:\n  brokers: [k:1]\nadmin:\n  password: p\n",
			wantErr: "database.apim_url",
		},
		"one db url only":  {env: []string{"APIM_DATABASE_APIM_URL=postgres://x"}, wantErr: "database.shared_url: set both"},
		"bad address":      {env: []string{"APIM_XDS_ADDRESS=18000"}, wantErr: `xds.address: want host:port, got "18000"`},
		"bad log level":    {yaml: "log:\n  level: loud\n", wantErr: `log.level: unknown level "loud"`},
		"short token ttl":  {env: []string{"APIM_KEY_MANAGER_ACCESS_TOKEN_TTL=1s"}, wantErr: "key_manager.access_token_ttl"},
		"several problems": {yaml: "log:\n  level: loud\ngateway:\n  listener_port: 0\n", wantErr: "gateway.listener_port"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := Load(strings.NewReader(tc.yaml), tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
