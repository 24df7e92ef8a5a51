package model

import "testing"

func TestRouteFieldsRoundTrip(t *testing.T) {
	in := [][2]string{{"api_id", "a&b=c"}, {"scopes", "read write"}, {"api_name", "café ☕ %;+"}, {"empty", ""}}
	got, err := DecodeRouteFields(EncodeRouteFields(in...))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Errorf("decoded %v, want %d fields", got, len(in))
	}
	for _, kv := range in {
		if got[kv[0]] != kv[1] {
			t.Errorf("%s = %q, want %q", kv[0], got[kv[0]], kv[1])
		}
	}
}
