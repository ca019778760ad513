package testenv

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"k8s.io/klog/v2"
)

// processTB is the ktesting.TB that kube-apiserver's test server asks
// for, for a caller that is not a test: cleanups run at Stop, logs go to
// klog, errors are kept. FailNow panics with failNow, which Run turns
// into an error; the test server calls it only while starting.
type processTB struct {
	name string

	mu       sync.Mutex
	cleanups []func()
	errs     []error
	dirs     []string
}

type failNow struct{}

func newProcessTB(name string) *processTB { return &processTB{name: name} }

func (p *processTB) Attr(string, string) {}
func (p *processTB) Chdir(dir string) {
	p.Fatalf("Chdir(%q) is not supported outside tests", dir)
}
func (p *processTB) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}
func (p *processTB) Error(args ...any) { p.fail(fmt.Sprint(args...)) }
func (p *processTB) Errorf(format string, args ...any) {
	p.fail(fmt.Sprintf(format, args...))
}
func (p *processTB) Fail() { p.fail("failed") }
func (p *processTB) FailNow() {
	p.fail("failed")
	panic(failNow{})
}
func (p *processTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.errs) > 0
}
func (p *processTB) Fatal(args ...any) {
	p.fail(fmt.Sprint(args...))
	panic(failNow{})
}
func (p *processTB) Fatalf(format string, args ...any) {
	p.fail(fmt.Sprintf(format, args...))
	panic(failNow{})
}
func (p *processTB) Helper()         {}
func (p *processTB) Log(args ...any) { klog.V(4).InfoS(fmt.Sprint(args...), "component", p.name) }
func (p *processTB) Logf(f string, args ...any) {
	klog.V(4).InfoS(fmt.Sprintf(f, args...), "component", p.name)
}
func (p *processTB) Name() string { return p.name }
func (p *processTB) Setenv(key, value string) {
	if err := os.Setenv(key, value); err != nil {
		p.Fatalf("Setenv %s: %v", key, err)
	}
}
func (p *processTB) Skip(args ...any)         { p.Fatal(append([]any{"skip: "}, args...)...) }
func (p *processTB) Skipf(f string, a ...any) { p.Fatalf("skip: "+f, a...) }
func (p *processTB) SkipNow()                 { p.Fatal("skip") }
func (p *processTB) Skipped() bool            { return false }
func (p *processTB) TempDir() string {
	dir, err := os.MkdirTemp("", p.name)
	if err != nil {
		p.Fatalf("TempDir: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dirs = append(p.dirs, dir)
	return dir
}

func (p *processTB) fail(msg string) {
	klog.ErrorS(nil, msg, "component", p.name)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, errors.New(msg))
}

func (p *processTB) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errs) == 0 {
		return errNoDetail
	}
	return errors.Join(p.errs...)
}

// cleanup runs the registered cleanups last-in first-out, then removes
// the temp dirs.
func (p *processTB) cleanup() {
	p.mu.Lock()
	cleanups, dirs := p.cleanups, p.dirs
	p.cleanups, p.dirs = nil, nil
	p.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	for _, d := range dirs {
		_ = os.RemoveAll(d)
	}
}
