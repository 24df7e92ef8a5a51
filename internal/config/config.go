// Package config loads apim's configuration: defaults, then a YAML file decoded
// strictly (unknown keys are errors), then APIM_* environment variables, then
// Validate, whose messages name the offending key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/apim-dev/apim/internal/model"
)

// Profiles.
const (
	ProfileAllInOne       = "all-in-one"
	ProfileControlPlane   = "control-plane"
	ProfileGateway        = "gateway"
	ProfileTrafficManager = "traffic-manager"
)

// Config is the whole configuration of one apim process.
type Config struct {
	Profile    string     `yaml:"profile"`
	DataDir    string     `yaml:"data_dir"`
	Log        Log        `yaml:"log"`
	Database   Database   `yaml:"database"`
	Kafka      Kafka      `yaml:"kafka"`
	HTTP       HTTP       `yaml:"http"`
	Ops        Ops        `yaml:"ops"`
	XDS        XDS        `yaml:"xds"`
	Gateway    Gateway    `yaml:"gateway"`
	KeyManager KeyManager `yaml:"key_manager"`
	Admin      Admin      `yaml:"admin"`
}

// Log configures the JSON logs.
type Log struct {
	Level string `yaml:"level"`
}

// Database locates the API-manager and shared databases. With both URLs empty
// the all-in-one profile runs a private PostgreSQL cluster under data_dir.
type Database struct {
	APIMURL     string `yaml:"apim_url"`
	SharedURL   string `yaml:"shared_url"`
	PrivatePort int    `yaml:"private_port"`
}

// Kafka locates the brokers. With none configured the all-in-one profile
// runs an embedded Kafka-protocol broker on embedded_address.
type Kafka struct {
	Brokers         []string `yaml:"brokers"`
	EmbeddedAddress string   `yaml:"embedded_address"`
	Partitions      int      `yaml:"partitions"`
}

// HTTP is the HTTPS listener of the portals, REST APIs and key manager.
type HTTP struct {
	Address  string `yaml:"address"`
	BaseURL  string `yaml:"base_url"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Ops is the plain-HTTP listener for /healthz, /readyz and /metrics.
type Ops struct {
	Address string `yaml:"address"`
}

// XDS is the control plane's ADS gRPC server.
type XDS struct {
	Address string `yaml:"address"`
}

// Gateway configures the sidecar beside Envoy and the listener Envoy serves.
type Gateway struct {
	Environment       string `yaml:"environment"`
	SidecarAddress    string `yaml:"sidecar_address"`
	ListenerPort      int    `yaml:"listener_port"`
	ControlPlaneURL   string `yaml:"control_plane_url"`
	ControlPlaneCA    string `yaml:"control_plane_ca"`
	Token             string `yaml:"token"`
	RateLimitFailOpen bool   `yaml:"rate_limit_fail_open"`
	// RateLimitMode is where a request's rate limits are decided:
	// "ext_authz" (in the same Check that authorises it, from the same
	// in-memory state) or "rls" (a separate call to the rate-limit
	// service). Set on the control plane: it shapes the Envoy config.
	RateLimitMode string `yaml:"rate_limit_mode"`
	// ID names this gateway in fleet-wide throttling; a suffix unique to
	// the process start is always added. The host name if empty.
	ID string `yaml:"id"`
	// FleetSize is the least number of gateways fleet-wide throttling
	// assumes (0: learn it from the gateways' presence).
	FleetSize int `yaml:"fleet_size"`
	// BackendJWTKey is the PEM file of the RSA private key (2048 bits or
	// more) that signs the JWTs sent to backends (X-JWT-Assertion). Empty:
	// one made on first start and kept under data_dir. Give every gateway
	// of a fleet the same key.
	BackendJWTKey string `yaml:"backend_jwt_key"`
	// BackendJWTIssuer is the iss of those JWTs; WSO2's by default.
	BackendJWTIssuer string `yaml:"backend_jwt_issuer"`
	// Limits of the gateway's HTTP listener, set by the control plane in
	// the Envoy config: how long a client may take to send its request
	// headers, how long a connection may sit idle, how large the headers
	// and the body may be (a larger body is refused with 413).
	RequestHeadersTimeout time.Duration `yaml:"request_headers_timeout"`
	IdleTimeout           time.Duration `yaml:"idle_timeout"`
	MaxRequestHeadersKB   int           `yaml:"max_request_headers_kb"`
	MaxRequestBodyBytes   int64         `yaml:"max_request_body_bytes"`
	// EndpointDeny are more destinations no API endpoint may point at
	// (ADDR, ADDR/BITS, either with :PORT; IPv6 in brackets), besides the
	// link-local ranges and this configuration's own ports on the local host,
	// which are always denied.
	EndpointDeny []string `yaml:"endpoint_deny"`
	// EnvoyAdminPort is the Envoy admin port apim's bootstraps use, denied
	// as an endpoint; default 9901.
	EnvoyAdminPort int `yaml:"envoy_admin_port"`
}

// Values of gateway.rate_limit_mode.
const (
	RateLimitInAuthz = "ext_authz"
	RateLimitRLS     = "rls"
)

// KeyManager configures the resident key manager.
type KeyManager struct {
	Issuer              string        `yaml:"issuer"`
	AccessTokenTTL      time.Duration `yaml:"access_token_ttl"`
	RefreshTokenTTL     time.Duration `yaml:"refresh_token_ttl"`
	KeyRotationInterval time.Duration `yaml:"key_rotation_interval"` // 0: rotate only with apim rotate-keys
}

// Admin is the administrator created on first start.
type Admin struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Default returns the configuration used where nothing else is said.
func Default() Config {
	return Config{
		Profile:  ProfileAllInOne,
		DataDir:  ".data",
		Log:      Log{Level: "info"},
		Database: Database{PrivatePort: 5439},
		Kafka:    Kafka{EmbeddedAddress: "127.0.0.1:9092", Partitions: 6},
		HTTP:     HTTP{Address: "0.0.0.0:9443", BaseURL: "https://localhost:9443"},
		Ops:      Ops{Address: "127.0.0.1:9401"},
		XDS:      XDS{Address: "127.0.0.1:18000"},
		Gateway: Gateway{
			Environment:       "Default",
			SidecarAddress:    "127.0.0.1:18001",
			ListenerPort:      8280,
			ControlPlaneURL:   "https://localhost:9443",
			RateLimitFailOpen: true,
			RateLimitMode:     RateLimitInAuthz,
			BackendJWTIssuer:  "wso2.org/products/am",

			RequestHeadersTimeout: 10 * time.Second,
			IdleTimeout:           time.Minute,
			MaxRequestHeadersKB:   60,
			MaxRequestBodyBytes:   10 << 20,
			EnvoyAdminPort:        9901,
		},
		KeyManager: KeyManager{Issuer: "https://localhost:9443/oauth2/token", AccessTokenTTL: time.Hour, RefreshTokenTTL: 24 * time.Hour},
		Admin:      Admin{Username: "admin"},
	}
}

// Load builds the configuration from the defaults, the YAML document in r (may
// be nil) and the environment (as os.Environ gives it).
func Load(r io.Reader, environ []string) (Config, error) {
	c := Default()
	if r != nil {
		data, err := io.ReadAll(r)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		if len(bytes.TrimSpace(data)) > 0 {
			dec := yaml.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)
			if err := dec.Decode(&c); err != nil {
				return c, fmt.Errorf("config file: %w", err)
			}
		}
	}
	if err := overlay(reflect.ValueOf(&c).Elem(), "APIM", envMap(environ)); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// LoadFile is Load with the named file; an empty name means no file.
func LoadFile(name string, environ []string) (Config, error) {
	if name == "" {
		return Load(nil, environ)
	}
	f, err := os.Open(name) //nolint:gosec // G304: the config file the operator named
	if err != nil {
		return Default(), fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	return Load(f, environ)
}

func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "APIM_") {
			m[k] = v
		}
	}
	return m
}

// overlay sets every field whose variable (APIM_SECTION_KEY, from the yaml
// tags) is present in env.
func overlay(v reflect.Value, prefix string, env map[string]string) error {
	t := v.Type()
	for i := range t.NumField() {
		f, fv := t.Field(i), v.Field(i)
		tag := f.Tag.Get("yaml")
		name := prefix + "_" + strings.ToUpper(tag)
		if f.Type.Kind() == reflect.Struct {
			if err := overlay(fv, name, env); err != nil {
				return err
			}
			continue
		}
		raw, ok := env[name]
		if !ok {
			continue
		}
		if err := setField(fv, raw); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func setField(fv reflect.Value, raw string) error {
	switch fv.Interface().(type) {
	case string:
		fv.SetString(raw)
	case int, int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || fv.OverflowInt(n) {
			return fmt.Errorf("want a whole number, got %q", raw)
		}
		fv.SetInt(n)
	case bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", raw)
		}
		fv.SetBool(b)
	case time.Duration:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("want a duration such as 30s, got %q", raw)
		}
		fv.SetInt(int64(d))
	case []string:
		var list []string
		for _, s := range strings.Split(raw, ",") {
			if s = strings.TrimSpace(s); s != "" {
				list = append(list, s)
			}
		}
		fv.Set(reflect.ValueOf(list))
	default:
		return fmt.Errorf("unsupported type %s", fv.Type())
	}
	return nil
}

// minTokenLength is the shortest gateway.token accepted: 128 bits as hex.
const minTokenLength = 32

// Validate reports every invalid key, by its YAML name.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch c.Profile {
	case ProfileAllInOne, ProfileControlPlane, ProfileGateway, ProfileTrafficManager:
	default:
		bad("profile", "unknown profile %q (want all-in-one, control-plane, gateway or traffic-manager)", c.Profile)
	}
	if c.DataDir == "" {
		bad("data_dir", "is required")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "unknown level %q (want debug, info, warn or error)", c.Log.Level)
	}
	needsDB := c.Profile == ProfileControlPlane
	if needsDB && (c.Database.APIMURL == "" || c.Database.SharedURL == "") {
		bad("database.apim_url", "the %s profile needs database.apim_url and database.shared_url", c.Profile)
	}
	if (c.Database.APIMURL == "") != (c.Database.SharedURL == "") {
		bad("database.shared_url", "set both database.apim_url and database.shared_url, or neither")
	}
	if c.Profile != ProfileAllInOne && len(c.Kafka.Brokers) == 0 {
		bad("kafka.brokers", "the %s profile needs at least one broker", c.Profile)
	}
	if c.Gateway.RateLimitMode != RateLimitInAuthz && c.Gateway.RateLimitMode != RateLimitRLS {
		bad("gateway.rate_limit_mode", "want %s or %s, got %q", RateLimitInAuthz, RateLimitRLS, c.Gateway.RateLimitMode)
	}
	if c.Gateway.RequestHeadersTimeout < time.Second {
		bad("gateway.request_headers_timeout", "must be at least 1s, got %v", c.Gateway.RequestHeadersTimeout)
	}
	if c.Gateway.IdleTimeout < time.Second {
		bad("gateway.idle_timeout", "must be at least 1s, got %v", c.Gateway.IdleTimeout)
	}
	if c.Gateway.MaxRequestHeadersKB < 1 || c.Gateway.MaxRequestHeadersKB > 8192 {
		bad("gateway.max_request_headers_kb", "want 1 to 8192 (Envoy's range), got %d", c.Gateway.MaxRequestHeadersKB)
	}
	if c.Gateway.MaxRequestBodyBytes < 1 {
		bad("gateway.max_request_body_bytes", "must be at least 1, got %d", c.Gateway.MaxRequestBodyBytes)
	}
	for i, rule := range c.Gateway.EndpointDeny {
		if _, err := model.ParseDenyRule(rule); err != nil {
			bad(fmt.Sprintf("gateway.endpoint_deny[%d]", i), "%v", err)
		}
	}
	if c.Gateway.EnvoyAdminPort < 1 || c.Gateway.EnvoyAdminPort > 65535 {
		bad("gateway.envoy_admin_port", "want 1 to 65535, got %d", c.Gateway.EnvoyAdminPort)
	}
	if c.Gateway.FleetSize < 0 {
		bad("gateway.fleet_size", "must not be negative")
	}
	if c.Gateway.BackendJWTIssuer == "" {
		bad("gateway.backend_jwt_issuer", "is required (WSO2's is wso2.org/products/am)")
	}
	if c.Kafka.Partitions < 1 {
		bad("kafka.partitions", "must be at least 1")
	}
	for key, addr := range map[string]string{
		"http.address": c.HTTP.Address, "ops.address": c.Ops.Address, "xds.address": c.XDS.Address,
		"gateway.sidecar_address": c.Gateway.SidecarAddress, "kafka.embedded_address": c.Kafka.EmbeddedAddress,
	} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "want host:port, got %q", addr)
		}
	}
	if (c.HTTP.CertFile == "") != (c.HTTP.KeyFile == "") {
		bad("http.key_file", "set both http.cert_file and http.key_file, or neither")
	}
	if c.Gateway.ListenerPort < 1 || c.Gateway.ListenerPort > 65535 {
		bad("gateway.listener_port", "must be a port number, got %d", c.Gateway.ListenerPort)
	}
	if c.Gateway.Environment == "" {
		bad("gateway.environment", "is required")
	}
	if c.Profile == ProfileGateway && c.Gateway.Token == "" {
		bad("gateway.token", "the gateway profile needs the token that the control plane's gateway.token also holds")
	}
	if c.Gateway.Token != "" && len(c.Gateway.Token) < minTokenLength {
		bad("gateway.token", "must be at least %d characters (e.g. openssl rand -hex 32)", minTokenLength)
	}
	if c.KeyManager.Issuer == "" {
		bad("key_manager.issuer", "is required")
	}
	if c.KeyManager.AccessTokenTTL < time.Minute {
		bad("key_manager.access_token_ttl", "must be at least 1m")
	}
	if c.KeyManager.RefreshTokenTTL < c.KeyManager.AccessTokenTTL {
		bad("key_manager.refresh_token_ttl", "must be at least key_manager.access_token_ttl")
	}
	if ki := c.KeyManager.KeyRotationInterval; ki != 0 && ki < c.KeyManager.AccessTokenTTL {
		bad("key_manager.key_rotation_interval", "must be 0 (never) or at least key_manager.access_token_ttl")
	}
	if c.Admin.Username == "" {
		bad("admin.username", "is required")
	}
	if c.Admin.Password == "" && c.Profile == ProfileControlPlane {
		bad("admin.password", "the control-plane profile needs an admin password (APIM_ADMIN_PASSWORD)")
	}
	return errors.Join(errs...)
}

// EndpointDenyList is the deny list of API endpoints: link-local ranges, the
// ports this configuration listens on or points Envoy at on the local host
// (REST, ops, xDS, sidecar, gateway listener, Envoy admin, the private
// PostgreSQL and the embedded Kafka broker), and gateway.endpoint_deny.
// Validate has checked the rules.
func (c *Config) EndpointDenyList() model.EndpointDeny {
	ports := []uint16{uint16(c.Gateway.ListenerPort), uint16(c.Gateway.EnvoyAdminPort), uint16(c.Database.PrivatePort)} //nolint:gosec // G115: Validate keeps ports in range
	for _, addr := range []string{c.HTTP.Address, c.Ops.Address, c.XDS.Address, c.Gateway.SidecarAddress, c.Kafka.EmbeddedAddress} {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			if p, err := strconv.ParseUint(port, 10, 16); err == nil {
				ports = append(ports, uint16(p))
			}
		}
	}
	d := model.DefaultEndpointDeny(ports...)
	for _, rule := range c.Gateway.EndpointDeny {
		if r, err := model.ParseDenyRule(rule); err == nil {
			d = append(d, r)
		}
	}
	return d
}
