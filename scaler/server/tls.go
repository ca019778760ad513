package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/credentials"
)

// TLSFiles name the gRPC port's certificate, key and, for mTLS, the CA
// that client certificates must chain to.
type TLSFiles struct {
	Cert, Key, ClientCA string
}

// Enabled reports whether any TLS file is set.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.ClientCA != "" }

// ServerTLSConfig builds the gRPC port's TLS config: nil for plaintext (no
// files), TLS with Cert+Key, and mTLS with ClientCA: then a client without
// a certificate signed by that CA fails the handshake, and so does a
// plaintext client.
func ServerTLSConfig(f TLSFiles) (*tls.Config, error) {
	if f.Cert == "" && f.Key == "" {
		if f.ClientCA != "" {
			return nil, errors.New("a client CA needs a server certificate and key")
		}
		return nil, nil
	}
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS certificate and key must be set together")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.ClientCA != "" {
		pem, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificates in %s", f.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ServerCredentials wraps ServerTLSConfig for grpc.Creds; nil means
// plaintext.
func ServerCredentials(f TLSFiles) (credentials.TransportCredentials, error) {
	cfg, err := ServerTLSConfig(f)
	if err != nil || cfg == nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}
