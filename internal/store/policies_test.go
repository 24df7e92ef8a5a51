package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

// TestPoliciesInUseStay is issue 14's third reproduction: built-in
// policies could be deleted, after which creating an API failed. The
// defaults cannot go, a policy anything refers to cannot go (the error
// names what refers to it), and a default deleted behind apim's back comes
// back at start.
func TestPoliciesInUseStay(t *testing.T) {
	f := newFixture(t)
	for _, level := range []string{model.LevelSubscription, model.LevelApplication, model.LevelAPI} {
		f.failsCleanly(store.ErrConflict, []string{"throttling_policies"}, func() error { return f.s.DeletePolicy(f.ctx, level, "Unlimited") })
	}
	api := petstore() // offers Gold and Unlimited
	a, err := f.s.CreateAPI(f.ctx, api)
	if err != nil {
		t.Fatal(err)
	}
	err = f.s.DeletePolicy(f.ctx, model.LevelSubscription, "Gold")
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "in use by 1 APIs offering it") {
		t.Fatalf("delete Gold while an API offers it: %v", err)
	}
	if _, err := f.s.CreatePolicy(f.ctx, model.Policy{Level: model.LevelAPI, Name: "Tight", RequestCount: 5, UnitTime: 1, TimeUnit: "min"}); err != nil {
		t.Fatal(err)
	}
	a.Operations[0].ThrottlingPolicy = "Tight"
	if _, err := f.s.UpdateAPI(f.ctx, *a); err != nil {
		t.Fatal(err)
	}
	err = f.s.DeletePolicy(f.ctx, model.LevelAPI, "Tight")
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "1 API resources") {
		t.Fatalf("delete a resource's policy: %v", err)
	}
	_, err = f.s.UpdatePolicy(f.ctx, "Gold", model.Policy{Level: model.LevelSubscription, Name: "Platinum", RequestCount: 1, UnitTime: 1, TimeUnit: "min"})
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("rename Gold: %v, want refused", err)
	}
	if err := f.s.DeletePolicy(f.ctx, model.LevelSubscription, "Bronze"); err != nil {
		t.Fatalf("delete an unused policy: %v", err)
	}

	if _, err := f.pool.Exec(f.ctx, `DELETE FROM throttling_policies WHERE name = 'Unlimited' AND level = 'application'`); err != nil {
		t.Fatal(err)
	}
	for range 2 { // idempotent
		if err := f.s.EnsureDefaultPolicies(f.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if p, err := f.s.GetPolicy(f.ctx, model.LevelApplication, "Unlimited"); err != nil || !p.Unlimited() {
		t.Fatalf("application Unlimited after EnsureDefaultPolicies: %+v, %v", p, err)
	}
}
