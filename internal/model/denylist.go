package model

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// EndpointDeny are the destinations no API endpoint may point at: the
// gateway's and control plane's own admin, xDS and ops ports, cloud
// metadata addresses. A publisher who could route an API there could call
// Envoy's /quitquitquit or read instance credentials through the gateway.
type EndpointDeny []DenyRule

// DenyRule is one denied destination: addresses in Prefix, on Port (0: any).
type DenyRule struct {
	Prefix netip.Prefix
	Port   uint16
}

func (r DenyRule) String() string {
	if r.Port == 0 {
		return r.Prefix.String()
	}
	if r.Prefix.Addr().Is6() {
		return "[" + r.Prefix.String() + "]:" + strconv.Itoa(int(r.Port))
	}
	return r.Prefix.String() + ":" + strconv.Itoa(int(r.Port))
}

// ParseDenyRule reads ADDR, ADDR/BITS, either with :PORT (IPv6 in brackets:
// [::1]:9901, [fe80::/10]:22).
func ParseDenyRule(s string) (DenyRule, error) {
	addr, port := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 || (end+1 < len(s) && s[end+1] != ':') {
			return DenyRule{}, fmt.Errorf("deny rule %q: want [IPv6[/bits]]:port", s)
		}
		addr, port = s[1:end], strings.TrimPrefix(s[end+1:], ":")
	case strings.Count(s, ":") == 1:
		addr, port, _ = strings.Cut(s, ":")
	}
	var r DenyRule
	var err error
	if strings.Contains(addr, "/") {
		r.Prefix, err = netip.ParsePrefix(addr)
	} else {
		var a netip.Addr
		if a, err = netip.ParseAddr(addr); err == nil {
			r.Prefix = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		return DenyRule{}, fmt.Errorf("deny rule %q: %w", s, err)
	}
	r.Prefix = r.Prefix.Masked()
	if port != "" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return DenyRule{}, fmt.Errorf("deny rule %q: port must be 1 to 65535", s)
		}
		r.Port = uint16(p)
	}
	return r, nil
}

// DefaultEndpointDeny denies the link-local ranges (cloud metadata, such as
// 169.254.169.254 and AWS's fd00:ec2::254) on every port, and each of ports
// on the loopback and unspecified addresses (0.0.0.0 reaches the local host
// too).
func DefaultEndpointDeny(ports ...uint16) EndpointDeny {
	d := EndpointDeny{
		{Prefix: netip.MustParsePrefix("169.254.0.0/16")},
		{Prefix: netip.MustParsePrefix("fe80::/10")},
		{Prefix: netip.MustParsePrefix("fd00:ec2::254/128")},
	}
	local := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/32"),
		netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("::/128"),
	}
	for _, p := range ports {
		if p == 0 {
			continue
		}
		for _, l := range local {
			d = append(d, DenyRule{Prefix: l, Port: p})
		}
	}
	return d
}

// Check refuses an endpoint URL whose host is a denied address (an IP
// literal, or localhost, which stands for the loopback addresses) on a
// denied port. Host names are not resolved here: the rule is on addresses
// written in the URL.
func (d EndpointDeny) Check(raw string) error {
	if len(d) == 0 {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil // ValidateEndpointURL reports it
	}
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	var addrs []netip.Addr
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	} else if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	}
	for _, a := range addrs {
		if err := d.CheckAddr(netip.AddrPortFrom(a, uint16(p))); err != nil {
			return err
		}
	}
	return nil
}

// CheckAddr refuses a denied address and port: what a connection made by
// apim itself (fetching a definition by URL) checks once the name is
// resolved, so that no host name can lead it to a denied address.
func (d EndpointDeny) CheckAddr(ap netip.AddrPort) error {
	a := ap.Addr().Unmap()
	for _, r := range d {
		if r.Prefix.Contains(a) && (r.Port == 0 || r.Port == ap.Port()) {
			return fmt.Errorf("%w: %s is a denied destination (%s: an admin, xDS or ops port, or a metadata address)", ErrInvalid, netip.AddrPortFrom(a, ap.Port()), r)
		}
	}
	return nil
}
