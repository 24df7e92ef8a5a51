package app

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/apim-dev/apim/authz"
	"github.com/apim-dev/apim/internal/config"
)

// The backend JWT key. Every sidecar (all-in-one and gateway profiles)
// signs the JWTs it sends backends with an RSA key: gateway.backend_jwt_key
// names its PEM file; without one, a 2048-bit key is made on first start
// and kept at data_dir/backend-jwt/key.pem (0600), as the self-signed TLS
// certificate is kept under data_dir/tls. Backends verify the JWTs with the
// public key, served as a JWKS at GET /backend-jwks on the ops listener. A
// fleet of gateways should share one configured key, so that a backend
// trusts one key whichever gateway a request came through.

// PathBackendJWKS is the path of the backend JWT keys on the ops listener.
const PathBackendJWKS = "/backend-jwks"

// backendJWTKeyBits is the size of a key made on first start.
const backendJWTKeyBits = 2048

// backendJWTSigner loads, or on first start makes, the key that signs
// backend JWTs, and serves its JWKS on the ops listener.
func (s *system) backendJWTSigner() (*authz.BackendJWTSigner, error) {
	file, made, err := loadOrCreateRSAKey(s.cfg.Gateway.BackendJWTKey, s.dataPath("backend-jwt", "key.pem"))
	if err != nil {
		return nil, err
	}
	signer, err := authz.NewBackendJWTSigner(authz.BackendJWTConfig{Key: file.key, Issuer: s.cfg.Gateway.BackendJWTIssuer})
	if err != nil {
		return nil, fmt.Errorf("gateway.backend_jwt_key: %w", err)
	}
	log := s.log("gateway")
	ev := log.Info()
	if made && s.cfg.Profile == config.ProfileGateway {
		ev = log.Warn().Str("hint", "give every gateway of the fleet the same gateway.backend_jwt_key")
	}
	ev.Str("file", file.path).Bool("generated", made).Str("kid", signer.KeyID()).
		Str("jwks", "http://"+s.cfg.Ops.Address+PathBackendJWKS).Msg("backend JWT signing key")
	s.opsRoute("GET "+PathBackendJWKS, signer.JWKSHandler())
	return signer, nil
}

// rsaKeyFile is a private key and the file it came from.
type rsaKeyFile struct {
	key  *rsa.PrivateKey
	path string
}

// loadOrCreateRSAKey loads the RSA private key in the PEM file configured;
// with none configured, the one at generated, made there first if it does
// not exist yet. made reports whether it was just made.
func loadOrCreateRSAKey(configured, generated string) (k rsaKeyFile, made bool, err error) {
	path := configured
	if path == "" {
		path = generated
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := writeRSAKey(path); err != nil {
				return k, false, err
			}
			made = true
		}
	}
	data, err := os.ReadFile(path) //nolint:gosec // G304: the key file the operator configured, or ours
	if err != nil {
		return k, false, fmt.Errorf("gateway.backend_jwt_key: %w", err)
	}
	key, err := parseRSAKey(data)
	if err != nil {
		return k, false, fmt.Errorf("gateway.backend_jwt_key: %s: %w", path, err)
	}
	return rsaKeyFile{key: key, path: path}, made, nil
}

// parseRSAKey reads the first PEM block of data: an RSA key in PKCS#8
// ("PRIVATE KEY", as openssl genpkey writes) or PKCS#1 ("RSA PRIVATE KEY").
func parseRSAKey(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		rsaKey, ok := key.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %T key, want RSA", key)
		}
		return rsaKey, nil
	}
	return nil, fmt.Errorf("PEM block %q, want PRIVATE KEY or RSA PRIVATE KEY", block.Type)
}

// writeRSAKey makes a key and writes it to path (PKCS#8, 0600, in a 0700
// directory), through a temporary file so that a crash leaves no half key.
func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, backendJWTKeyBits)
	if err != nil {
		return fmt.Errorf("generate the backend JWT key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode the backend JWT key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return fmt.Errorf("write the backend JWT key: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone after the rename; else the half-written file
	if err := pem.Encode(tmp, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		_ = tmp.Close() // the write failed already; the file is removed
		return fmt.Errorf("write the backend JWT key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write the backend JWT key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write the backend JWT key: %w", err)
	}
	return nil
}

// opsRoute serves h on the ops listener at pattern (http.ServeMux syntax).
func (s *system) opsRoute(pattern string, h http.Handler) {
	if s.opsRoutes == nil {
		s.opsRoutes = map[string]http.Handler{}
	}
	s.opsRoutes[pattern] = h
}

// opsHandler is base (/healthz, /readyz, /metrics) with the routes the
// profile's parts added.
func (s *system) opsHandler(base http.Handler) http.Handler {
	if len(s.opsRoutes) == 0 {
		return base
	}
	mux := http.NewServeMux()
	for pattern, h := range s.opsRoutes {
		mux.Handle(pattern, h)
	}
	mux.Handle("/", base)
	return mux
}
