package model

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Environment is a gateway environment: the Envoys of one environment share
// one xDS snapshot (their node.cluster is its name). ReadOnly ones (the
// migrations' Default) cannot be changed over REST, as WSO2's environments
// of deployment.toml.
type Environment struct {
	ID                   string     `json:"id"`
	Name                 string     `json:"name"`
	DisplayName          string     `json:"displayName"`
	Description          string     `json:"description"`
	Provider             string     `json:"provider"`
	Type                 string     `json:"type"`
	GatewayType          string     `json:"gatewayType"`
	VHosts               []VHost    `json:"vhosts"`
	AdditionalProperties []Property `json:"additionalProperties"`
	ReadOnly             bool       `json:"isReadOnly"`
	Generation           int64      `json:"generation"`
}

// VHost is one virtual host of an environment, as WSO2's VHostDTO; the
// first is where a deployment goes when it names none.
type VHost struct {
	Host            string `json:"host"`
	HTTPContext     string `json:"httpContext"`
	HTTPPort        int    `json:"httpPort,omitempty"`
	HTTPSPort       int    `json:"httpsPort,omitempty"`
	WSPort          int    `json:"wsPort,omitempty"`
	WSSPort         int    `json:"wssPort,omitempty"`
	WebsubHTTPPort  int    `json:"websubHttpPort,omitempty"`
	WebsubHTTPSPort int    `json:"websubHttpsPort,omitempty"`
}

// Property is one of WSO2's key-value additional properties.
type Property struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Environment types and gateway types WSO2 knows.
var (
	environmentTypes = []string{"hybrid", "production", "sandbox"}
	gatewayTypes     = []string{"Regular", "APK", "AWS", "Azure", "Envoy"}
)

var environmentName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`)

// ErrReadOnly is a change to a read-only environment.
var ErrReadOnly = errors.New("is read-only")

// Validate reports every problem with the environment, each naming its
// WSO2 field.
func (e *Environment) Validate() error {
	var errs []error
	field := func(name string, err error) { errs = append(errs, fmt.Errorf("%s %w", name, err)) }
	if e.Name == "" {
		field("name", ErrRequired)
	} else if !environmentName.MatchString(e.Name) {
		field("name", fmt.Errorf("%w: letters, digits, _ . - only, at most 255, starting with a letter or digit", ErrInvalid))
	}
	for name, v := range map[string]string{"displayName": e.DisplayName, "provider": e.Provider} {
		if err := CheckText(v, 255); err != nil {
			field(name, err)
		}
	}
	if err := CheckText(e.Description, 1024); err != nil {
		field("description", err)
	}
	if e.Type != "" && !slices.Contains(environmentTypes, e.Type) {
		field("type", fmt.Errorf("%w: want %s", ErrUnknownValue, strings.Join(environmentTypes, ", ")))
	}
	if e.GatewayType != "" && !slices.Contains(gatewayTypes, e.GatewayType) {
		field("gatewayType", fmt.Errorf("%w: want %s", ErrUnknownValue, strings.Join(gatewayTypes, ", ")))
	}
	if len(e.VHosts) == 0 {
		field("vhosts", ErrRequired)
	}
	for i, v := range e.VHosts {
		p := fmt.Sprintf("vhosts[%d].", i)
		if v.Host == "" {
			field(p+"host", ErrRequired)
		} else if err := ValidateVHost(v.Host); err != nil || len(v.Host) > 255 {
			field(p+"host", fmt.Errorf("%w: a host name without port, at most 255", ErrInvalid))
		}
		if v.HTTPContext != "" && (!strings.HasPrefix(v.HTTPContext, "/") || CheckText(v.HTTPContext, 255) != nil || strings.ContainsAny(v.HTTPContext, " ?#")) {
			field(p+"httpContext", fmt.Errorf("%w: a path starting with /", ErrInvalid))
		}
		for name, port := range map[string]int{
			"httpPort": v.HTTPPort, "httpsPort": v.HTTPSPort, "wsPort": v.WSPort, "wssPort": v.WSSPort,
			"websubHttpPort": v.WebsubHTTPPort, "websubHttpsPort": v.WebsubHTTPSPort,
		} {
			if port < 0 || port > 65535 {
				field(p+name, fmt.Errorf("%w: must be 0 to 65535", ErrInvalid))
			}
		}
	}
	for i, kv := range e.AdditionalProperties {
		if kv.Key == "" || CheckText(kv.Key, 255) != nil {
			field(fmt.Sprintf("additionalProperties[%d].key", i), fmt.Errorf("%w: 1 to 255 characters", ErrInvalid))
		}
		if err := CheckText(kv.Value, 1024); err != nil {
			field(fmt.Sprintf("additionalProperties[%d].value", i), err)
		}
	}
	return errors.Join(errs...)
}
