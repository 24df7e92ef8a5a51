package certs

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestSelfSignedServesHTTPS(t *testing.T) {
	dir := t.TempDir()
	cert, file, err := LoadOrCreate(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := LoadOrCreate(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Certificate[0]) != string(cert.Certificate[0]) {
		t.Error("second run made a new certificate; want the first one reused")
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	pool, err := Pool(file)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatalf("a client trusting the generated certificate could not connect: %v", err)
	}
	resp.Body.Close()
}
