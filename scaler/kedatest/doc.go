// Package kedatest holds only tests: KEDA's own external-scaler client
// (github.com/kedacore/keda/v2/pkg/scalers) driving kubegpu-scaler's gRPC
// server. KEDA's scalers package pulls in about 3000 packages, so it is
// imported from this one test binary and nowhere else.
package kedatest
