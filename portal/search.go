package portal

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/apim-dev/apim/internal/model"
	"github.com/apim-dev/apim/internal/store"
)

// searchTerm is one term of WSO2's search query syntax: key:value, or a
// bare value. A value in double quotes may hold spaces and matches
// exactly; any other matches as a substring.
type searchTerm struct {
	key, value string
	quoted     bool
}

// parseSearch splits a WSO2 search query, such as apictl's
// name:"PetStore" version:"1.0.0", into its terms.
func parseSearch(q string) ([]searchTerm, error) {
	var terms []searchTerm
	rest := strings.TrimLeftFunc(q, unicode.IsSpace)
	for rest != "" {
		var t searchTerm
		if i := strings.IndexFunc(rest, func(r rune) bool { return r == ':' || r == '"' || unicode.IsSpace(r) }); i > 0 && rest[i] == ':' {
			t.key, rest = strings.ToLower(rest[:i]), rest[i+1:]
		}
		if v, ok := strings.CutPrefix(rest, `"`); ok {
			end := strings.IndexByte(v, '"')
			if end < 0 {
				return nil, errors.New("query has an unclosed quote: " + strconv.Quote(q))
			}
			t.value, t.quoted, rest = v[:end], true, v[end+1:]
		} else {
			end := strings.IndexFunc(rest, unicode.IsSpace)
			if end < 0 {
				end = len(rest)
			}
			t.value, rest = rest[:end], rest[end:]
		}
		if t.value == "" {
			return nil, errors.New("query term " + strconv.Quote(t.key+":") + " has no value")
		}
		terms = append(terms, t)
		rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
	}
	return terms, nil
}

// searchKeys are the query keys API lists and searches take.
var searchKeys = []string{"name", "version", "provider", "context", "description", "type", "status", "tag", "tags"}

// apiQuery reads WSO2's query parameter of API lists and searches:
// status:STATE (any of several), tag:TAG (all of several), name:, version:,
// provider:, context:, description: and type: (all of several; every apim
// API is of type API), and bare words, which match the name, context or
// description.
func apiQuery(w http.ResponseWriter, r *http.Request) (store.ListAPIsOptions, bool) {
	var opts store.ListAPIsOptions
	terms, err := parseSearch(r.URL.Query().Get("query"))
	if err != nil {
		badRequest(w, []string{err.Error()})
		return opts, false
	}
	for _, t := range terms {
		switch {
		case t.key == "status":
			opts.Statuses = append(opts.Statuses, model.LifecycleStatus(strings.ToUpper(t.value)))
		case t.key == "tag" || t.key == "tags":
			opts.Tags = append(opts.Tags, t.value)
		case t.key == "" || slices.Contains(searchKeys, t.key):
			opts.Matches = append(opts.Matches, store.APIMatch{Field: t.key, Value: t.value, Exact: t.quoted})
		default:
			badRequest(w, []string{"query term " + strconv.Quote(t.key+":"+t.value) + " is not supported; use " +
				strings.Join(searchKeys, ":, ") + ": or a bare word"})
			return opts, false
		}
	}
	return opts, true
}

// searchResultDTO is WSO2's APISearchResult, the one kind of
// SearchResult apim returns (documents are not searched yet).
type searchResultDTO struct {
	ID                  string           `json:"id"`
	Name                string           `json:"name"`
	Type                string           `json:"type"`
	TransportType       string           `json:"transportType"`
	Description         string           `json:"description"`
	Context             string           `json:"context"`
	ContextTemplate     string           `json:"contextTemplate"`
	Version             string           `json:"version"`
	Provider            string           `json:"provider"`
	Status              string           `json:"status"`
	ThumbnailURI        *string          `json:"thumbnailUri"`
	BusinessInformation *businessInfoDTO `json:"businessInformation,omitempty"`
	AvgRating           string           `json:"avgRating,omitempty"`
}

func toSearchResult(a *model.API) searchResultDTO {
	return searchResultDTO{
		ID: a.ID, Name: a.Name, Type: "API", TransportType: "HTTP", Description: a.Description,
		Context: a.Context, ContextTemplate: a.Context, Version: a.Version, Provider: a.Provider,
		Status: string(a.Status), BusinessInformation: toBusinessInfoDTO(a.BusinessInformation),
	}
}

// writeAPIPage answers an API list at path: the page and query the
// request asks, each API shown by to; in the devportal, among the APIs it
// shows the caller (published or prototyped, and visible to them).
func writeAPIPage[T any](p *Portal, w http.ResponseWriter, r *http.Request, path string,
	devportal bool, to func(*model.API) T,
) {
	limit, offset, problems := pageParams(r)
	if len(problems) > 0 {
		badRequest(w, problems)
		return
	}
	opts, ok := apiQuery(w, r)
	if !ok {
		return
	}
	if devportal {
		if opts.Statuses = onlyAmong(opts.Statuses, visible); len(opts.Statuses) == 0 {
			writeJSON(w, http.StatusOK, paged(path, []T{}, limit, offset, 0))
			return
		}
		v, err := p.viewer(r)
		if err != nil {
			p.fail(w, r, err)
			return
		}
		opts.Viewer = &v
	}
	opts.Limit, opts.Offset = limit, offset
	apis, total, err := p.store.ListAPIs(r.Context(), opts)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	out := make([]T, 0, len(apis))
	for i := range apis {
		out = append(out, to(&apis[i]))
	}
	writeJSON(w, http.StatusOK, paged(path, out, limit, offset, total))
}

// search is GET /search, WSO2's unified search, over the APIs a list at
// base would show: apictl finds an API by name and version with it.
func (p *Portal) search(base string, devportal bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeAPIPage(p, w, r, base+"/search", devportal, toSearchResult)
	}
}

// onlyAmong is the asked states that are among allowed, or allowed when
// none were asked.
func onlyAmong(asked, allowed []model.LifecycleStatus) []model.LifecycleStatus {
	if len(asked) == 0 {
		return allowed
	}
	var out []model.LifecycleStatus
	for _, st := range asked {
		if slices.Contains(allowed, st) {
			out = append(out, st)
		}
	}
	return out
}

// paged is a WSO2 list of items with its pagination.
func paged[T any](base string, items []T, limit, offset, total int) listDTO[T] {
	l := newList(items)
	l.Pagination = pagination(base, limit, offset, total)
	return l
}
