package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/events"
	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

func TestSetSubscriptionStatus(t *testing.T) {
	f := newFixture(t)
	ctx, s := f.ctx, f.s
	api := publishedAPI(f)
	app, err := s.CreateApplication(ctx, store.Application{Application: model.Application{Name: "app", Owner: "bob", ThrottlingPolicy: "Unlimited"}})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := s.CreateSubscription(ctx, model.Subscription{ApplicationID: app.ID, APIID: api.ID, ThrottlingPolicy: "Gold"}, "bob")
	if err != nil {
		t.Fatal(err)
	}
	f.newEvents()

	gen := sub.Generation
	for _, st := range []string{model.SubBlocked, model.SubProdOnlyBlocked, model.SubUnblocked} {
		got, err := s.SetSubscriptionStatus(ctx, sub.ID, st)
		if err != nil {
			t.Fatal(err)
		}
		ev := f.oneEvent(events.KindSubscription, events.OpUpsert, sub.ID)
		if got.Status != st || got.Generation <= gen || ev.Generation != got.Generation {
			t.Errorf("%s: got %+v, event generation %d, previous %d", st, got, ev.Generation, gen)
		}
		gen = got.Generation
		stored, err := s.GetSubscription(ctx, sub.ID, "")
		if err != nil || stored.Status != st || stored.Generation != gen {
			t.Errorf("%s: stored %+v %v", st, stored, err)
		}
	}
	// The same status again: no write, no event.
	if _, err := s.SetSubscriptionStatus(ctx, sub.ID, model.SubUnblocked); err != nil {
		t.Fatal(err)
	}
	if evs := f.newEvents(); len(evs) != 0 {
		t.Errorf("unchanged status emitted %+v", evs)
	}
	f.failsCleanly(store.ErrInvalid, []string{"subscriptions"}, func() error {
		_, err := s.SetSubscriptionStatus(ctx, sub.ID, "PAUSED")
		return err
	})
	f.failsCleanly(store.ErrNotFound, []string{"subscriptions"}, func() error {
		_, err := s.SetSubscriptionStatus(ctx, "00000000-0000-0000-0000-000000000000", model.SubBlocked)
		return err
	})
	// Blocking switches between active states only: a subscription on hold
	// (awaiting a workflow) cannot be unblocked into service, nor put on hold.
	f.failsCleanly(store.ErrInvalid, []string{"subscriptions"}, func() error {
		_, err := s.SetSubscriptionStatus(ctx, sub.ID, model.SubOnHold)
		return err
	})
	if _, err := f.pool.Exec(ctx, `UPDATE subscriptions SET status = 'ON_HOLD' WHERE id = $1`, sub.ID); err != nil {
		t.Fatal(err)
	}
	f.failsCleanly(store.ErrInvalid, []string{"subscriptions"}, func() error {
		_, err := s.SetSubscriptionStatus(ctx, sub.ID, model.SubUnblocked)
		return err
	})
	if _, err := f.pool.Exec(ctx, `UPDATE subscriptions SET status = 'UNBLOCKED' WHERE id = $1`, sub.ID); err != nil {
		t.Fatal(err)
	}

	subs, err := s.ListAPISubscriptions(ctx, api.ID)
	if err != nil || len(subs) != 1 || subs[0].ID != sub.ID || subs[0].ApplicationName != "app" || subs[0].ApplicationOwner != "bob" {
		t.Errorf("ListAPISubscriptions %+v %v", subs, err)
	}
	if _, err := s.ListAPISubscriptions(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown api: %v", err)
	}
}

// TestGatewayStateRevocations checks the full state carries the revoked
// tokens that have not expired, and no others.
func TestGatewayStateRevocations(t *testing.T) {
	f := newFixture(t)
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if _, err := f.pool.Exec(f.ctx, `INSERT INTO revoked_tokens (jti, expires_at) VALUES ('live', $1), ('gone', now() - interval '1 minute')`, exp); err != nil {
		t.Fatal(err)
	}
	st, err := f.s.GatewayState(f.ctx, "Default")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Revocations) != 1 || st.Revocations[0].JTI != "live" || !st.Revocations[0].ExpiresAt.Equal(exp) {
		t.Errorf("revocations %+v, want live until %s", st.Revocations, exp)
	}
}
