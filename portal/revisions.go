package portal

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// revisionRoutes are WSO2's operations on one revision (publisher.go has
// creating, listing, deploying and undeploying).
func (p *Portal) revisionRoutes(r chi.Router) {
	r.With(p.authorize(scopesAPIView...)).Get("/apis/{apiId}/revisions/{revisionId}", p.getRevision)
	r.With(p.authorize(scopesAPICreate...)).Delete("/apis/{apiId}/revisions/{revisionId}", p.deleteRevision)
	r.With(p.authorize(scopesAPICreate...)).Post("/apis/{apiId}/restore-revision", p.restoreRevision)
}

func (p *Portal) getRevision(w http.ResponseWriter, r *http.Request) {
	rev, err := p.store.GetRevision(r.Context(), chi.URLParam(r, "apiId"), chi.URLParam(r, "revisionId"))
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toRevisionDTO(rev))
}

// deleteRevision answers WSO2's APIRevisionListDTO of the revisions left.
func (p *Portal) deleteRevision(w http.ResponseWriter, r *http.Request) {
	apiID := chi.URLParam(r, "apiId")
	if err := p.store.DeleteRevision(r.Context(), apiID, chi.URLParam(r, "revisionId")); err != nil {
		p.fail(w, r, err)
		return
	}
	p.listRevisions(w, r)
}

// restoreRevision answers the API as it now is (WSO2's APIDTO, 201).
func (p *Portal) restoreRevision(w http.ResponseWriter, r *http.Request) {
	revID, ok := p.revisionParam(w, r)
	if !ok {
		return
	}
	api, err := p.store.RestoreRevision(r.Context(), chi.URLParam(r, "apiId"), revID)
	if err != nil {
		p.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toAPIDTO(api))
}
