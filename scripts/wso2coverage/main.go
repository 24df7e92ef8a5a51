// Command wso2coverage counts the REST operations of WSO2 API-M 4.x that apim
// serves: it compares the (method, path) pairs of WSO2's publisher, devportal
// and admin definitions with apim's own OpenAPI documents (portal/openapi,
// which a test keeps equal to the routes mounted).
//
// WSO2's definitions are not part of this repository; give the directory
// that holds publisher-api.yaml, devportal-api.yaml and admin-api.yaml, from
// wso2/carbon-apimgt (components/apimgt/org.wso2.carbon.apimgt.rest.api.*):
//
//	go run ./scripts/wso2coverage -wso2 DIR [-missing]
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// apis pairs each WSO2 definition with apim's document of the same API.
var apis = []struct{ name, wso2, apim string }{
	{"publisher v4", "publisher-api.yaml", "publisher.yaml"},
	{"devportal v3", "devportal-api.yaml", "devportal.yaml"},
	{"admin v4", "admin-api.yaml", "admin.yaml"},
}

func main() {
	wso2 := flag.String("wso2", "", "directory of WSO2's publisher-api.yaml, devportal-api.yaml and admin-api.yaml")
	own := flag.String("apim", "portal/openapi", "directory of apim's OpenAPI documents")
	missing := flag.Bool("missing", false, "list each WSO2 operation apim does not serve")
	flag.Parse()
	if *wso2 == "" {
		fmt.Fprintln(os.Stderr, "wso2coverage: -wso2 DIR is required (WSO2's definitions, from wso2/carbon-apimgt)")
		os.Exit(2)
	}
	if err := report(os.Stdout, *wso2, *own, *missing); err != nil {
		fmt.Fprintln(os.Stderr, "wso2coverage:", err)
		os.Exit(1)
	}
}

func report(w io.Writer, wso2Dir, apimDir string, listMissing bool) error {
	fmt.Fprintln(w, "| REST API | WSO2 operations | served by apim | share |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	var gaps []string
	all, served := 0, 0
	for _, a := range apis {
		theirs, err := operations(filepath.Join(wso2Dir, a.wso2))
		if err != nil {
			return err
		}
		ours, err := operations(filepath.Join(apimDir, a.apim))
		if err != nil {
			return err
		}
		n := 0
		for _, op := range theirs {
			if slices.Contains(ours, op) {
				n++
			} else {
				gaps = append(gaps, a.name+": "+op)
			}
		}
		all, served = all+len(theirs), served+n
		fmt.Fprintf(w, "| %s | %d | %d | %s |\n", a.name, len(theirs), n, share(n, len(theirs)))
	}
	fmt.Fprintf(w, "| all three | %d | %d | %s |\n", all, served, share(served, all))
	if listMissing {
		fmt.Fprintln(w, "\nNot served:")
		for _, g := range gaps {
			fmt.Fprintln(w, "- "+g)
		}
	}
	return nil
}

func share(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(of))
}

var methods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

// operations reads the "METHOD path" pairs of an OpenAPI or Swagger
// document, path parameters written {} so that names do not matter.
func operations(file string) ([]string, error) {
	b, err := os.ReadFile(file) //nolint:gosec // a definition the developer names
	if err != nil {
		return nil, err
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var ops []string
	for path, item := range doc.Paths {
		for m := range item {
			if slices.Contains(methods, m) {
				ops = append(ops, strings.ToUpper(m)+" "+normalize(path))
			}
		}
	}
	if len(ops) == 0 {
		return nil, fmt.Errorf("%s: no operations under paths", file)
	}
	slices.Sort(ops)
	return ops, nil
}

var param = regexp.MustCompile(`\{[^}]*\}`)

func normalize(path string) string {
	return param.ReplaceAllString(strings.TrimSuffix(path, "/"), "{}")
}
