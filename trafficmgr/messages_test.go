package trafficmgr

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/apim-dev/apim/internal/model"
)

// FuzzPolicyWindowEncodes takes a policy of any window unit and size, as an
// admin may send it, through what the gateway does with it: the window that
// holds now and the count message it publishes for that window. An accepted
// policy's window holds now; and no policy, accepted or not (one stored
// before the bound), yields a count that cannot be encoded and decoded:
// that failure once stopped the process.
func FuzzPolicyWindowEncodes(f *testing.F) {
	units := []string{model.UnitSecond, model.UnitMinute, model.UnitHour, model.UnitDay, model.UnitMonth, model.UnitYear}
	for i := range units {
		f.Add(uint8(i), int64(1), int64(1_780_000_000))
		f.Add(uint8(i), int64(100_000), int64(1_780_000_000))
		f.Add(uint8(i), model.MaxUnitTime(units[i]), int64(1_780_000_000))
		f.Add(uint8(i), int64(1<<62), int64(0))
	}
	f.Fuzz(func(t *testing.T, unitIdx uint8, unitTime, nowSec int64) {
		unit := units[int(unitIdx)%len(units)]
		// A clock between 1970 and 2200.
		const until2200 = 7_258_118_400
		now := time.Unix((nowSec%until2200+until2200)%until2200, 0)
		p := model.Policy{Level: model.LevelSubscription, Name: "P", RequestCount: 10, UnitTime: unitTime, TimeUnit: unit}
		accepted := p.Validate() == nil
		start, end := model.WindowStart(p.TimeUnit, p.UnitTime, now)
		if unitTime < 1 {
			if accepted || !start.IsZero() {
				t.Fatalf("unitTime %d: accepted %v, window %v", unitTime, accepted, start)
			}
			return
		}
		if start.After(now) || !end.After(now) {
			t.Fatalf("%d %s at %v: window %v .. %v does not hold now", unitTime, unit, now, start, end)
		}
		if accepted && unitTime > model.MaxUnitTime(unit) {
			t.Fatalf("%d %s accepted past the maximum %d", unitTime, unit, model.MaxUnitTime(unit))
		}
		b, err := json.Marshal(Count{SchemaVersion: SchemaVersion, Gateway: "g", Key: "k", WindowStart: start, WindowEnd: end, Count: 1, Limit: 10})
		if err != nil {
			t.Fatalf("%d %s: encode count: %v", unitTime, unit, err)
		}
		c, err := decodeCount(b)
		if err != nil || !c.WindowEnd.Equal(end) || !c.WindowStart.Equal(start) {
			t.Fatalf("%d %s: decoded %+v, %v; want window %v .. %v", unitTime, unit, c, err, start, end)
		}
	})
}
