package model

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
)

// Policy levels. LevelAPI holds WSO2's advanced policies (API- and
// resource-level); LevelCustom its custom rules.
const (
	LevelSubscription = "subscription"
	LevelApplication  = "application"
	LevelAPI          = "api"
	LevelCustom       = "custom"
)

// Quota types of a policy's default limit.
const (
	QuotaRequestCount = "requestCount"
	QuotaBandwidth    = "bandwidth"
)

// Time units of a policy window. Calendar units (month, year) align to the
// calendar in UTC; the others to multiples of their length since the epoch.
const (
	UnitSecond = "sec"
	UnitMinute = "min"
	UnitHour   = "hour"
	UnitDay    = "day"
	UnitMonth  = "month"
	UnitYear   = "year"
)

var timeUnits = map[string]time.Duration{
	UnitSecond: time.Second, UnitMinute: time.Minute, UnitHour: time.Hour, UnitDay: 24 * time.Hour,
	UnitMonth: 0, UnitYear: 0, // calendar: see WindowStart
}

// ValidTimeUnit reports whether u is a known time unit.
func ValidTimeUnit(u string) bool { _, ok := timeUnits[u]; return ok }

// MaxWindowYears bounds a counting window: a policy's unitTime may span at
// most a century in any unit. It keeps every window's end a time that can be
// encoded (JSON and RFC 3339 stop at year 9999) and every window's length in
// nanoseconds inside an int64.
const MaxWindowYears = 100

// maxUnitTime is the largest unitTime of each unit: MaxWindowYears of it.
var maxUnitTime = map[string]int64{
	UnitSecond: MaxWindowYears * 366 * 86400, UnitMinute: MaxWindowYears * 366 * 1440,
	UnitHour: MaxWindowYears * 366 * 24, UnitDay: MaxWindowYears * 366,
	UnitMonth: MaxWindowYears * 12, UnitYear: MaxWindowYears,
}

// MaxUnitTime is the largest unitTime a policy may have in unit (0 for an
// unknown unit).
func MaxUnitTime(unit string) int64 { return maxUnitTime[unit] }

// validWindow names what is wrong with a window of unitTime units; field is
// the WSO2 path of its limit ("defaultLimit.requestCount.").
func validWindow(field, unit string, unitTime int64) []error {
	var errs []error
	if !ValidTimeUnit(unit) {
		errs = append(errs, fmt.Errorf("%stimeUnit %w: want sec, min, hour, day, month or year", field, ErrUnknownValue))
	}
	switch max := maxUnitTime[unit]; {
	case unitTime <= 0:
		errs = append(errs, fmt.Errorf("%sunitTime %w: must be at least 1", field, ErrInvalid))
	case max > 0 && unitTime > max:
		errs = append(errs, fmt.Errorf("%sunitTime %w: must be at most %d for timeUnit %s (%d years)", field, ErrInvalid, max, unit, MaxWindowYears))
	}
	return errs
}

// WindowStart returns the fixed window of unitTime units that holds now:
// its start (inclusive) and end (exclusive). Units of fixed length align to
// multiples of the window since the Unix epoch; month and year align to
// calendar months and years in UTC, counted from January 1970. An unknown
// unit or a unitTime below 1 gives zero times; a unitTime past the unit's
// MaxUnitTime counts as that maximum (a policy stored before the bound),
// so every window it returns has a length and an end that can be encoded.
func WindowStart(unit string, unitTime int64, now time.Time) (start, end time.Time) {
	if unitTime < 1 {
		return time.Time{}, time.Time{}
	}
	if max := maxUnitTime[unit]; unitTime > max {
		unitTime = max
	}
	switch unit {
	case UnitMonth, UnitYear:
		now = now.UTC()
		months := int64(now.Year()-1970)*12 + int64(now.Month()-1)
		step := unitTime
		if unit == UnitYear {
			months = int64(now.Year()-1970) * 12
			step = unitTime * 12
		}
		first := months - mod(months, step)
		start = time.Date(1970+int(first/12), time.Month(first%12+1), 1, 0, 0, 0, 0, time.UTC)
		return start, start.AddDate(0, int(step), 0)
	}
	d, ok := timeUnits[unit]
	if !ok {
		return time.Time{}, time.Time{}
	}
	w := int64(d) * unitTime
	ns := now.UnixNano()
	s := ns - mod(ns, w)
	return time.Unix(0, s), time.Unix(0, s+w)
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// Condition is one condition of an advanced policy's condition group, as
// WSO2's HeaderCondition, QueryParameterCondition, JWTClaimsCondition and
// IPCondition: Name is the header, parameter or claim; Value a regular
// expression its value must match (anywhere in it, as WSO2's condition
// evaluator finds it); IPs are for IP conditions.
type Condition struct {
	Type       string `json:"type"` // HEADERCONDITION, QUERYPARAMETERCONDITION, JWTCLAIMSCONDITION, IPCONDITION
	Invert     bool   `json:"invertCondition,omitempty"`
	Name       string `json:"name,omitempty"`
	Value      string `json:"value,omitempty"`
	IPType     string `json:"ipConditionType,omitempty"` // IPSPECIFIC or IPRANGE
	SpecificIP string `json:"specificIP,omitempty"`
	StartIP    string `json:"startingIP,omitempty"`
	EndIP      string `json:"endingIP,omitempty"`
}

// Condition types, as WSO2's ThrottleCondition.type.
const (
	CondHeader    = "HEADERCONDITION"
	CondQuery     = "QUERYPARAMETERCONDITION"
	CondJWTClaims = "JWTCLAIMSCONDITION"
	CondIP        = "IPCONDITION"
)

// ConditionGroup is a limit that replaces an advanced policy's default limit
// for requests matching all of its conditions.
type ConditionGroup struct {
	Description  string      `json:"description,omitempty"`
	Conditions   []Condition `json:"conditions"`
	RequestCount int64       `json:"requestCount"`
	UnitTime     int64       `json:"unitTime"`
	TimeUnit     string      `json:"timeUnit"`
}

// Policy is a throttling policy: a request count (or bandwidth) per unit
// time, unlimited when RequestCount is 0 for a request-count quota.
// Subscription policies add burst control, stopOnQuotaReach and billing;
// advanced (api) policies add condition groups; custom policies a key
// template and a CEL condition.
type Policy struct {
	ID                string           `json:"policyId,omitempty"`
	Level             string           `json:"level"`
	Name              string           `json:"name"`
	DisplayName       string           `json:"displayName,omitempty"`
	Description       string           `json:"description,omitempty"`
	QuotaType         string           `json:"quotaType,omitempty"` // default requestCount
	RequestCount      int64            `json:"requestCount"`
	DataAmount        int64            `json:"dataAmount,omitempty"`
	DataUnit          string           `json:"dataUnit,omitempty"` // KB or MB
	UnitTime          int64            `json:"unitTime"`
	TimeUnit          string           `json:"timeUnit"`
	RateLimitCount    int64            `json:"rateLimitCount,omitempty"`
	RateLimitTimeUnit string           `json:"rateLimitTimeUnit,omitempty"` // sec or min
	StopOnQuotaReach  bool             `json:"stopOnQuotaReach"`
	BillingPlan       string           `json:"billingPlan,omitempty"`
	ConditionGroups   []ConditionGroup `json:"conditionalGroups,omitempty"`
	KeyTemplate       string           `json:"keyTemplate,omitempty"`
	Condition         string           `json:"siddhiQuery,omitempty"` // a CEL expression in place of Siddhi
	Generation        int64            `json:"generation"`

	// Rules is the compiled form of ConditionGroups or of a custom rule's
	// condition, set where the policy is enforced (Compile); nil for none.
	Rules *Rules `json:"-"`
}

// Unlimited reports whether the policy never limits.
func (p *Policy) Unlimited() bool {
	if p.QuotaType == QuotaBandwidth {
		return p.DataAmount <= 0
	}
	return p.RequestCount <= 0
}

// maxDataAmount bounds a bandwidth quota so that its bytes fit an int64
// (an exabyte of MB): a larger one would wrap to "unlimited".
const maxDataAmount = 1 << 40

// Bytes is a bandwidth quota's limit in bytes (DataUnit KB or MB, of 1024).
func (p *Policy) Bytes() int64 {
	switch p.DataUnit {
	case "MB":
		return p.DataAmount << 20
	case "KB":
		return p.DataAmount << 10
	}
	return p.DataAmount
}

// Burst reports the policy's burst limit (rateLimitCount per one
// rateLimitTimeUnit), if it has one.
func (p *Policy) Burst() (count int64, unit string, ok bool) {
	return p.RateLimitCount, p.RateLimitTimeUnit, p.RateLimitCount > 0 && p.RateLimitTimeUnit != ""
}

// Validate reports every problem with the policy, each naming its WSO2
// field.
func (p *Policy) Validate() error {
	var errs []error
	field := func(name string, err error) { errs = append(errs, fmt.Errorf("%s %w", name, err)) }
	if strings.TrimSpace(p.Name) == "" {
		field("policyName", ErrRequired)
	} else if strings.ContainsAny(p.Name, "/:?#% \t") {
		field("policyName", fmt.Errorf("%w: must not contain / : ? # %% or spaces", ErrInvalid))
	} else if err := CheckName(p.Name, MaxPolicyNameLength); err != nil {
		field("policyName", err)
	}
	if err := CheckText(p.DisplayName, 512); err != nil {
		field("displayName", err)
	}
	if err := CheckProse(p.Description, 1024); err != nil {
		field("description", err)
	}
	switch p.Level {
	case LevelSubscription, LevelApplication, LevelAPI, LevelCustom:
	default:
		field("level", fmt.Errorf("%w: want subscription, application, api or custom", ErrUnknownValue))
	}
	limit := "defaultLimit.requestCount."
	switch p.QuotaType {
	case "", QuotaRequestCount:
		if p.RequestCount < 0 {
			field(limit+"requestCount", fmt.Errorf("%w: must not be negative", ErrInvalid))
		}
	case QuotaBandwidth:
		limit = "defaultLimit.bandwidth."
		if p.Level == LevelCustom {
			field("defaultLimit.type", fmt.Errorf("%w: custom rules count requests", ErrInvalid))
		}
		if p.DataAmount < 0 || p.DataAmount > maxDataAmount {
			field(limit+"dataAmount", fmt.Errorf("%w: must be 0 to %d", ErrInvalid, maxDataAmount))
		}
		if p.DataUnit != "KB" && p.DataUnit != "MB" {
			field(limit+"dataUnit", fmt.Errorf("%w: want KB or MB", ErrUnknownValue))
		}
	default:
		field("defaultLimit.type", fmt.Errorf("%w: want REQUESTCOUNTLIMIT or BANDWIDTHLIMIT", ErrUnknownValue))
	}
	errs = append(errs, validWindow(limit, p.TimeUnit, p.UnitTime)...)
	if p.RateLimitCount < 0 {
		field("rateLimitCount", fmt.Errorf("%w: must not be negative", ErrInvalid))
	}
	if p.RateLimitCount > 0 || p.RateLimitTimeUnit != "" {
		switch {
		case p.Level != LevelSubscription:
			field("rateLimitCount", fmt.Errorf("%w: burst control applies to subscription policies only", ErrInvalid))
		case p.RateLimitTimeUnit != UnitSecond && p.RateLimitTimeUnit != UnitMinute:
			field("rateLimitTimeUnit", fmt.Errorf("%w: want sec or min", ErrUnknownValue))
		case p.RateLimitCount == 0:
			field("rateLimitCount", fmt.Errorf("%w: must be at least 1 with a rateLimitTimeUnit", ErrInvalid))
		}
	}
	if len(p.ConditionGroups) > 0 && p.Level != LevelAPI {
		field("conditionalGroups", fmt.Errorf("%w: apply to advanced policies only", ErrInvalid))
	}
	for i, g := range p.ConditionGroups {
		errs = append(errs, g.validate(fmt.Sprintf("conditionalGroups[%d].", i)))
	}
	if p.Level == LevelCustom {
		if err := ValidateKeyTemplate(p.KeyTemplate); err != nil {
			field("keyTemplate", err)
		}
		if _, err := CompileCondition(p.Condition); err != nil {
			field("siddhiQuery", err)
		}
	} else if p.KeyTemplate != "" || p.Condition != "" {
		field("keyTemplate", fmt.Errorf("%w: applies to custom rules only", ErrInvalid))
	}
	return errors.Join(errs...)
}

func (g *ConditionGroup) validate(prefix string) error {
	var errs []error
	field := func(name string, err error) { errs = append(errs, fmt.Errorf("%s%s %w", prefix, name, err)) }
	if len(g.Conditions) == 0 {
		field("conditions", ErrRequired)
	}
	if g.RequestCount < 0 {
		field("limit.requestCount.requestCount", fmt.Errorf("%w: must not be negative", ErrInvalid))
	}
	errs = append(errs, validWindow(prefix+"limit.requestCount.", g.TimeUnit, g.UnitTime)...)
	for i, c := range g.Conditions {
		cp := fmt.Sprintf("conditions[%d].", i)
		switch c.Type {
		case CondHeader:
			if c.Name == "" {
				field(cp+"headerCondition.headerName", ErrRequired)
			}
			if _, err := regexp.Compile(c.Value); err != nil {
				field(cp+"headerCondition.headerValue", fmt.Errorf("%w: %w", ErrInvalid, err))
			}
		case CondQuery:
			if c.Name == "" {
				field(cp+"queryParameterCondition.parameterName", ErrRequired)
			}
			if _, err := regexp.Compile(c.Value); err != nil {
				field(cp+"queryParameterCondition.parameterValue", fmt.Errorf("%w: %w", ErrInvalid, err))
			}
		case CondJWTClaims:
			if c.Name == "" {
				field(cp+"jwtClaimsCondition.claimUrl", ErrRequired)
			}
			if _, err := regexp.Compile(c.Value); err != nil {
				field(cp+"jwtClaimsCondition.attribute", fmt.Errorf("%w: %w", ErrInvalid, err))
			}
		case CondIP:
			switch c.IPType {
			case "IPSPECIFIC":
				if _, err := netip.ParseAddr(c.SpecificIP); err != nil {
					field(cp+"ipCondition.specificIP", fmt.Errorf("%w: %w", ErrInvalid, err))
				}
			case "IPRANGE":
				if err := validRange(c.StartIP, c.EndIP); err != nil {
					field(cp+"ipCondition.startingIP", err)
				}
			default:
				field(cp+"ipCondition.ipConditionType", fmt.Errorf("%w: want IPSPECIFIC or IPRANGE", ErrUnknownValue))
			}
		default:
			field(cp+"type", fmt.Errorf("%w: want HEADERCONDITION, QUERYPARAMETERCONDITION, JWTCLAIMSCONDITION or IPCONDITION", ErrUnknownValue))
		}
	}
	return errors.Join(errs...)
}

func validRange(start, end string) error {
	a, err := netip.ParseAddr(start)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b, err := netip.ParseAddr(end)
	if err != nil {
		return fmt.Errorf("%w: endingIP: %w", ErrInvalid, err)
	}
	if a.Is4() != b.Is4() || b.Less(a) {
		return fmt.Errorf("%w: %s..%s is not a range of one address family", ErrInvalid, start, end)
	}
	return nil
}

// Key-template variables of custom rules, as WSO2's.
var keyTemplateVars = []string{"$userId", "$apiContext", "$apiVersion", "$resourceKey", "$appId", "$appTenant", "$apiTenant", "$clientIp"}

// ValidateKeyTemplate checks a custom rule's key template: one or more of
// WSO2's variables ($userId, $apiContext, ...) joined by ':'.
func ValidateKeyTemplate(t string) error {
	if t == "" {
		return ErrRequired
	}
	for _, part := range strings.Split(t, ":") {
		found := false
		for _, v := range keyTemplateVars {
			found = found || part == v
		}
		if !found {
			return fmt.Errorf("%w: %q is not one of %s", ErrUnknownValue, part, strings.Join(keyTemplateVars, ", "))
		}
	}
	return nil
}

// CompileCondition compiles a custom rule's CEL condition. It may read
// user, api_context, api_version, resource, application_id, client_ip
// (strings), headers (map of string) and claims (map); it must be a bool.
func CompileCondition(expr string) (cel.Program, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, ErrRequired
	}
	env, err := cel.NewEnv(
		cel.Variable("user", cel.StringType),
		cel.Variable("api_context", cel.StringType),
		cel.Variable("api_version", cel.StringType),
		cel.Variable("resource", cel.StringType),
		cel.Variable("application_id", cel.StringType),
		cel.Variable("client_ip", cel.StringType),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("%w: CEL: %s", ErrInvalid, strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("%w: CEL: the condition is %s, want bool", ErrInvalid, ast.OutputType())
	}
	prg, err := env.Program(ast)
	if err != nil {
		return nil, fmt.Errorf("%w: CEL: %w", ErrInvalid, err)
	}
	return prg, nil
}

// Deny (blocking) condition types, as WSO2's.
const (
	DenyAPI         = "API"
	DenyApplication = "APPLICATION"
	DenyIP          = "IP"
	DenyIPRange     = "IPRANGE"
	DenyUser        = "USER"
)

// DenyPolicy is WSO2's blocking condition: requests to an API context, of an
// application ("owner:name" or its id), of a user, or from an IP or IP range
// are denied while Enabled. Invert applies to IP and IPRANGE: deny all but
// the address or range.
type DenyPolicy struct {
	ID            string `json:"conditionId"`
	ConditionType string `json:"conditionType"`
	Value         string `json:"value,omitempty"` // API context, application, user; the IP for IP
	StartIP       string `json:"startingIp,omitempty"`
	EndIP         string `json:"endingIp,omitempty"`
	Invert        bool   `json:"invert,omitempty"`
	Enabled       bool   `json:"conditionStatus"`
	Generation    int64  `json:"generation"`
}

// Validate reports every problem with the deny policy, each naming its WSO2
// field.
func (d *DenyPolicy) Validate() error {
	var errs []error
	field := func(name string, err error) { errs = append(errs, fmt.Errorf("%s %w", name, err)) }
	switch d.ConditionType {
	case DenyAPI:
		if d.Value == "" {
			field("conditionValue", ErrRequired)
		} else if !strings.HasPrefix(d.Value, "/") || strings.ContainsAny(d.Value, " ?#") {
			field("conditionValue", fmt.Errorf("%w: want an API context such as /pets/1.0.0", ErrInvalid))
		}
	case DenyApplication, DenyUser:
		if strings.TrimSpace(d.Value) == "" {
			field("conditionValue", ErrRequired)
		}
	case DenyIP:
		if _, err := netip.ParseAddr(d.Value); err != nil {
			field("conditionValue.fixedIp", fmt.Errorf("%w: %w", ErrInvalid, err))
		}
	case DenyIPRange:
		if err := validRange(d.StartIP, d.EndIP); err != nil {
			field("conditionValue.startingIp", err)
		}
	case "":
		field("conditionType", ErrRequired)
	default:
		field("conditionType", fmt.Errorf("%w: want API, APPLICATION, IP, IPRANGE or USER", ErrUnknownValue))
	}
	if d.Invert && d.ConditionType != DenyIP && d.ConditionType != DenyIPRange {
		field("conditionValue.invert", fmt.Errorf("%w: applies to IP and IPRANGE only", ErrInvalid))
	}
	return errors.Join(errs...)
}

// MatchesIP reports whether the deny policy, enabled or not, covers addr.
// It is false for policies that are not about IPs.
func (d *DenyPolicy) MatchesIP(addr netip.Addr) bool {
	var in bool
	switch d.ConditionType {
	case DenyIP:
		ip, err := netip.ParseAddr(d.Value)
		in = err == nil && ip.Unmap() == addr.Unmap()
	case DenyIPRange:
		a, err1 := netip.ParseAddr(d.StartIP)
		b, err2 := netip.ParseAddr(d.EndIP)
		addr = addr.Unmap()
		in = err1 == nil && err2 == nil && addr.Is4() == a.Unmap().Is4() &&
			addr.Compare(a.Unmap()) >= 0 && addr.Compare(b.Unmap()) <= 0
	default:
		return false
	}
	return in != d.Invert
}
