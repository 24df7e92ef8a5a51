package portal

import "testing"

func TestDuplicateKey(t *testing.T) {
	for body, want := range map[string]string{
		`{"name":"a","version":"1"}`:                                  "",
		`{"name":"a","name":"b"}`:                                     "name",
		`{"operations":[{"verb":"GET"},{"verb":"GET","verb":"PUT"}]}`: "operations[1].verb",
		`{"a":{"b":1},"c":{"b":2}}`:                                   "",
		`{"a":[1,[2,3],{"x":{"y":1,"y":2}}]}`:                         "a[2].x.y",
		`[{"k":1},{"k":2}]`:                                           "",
		`{"k":"v","o":{"k":1}}`:                                       "",
		`{"a":1,"a"`:                                                  "a",
		`{"a":`:                                                       "",
		`{"a":"name","name":1}`:                                       "",
	} {
		if got := duplicateKey([]byte(body)); got != want {
			t.Errorf("duplicateKey(%s) = %q, want %q", body, got, want)
		}
	}
}
