package portal_test

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"hash/crc32"
	"io"
	"mime/multipart"
	"strings"
	"testing"
)

// zipEntry is one file of a test zip.
type zipEntry struct{ name, body string }

func zipOf(t *testing.T, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, en := range entries {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: en.name, Method: zip.Deflate})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(fw, en.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func unzip(t *testing.T, data []byte) []zipEntry {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("export is not a zip: %v", err)
	}
	var out []zipEntry
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, zipEntry{f.Name, string(b)})
	}
	return out
}

// edited is entries with the file named name changed by edit.
func edited(entries []zipEntry, name string, edit func(string) string) []zipEntry {
	out := make([]zipEntry, 0, len(entries))
	for _, en := range entries {
		if en.name == name {
			en.body = edit(en.body)
		}
		out = append(out, en)
	}
	return out
}

func (e *env) importZip(data []byte, query string) resp {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("file", "project.zip")
	if err != nil {
		e.t.Fatal(err)
	}
	_, _ = fw.Write(data)
	_ = mw.Close()
	return e.do("POST", pubBase+"/apis/import"+query, "admin-token", mw.FormDataContentType(), &buf)
}

// apiIDByName is the id of the one API named name, "" when there is none.
func (e *env) apiIDByName(name string) string {
	e.t.Helper()
	var list struct {
		List []struct{ ID, Name string }
	}
	e.must(e.call("GET", pubBase+"/apis?limit=100", "admin-token", nil), 200, &list)
	for _, a := range list.List {
		if a.Name == name {
			return a.ID
		}
	}
	return ""
}

// TestProjectExportImportRoundTrip exports an API with every WSO2 property
// set, refuses to import it over itself, deletes it, imports it back and
// requires the same API, revised and deployed where it was; then
// overwrite=true updates it.
func TestProjectExportImportRoundTrip(t *testing.T) {
	e := newEnv(t, 0)
	var api struct{ ID string }
	e.must(e.call("POST", pubBase+"/apis", "admin-token", fullAPIBody(1)), 201, &api)
	var rev struct{ ID string }
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/revisions", "admin-token", `{}`), 201, &rev)
	e.must(e.call("POST", pubBase+"/apis/"+api.ID+"/deploy-revision?revisionId="+rev.ID, "admin-token",
		`[{"name":"Default","vhost":"localhost","displayOnDevportal":false}]`), 201, nil)
	e.must(e.call("POST", pubBase+"/apis/change-lifecycle?apiId="+api.ID+"&action=Publish", "admin-token", nil), 200, nil)
	var before map[string]any
	e.must(e.call("GET", pubBase+"/apis/"+api.ID, "admin-token", nil), 200, &before)

	r := e.call("GET", pubBase+"/apis/export?name=Full&version=1.0.0&providerName=admin&format=YAML&preserveStatus=true", "admin-token", nil)
	e.must(r, 200, nil)
	if ct := r.header.Get("Content-Type"); ct != "application/zip" {
		t.Errorf("export Content-Type %q", ct)
	}
	exported := unzip(t, r.body)
	files := map[string]string{}
	var names []string
	for _, en := range exported {
		files[en.name] = en.body
		names = append(names, en.name)
	}
	for name, want := range map[string][]string{
		"Full-1.0.0/api.yaml": {
			"type: api\n", "version: v4.7.0\n", "data:\n", "  name: Full\n", "  lifeCycleStatus: PUBLISHED\n",
			"  cacheTimeout: 301\n", "payloadSchema: '{}-1'\n",
		},
		"Full-1.0.0/Definitions/swagger.yaml":     {"openapi: 3.0.1\n", "/pets/{id}:", "x-auth-type: Application\n", "pets:read-1"},
		"Full-1.0.0/deployment_environments.yaml": {"type: deployment_environments\n", "version: v4.7.0\n", "deploymentEnvironment: Default\n", "displayOnDevportal: false\n"},
	} {
		body, ok := files[name]
		if !ok {
			t.Fatalf("export has %v, no %s", names, name)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q:\n%s", name, w, body)
			}
		}
	}

	// The API exists: by name and version, and by context and version.
	e.rejects(409, func() resp { return e.importZip(r.body, "?overwrite=false") }, "already exists")
	renamed := zipOf(t, edited(exported, "Full-1.0.0/api.yaml", func(s string) string {
		return strings.Replace(s, "  name: Full\n", "  name: Other\n", 1)
	})...)
	e.rejects(409, func() resp { return e.importZip(renamed, "") }, "context /full and version 1.0.0 already exists")

	e.must(e.call("DELETE", pubBase+"/apis/"+api.ID, "admin-token", nil), 200, nil)
	n := e.outbox()
	imp := e.importZip(r.body, "?preserveProvider=true&rotateRevision=false")
	e.must(imp, 200, nil)
	if !strings.Contains(string(imp.body), "imported") {
		t.Errorf("import answered %q", imp.body)
	}
	// One api event and one deployment event, as create and deploy write.
	if got := e.outbox() - n; got != 2 {
		t.Errorf("import wrote %d outbox rows, want 2", got)
	}
	id := e.apiIDByName("Full")
	if id == "" || id == api.ID {
		t.Fatalf("imported api id %q (deleted one %s)", id, api.ID)
	}
	var after map[string]any
	e.must(e.call("GET", pubBase+"/apis/"+id, "admin-token", nil), 200, &after)
	drop := []string{"id", "createdTime", "lastUpdatedTime", "lastUpdatedTimestamp"}
	sameJSON(t, normalized(t, before, drop), normalized(t, after, drop))
	var revs struct {
		Count int
		List  []struct {
			DeploymentInfo []struct {
				Name               string
				DisplayOnDevportal bool
			} `json:"deploymentInfo"`
		}
	}
	e.must(e.call("GET", pubBase+"/apis/"+id+"/revisions", "admin-token", nil), 200, &revs)
	if revs.Count != 1 || len(revs.List[0].DeploymentInfo) != 1 || revs.List[0].DeploymentInfo[0].Name != "Default" ||
		revs.List[0].DeploymentInfo[0].DisplayOnDevportal {
		t.Errorf("imported revisions %+v, want one deployed to Default hidden from the devportal", revs)
	}

	// overwrite=true updates the API of that name and version in place.
	changed := zipOf(t, edited(exported, "Full-1.0.0/api.yaml", func(s string) string {
		return strings.Replace(s, "  description: every property-1\n", "  description: changed\n", 1)
	})...)
	e.must(e.importZip(changed, "?overwrite=true&preserveProvider=true&rotateRevision=true"), 200, nil)
	var got map[string]any
	e.must(e.call("GET", pubBase+"/apis/"+id, "admin-token", nil), 200, &got)
	if got["description"] != "changed" || got["id"] != id {
		t.Errorf("after overwrite: id %v description %v", got["id"], got["description"])
	}
	e.must(e.call("GET", pubBase+"/apis/"+id+"/revisions", "admin-token", nil), 200, &revs)
	if revs.Count != 2 {
		t.Errorf("after overwrite %d revisions, want 2", revs.Count)
	}

	// JSON, by id, the status not preserved.
	r = e.call("GET", pubBase+"/apis/export?apiId="+id+"&format=JSON&preserveStatus=false", "viewer-token", nil)
	e.must(r, 200, nil)
	files = map[string]string{}
	for _, en := range unzip(t, r.body) {
		files[en.name] = en.body
	}
	if !strings.Contains(files["Full-1.0.0/api.json"], `"lifeCycleStatus": "CREATED"`) || files["Full-1.0.0/Definitions/swagger.json"] == "" ||
		files["Full-1.0.0/deployment_environments.json"] == "" {
		t.Errorf("JSON export %v", files)
	}

	// preserveProvider=false makes the caller the provider.
	other := zipOf(t, edited(exported, "Full-1.0.0/api.yaml", func(s string) string {
		s = strings.Replace(s, "  name: Full\n", "  name: Other\n", 1)
		s = strings.Replace(s, "  context: /full\n", "  context: /other\n", 1)
		return strings.Replace(s, "  provider: admin\n", "  provider: someone\n", 1)
	})...)
	e.must(e.importZip(other, "?preserveProvider=true"), 200, nil)
	e.must(e.call("GET", pubBase+"/apis/"+e.apiIDByName("Other"), "admin-token", nil), 200, &got)
	if got["provider"] != "someone" {
		t.Errorf("preserveProvider=true: provider %v", got["provider"])
	}
	e.must(e.call("DELETE", pubBase+"/apis/"+e.apiIDByName("Other"), "admin-token", nil), 200, nil)
	e.must(e.importZip(other, "?preserveProvider=false"), 200, nil)
	e.must(e.call("GET", pubBase+"/apis/"+e.apiIDByName("Other"), "admin-token", nil), 200, &got)
	if got["provider"] != "admin" {
		t.Errorf("preserveProvider=false: provider %v, want the caller", got["provider"])
	}
}

// TestProjectExportRefuses: an unknown API is 404, a bad query 400, no
// view scope 403.
func TestProjectExportRefuses(t *testing.T) {
	e := newEnv(t, 0)
	e.publish()
	for name, c := range map[string]struct {
		query  string
		status int
		want   string
	}{
		"unknown name":      {"name=Nope&version=1.0.0", 404, "api Nope version 1.0.0 does not exist"},
		"unknown provider":  {"name=PetStore&version=1.0.0&providerName=bob", 404, "of provider bob"},
		"unknown id":        {"apiId=6f1c1a52-6d9e-4d1e-9a53-3b0a9f1f0c11", 404, "does not exist"},
		"no name":           {"version=1.0.0", 400, "apiId, or name and version, are required"},
		"bad format":        {"name=PetStore&version=1.0.0&format=XML", 400, `format "XML" is not supported`},
		"bad status flag":   {"name=PetStore&version=1.0.0&preserveStatus=yes", 400, "preserveStatus must be true or false"},
		"no such revision":  {"name=PetStore&version=1.0.0&revisionNumber=9", 404, "has no revision 9"},
		"bad revision flag": {"name=PetStore&version=1.0.0&revisionNumber=x", 400, "revisionNumber"},
	} {
		t.Run(name, func(t *testing.T) {
			e := &env{t: t, ctx: e.ctx, pool: e.pool, srv: e.srv, logs: e.logs}
			e.rejects(c.status, func() resp {
				return e.call("GET", pubBase+"/apis/export?"+c.query, "admin-token", nil)
			}, c.want)
		})
	}
	e.rejects(403, func() resp {
		return e.call("GET", pubBase+"/apis/export?name=PetStore&version=1.0.0", "eve-token", nil)
	})
	r := e.call("GET", pubBase+"/apis/export?name=PetStore&version=1.0.0&latestRevision=true", "admin-token", nil)
	e.must(r, 200, nil)
	if got := unzip(t, r.body); len(got) != 3 || got[0].name != "PetStore-1.0.0/api.yaml" {
		t.Errorf("latest revision export %v", got)
	}
}

// TestProjectImportRefusesBadInput: every malformed project is a 400 (413
// when too big) with a WSO2 error body saying what is wrong, and stores
// nothing.
func TestProjectImportRefusesBadInput(t *testing.T) {
	e := newEnv(t, 0)
	e.publish()
	r := e.call("GET", pubBase+"/apis/export?name=PetStore&version=1.0.0", "admin-token", nil)
	e.must(r, 200, nil)
	good := unzip(t, r.body)
	e.must(e.call("DELETE", pubBase+"/apis/"+e.apiIDByName("PetStore"), "admin-token", nil), 200, nil)
	apiYAML := "PetStore-1.0.0/api.yaml"
	with := func(name string, edit func(string) string) []byte { return zipOf(t, edited(good, name, edit)...) }
	without := func(name string) []byte {
		var out []zipEntry
		for _, en := range good {
			if en.name != name {
				out = append(out, en)
			}
		}
		return zipOf(t, out...)
	}
	plus := func(extra ...zipEntry) []byte { return zipOf(t, append(append([]zipEntry{}, good...), extra...)...) }
	for name, c := range map[string]struct {
		file  []byte
		query string
		want  []string
	}{
		"not a zip":      {file: []byte("name: PetStore\n"), want: []string{"file is not a zip archive"}},
		"empty zip":      {file: zipOf(t), want: []string{"empty zip archive"}},
		"no api.yaml":    {file: without(apiYAML), want: []string{"no api.yaml or api.json", "PetStore-1.0.0/"}},
		"wrong type":     {file: with(apiYAML, func(s string) string { return strings.Replace(s, "type: api\n", "type: api_product\n", 1) }), want: []string{`api.yaml has type "api_product"; want "api"`}},
		"malformed yaml": {file: with(apiYAML, func(s string) string { return s + "  : : [\n" }), want: []string{"api.yaml is not valid YAML or JSON"}},
		"unknown field": {file: with(apiYAML, func(s string) string {
			return strings.Replace(s, "  name: PetStore\n", "  name: PetStore\n  colour: blue\n", 1)
		}), want: []string{`api.yaml: data: unknown field "colour"`}},
		"unknown envelope": {file: with(apiYAML, func(s string) string { return "kind: x\n" + s }), want: []string{`api.yaml: unknown field "kind"`}},
		"wrong value type": {file: with(apiYAML, func(s string) string { return strings.Replace(s, "  name: PetStore\n", "  name: [a]\n", 1) }), want: []string{"api.yaml: data: name must be a string"}},
		"no data":          {file: with(apiYAML, func(s string) string { return s[:strings.Index(s, "data:")] }), want: []string{"api.yaml has no data"}},
		"invalid api":      {file: with(apiYAML, func(s string) string { return strings.Replace(s, "  context: /pets\n", "", 1) }), want: []string{"context is required"}},
		"bad status": {file: with(apiYAML, func(s string) string {
			return strings.Replace(s, "lifeCycleStatus: PUBLISHED", "lifeCycleStatus: LIVE", 1)
		}), want: []string{`lifeCycleStatus "LIVE"`}},
		"bad definition":   {file: with("PetStore-1.0.0/Definitions/swagger.yaml", func(string) string { return "info: {title: x}\n" }), want: []string{"Definitions/swagger.yaml is not a valid OpenAPI definition"}},
		"wrong envs type":  {file: with("PetStore-1.0.0/deployment_environments.yaml", func(s string) string { return strings.Replace(s, "type: deployment_environments", "type: api", 1) }), want: []string{`deployment_environments.yaml has type "api"`}},
		"unknown env":      {file: with("PetStore-1.0.0/deployment_environments.yaml", func(s string) string { return strings.Replace(s, "Default", "Nowhere", 1) }), want: []string{`gateway environment "Nowhere" does not exist`}},
		"unknown env key":  {file: with("PetStore-1.0.0/deployment_environments.yaml", func(s string) string { return strings.Replace(s, "deploymentEnvironment:", "environment:", 1) }), want: []string{`unknown field "environment"`}},
		"path traversal":   {file: plus(zipEntry{"PetStore-1.0.0/../../etc/passwd", "x"}), want: []string{"leaves the project folder"}},
		"absolute path":    {file: plus(zipEntry{"/PetStore-1.0.0/Docs/a.md", "x"}), want: []string{"absolute path"}},
		"two top folders":  {file: plus(zipEntry{"Other-1.0.0/api.yaml", "x"}), want: []string{"more than one top folder (PetStore-1.0.0/ and Other-1.0.0/)"}},
		"file at the root": {file: plus(zipEntry{"api.yaml", "x"}), want: []string{"outside the project's top folder"}},
		"duplicate entry":  {file: plus(zipEntry{apiYAML, "x"}), want: []string{"api.yaml twice"}},
		"bad flag":         {file: zipOf(t, good...), query: "?overwrite=maybe", want: []string{"overwrite must be true or false"}},
	} {
		t.Run(name, func(t *testing.T) {
			e := &env{t: t, ctx: e.ctx, pool: e.pool, srv: e.srv, logs: e.logs}
			e.rejects(400, func() resp { return e.importZip(c.file, c.query) }, c.want...)
		})
	}
	e.rejects(400, func() resp {
		body, ct := multipartBody(t, "", "x")
		return e.do("POST", pubBase+"/apis/import", "admin-token", ct, body)
	}, "file is required")
	e.rejects(415, func() resp { return e.call("POST", pubBase+"/apis/import", "admin-token", `{}`) }, "multipart/form-data")
	e.rejects(403, func() resp {
		var buf bytes.Buffer
		return e.do("POST", pubBase+"/apis/import", "viewer-token", "multipart/form-data; boundary=x", &buf)
	})
	// The good project still imports: the refusals above were for what they changed.
	e.must(e.importZip(zipOf(t, good...), ""), 200, nil)
}

// TestProjectImportZipBomb: an entry that inflates past the body limit is
// a 413, whether its header says so or lies; so is an upload past it.
func TestProjectImportZipBomb(t *testing.T) {
	const limit = 64 << 10
	e := newEnv(t, limit)
	big := "type: api\nversion: v4.7.0\ndata:\n  name: Bomb\n" + strings.Repeat(" ", 4*limit)
	honest := zipOf(t, zipEntry{"Bomb-1/api.yaml", big})
	if len(honest) > limit/4 {
		t.Fatalf("the bomb is %d bytes compressed", len(honest))
	}
	e.rejects(413, func() resp { return e.importZip(honest, "") }, "Bomb-1/api.yaml is larger than 65536 bytes uncompressed")

	// The same data, its header claiming 100 bytes: the reader stops there.
	var deflated bytes.Buffer
	fw, _ := flate.NewWriter(&deflated, flate.BestCompression)
	_, _ = io.WriteString(fw, big)
	_ = fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{
		Name: "Bomb-1/api.yaml", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE([]byte(big)),
		CompressedSize64: uint64(deflated.Len()), UncompressedSize64: 100, //nolint:gosec // G115: a length is not negative
	})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(deflated.Bytes())
	_ = zw.Close()
	e.rejects(400, func() resp { return e.importZip(buf.Bytes(), "") }, "Bomb-1/api.yaml is corrupt")

	// Stored, not compressed: the upload itself is past the limit.
	var stored bytes.Buffer
	zw = zip.NewWriter(&stored)
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: "Bomb-1/Image/icon.png", Method: zip.Store})
	_, _ = io.WriteString(w, strings.Repeat("x", 2*limit))
	_ = zw.Close()
	e.rejects(413, func() resp { return e.importZip(stored.Bytes(), "") }, "request body is larger than 65536 bytes")
}
