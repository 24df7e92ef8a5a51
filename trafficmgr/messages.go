// Package trafficmgr is the fleet-wide throttling of the gateways, as WSO2's
// Traffic Manager: the gateways publish their request counts per throttle
// key, the traffic managers sum them across the fleet and publish throttle
// decisions that every gateway applies (Manager); on the gateway, Agent is
// the ratelimit.Fleet that publishes the counts and admits by its estimate
// of the fleet's count.
package trafficmgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Topics and the consumer group; schema/events.md documents them.
const (
	// TopicCounts carries each gateway's cumulative count per throttle key
	// and window, keyed by the throttle key.
	TopicCounts = "apim.throttle.counts"
	// TopicDecisions is read by every gateway (a broadcast): the traffic
	// managers' decisions and heartbeats, and the gateways' presence.
	TopicDecisions = "apim.throttle.decisions"
	// GroupID is the consumer group of the traffic managers on TopicCounts.
	GroupID = "apim-traffic-manager"
	// SchemaVersion is the version of Count and Message.
	SchemaVersion = 1
)

// Count is a gateway's count of one throttle key in one window: the number
// of requests it admitted since the window started (cumulative, not a
// delta), so the newest message of a gateway and key is the whole truth and
// a duplicate or a replay changes nothing.
type Count struct {
	SchemaVersion int       `json:"schemaVersion"`
	Gateway       string    `json:"gateway"`
	Key           string    `json:"key"`
	WindowStart   time.Time `json:"windowStart"`
	WindowEnd     time.Time `json:"windowEnd"`
	Count         int64     `json:"count"`
	Limit         int64     `json:"limit"`
}

// Message types on TopicDecisions.
const (
	TypeDecision  = "decision"
	TypeHeartbeat = "heartbeat"
	TypePresence  = "presence"
)

// Message is a message on TopicDecisions.
type Message struct {
	SchemaVersion int    `json:"schemaVersion"`
	Type          string `json:"type"`
	// From is the traffic manager (decision, heartbeat) or the gateway
	// (presence) that wrote it.
	From string    `json:"from"`
	Time time.Time `json:"time"`
	// A decision: the key's fleet-wide count in its window, per gateway and
	// summed, and, once the sum reached the limit, until when the key is
	// throttled (the window's end; never later).
	Key            string           `json:"key,omitempty"`
	WindowEnd      time.Time        `json:"windowEnd,omitzero"`
	ThrottledUntil time.Time        `json:"throttledUntil,omitzero"`
	Limit          int64            `json:"limit,omitempty"`
	Count          int64            `json:"count,omitempty"`
	Counts         map[string]int64 `json:"counts,omitempty"`
}

func decodeCount(b []byte) (Count, error) {
	var c Count
	if err := json.Unmarshal(b, &c); err != nil {
		return Count{}, fmt.Errorf("decode count: %w", err)
	}
	var errs []error
	if c.SchemaVersion != SchemaVersion {
		errs = append(errs, fmt.Errorf("schemaVersion %d, want %d", c.SchemaVersion, SchemaVersion))
	}
	if c.Gateway == "" || c.Key == "" {
		errs = append(errs, errors.New("no gateway or key"))
	}
	if c.Count < 0 || c.Limit < 0 {
		errs = append(errs, errors.New("negative count or limit"))
	}
	if err := errors.Join(errs...); err != nil {
		return Count{}, fmt.Errorf("invalid count: %w", err)
	}
	return c, nil
}

func decodeMessage(b []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m); err != nil {
		return Message{}, fmt.Errorf("decode message: %w", err)
	}
	if m.SchemaVersion != SchemaVersion {
		return Message{}, fmt.Errorf("invalid message: schemaVersion %d, want %d", m.SchemaVersion, SchemaVersion)
	}
	switch m.Type {
	case TypeHeartbeat, TypePresence:
		if m.From == "" {
			return Message{}, fmt.Errorf("invalid %s message: no from", m.Type)
		}
	case TypeDecision:
		if m.Key == "" {
			return Message{}, errors.New("invalid decision: no key")
		}
	default:
		return Message{}, fmt.Errorf("invalid message: type %q", m.Type)
	}
	return m, nil
}
