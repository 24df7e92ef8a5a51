package model

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxExtraBytes bounds the WSO2 properties an API, one of its operations
// or an application stores without acting on them (their Extra JSON).
// They travel in every event and revision of the entity, so a body the
// portal's size limit lets through must not make one event too large for
// Kafka's default message size (1 MB).
const MaxExtraBytes = 64 << 10

// Limits of the WSO2 properties apim stores in columns.
const (
	MaxTags                 = 100
	MaxTagLength            = 255
	MaxAdditionalProperties = 100
	MaxPropertyNameLength   = 255
	MaxPropertyValueLength  = 4096
	MaxScopes               = 100
	// MaxOwnerLength is WSO2's maxLength of a business owner's name.
	MaxOwnerLength = 120
)

// WSO2's API visibilities in the devportal.
const (
	VisibilityPublic     = "PUBLIC"
	VisibilityPrivate    = "PRIVATE"
	VisibilityRestricted = "RESTRICTED"
)

// Viewer is who looks at the devportal: the APIs they may see are the
// PUBLIC ones and, once signed in, the PRIVATE ones (WSO2's "visible to my
// domain") and the RESTRICTED ones visible to one of their roles.
type Viewer struct {
	SignedIn bool
	Roles    []string
}

// Sees reports whether v may see a in the devportal.
func (v Viewer) Sees(a *API) bool {
	switch a.Visibility {
	case "", VisibilityPublic:
		return true
	case VisibilityPrivate:
		return v.SignedIn
	case VisibilityRestricted:
		return v.SignedIn && slices.ContainsFunc(a.VisibleRoles, func(r string) bool { return slices.Contains(v.Roles, r) })
	}
	return false
}

// BusinessInformation is WSO2's APIBusinessInformationDTO.
type BusinessInformation struct {
	BusinessOwner       string `json:"businessOwner,omitempty"`
	BusinessOwnerEmail  string `json:"businessOwnerEmail,omitempty"`
	TechnicalOwner      string `json:"technicalOwner,omitempty"`
	TechnicalOwnerEmail string `json:"technicalOwnerEmail,omitempty"`
}

// AdditionalProperty is one of an API's custom properties, WSO2 4.x's
// APIAdditionalPropertiesDTO; Display shows it in the devportal.
type AdditionalProperty struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Display bool   `json:"display"`
}

// APIScope is WSO2's APIScopeDTO: a scope the API defines, with the roles
// bound to it.
type APIScope struct {
	Scope  Scope `json:"scope"`
	Shared bool  `json:"shared,omitempty"`
}

// Scope is WSO2's ScopeDTO (without its server-computed usageCount).
type Scope struct {
	ID          string   `json:"id,omitempty"`
	Name        string   `json:"name"`
	DisplayName string   `json:"displayName,omitempty"`
	Description string   `json:"description,omitempty"`
	Bindings    []string `json:"bindings,omitempty"`
}

// validateWSO2 reports the problems of the WSO2 properties apim stores,
// each naming its WSO2 field.
func (a *API) validateWSO2() []error {
	var errs []error
	field := func(name string, err error) { errs = append(errs, fmt.Errorf("%s %w", name, err)) }
	switch a.Visibility {
	case "", VisibilityPublic, VisibilityPrivate:
	case VisibilityRestricted:
		if len(a.VisibleRoles) == 0 {
			field("visibleRoles", fmt.Errorf("%w: a RESTRICTED API needs at least one role", ErrRequired))
		}
	default:
		field("visibility", fmt.Errorf("%w: %q; one of PUBLIC, PRIVATE, RESTRICTED", ErrUnknownValue, a.Visibility))
	}
	errs = append(errs, checkStrings("visibleRoles", a.VisibleRoles, MaxScopes, MaxPropertyNameLength)...)
	seen := map[string]bool{}
	for i, t := range a.Transport {
		if t != "http" && t != "https" {
			field(fmt.Sprintf("transport[%d]", i), fmt.Errorf("%w: %q; http or https", ErrUnknownValue, t))
		}
		if seen[t] {
			field(fmt.Sprintf("transport[%d]", i), fmt.Errorf("%w: duplicate %q", ErrInvalid, t))
		}
		seen[t] = true
	}
	errs = append(errs, checkStrings("tags", a.Tags, MaxTags, MaxTagLength)...)
	if b := a.BusinessInformation; b != nil {
		for name, v := range map[string]string{"businessOwner": b.BusinessOwner, "technicalOwner": b.TechnicalOwner} {
			if utf8.RuneCountInString(v) > MaxOwnerLength {
				field("businessInformation."+name, fmt.Errorf("%w: longer than %d characters", ErrInvalid, MaxOwnerLength))
			}
		}
		for name, v := range map[string]string{"businessOwnerEmail": b.BusinessOwnerEmail, "technicalOwnerEmail": b.TechnicalOwnerEmail} {
			if len(v) > MaxPropertyNameLength {
				field("businessInformation."+name, fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxPropertyNameLength))
			}
		}
	}
	if len(a.AdditionalProperties) > MaxAdditionalProperties {
		field("additionalProperties", fmt.Errorf("%w: more than %d", ErrInvalid, MaxAdditionalProperties))
	}
	names := map[string]bool{}
	for i, p := range a.AdditionalProperties {
		prefix := fmt.Sprintf("additionalProperties[%d].", i)
		switch {
		case strings.TrimSpace(p.Name) == "":
			field(prefix+"name", ErrRequired)
		case len(p.Name) > MaxPropertyNameLength:
			field(prefix+"name", fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxPropertyNameLength))
		case names[p.Name]:
			field(prefix+"name", fmt.Errorf("%w: duplicate %q", ErrInvalid, p.Name))
		}
		names[p.Name] = true
		if len(p.Value) > MaxPropertyValueLength {
			field(prefix+"value", fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxPropertyValueLength))
		}
	}
	if len(a.Scopes) > MaxScopes {
		field("scopes", fmt.Errorf("%w: more than %d", ErrInvalid, MaxScopes))
	}
	scopes := map[string]bool{}
	for i, s := range a.Scopes {
		prefix := fmt.Sprintf("scopes[%d].scope.", i)
		switch {
		case strings.TrimSpace(s.Scope.Name) == "":
			field(prefix+"name", ErrRequired)
		case len(s.Scope.Name) > MaxPropertyNameLength:
			field(prefix+"name", fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxPropertyNameLength))
		case scopes[s.Scope.Name]:
			field(prefix+"name", fmt.Errorf("%w: duplicate %q", ErrInvalid, s.Scope.Name))
		}
		scopes[s.Scope.Name] = true
		errs = append(errs, checkStrings(prefix+"bindings", s.Scope.Bindings, MaxScopes, MaxPropertyNameLength)...)
		if len(s.Scope.Description) > MaxPropertyValueLength {
			field(prefix+"description", fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxPropertyValueLength))
		}
	}
	if len(a.Extra) > MaxExtraBytes {
		field("(WSO2 properties apim stores but does not act on)", fmt.Errorf("%w: they take %d bytes, more than %d", ErrInvalid, len(a.Extra), MaxExtraBytes))
	}
	return errs
}

// checkStrings requires at most max non-blank values of at most maxLen
// bytes, without duplicates.
func checkStrings(name string, values []string, max, maxLen int) []error {
	var errs []error
	if len(values) > max {
		errs = append(errs, fmt.Errorf("%s %w: more than %d values", name, ErrInvalid, max))
	}
	seen := map[string]bool{}
	for i, v := range values {
		switch {
		case strings.TrimSpace(v) == "":
			errs = append(errs, fmt.Errorf("%s[%d] %w: blank", name, i, ErrInvalid))
		case len(v) > maxLen:
			errs = append(errs, fmt.Errorf("%s[%d] %w: longer than %d bytes", name, i, ErrInvalid, maxLen))
		case seen[v]:
			errs = append(errs, fmt.Errorf("%s[%d] %w: duplicate %q", name, i, ErrInvalid, v))
		}
		seen[v] = true
	}
	return errs
}
