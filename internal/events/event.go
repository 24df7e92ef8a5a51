// Package events carries entity notifications from the control plane to every
// gateway and the xDS server: the outbox written in the same transaction as a
// change, the relay that publishes it to Kafka, and the consumers.
package events

import (
	"encoding/json"
	"time"
)

// SchemaVersion is the version of the Event envelope; schema/events.md
// documents each version.
const SchemaVersion = 1

// TopicNotifications carries entity notifications, keyed by entity id so that
// every change of one entity lands in one partition, in order.
const TopicNotifications = "apim.notifications"

// Kind names the entity an event is about.
type Kind string

// Entity kinds.
const (
	KindAPI          Kind = "api"
	KindDeployment   Kind = "deployment"
	KindApplication  Kind = "application"
	KindKeyMapping   Kind = "key_mapping"
	KindSubscription Kind = "subscription"
	KindPolicy       Kind = "policy"
	KindRevocation   Kind = "revocation"
	KindDenyPolicy   Kind = "deny_policy"
	KindKeyManager   Kind = "key_manager"
	KindEnvironment  Kind = "environment"
)

// Op is what happened to the entity.
type Op string

// Operations.
const (
	OpUpsert Op = "upsert"
	OpDelete Op = "delete"
)

// Event is the envelope of every notification. Data holds the entity as the
// model package encodes it (for a delete, at least its id fields). Generation
// grows with every change of any entity, so a consumer keeps the highest it has
// applied per entity and drops anything older.
type Event struct {
	SchemaVersion int             `json:"schemaVersion"`
	Kind          Kind            `json:"kind"`
	Op            Op              `json:"op"`
	ID            string          `json:"id"`
	Environment   string          `json:"environment,omitempty"`
	Generation    int64           `json:"generation"`
	Time          time.Time       `json:"time"`
	Data          json.RawMessage `json:"data"`
}
