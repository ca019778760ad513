package main

import (
	"slices"
	"testing"
)

func TestParseSeeds(t *testing.T) {
	tests := []struct {
		in      string
		want    []uint64
		wantErr bool
	}{
		{in: "42", want: []uint64{42}},
		{in: "42-45", want: []uint64{42, 43, 44, 45}},
		{in: "1,5,7-8", want: []uint64{1, 5, 7, 8}},
		{in: "x", wantErr: true},
		{in: "9-3", wantErr: true},
		{in: "1-", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseSeeds(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseSeeds(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
