package gwstate

import (
	"net/netip"
	"strings"

	"github.com/apim-dev/apim/internal/model"
)

type ctxVersion struct{ context, version string }

type ownerName struct{ owner, name string }

// denySet is the enabled deny policies, indexed for the request path. It is
// rebuilt whole on every deny-policy event: deny policies are few.
type denySet struct {
	n        int
	contexts map[string]bool     // "/ctx": every version
	versions map[ctxVersion]bool // "/ctx/1.0.0"
	appIDs   map[string]bool
	apps     map[ownerName]bool // "owner:name"
	users    map[string]bool
	ips      []model.DenyPolicy
}

func newDenySet(all map[string]*model.DenyPolicy) *denySet {
	d := &denySet{
		contexts: map[string]bool{}, versions: map[ctxVersion]bool{},
		appIDs: map[string]bool{}, apps: map[ownerName]bool{}, users: map[string]bool{},
	}
	for _, p := range all {
		if !p.Enabled {
			continue
		}
		d.n++
		switch p.ConditionType {
		case model.DenyAPI:
			v := strings.TrimSuffix(p.Value, "/")
			d.contexts[v] = true
			if i := strings.LastIndexByte(v, '/'); i > 0 {
				d.versions[ctxVersion{v[:i], v[i+1:]}] = true
			}
		case model.DenyApplication:
			d.appIDs[p.Value] = true
			if owner, name, ok := strings.Cut(p.Value, ":"); ok {
				d.apps[ownerName{owner, name}] = true
			}
		case model.DenyUser:
			d.users[p.Value] = true
		case model.DenyIP, model.DenyIPRange:
			d.ips = append(d.ips, *p)
		}
	}
	return d
}

// Denials reports whether any deny policy is switched on; when none is, a
// request needs no further deny checks.
func (x *Index) Denials() bool { return x.deny != nil && x.deny.n > 0 }

// DeniesAPI reports whether an enabled deny policy blocks the API with this
// context and version ("/ctx" blocks every version, "/ctx/1.0.0" one).
func (x *Index) DeniesAPI(context, version string) bool {
	if !x.Denials() {
		return false
	}
	c := strings.TrimSuffix(context, "/")
	return x.deny.contexts[c] || x.deny.versions[ctxVersion{c, version}]
}

// DeniesApplication reports whether an enabled deny policy blocks the
// application, named by id or as WSO2's "owner:name".
func (x *Index) DeniesApplication(app *model.Application) bool {
	return x.Denials() && (x.deny.appIDs[app.ID] || x.deny.apps[ownerName{app.Owner, app.Name}])
}

// DeniesUser reports whether an enabled deny policy blocks the user.
func (x *Index) DeniesUser(user string) bool { return x.Denials() && x.deny.users[user] }

// DeniesIPs reports whether any enabled deny policy is about IPs, so that
// the caller need not parse the address otherwise.
func (x *Index) DeniesIPs() bool { return x.Denials() && len(x.deny.ips) > 0 }

// DeniesIP reports whether an enabled IP or IP-range deny policy blocks
// addr.
func (x *Index) DeniesIP(addr netip.Addr) bool {
	if !x.Denials() {
		return false
	}
	for i := range x.deny.ips {
		if x.deny.ips[i].MatchesIP(addr) {
			return true
		}
	}
	return false
}
