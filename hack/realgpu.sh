#!/bin/bash
# Real-GPU checks: NVML discovery against nvidia-smi, and the device plugin
# on the real library against the kubelet's device manager, the API server
# and the scheduler (TestRealGPUDiscover, TestRealGPUHandshake).
#
#   hack/realgpu.sh build   # here: test binaries, xz-compressed, into .gpu/
#   hack/realgpu.sh run     # on the GPU machine, from the repo root (no Go needed)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
build)
	export CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"
	mkdir -p .gpu
	tmp=$(mktemp -d)
	go test -c -ldflags='-s -w' -o "$tmp/nvml.test" ./pkg/nvml/
	go test -c -ldflags='-s -w' -o "$tmp/e2e.test" ./test/e2e/
	go build -ldflags='-s -w' -o "$tmp/kubegpu" ./cmd/kubegpu
	for f in nvml.test e2e.test kubegpu; do xz -T2 -2 -c "$tmp/$f" >".gpu/$f.xz"; done
	rm -rf "$tmp"
	ls -la .gpu
	;;
run)
	# python3 is on every GPU image here; xz may not be.
	for f in .gpu/*.xz; do
		python3 -c "import lzma,sys,shutil; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3],'wb'))" "$f"
	done
	chmod +x .gpu/nvml.test .gpu/e2e.test .gpu/kubegpu
	# kube-apiserver's test server writes its certificate fixtures beside
	# its package in the module cache, which a machine without Go lacks.
	mkdir -p "$HOME/go/pkg/mod/k8s.io/kubernetes@v1.37.2/cmd/kube-apiserver/app/testing/testdata"
	nvidia-smi
	nvidia-smi topo -m
	export KUBEGPU_REAL_GPU=1
	.gpu/kubegpu inventory --nvml=real
	.gpu/kubegpu inventory --nvml=real --json
	.gpu/nvml.test -test.v -test.run 'RealGPU' -test.timeout 2m
	(cd test/e2e && ../../.gpu/e2e.test -test.v -test.run 'TestRealGPUHandshake' -test.timeout 3m)
	;;
*)
	echo "usage: $0 build|run" >&2
	exit 2
	;;
esac
