package gpunode

import (
	"fmt"
	"math/bits"
	"slices"
	"sync"
)

// MaxPairScore is the score of the best possible pair link (NVSwitch).
const MaxPairScore = 100

// ExactMaxGPUs is the largest node on which BestSet searches exhaustively;
// bigger nodes get a greedy choice.
const ExactMaxGPUs = 16

// PairScore rates the link between two GPUs from 0 to MaxPairScore, higher
// is better. The tiers follow peer-to-peer bandwidth:
//
//	NVSwitch fabric                       100
//	direct NVLinks n (n capped at 7)       50 + 6n + pcie rank  (56..97)
//	PCIe only                              10 + 6 * pcie rank   (10..40)
//
// where pcie rank is 0 (cross-CPU) up to 5 (same board). Inside an NVLink
// tier the PCIe level only breaks ties; without NVLink it is the link.
func PairScore(l Link) int {
	rank := pcieRank(l.PCIe)
	switch {
	case l.NVSwitch:
		return MaxPairScore
	case l.NVLinks > 0:
		return 50 + 6*min(l.NVLinks, 7) + rank
	default:
		return 10 + 6*rank
	}
}

func pcieRank(l PCIeLevel) int {
	switch l {
	case PCIeSameBoard:
		return 5
	case PCIeSingleSwitch:
		return 4
	case PCIeMultiSwitch:
		return 3
	case PCIeHostBridge:
		return 2
	case PCIeSameNUMA:
		return 1
	default: // cross-CPU, and unknown levels (Validate rejects those)
		return 0
	}
}

// SetQuality rates a chosen GPU set. Greater is better, compared field by
// field in order (see Compare); the struct is comparable with ==.
type SetQuality struct {
	Size  int // GPUs in the set
	Worst int // lowest PairScore inside the set; MaxPairScore for 0 or 1 GPU
	Sum   int // sum of PairScore over all pairs in the set
	// Left rates how well connected the free GPUs left over are (higher
	// keeps more NVLink groups whole for later pods). Only comparable
	// between choices from the same free list.
	Left int
}

// Compare returns -1, 0 or +1 as q is worse than, as good as, or better
// than o: Worst first, then Sum, then Left.
func (q SetQuality) Compare(o SetQuality) int {
	switch {
	case q.Worst != o.Worst:
		return cmpInt(q.Worst, o.Worst)
	case q.Sum != o.Sum:
		return cmpInt(q.Sum, o.Sum)
	default:
		return cmpInt(q.Left, o.Left)
	}
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Score maps the set's interconnect to 0-100 for a scheduler score: the
// worst pair weighs three times the average pair, because collectives run
// at the speed of the slowest link. Sets of 0 or 1 GPU score 100.
func (q SetQuality) Score() int {
	pairs := q.Size * (q.Size - 1) / 2
	if pairs <= 0 {
		return MaxPairScore
	}
	avg := q.Sum / pairs
	return max(0, min(100, (3*q.Worst+avg)/4))
}

// prepared holds what set selection needs, built once per link matrix and
// shared (read-only) by every Node with the same matrix.
type prepared struct {
	n     int
	score []uint8 // n*n PairScore, row major
	// For n <= ExactMaxGPUs, indexed by GPU bitmask, 16 bits each:
	// Worst | Sum | Tri | Sum, where Worst and Sum rate the pairs inside the
	// mask and Tri sums each inside triple's worst pair. The high half rates
	// a mask as the chosen set, the low half as the leftover, so a
	// candidate's whole key is tab[set]&hi | tab[left]&lo: one uint64
	// compare, two lookups.
	tab []uint64
	// twinsBelow[i]: GPUs below i with the same score row as i (ignoring
	// the i-j entry). Twins are interchangeable, so only sets that use the
	// lowest free twins of each class need to be searched: on an NVSwitch
	// node that is one set per k.
	twinsBelow []uint64
}

// Prepare validates n and builds its set-selection tables. Decode and Shape
// call it; call it yourself on a Node you built or changed, before sharing
// it between goroutines. Nodes with the same link matrix share one table.
func (n *Node) Prepare() error {
	if err := n.Validate(); err != nil {
		return err
	}
	n.prep = prepare(n)
	return nil
}

// tables returns the prepared tables, building (or fetching from the shared
// cache) without storing them when n was not prepared, so that concurrent
// read-only use never writes to n. Nil if Links is malformed.
func (n *Node) tables() *prepared {
	if n == nil {
		return nil
	}
	if p := n.prep; p != nil && p.n == len(n.GPUs) && len(n.Links) == p.n {
		return p
	}
	if len(n.GPUs) > MaxGPUs || len(n.Links) != len(n.GPUs) {
		return nil
	}
	for _, row := range n.Links {
		if len(row) != len(n.GPUs) {
			return nil
		}
	}
	return prepare(n)
}

var cache = struct {
	sync.Mutex
	m     map[string]*prepared
	bytes int
}{m: map[string]*prepared{}}

// maxCachedBytes bounds the shared cache (a 16-GPU table is 384 KiB, an
// 8-GPU one 1.5 KiB); real clusters have a handful of shapes, and a node
// whose matrix no longer fits just keeps its own tables.
const maxCachedBytes = 32 << 20

// prepare assumes a square link matrix.
func prepare(n *Node) *prepared {
	g := len(n.GPUs)
	score := make([]uint8, g*g)
	for i := range g {
		for j := range g {
			if i != j {
				score[i*g+j] = uint8(PairScore(n.Links[i][j]))
			}
		}
	}
	key := string(score)
	cache.Lock()
	p := cache.m[key]
	cache.Unlock()
	if p != nil && p.n == g {
		return p
	}
	p = &prepared{n: g, score: score}
	if g <= ExactMaxGPUs {
		p.buildTables()
	}
	size := len(p.score) + 8*len(p.tab) + 8*len(p.twinsBelow)
	cache.Lock()
	defer cache.Unlock()
	if q := cache.m[key]; q != nil {
		return q // built meanwhile by another goroutine
	}
	if cache.bytes+size <= maxCachedBytes {
		cache.m[key] = p
		cache.bytes += size
	}
	return p
}

// buildTables fills tab for every subset by adding its lowest GPU to the
// already computed rest: 2^n entries, O(n^2) each at worst. No field
// overflows 16 bits for n <= 16: Sum <= 120*100, Tri <= 560*100.
func (p *prepared) buildTables() {
	g := p.n
	size := 1 << g
	p.tab = make([]uint64, size)
	p.twinsBelow = make([]uint64, g)
	for i := range g {
		for j := range i {
			if p.twins(i, j) {
				p.twinsBelow[i] |= 1 << j
			}
		}
	}
	p.tab[0] = MaxPairScore << 48
	for mask := 1; mask < size; mask++ {
		i := bits.TrailingZeros(uint(mask))
		rest := p.tab[mask&^(1<<i)]
		worst, sum, tri := int(rest>>48), int(rest&0xffff), int(rest>>16&0xffff)
		row := p.score[i*g : i*g+g]
		for r := mask &^ (1 << i); r != 0; r &= r - 1 {
			j := bits.TrailingZeros(uint(r))
			s := int(row[j])
			worst = min(worst, s)
			sum += s
			for r2 := r & (r - 1); r2 != 0; r2 &= r2 - 1 {
				k := bits.TrailingZeros(uint(r2))
				tri += int(min(row[j], row[k], p.score[j*g+k]))
			}
		}
		p.tab[mask] = uint64(worst)<<48 | uint64(sum)<<32 | uint64(tri)<<16 | uint64(sum)
	}
}

// BestSet chooses k GPUs among the free positions (indices into n.GPUs;
// the caller leaves out unhealthy or taken GPUs). Duplicates in free are
// ignored. It returns the positions in ascending order.
//
// Objective, lexicographic:
//  1. the best worst pair (SetQuality.Worst): collectives such as
//     all-reduce run at the speed of the slowest link in the ring;
//  2. the best sum of pair scores: more fast paths among the rest;
//  3. the best connected leftover free GPUs (SetQuality.Left): first the
//     sum over leftover triples of each triple's worst pair, which is high
//     when whole NVLink groups (quads, pairs) stay free, then the sum of
//     leftover pair scores, which keeps PCIe-switch pairs together;
//  4. the lowest positions, for determinism.
//
// Exact up to ExactMaxGPUs GPUs: a depth-first search over combinations
// with two table lookups per set, cutting prefixes that cannot win and
// interchangeable ("twin") GPUs; microseconds on real 8- and 16-GPU
// machines, under a millisecond on a 16-GPU node with no structure. Above
// that, a greedy choice: grow a set from every free GPU by
// adding the GPU that keeps 1 and 2 best, keep the best result, and rate
// the leftover by pair sum only.
//
// ok is false when k < 0, k exceeds the free GPUs, or free holds a position
// out of range. k == 0 returns an empty set and ok.
func (n *Node) BestSet(free []int, k int) (set []int, q SetQuality, ok bool) {
	p := n.tables()
	if p == nil || k < 0 {
		return nil, SetQuality{}, false
	}
	var fmask uint64
	for _, f := range free {
		if f < 0 || f >= p.n {
			return nil, SetQuality{}, false
		}
		fmask |= 1 << uint(f)
	}
	if k > bits.OnesCount64(fmask) {
		return nil, SetQuality{}, false
	}
	if k == 0 {
		return []int{}, SetQuality{Worst: MaxPairScore}, true
	}
	if p.tab != nil {
		set, q = p.exact(fmask, k)
	} else {
		set, q = p.greedy(fmask, k)
	}
	return set, q, true
}

func (p *prepared) twins(i, j int) bool {
	for x := range p.n {
		if x != i && x != j && p.score[i*p.n+x] != p.score[j*p.n+x] {
			return false
		}
	}
	return true
}

// exact searches the k-subsets of fmask depth first in lexicographic order
// of positions and keeps the first strictly better one, so ties go to the
// lowest positions. A prefix whose worst pair is already below the best
// found cannot win (the worst pair only drops as GPUs are added) and is cut,
// and so is any set that skips a lower free twin (it ties with the set that
// takes the twin instead, which comes first).
func (p *prepared) exact(fmask uint64, k int) ([]int, SetQuality) {
	s := search{tab: p.tab, twinsBelow: p.twinsBelow, all: int(fmask), k: k, bestMask: -1}
	var pos [ExactMaxGPUs]int
	s.pos = pos[:0]
	for r := fmask; r != 0; r &= r - 1 {
		s.pos = append(s.pos, bits.TrailingZeros64(r))
	}
	s.dfs(0, 0, 0)
	best := s.best
	set := make([]int, 0, k)
	for r := s.bestMask; r != 0; r &= r - 1 {
		set = append(set, bits.TrailingZeros(uint(r)))
	}
	return set, SetQuality{
		Size:  k,
		Worst: int(best >> 48),
		Sum:   int(best>>32) & 0xffff,
		Left:  int(best & 0xffffffff),
	}
}

type search struct {
	tab        []uint64
	twinsBelow []uint64
	pos        []int
	all, k     int
	best       uint64
	bestMask   int
}

const hi, lo = 0xffffffff00000000, 0x00000000ffffffff

func (s *search) dfs(start, depth, mask int) {
	if depth == s.k {
		key := s.tab[mask]&hi | s.tab[s.all&^mask]&lo
		if s.bestMask < 0 || key > s.best {
			s.best, s.bestMask = key, mask
		}
		return
	}
	for i := start; i <= len(s.pos)-(s.k-depth); i++ {
		g := s.pos[i]
		if int(s.twinsBelow[g])&s.all&^mask != 0 {
			continue // a lower free twin is not taken
		}
		m := mask | 1<<g
		if s.bestMask >= 0 && s.tab[m]>>48 < s.best>>48 {
			continue
		}
		s.dfs(i+1, depth+1, m)
	}
}

func (p *prepared) greedy(fmask uint64, k int) ([]int, SetQuality) {
	var pos []int
	for r := fmask; r != 0; r &= r - 1 {
		pos = append(pos, bits.TrailingZeros64(r))
	}
	var best []int
	var bestQ SetQuality
	for _, seed := range pos {
		set := []int{seed}
		in := uint64(1) << uint(seed)
		worst, sum := MaxPairScore, 0
		for len(set) < k {
			cand, cw, cs := -1, -1, -1
			for _, c := range pos {
				if in&(1<<uint(c)) != 0 {
					continue
				}
				w, s := worst, sum
				for _, x := range set {
					v := int(p.score[c*p.n+x])
					w = min(w, v)
					s += v
				}
				if w > cw || (w == cw && s > cs) {
					cand, cw, cs = c, w, s
				}
			}
			set = append(set, cand)
			in |= 1 << uint(cand)
			worst, sum = cw, cs
		}
		left := 0
		for i, a := range pos {
			for _, b := range pos[i+1:] {
				if in&(1<<uint(a)) == 0 && in&(1<<uint(b)) == 0 {
					left += int(p.score[a*p.n+b])
				}
			}
		}
		slices.Sort(set)
		q := SetQuality{Size: k, Worst: worst, Sum: sum, Left: left}
		if best == nil || q.Compare(bestQ) > 0 || (q.Compare(bestQ) == 0 && slices.Compare(set, best) < 0) {
			best, bestQ = set, q
		}
	}
	return best, bestQ
}

// Quality rates a given set of positions (for example one the scheduler
// recorded on a pod) without the leftover part: Left is 0.
func (n *Node) Quality(set []int) (SetQuality, error) {
	p := n.tables()
	if p == nil {
		return SetQuality{}, fmt.Errorf("%w: malformed link matrix", ErrInvalid)
	}
	q := SetQuality{Size: len(set), Worst: MaxPairScore}
	for i, a := range set {
		if a < 0 || a >= p.n {
			return SetQuality{}, fmt.Errorf("%w: gpu position %d out of range", ErrInvalid, a)
		}
		for _, b := range set[:i] {
			if a == b {
				return SetQuality{}, fmt.Errorf("%w: gpu position %d given twice", ErrInvalid, a)
			}
			s := int(p.score[a*p.n+b])
			q.Worst = min(q.Worst, s)
			q.Sum += s
		}
	}
	return q, nil
}

// String formats the quality for logs and events.
func (q SetQuality) String() string {
	return fmt.Sprintf("size=%d worst=%d sum=%d left=%d score=%d", q.Size, q.Worst, q.Sum, q.Left, q.Score())
}
