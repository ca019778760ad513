// Command gen writes the files rendered from deploy/helm/kubegpu (see
// render.Generate): `make manifests`, or `go run ./deploy/render/gen`
// from the repository root.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kubegpu/kubegpu/deploy/render"
)

func main() {
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	files, err := render.Generate(root)
	if err != nil {
		return err
	}
	// Dashboards removed from deploy/grafana leave the chart too.
	stale, err := filepath.Glob(filepath.Join(root, "deploy", "helm", "kubegpu", "dashboards", "*.json"))
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, f := range files {
		keep[filepath.Join(root, f.Path)] = true
	}
	for _, s := range stale {
		if !keep[s] {
			if err := os.Remove(s); err != nil {
				return err
			}
		}
	}
	for _, f := range files {
		path := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, f.Content, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Println("wrote", f.Path)
	}
	return nil
}
