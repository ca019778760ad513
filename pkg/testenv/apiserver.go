// Package testenv runs a real Kubernetes control plane in-process for
// integration tests: embedded etcd, a real kube-apiserver and a real
// kube-scheduler built with the caller's out-of-tree plugin registry.
// Nodes are plain API objects with GPU capacity, as KWOK does; no kubelet
// runs. The package takes the plugin registry from its caller so that pkg/
// never imports a part of kubegpu.
package testenv

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"k8s.io/apiserver/pkg/storage/etcd3/testserver"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
	apiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
)

// LogsEnv, when set to a klog verbosity (e.g. "2"), keeps control-plane
// logs on stderr; by default they are discarded because the apiserver
// alone writes megabytes per test.
const LogsEnv = "KUBEGPU_TEST_LOGS"

var quietOnce sync.Once

func configureLogs() {
	quietOnce.Do(func() {
		fs := flag.NewFlagSet("klog", flag.ContinueOnError)
		klog.InitFlags(fs)
		if v := os.Getenv(LogsEnv); v != "" {
			_ = fs.Set("v", v)
			return
		}
		_ = fs.Set("logtostderr", "false")
		_ = fs.Set("alsologtostderr", "false")
		_ = fs.Set("stderrthreshold", "FATAL")
		klog.SetOutput(io.Discard)
	})
}

// Env is a running etcd + kube-apiserver pair.
type Env struct {
	// Config reaches the apiserver with full rights.
	Config *rest.Config
	// Client is a clientset on Config.
	Client kubernetes.Interface
	// Kubeconfig is a kubeconfig file for Config, for components that
	// take a path (the scheduler).
	Kubeconfig string
	// Dir is this environment's own temporary folder.
	Dir string
}

// Start runs embedded etcd and a kube-apiserver on free loopback ports,
// each test with its own temp dirs. Both stop when the test ends; a
// scheduler started later through StartScheduler stops before them.
func Start(t testing.TB) *Env {
	t.Helper()
	configureLogs()

	etcd := testserver.RunEtcd(t, nil)
	storage := storagebackend.NewDefaultConfig("/registry", nil)
	storage.Transport.ServerList = etcd.Endpoints()

	// TaintNodesByCondition would taint our kubelet-less nodes not-ready;
	// ServiceAccount needs a token controller that does not run here.
	flags := []string{"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition"}
	opts := apiservertesting.NewDefaultTestServerOptions()
	server := apiservertesting.StartTestServerOrDie(t, opts, flags, storage)
	t.Cleanup(server.TearDownFn)

	client, err := kubernetes.NewForConfig(server.ClientConfig)
	if err != nil {
		t.Fatalf("testenv: clientset: %v", err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(server.ClientConfig, kubeconfig); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return &Env{Config: server.ClientConfig, Client: client, Kubeconfig: kubeconfig, Dir: dir}
}

func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["testenv"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
		InsecureSkipTLSVerify:    cfg.Insecure,
		TLSServerName:            cfg.ServerName,
	}
	kc.AuthInfos["testenv"] = &clientcmdapi.AuthInfo{
		Token:                 cfg.BearerToken,
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
	}
	kc.Contexts["testenv"] = &clientcmdapi.Context{Cluster: "testenv", AuthInfo: "testenv"}
	kc.CurrentContext = "testenv"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}
