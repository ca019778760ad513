package gpunode

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	custom := MustShape("pcie-4xl4").Clone()
	custom.GPUs[1].Healthy = false
	custom.GPUs[2].MIG = true
	custom.GPUs[3].NUMANode = -1
	custom.GPUs[3].PCIBusID = ""
	custom.GPUs[0].Product = "NVIDIA L4 \"quoted\" <tag> é"
	tests := []struct {
		name string
		node *Node
	}{
		{"empty", &Node{}},
		{"one gpu", &Node{GPUs: []GPU{{Index: 3, UUID: "GPU-x", NUMANode: -1}}, Links: [][]Link{{{}}}}},
		{"custom pcie-4xl4", custom},
	}
	for _, name := range ShapeNames() {
		tests = append(tests, struct {
			name string
			node *Node
		}{name, MustShape(name)})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Encode(tt.node)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := Decode(s)
			if err != nil {
				t.Fatalf("Decode(%s): %v", s, err)
			}
			if !got.Equal(tt.node) {
				t.Fatalf("round trip differs:\n got %+v\nwant %+v", got, tt.node)
			}
			s2, err := Encode(got)
			if err != nil || s2 != s {
				t.Fatalf("re-encode not stable (err %v):\n%s\n%s", err, s, s2)
			}
		})
	}
}

func TestEncodeSize(t *testing.T) {
	for _, name := range []string{"dgx-h100", "pcie-16x-2socket"} {
		s, err := Encode(MustShape(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", name, len(s))
		if len(s) > 16<<10 {
			t.Errorf("%s: annotation is %d bytes, want under 16 KiB", name, len(s))
		}
	}
}

// twoGPU builds an annotation for two GPUs with the given extra text.
const twoGPUs = `{"version":1,"gpus":[{"index":0,"uuid":"GPU-a","product":"p","memoryMiB":1,"numaNode":0,"healthy":true},` +
	`{"index":1,"uuid":"GPU-b","product":"p","memoryMiB":1,"numaNode":0,"healthy":true}],"links":[%s]}`

func TestDecodeErrors(t *testing.T) {
	gpu := func(i int, uuid string) string {
		return `{"index":` + strconv.Itoa(i) + `,"uuid":"` + uuid + `","product":"p","memoryMiB":1,"numaNode":0,"healthy":true}`
	}
	two := func(links string) string { return strings.Replace(twoGPUs, "%s", links, 1) }
	var many []string
	for i := range MaxGPUs + 1 {
		many = append(many, gpu(i, "GPU-"+strconv.Itoa(i)))
	}
	tests := []struct {
		name, in string
		is       error
		want     string
	}{
		{"not json", `{`, ErrInvalid, "unexpected end"},
		{"trailing data", `{"version":1} x`, ErrInvalid, "invalid character"},
		{"no version", `{"gpus":[]}`, ErrVersion, "version 0"},
		{"future version", `{"version":2,"gpus":"whatever"}`, ErrVersion, "version 2"},
		{"gpus not a list", `{"version":1,"gpus":{}}`, ErrInvalid, "cannot unmarshal"},
		{"too many gpus", `{"version":1,"gpus":[` + strings.Join(many, ",") + `]}`, ErrInvalid, "65 gpus"},
		{"duplicate index", `{"version":1,"gpus":[` + gpu(0, "GPU-a") + `,` + gpu(0, "GPU-b") + `],"links":[{"a":0,"b":1,"pcie":"cross-cpu"}]}`, ErrInvalid, "same index"},
		{"duplicate uuid", `{"version":1,"gpus":[` + gpu(0, "GPU-a") + `,` + gpu(1, "GPU-a") + `],"links":[{"a":0,"b":1,"pcie":"cross-cpu"}]}`, ErrInvalid, "same uuid"},
		{"empty uuid", `{"version":1,"gpus":[` + gpu(0, "") + `],"links":[]}`, ErrInvalid, "empty uuid"},
		{"negative index", `{"version":1,"gpus":[` + gpu(-1, "GPU-a") + `],"links":[]}`, ErrInvalid, "negative index"},
		{"negative memory", strings.Replace(two(`{"a":0,"b":1,"pcie":"cross-cpu"}`), `"memoryMiB":1`, `"memoryMiB":-5`, 1), ErrInvalid, "negative memory"},
		{"bad numa", strings.Replace(two(`{"a":0,"b":1,"pcie":"cross-cpu"}`), `"numaNode":0`, `"numaNode":-2`, 1), ErrInvalid, "numa node -2"},
		{"missing link", two(``), ErrInvalid, "missing link for pair 0-1"},
		{"pair out of range", two(`{"a":0,"b":2,"pcie":"cross-cpu"}`), ErrInvalid, "out of range"},
		{"negative pair", two(`{"a":-1,"b":0,"pcie":"cross-cpu"}`), ErrInvalid, "out of range"},
		{"self link", two(`{"a":1,"b":1,"pcie":"cross-cpu"}`), ErrInvalid, "linked to itself"},
		{"pair twice", two(`{"a":0,"b":1,"pcie":"cross-cpu"},{"a":0,"b":1,"pcie":"cross-cpu"}`), ErrInvalid, "given twice"},
		{"asymmetric pair", two(`{"a":0,"b":1,"pcie":"cross-cpu"},{"a":1,"b":0,"nvlinks":2,"pcie":"cross-cpu"}`), ErrInvalid, "given twice"},
		{"unknown pcie", two(`{"a":0,"b":1,"pcie":"pix"}`), ErrInvalid, `unknown pcie level "pix"`},
		{"missing pcie", two(`{"a":0,"b":1}`), ErrInvalid, `unknown pcie level ""`},
		{"negative nvlinks", two(`{"a":0,"b":1,"nvlinks":-1,"pcie":"cross-cpu"}`), ErrInvalid, "-1 nvlinks"},
		{"too many nvlinks", two(`{"a":0,"b":1,"nvlinks":65,"pcie":"cross-cpu"}`), ErrInvalid, "65 nvlinks"},
		{"huge number", two(`{"a":0,"b":1e30,"pcie":"cross-cpu"}`), ErrInvalid, "cannot unmarshal"},
		{"too large", `{"version":1,"x":"` + strings.Repeat("a", maxAnnotation) + `"}`, ErrInvalid, "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Decode(tt.in)
			if err == nil {
				t.Fatalf("Decode = %+v, want error", n)
			}
			if !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	base := MustShape("pcie-4xl4")
	tests := []struct {
		name   string
		change func(n *Node)
		want   string // "" for valid
	}{
		{"valid", func(*Node) {}, ""},
		{"diagonal ignored", func(n *Node) { n.Links[1][1] = Link{NVLinks: 3} }, ""},
		{"asymmetric", func(n *Node) { n.Links[0][1].NVLinks = 1 }, "links 0-1 and 1-0 differ"},
		{"ragged", func(n *Node) { n.Links[2] = n.Links[2][:3] }, "row 2 has 3 entries"},
		{"rows", func(n *Node) { n.Links = n.Links[:3] }, "3 rows for 4 gpus"},
		{"unknown level", func(n *Node) { n.Links[0][1].PCIe, n.Links[1][0].PCIe = 7, 7 }, "unknown pcie level 7"},
		{"long uuid", func(n *Node) { n.GPUs[0].UUID = strings.Repeat("u", 200) }, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := base.Clone()
			tt.change(n)
			err := n.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid)):
				t.Fatalf("Validate = %v, want error wrapping ErrInvalid with %q", err, tt.want)
			}
			if tt.want != "" {
				if _, err := Encode(n); err == nil {
					t.Fatal("Encode accepted an invalid node")
				}
			}
		})
	}
	if err := (*Node)(nil).Validate(); err == nil {
		t.Fatal("nil node validated")
	}
}

func TestPCIeLevelNames(t *testing.T) {
	for l := range pcieNames {
		got, err := ParsePCIeLevel(l.String())
		if err != nil || got != l {
			t.Errorf("ParsePCIeLevel(%q) = %v, %v", l.String(), got, err)
		}
	}
	if PCIeLevel(7).Valid() || PCIeLevel(7).String() != "PCIeLevel(7)" {
		t.Error("level 7 should be invalid")
	}
}

func FuzzDecode(f *testing.F) {
	for _, name := range ShapeNames() {
		s, err := Encode(MustShape(name))
		if err != nil {
			f.Fatal(err)
		}
		if len(s) < 4096 {
			f.Add(s)
		}
	}
	f.Add(strings.Replace(twoGPUs, "%s", `{"a":0,"b":1,"nvlinks":2,"pcie":"single-switch"}`, 1))
	f.Add(strings.Replace(twoGPUs, "%s", `{"a":1,"b":0,"nvswitch":true,"pcie":"cross-cpu"}`, 1))
	f.Add(`{"version":1,"gpus":[],"links":[]}`)
	f.Add(`{"version":1,"gpus":null}`)
	f.Add(`{"version":2}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Decode(s)
		if err != nil {
			return
		}
		enc, err := Encode(n)
		if err != nil {
			t.Fatalf("decoded node does not encode: %v", err)
		}
		n2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded node does not decode: %v\n%s", err, enc)
		}
		if !n2.Equal(n) {
			t.Fatalf("round trip differs:\n%+v\n%+v", n, n2)
		}
		// Whatever decodes must be safe to select from.
		free := make([]int, len(n.GPUs))
		for i := range free {
			free[i] = i
		}
		for _, k := range []int{0, min(1, len(free)), len(free) / 2, len(free)} {
			if set, _, ok := n.BestSet(free, k); !ok || len(set) != k {
				t.Fatalf("BestSet(all, %d) = %v, %v", k, set, ok)
			}
		}
		if _, _, ok := n.BestSet(free, len(free)+1); ok {
			t.Fatal("BestSet accepted k > free")
		}
	})
}
