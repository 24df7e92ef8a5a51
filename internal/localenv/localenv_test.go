package localenv

import "testing"

// TestFreePortsOutsideEphemeralRange: the ports are distinct across calls
// and below the range the kernel picks outgoing ports from.
func TestFreePortsOutsideEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 20 {
		ports, err := FreePorts(3)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			if p < portFloor || p >= low {
				t.Errorf("port %d outside [%d, %d)", p, portFloor, low)
			}
			if seen[p] {
				t.Errorf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
}
