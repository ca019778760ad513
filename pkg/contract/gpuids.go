package contract

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// GPUAssignment is the value of the pod annotation kubegpu.io/gpu-ids:
// the GPUs the scheduler chose. Whole GPUs are written "UUID,UUID,..."; a
// share of one GPU is written "UUID:MILLI" (e.g. "GPU-1f...:250").
type GPUAssignment struct {
	UUIDs []string
	// Milli is the share of the single GPU in UUIDs, 1-999; 0 means the
	// UUIDs are whole, exclusive GPUs.
	Milli int
}

// ErrBadGPUIDs is wrapped by every ParseGPUIDs error.
var ErrBadGPUIDs = errors.New("invalid " + AnnotationGPUIDs + " annotation")

// maxAssignedGPUs bounds the list; no node has more GPUs than this.
const maxAssignedGPUs = 64

// String renders the annotation value; ParseGPUIDs reads it back.
func (a GPUAssignment) String() string {
	if a.Milli > 0 && len(a.UUIDs) == 1 {
		return a.UUIDs[0] + ":" + strconv.Itoa(a.Milli)
	}
	return strings.Join(a.UUIDs, ",")
}

// Shared reports whether the assignment is a share of one GPU.
func (a GPUAssignment) Shared() bool { return a.Milli > 0 }

// ParseGPUIDs reads a kubegpu.io/gpu-ids value. It rejects empty or
// duplicate UUIDs, whitespace, shares outside 1-999 and shares of more
// than one GPU, so a malformed annotation can never double-book a GPU.
func ParseGPUIDs(value string) (GPUAssignment, error) {
	if value == "" {
		return GPUAssignment{}, fmt.Errorf("%w: empty", ErrBadGPUIDs)
	}
	if strings.ContainsAny(value, " \t\r\n") {
		return GPUAssignment{}, fmt.Errorf("%w: %q contains whitespace", ErrBadGPUIDs, value)
	}
	if uuid, milli, ok := strings.Cut(value, ":"); ok {
		if uuid == "" || strings.Contains(uuid, ",") {
			return GPUAssignment{}, fmt.Errorf("%w: %q: a share names exactly one GPU", ErrBadGPUIDs, value)
		}
		m, err := strconv.Atoi(milli)
		if err != nil || m < 1 || m > 999 {
			return GPUAssignment{}, fmt.Errorf("%w: %q: share %q is not 1-999", ErrBadGPUIDs, value, milli)
		}
		return GPUAssignment{UUIDs: []string{uuid}, Milli: m}, nil
	}
	parts := strings.Split(value, ",")
	if len(parts) > maxAssignedGPUs {
		return GPUAssignment{}, fmt.Errorf("%w: %d GPUs, at most %d", ErrBadGPUIDs, len(parts), maxAssignedGPUs)
	}
	seen := make(map[string]bool, len(parts))
	for _, p := range parts {
		if p == "" {
			return GPUAssignment{}, fmt.Errorf("%w: %q has an empty GPU ID", ErrBadGPUIDs, value)
		}
		if seen[p] {
			return GPUAssignment{}, fmt.Errorf("%w: %q names GPU %s twice", ErrBadGPUIDs, value, p)
		}
		seen[p] = true
	}
	return GPUAssignment{UUIDs: parts}, nil
}
