package portal

import (
	"reflect"
	"testing"
)

func TestParseSearch(t *testing.T) {
	for q, want := range map[string][]searchTerm{
		``:                                     nil,
		`name:"Pet Store" version:"1.0.0"`:     {{"name", "Pet Store", true}, {"version", "1.0.0", true}},
		`  pets  status:published `:            {{"", "pets", false}, {"status", "published", false}},
		`"exact words" Provider:admin`:         {{"", "exact words", true}, {"provider", "admin", false}},
		`context:/pets/v1 description:"a:b c"`: {{"context", "/pets/v1", false}, {"description", "a:b c", true}},
		`http://x`:                             {{"http", "//x", false}},
	} {
		got, err := parseSearch(q)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseSearch(%q) = %+v, %v; want %+v", q, got, err, want)
		}
	}
	for _, q := range []string{`name:"unclosed`, `name:`, `name:""`} {
		if got, err := parseSearch(q); err == nil {
			t.Errorf("parseSearch(%q) = %+v, want an error", q, got)
		}
	}
}
