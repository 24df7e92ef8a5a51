package portal_test

import "testing"

// TestBackendJWTFlag: enableBackendJWT is accepted on POST and PUT of an API
// and echoed on every read, false when not sent.
func TestBackendJWTFlag(t *testing.T) {
	e := newEnv(t, 0)
	type flagged struct {
		ID               string `json:"id"`
		EnableBackendJWT *bool  `json:"enableBackendJWT"`
	}
	check := func(what string, got flagged, want bool) {
		t.Helper()
		if got.EnableBackendJWT == nil || *got.EnableBackendJWT != want {
			t.Errorf("%s: enableBackendJWT = %v, want %v", what, got.EnableBackendJWT, want)
		}
	}

	var plain flagged
	e.must(e.call("POST", pubBase+"/apis", "admin-token", petstoreBody()), 201, &plain)
	check("POST without the field", plain, false)

	body := petstoreBody()
	body["context"], body["name"], body["enableBackendJWT"] = "/jwt", "JWT", true
	var api flagged
	e.must(e.call("POST", pubBase+"/apis", "admin-token", body), 201, &api)
	check("POST", api, true)
	var got flagged
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "admin-token", nil), 200, &got)
	check("GET after POST", got, true)

	// The body of a GET can be PUT back, with the flag turned off.
	var full map[string]any
	e.call("GET", pubBase+"/apis/"+api.ID, "admin-token", nil).json(t, &full)
	full["enableBackendJWT"] = false
	e.must(e.call("PUT", pubBase+"/apis/"+api.ID, "admin-token", full), 200, &got)
	check("PUT", got, false)
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "admin-token", nil), 200, &got)
	check("GET after PUT", got, false)

	e.rejects(400, func() resp {
		b := petstoreBody()
		b["context"], b["enableBackendJWT"] = "/bad", "yes"
		return e.call("POST", pubBase+"/apis", "admin-token", b)
	})
}
