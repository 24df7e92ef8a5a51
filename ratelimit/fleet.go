package ratelimit

import (
	"strconv"
	"time"
)

// Fleet shares a gateway's counts with the other gateways of its fleet and
// decides, from what it knows of theirs, whether a request fits the limit
// fleet-wide. Package trafficmgr implements it over Kafka.
type Fleet interface {
	// Admit is called once the request's hits are in c.Count, this
	// gateway's count of the key in the window. It reports whether to admit
	// the request; a refused request's hits are taken off the count again.
	Admit(c FleetCount, now time.Time) bool
	// Record shares hits already spent, which need no decision: the bytes
	// of a finished stream against a bandwidth quota. c.Count is this
	// gateway's count of the key with them.
	Record(c FleetCount)
}

// FleetCount is this gateway's count of one throttle key in one window.
type FleetCount struct {
	// Key names the counter across the fleet, the window included
	// (FleetKey): every gateway computes the same key for the same window.
	Key        string
	Start, End time.Time
	// Limit is the policy's request count (bytes, for a bandwidth quota)
	// for the window.
	Limit int64
	// Count is this gateway's admitted hits in the window, the request's
	// own included.
	Count int64
}

// FleetKey is the throttle key of a counter: its level, the window start in
// unix milliseconds and the counted entity, e.g.
// "subscription|1777636800000|36:0b9c6a8e-...|" (the first part carries its
// length, so that no separator inside it can make two keys equal).
func FleetKey(kind byte, a, b string, start time.Time) string {
	buf := make([]byte, 0, 32+len(a)+len(b))
	buf = append(buf, kindNames[kind]...)
	buf = append(buf, '|')
	buf = strconv.AppendInt(buf, start.UnixMilli(), 10)
	buf = append(buf, '|')
	buf = strconv.AppendInt(buf, int64(len(a)), 10)
	buf = append(buf, ':')
	buf = append(buf, a...)
	buf = append(buf, '|')
	buf = append(buf, b...)
	return string(buf)
}

var kindNames = [...]string{
	kindSubscription: "subscription",
	kindBurst:        "burst",
	kindApplication:  "application",
	kindAPI:          "api",
	kindResource:     "resource",
	kindCustom:       "custom",
}
