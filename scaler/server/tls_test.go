package server

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kubegpu/kubegpu/scaler/internal/testpki"
	"github.com/kubegpu/kubegpu/scaler/metadata"
	"github.com/kubegpu/kubegpu/scaler/source"
)

// pki writes a CA, a server pair and returns the files plus the CA and a
// client pair it signed.
type pki struct {
	ca             *testpki.CA
	files          TLSFiles
	client         testpki.Pair
	strangerCA     *testpki.CA
	strangerClient testpki.Pair
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	ca, err := testpki.NewCA("kubegpu test CA")
	must(t, err)
	srv, err := ca.Server("kubegpu-scaler")
	must(t, err)
	cert, key, err := srv.Write(dir, "server")
	must(t, err)
	caFile := filepath.Join(dir, "ca.crt")
	must(t, os.WriteFile(caFile, ca.CertPEM, 0o600))
	client, err := ca.Client("keda-operator")
	must(t, err)
	other, err := testpki.NewCA("someone else")
	must(t, err)
	stranger, err := other.Client("keda-operator")
	must(t, err)
	return pki{ca: ca, files: TLSFiles{Cert: cert, Key: key, ClientCA: caFile}, client: client, strangerCA: other, strangerClient: stranger}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// serveTLS starts the scaler with the given TLS files and returns its
// address.
func serveTLS(t *testing.T, f TLSFiles) string {
	t.Helper()
	creds, err := ServerCredentials(f)
	must(t, err)
	ctx0, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	src := &fakeSource{}
	src.set(source.Snapshot{QueueTotal: 8, ReadyReplicas: 1}, nil)
	s, err := New(ctx0, Options{PollInterval: 20 * time.Millisecond,
		NewSource: func(string, *metadata.Metadata) (source.Source, error) { return src, nil }})
	must(t, err)
	var opts []grpc.ServerOption
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	g := grpc.NewServer(opts...)
	s.Register(g)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return l.Addr().String()
}

func call(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	must(t, err)
	defer conn.Close()
	c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := pb.NewExternalScalerClient(conn).GetMetrics(c, &pb.GetMetricsRequest{ScaledObjectRef: ref(), MetricName: MetricName})
	if err == nil && resp.MetricValues[0].MetricValueFloat != 2 {
		t.Errorf("value %v, want 2", resp.MetricValues[0].MetricValueFloat)
	}
	return err
}

func TestTLS(t *testing.T) {
	p := newPKI(t)
	clientCert, err := p.client.TLS()
	must(t, err)
	strangerCert, err := p.strangerClient.TLS()
	must(t, err)
	trusting := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{RootCAs: p.ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12})
	}
	serverOnly := TLSFiles{Cert: p.files.Cert, Key: p.files.Key}
	tests := []struct {
		name   string
		server TLSFiles
		client credentials.TransportCredentials
		ok     bool
	}{
		{"plaintext server, plaintext client", TLSFiles{}, insecure.NewCredentials(), true},
		{"TLS server, verifying client", serverOnly, trusting(), true},
		{"TLS server, plaintext client refused", serverOnly, insecure.NewCredentials(), false},
		{"TLS server, client not trusting its CA refused", serverOnly,
			credentials.NewTLS(&tls.Config{RootCAs: p.strangerCA.Pool(), MinVersion: tls.VersionTLS12}), false},
		{"mTLS, known client", p.files, trusting(clientCert), true},
		{"mTLS, client without certificate refused", p.files, trusting(), false},
		{"mTLS, client cert from another CA refused", p.files, trusting(strangerCert), false},
		{"mTLS, plaintext client refused", p.files, insecure.NewCredentials(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := serveTLS(t, tt.server)
			err := call(t, addr, tt.client)
			if tt.ok && err != nil {
				t.Fatalf("call failed: %v", err)
			}
			if !tt.ok && status.Code(err) != codes.Unavailable {
				// A failed handshake surfaces as Unavailable, never as an
				// answer.
				t.Fatalf("err = %v, want the connection refused (Unavailable)", err)
			}
		})
	}
}

func TestServerTLSConfigErrors(t *testing.T) {
	p := newPKI(t)
	bogus := filepath.Join(t.TempDir(), "empty.pem")
	must(t, os.WriteFile(bogus, []byte("not a certificate"), 0o600))
	tests := []struct {
		name  string
		files TLSFiles
		want  string
	}{
		{"CA without server pair", TLSFiles{ClientCA: p.files.ClientCA}, "needs a server certificate"},
		{"cert without key", TLSFiles{Cert: p.files.Cert}, "set together"},
		{"missing key file", TLSFiles{Cert: p.files.Cert, Key: "/nonexistent/key.pem"}, "load TLS key pair"},
		{"CA file empty of certs", TLSFiles{Cert: p.files.Cert, Key: p.files.Key, ClientCA: bogus}, "no certificates"},
		{"CA file missing", TLSFiles{Cert: p.files.Cert, Key: p.files.Key, ClientCA: "/nonexistent/ca.pem"}, "read client CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ServerTLSConfig(tt.files); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	cfg, err := ServerTLSConfig(p.files)
	must(t, err)
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert || cfg.MinVersion < tls.VersionTLS12 {
		t.Errorf("mTLS config: client auth %v, min version %x", cfg.ClientAuth, cfg.MinVersion)
	}
}
