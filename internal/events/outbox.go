package events

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// OutboxChannel is the PostgreSQL NOTIFY channel that wakes the relay.
const OutboxChannel = "apim_outbox"

// Append writes ev to the outbox inside tx, the transaction of the change it
// describes, so that the change and its event commit or roll back together.
func Append(ctx context.Context, tx pgx.Tx, ev Event) error {
	ev.SchemaVersion = SchemaVersion
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode %s event %s: %w", ev.Kind, ev.ID, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)`,
		TopicNotifications, ev.Key(), payload); err != nil {
		return fmt.Errorf("append %s event %s to outbox: %w", ev.Kind, ev.ID, err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, OutboxChannel); err != nil {
		return fmt.Errorf("notify outbox: %w", err)
	}
	return nil
}

// Key is the Kafka message key of the event: the entity id. A deployment
// event's id is its API's id, so an API's changes stay in one partition, in order.
func (e Event) Key() string {
	return e.ID
}
