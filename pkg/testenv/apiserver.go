// Package testenv runs a real Kubernetes control plane in-process for
// integration tests and the embedded demo: embedded etcd, a real
// kube-apiserver and a real kube-scheduler built with the caller's
// out-of-tree plugin registry. Nodes are plain API objects with GPU
// capacity, as KWOK does; no kubelet runs. The package takes the plugin
// registry from its caller so that pkg/ never imports a part of kubegpu.
//
// Tests use Start and StartScheduler, which stop with the test; other
// callers (the demo) use Run and RunScheduler and call Env.Stop.
package testenv

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

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

// QuietLogs discards klog output unless LogsEnv is set. Run calls it; a
// caller that prints its own progress may call it earlier.
func QuietLogs() {
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
	// Dir is this environment's own temporary folder, removed by Stop.
	Dir string

	mu         sync.Mutex
	schedulers []*Scheduler
	stops      []func() // run last-in first-out by Stop
	stopOnce   sync.Once
}

// Start runs embedded etcd and a kube-apiserver on free loopback ports,
// each test with its own temp dirs. Both stop when the test ends; a
// scheduler started later through StartScheduler stops before them.
func Start(t testing.TB) *Env {
	t.Helper()
	env, err := Run(context.Background())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(env.Stop)
	return env
}

// Run starts embedded etcd and a kube-apiserver on free loopback ports
// for a caller that is not a test. ctx bounds the start only; the caller
// ends both with Stop, which also stops schedulers started on the Env.
func Run(ctx context.Context) (env *Env, err error) {
	QuietLogs()
	dir, err := os.MkdirTemp("", "kubegpu-env")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	env = &Env{Dir: dir}
	env.onStop(func() { _ = os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()

	etcd, err := runEtcd(ctx, filepath.Join(dir, "etcd"))
	if err != nil {
		return nil, err
	}
	env.onStop(etcd.Close)
	storage := storagebackend.NewDefaultConfig("/registry", nil)
	storage.Transport.ServerList = etcd.endpoints

	// TaintNodesByCondition would taint our kubelet-less nodes not-ready;
	// ServiceAccount needs a token controller that does not run here.
	flags := []string{"--disable-admission-plugins=ServiceAccount,TaintNodesByCondition"}
	tb := newProcessTB("testenv-apiserver")
	env.onStop(tb.cleanup)
	server, err := startAPIServer(tb, flags, storage)
	if err != nil {
		return nil, err
	}
	env.onStop(server.TearDownFn)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("apiserver start: %w", err)
	}

	env.Config = server.ClientConfig
	if env.Client, err = kubernetes.NewForConfig(server.ClientConfig); err != nil {
		return nil, fmt.Errorf("clientset: %w", err)
	}
	env.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(server.ClientConfig, env.Kubeconfig); err != nil {
		return nil, err
	}
	return env, nil
}

// startAPIServer runs the apiserver's test server; a FailNow on tb during
// start (a test server helper's t.Fatal) becomes an error.
func startAPIServer(tb *processTB, flags []string, storage *storagebackend.Config) (server apiservertesting.TestServer, err error) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(failNow); !ok {
				panic(r)
			}
			err = fmt.Errorf("kube-apiserver start failed: %w", tb.err())
		}
	}()
	server, err = apiservertesting.StartTestServer(tb, apiservertesting.NewDefaultTestServerOptions(), flags, storage)
	if err != nil {
		return server, fmt.Errorf("kube-apiserver: %w", err)
	}
	return server, nil
}

// Stop stops the schedulers started on env, then the apiserver and etcd,
// and removes Dir. Safe to call more than once.
func (e *Env) Stop() {
	e.stopOnce.Do(func() {
		e.mu.Lock()
		scheds, stops := e.schedulers, e.stops
		e.mu.Unlock()
		// Schedulers first: the apiserver's shutdown otherwise waits 60 s
		// for their watches.
		for _, s := range scheds {
			s.Stop()
		}
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	})
}

func (e *Env) onStop(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stops = append(e.stops, f)
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

var errNoDetail = errors.New("no detail reported")
