package gpupreempt

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	policy "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework/preemption"
	"k8s.io/kubernetes/pkg/scheduler/util"

	"github.com/kubegpu/kubegpu/pkg/gpunode"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gang"
	"github.com/kubegpu/kubegpu/scheduler-plugins/gpupack"
)

// unit is what is evicted together: one pod, an upstream PodGroup the
// Evaluator grouped, or a whole kubegpu gang. It implements
// preemption.Victim so the upstream ordering (MoreImportantVictim) and
// PDB accounting (FilterVictimsWithPDBViolation) apply unchanged.
type unit struct {
	pods     []fwk.PodInfo
	priority int32
	start    *metav1.Time
	keyType  fwk.EntityKeyType
	gang     string
}

func (u *unit) Pods() []fwk.PodInfo             { return u.pods }
func (u *unit) Priority() int32                 { return u.priority }
func (u *unit) EarliestStartTime() *metav1.Time { return u.start }
func (u *unit) IsGroup() bool                   { return u.keyType != fwk.PodKeyType }
func (u *unit) Type() fwk.EntityKeyType         { return u.keyType }

func newUnit(pods []fwk.PodInfo, priority int32, keyType fwk.EntityKeyType, gangKey string) *unit {
	u := &unit{pods: pods, priority: priority, keyType: keyType, gang: gangKey}
	for _, pi := range pods {
		t := util.GetPodStartTime(pi.GetPod())
		if u.start == nil || (t != nil && t.Before(u.start)) {
			u.start = t
		}
	}
	return u
}

// units turns the Evaluator's possible victims into eviction units: a
// pod of a kubegpu gang brings its whole gang, which counts with its
// highest member priority. Only units the preemptor may evict are kept:
// lower priority than the preemptor, not of its own gang, and none of
// whose pods is in skip.
func (pl *Plugin) units(c *cycle, preemptor *v1.Pod, victims []*preemption.DomainVictim, skip map[types.UID]bool) []*unit {
	prio := corev1helpers.PodPriority(preemptor)
	own, _ := gang.KeyOf(preemptor)
	seen := map[string]bool{}
	var out []*unit
	for _, dv := range victims {
		key := ""
		for _, pi := range dv.Pods() {
			if k, ok := gang.KeyOf(pi.GetPod()); ok {
				key = k
				break
			}
		}
		var u *unit
		if key == "" {
			u = newUnit(dv.Pods(), dv.Priority(), dv.Type(), "")
		} else {
			if seen[key] || key == own {
				continue
			}
			seen[key] = true
			members := c.gangs[key]
			if len(members) == 0 {
				members = dv.Pods()
			}
			p := int32(math.MinInt32)
			for _, pi := range members {
				p = max(p, corev1helpers.PodPriority(pi.GetPod()))
			}
			u = newUnit(members, p, fwk.PodGroupKeyType, key)
		}
		if u.priority >= prio || slices.ContainsFunc(u.pods, func(pi fwk.PodInfo) bool { return skip[pi.GetPod().UID] }) {
			continue
		}
		out = append(out, u)
	}
	return out
}

// sim is one dry run's view: the main node's NodeInfo copy and a cycle
// state whose GPU usage GPUPack's PreFilterExtensions change.
type sim struct {
	state fwk.CycleState
	ni    fwk.NodeInfo
	main  string
	// remote finds the NodeInfo of other nodes a gang victim spans; they
	// are not changed, only told to the PreFilterExtensions.
	remote func(string) fwk.NodeInfo
	// nominatedIn: the view already holds the nominated pods that count
	// against the preemptor, so Filter runs without the nominator's.
	nominatedIn bool
}

func (s *sim) clone() *sim {
	return &sim{state: s.state.Clone(), ni: s.ni.Snapshot(), main: s.main, remote: s.remote, nominatedIn: s.nominatedIn}
}

// filter runs the Filter plugins on the view, with the nominated pods
// the framework counts unless the view holds its own choice of them.
func (pl *Plugin) filter(ctx context.Context, s *sim, preemptor *v1.Pod) *fwk.Status {
	if s.nominatedIn {
		return pl.fh.RunFilterPlugins(ctx, s.state, preemptor, s.ni)
	}
	return pl.fh.RunFilterPluginsWithNominatedPods(ctx, s.state, preemptor, s.ni)
}

func (pl *Plugin) remove(ctx context.Context, s *sim, preemptor *v1.Pod, u *unit) error {
	for _, pi := range u.pods {
		ni := s.ni
		if pi.GetPod().Spec.NodeName != s.main {
			if ni = s.remote(pi.GetPod().Spec.NodeName); ni == nil {
				continue
			}
		} else if err := s.ni.RemovePod(klog.FromContext(ctx), pi.GetPod()); err != nil {
			return fmt.Errorf("%s: remove %s from %s: %w", Name, klog.KObj(pi.GetPod()), s.main, err)
		}
		if st := pl.fh.RunPreFilterExtensionRemovePod(ctx, s.state, preemptor, pi, ni); !st.IsSuccess() {
			return st.AsError()
		}
	}
	return nil
}

func (pl *Plugin) add(ctx context.Context, s *sim, preemptor *v1.Pod, u *unit) error {
	for _, pi := range u.pods {
		ni := s.ni
		if pi.GetPod().Spec.NodeName != s.main {
			if ni = s.remote(pi.GetPod().Spec.NodeName); ni == nil {
				continue
			}
		} else {
			s.ni.AddPodInfo(pi)
		}
		if st := pl.fh.RunPreFilterExtensionAddPod(ctx, s.state, preemptor, pi, ni); !st.IsSuccess() {
			return st.AsError()
		}
	}
	return nil
}

// Interconnect tiers of a GPU set: what preemption must not trade away
// for cheaper victims.
const (
	tierPCIe     = 0
	tierNVLink   = 1 // every pair joined by NVLink
	tierNVSwitch = 2 // every pair on an NVSwitch fabric, or a single GPU
)

func tierOf(q gpunode.SetQuality) int {
	switch {
	case q.Size <= 1 || q.Worst >= gpunode.MaxPairScore:
		return tierNVSwitch
	case q.Worst >= 50: // gpunode.PairScore: NVLink pairs score 56 and up, PCIe 40 at most
		return tierNVLink
	}
	return tierPCIe
}

// plan is one node's outcome of a dry run.
type plan struct {
	victims     []*unit
	violating   int
	maxPriority int32
	sumPriority int64 // with MaxInt32+1 added per pod, as DefaultPreemption sums
	npods       int
	tier        int
	quality     gpunode.SetQuality
	set         []string // the GPUs the preemptor would get
	freed       string   // the GPUs the victims free on the node
}

func (p *plan) pods() []*v1.Pod {
	var out []*v1.Pod
	for _, u := range p.victims {
		for _, pi := range u.pods {
			out = append(out, pi.GetPod())
		}
	}
	sortPods(out)
	return out
}

// better ranks plans on one node as OrderedScoreFuncs ranks nodes.
func (p *plan) better(o *plan) bool {
	if o == nil {
		return true
	}
	switch {
	case p.violating != o.violating:
		return p.violating < o.violating
	case p.tier != o.tier:
		return p.tier > o.tier
	case p.maxPriority != o.maxPriority:
		return p.maxPriority < o.maxPriority
	case p.sumPriority != o.sumPriority:
		return p.sumPriority < o.sumPriority
	case p.npods != o.npods:
		return p.npods < o.npods
	}
	return p.quality.Compare(o.quality) > 0
}

func (p *plan) describe(node string) string {
	var names []string
	for _, pod := range p.pods() {
		names = append(names, pod.Name)
	}
	msg := fmt.Sprintf("preempting %d pod(s) on node %s (%s; highest priority %d) frees GPUs %s", p.npods, node, strings.Join(names, ", "), p.maxPriority, p.freed)
	if len(p.set) > 0 {
		msg += fmt.Sprintf("; the pod gets %s (%s)", strings.Join(p.set, ", "), tierName(p.tier, p.quality))
	}
	return msg
}

func tierName(t int, q gpunode.SetQuality) string {
	if q.Size <= 1 {
		return "one GPU"
	}
	switch t {
	case tierNVSwitch:
		return "NVSwitch-connected"
	case tierNVLink:
		return "every pair NVLink-connected"
	}
	return "PCIe only: preemption cannot free an NVLink-connected set here"
}

// selectOnNode finds the victims on the node: remove every eligible
// unit, check the preemptor fits, note the best interconnect tier its
// GPU set can reach, then reprieve units one at a time while the
// preemptor still fits with a set of that tier. The reprieve order
// decides who goes: it runs once in DefaultPreemption's order (most
// important first) and once per GPU target (the units holding a target's
// GPUs come last, so only they can be left as victims), and keeps the
// best result. state and nodeInfo are the caller's copies.
func (pl *Plugin) selectOnNode(ctx context.Context, c *cycle, state fwk.CycleState, preemptor *v1.Pod, nodeInfo fwk.NodeInfo,
	nominatedIn bool, units []*unit, pdbs []*policy.PodDisruptionBudget) (*plan, *fwk.Status) {
	main := nodeInfo.Node().Name
	// GPUs held on the node, read before removal.
	holders := pl.holders(c, nodeInfo, units)
	remoteInfos := map[string]fwk.NodeInfo{}
	base := &sim{state: state, ni: nodeInfo, main: main, nominatedIn: nominatedIn, remote: func(n string) fwk.NodeInfo {
		if ni, ok := remoteInfos[n]; ok {
			return ni
		}
		ni, err := pl.fh.SnapshotSharedLister().NodeInfos().Get(n)
		if err != nil {
			ni = nil
		}
		remoteInfos[n] = ni
		return ni
	}}
	// Remote lookups happen in this goroutine only; fill them now so
	// clones share a read-only map.
	for _, u := range units {
		for _, pi := range u.pods {
			if n := pi.GetPod().Spec.NodeName; n != main {
				base.remote(n)
			}
		}
	}
	stale, err := pl.dropStale(ctx, c, base, preemptor)
	if err != nil {
		return nil, fwk.AsStatus(err)
	}
	for _, u := range units {
		if err := pl.remove(ctx, base, preemptor, u); err != nil {
			return nil, fwk.AsStatus(err)
		}
	}
	if st := pl.filter(ctx, base, preemptor); !st.IsSuccess() {
		return nil, st
	}
	minTier := -1
	if c.gp != nil {
		if fit, wants, reason := c.gp.CycleFit(base.state, main); wants && reason == "" {
			minTier = tierOf(fit.Quality)
		}
	}
	orders := [][]*unit{importanceOrder(units, nil)}
	for _, target := range pl.targets(c, state, main, units, holders, minTier) {
		orders = append(orders, importanceOrder(units, target))
	}
	var best *plan
	for _, order := range orders {
		s := base.clone()
		p, err := pl.reprieve(ctx, c, s, preemptor, order, pdbs, minTier)
		if err != nil {
			return nil, fwk.AsStatus(err)
		}
		if len(p.victims) > 0 && p.better(best) {
			best = p
		}
	}
	if best == nil {
		// Nothing needs evicting: the pod fits in the dry run although
		// the cycle's Filter turned it away, so GPUPack's state and the
		// scheduler's snapshot disagree for a moment (deleted pods not yet
		// dropped, or bookings not yet seen). An error here would park
		// the pod until an unrelated cluster event; retry shortly instead.
		c.stale.Store(true)
		if stale > 0 {
			return nil, fwk.NewStatus(fwk.Unschedulable, "GPU state is catching up with deleted pods")
		}
		return nil, fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("no victim needed on node %q: GPU state is catching up", main))
	}
	return best, nil
}

// importanceOrder sorts units most important first (the upstream order);
// units in last go after all others.
func importanceOrder(units []*unit, last map[*unit]bool) []*unit {
	out := slices.Clone(units)
	sort.SliceStable(out, func(i, j int) bool {
		if last[out[i]] != last[out[j]] {
			return !last[out[i]]
		}
		return preemption.MoreImportantVictim(out[i], out[j])
	})
	return out
}

// reprieve adds units back in order (PDB-violating ones first, as
// upstream) while the preemptor still fits with a set of at least
// minTier, and returns the units left out.
func (pl *Plugin) reprieve(ctx context.Context, c *cycle, s *sim, preemptor *v1.Pod, order []*unit, pdbs []*policy.PodDisruptionBudget, minTier int) (*plan, error) {
	violating, nonViolating := preemption.FilterVictimsWithPDBViolation(order, pdbs)
	p := &plan{maxPriority: math.MinInt32}
	try := func(u *unit) (bool, error) {
		if err := pl.add(ctx, s, preemptor, u); err != nil {
			return false, err
		}
		if pl.fits(ctx, c, s, preemptor, minTier) {
			return true, nil
		}
		if err := pl.remove(ctx, s, preemptor, u); err != nil {
			return false, err
		}
		p.victims = append(p.victims, u)
		return false, nil
	}
	for _, v := range violating {
		fits, err := try(v.Victim)
		if err != nil {
			return nil, err
		}
		if !fits {
			p.violating += v.ViolateCount
		}
	}
	for _, u := range nonViolating {
		if _, err := try(u); err != nil {
			return nil, err
		}
	}
	for _, u := range p.victims {
		for _, pi := range u.pods {
			p.maxPriority = max(p.maxPriority, corev1helpers.PodPriority(pi.GetPod()))
			p.sumPriority += int64(corev1helpers.PodPriority(pi.GetPod())) + int64(math.MaxInt32+1)
			p.npods++
		}
	}
	p.tier = tierNVSwitch
	if c.gp != nil {
		if fit, wants, reason := c.gp.CycleFit(s.state, s.main); wants && reason == "" {
			p.tier, p.quality, p.set = tierOf(fit.Quality), fit.Quality, fit.GPUs
		}
		var freed []string
		for _, u := range p.victims {
			for _, pi := range u.pods {
				if node, uuids, milli, unnamed := c.gp.HeldGPUs(pi.GetPod().UID); node == s.main {
					freed = append(freed, describeGPUs(uuids, milli, unnamed))
				}
			}
		}
		p.freed = strings.Join(freed, ", ")
	}
	if p.freed == "" {
		p.freed = "none (other resources)"
	}
	return p, nil
}

func (pl *Plugin) fits(ctx context.Context, c *cycle, s *sim, preemptor *v1.Pod, minTier int) bool {
	if st := pl.filter(ctx, s, preemptor); !st.IsSuccess() {
		return false
	}
	if minTier < 0 || c.gp == nil {
		return true
	}
	fit, wants, reason := c.gp.CycleFit(s.state, s.main)
	return !wants || (reason == "" && tierOf(fit.Quality) >= minTier)
}

// gpuHolders is, per GPU position on a node, the eligible units holding
// it (with the milli each holds; 0 = whole) and whether a pod that may not
// be evicted holds part of it.
type gpuHolders struct {
	view    gpupack.NodeView
	units   [][]heldBy
	blocked []bool
}

type heldBy struct {
	u     *unit
	milli int
}

func (pl *Plugin) holders(c *cycle, nodeInfo fwk.NodeInfo, units []*unit) *gpuHolders {
	if c.gp == nil {
		return nil
	}
	main := nodeInfo.Node().Name
	view, ok := c.gp.NodeView(main)
	if !ok {
		return nil
	}
	h := &gpuHolders{view: view, units: make([][]heldBy, len(view.Used)), blocked: make([]bool, len(view.Used))}
	pos := make(map[string]int, len(view.Topo.GPUs))
	for i, g := range view.Topo.GPUs {
		pos[g.UUID] = i
	}
	unitOf := map[types.UID]*unit{}
	for _, u := range units {
		for _, pi := range u.pods {
			unitOf[pi.GetPod().UID] = u
		}
	}
	for _, pi := range nodeInfo.GetPods() {
		node, uuids, milli, _ := c.gp.HeldGPUs(pi.GetPod().UID)
		if node != main {
			continue
		}
		u := unitOf[pi.GetPod().UID]
		for _, id := range uuids {
			i, ok := pos[id]
			if !ok {
				continue
			}
			if u == nil {
				h.blocked[i] = true
			} else {
				h.units[i] = append(h.units[i], heldBy{u: u, milli: milli})
			}
		}
	}
	return h
}

// maxTargets bounds the reprieve passes per node; maxSubsets bounds the
// GPU sets enumerated per node (C(8,4) = 70 on an 8-GPU node).
const (
	maxTargets = 6
	maxSubsets = 5000
)

// targets lists the cheapest victim groups that free a GPU set of at
// least minTier for the preemptor: for whole GPUs, every set of the
// requested size among GPUs that are free or held only by eligible units
// (their holders are the group); for a share, every GPU with the
// cheapest group of its sharers whose shares make room. Groups are ranked
// like plans (highest victim priority, priority sum, pods, set quality).
func (pl *Plugin) targets(c *cycle, state fwk.CycleState, main string, units []*unit, h *gpuHolders, minTier int) []map[*unit]bool {
	if h == nil || minTier < 0 {
		return nil
	}
	req, ok := gpupack.CycleRequest(state)
	if !ok {
		return nil
	}
	idx := map[*unit]int{}
	for i, u := range units {
		idx[u] = i
	}
	type cand struct {
		group   map[*unit]bool
		key     string
		maxPrio int32
		sum     int64
		npods   int
		quality gpunode.SetQuality
	}
	var cands []cand
	seen := map[string]bool{}
	addGroup := func(group map[*unit]bool, q gpunode.SetQuality) {
		ids := make([]int, 0, len(group))
		c := cand{group: group, maxPrio: math.MinInt32, quality: q}
		for u := range group {
			ids = append(ids, idx[u])
			for _, pi := range u.pods {
				pr := corev1helpers.PodPriority(pi.GetPod())
				c.maxPrio = max(c.maxPrio, pr)
				c.sum += int64(pr) + int64(math.MaxInt32+1)
				c.npods++
			}
		}
		slices.Sort(ids)
		c.key = fmt.Sprint(ids)
		if len(group) == 0 || seen[c.key] {
			return
		}
		seen[c.key] = true
		cands = append(cands, c)
	}
	usable := func(i int) bool {
		g := h.view.Topo.GPUs[i]
		return g.Healthy && g.MemoryMiB >= req.MemoryMiB && !h.blocked[i]
	}
	if req.Milli == 0 {
		var free []int
		for i := range h.view.Used {
			if usable(i) {
				free = append(free, i)
			}
		}
		k := req.Whole
		if k > len(free) {
			return nil
		}
		sets := subsets(free, k, maxSubsets)
		if sets == nil {
			if set, _, ok := h.view.Topo.BestSet(free, k); ok {
				sets = [][]int{set}
			}
		}
		for _, set := range sets {
			q, err := h.view.Topo.Quality(set)
			if err != nil || tierOf(q) < minTier {
				continue
			}
			group := map[*unit]bool{}
			for _, i := range set {
				for _, hb := range h.units[i] {
					group[hb.u] = true
				}
			}
			addGroup(group, q)
		}
	} else if h.view.Sharing {
		for i := range h.view.Used {
			if !usable(i) {
				continue
			}
			need := req.Milli - (1000 - h.view.Used[i])
			if need <= 0 {
				continue
			}
			if group := cheapestShareGroup(h.units[i], need); group != nil {
				addGroup(group, gpunode.SetQuality{Size: 1, Worst: gpunode.MaxPairScore})
			}
		}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		switch {
		case a.maxPrio != b.maxPrio:
			return a.maxPrio < b.maxPrio
		case a.sum != b.sum:
			return a.sum < b.sum
		case a.npods != b.npods:
			return a.npods < b.npods
		}
		return a.quality.Compare(b.quality) > 0
	})
	var out []map[*unit]bool
	for i := 0; i < len(cands) && i < maxTargets; i++ {
		out = append(out, cands[i].group)
	}
	return out
}

// cheapestShareGroup picks, among the units holding shares of one GPU,
// the group whose eviction frees at least need milli with the lowest
// highest priority, then the fewest pods, then the fewest milli freed.
// Up to 16 holders it tries every group; beyond, the largest shares of
// the lowest priority first.
func cheapestShareGroup(held []heldBy, need int) map[*unit]bool {
	// One entry per unit (a unit may hold several shares of the GPU).
	type share struct {
		u     *unit
		milli int
	}
	var shares []share
	for _, hb := range held {
		m := hb.milli
		if m == 0 {
			m = 1000
		}
		if i := slices.IndexFunc(shares, func(s share) bool { return s.u == hb.u }); i >= 0 {
			shares[i].milli += m
		} else {
			shares = append(shares, share{hb.u, m})
		}
	}
	if len(shares) == 0 {
		return nil
	}
	if len(shares) > 16 {
		sort.SliceStable(shares, func(i, j int) bool {
			if shares[i].u.priority != shares[j].u.priority {
				return shares[i].u.priority < shares[j].u.priority
			}
			return shares[i].milli > shares[j].milli
		})
		group, got := map[*unit]bool{}, 0
		for _, s := range shares {
			group[s.u] = true
			if got += s.milli; got >= need {
				return group
			}
		}
		return nil
	}
	bestMask, bestPrio, bestPods, bestMilli := -1, int32(math.MaxInt32), 0, 0
	for mask := 1; mask < 1<<len(shares); mask++ {
		got, prio, pods := 0, int32(math.MinInt32), 0
		for i, s := range shares {
			if mask&(1<<i) != 0 {
				got += s.milli
				prio = max(prio, s.u.priority)
				pods += len(s.u.pods)
			}
		}
		if got < need {
			continue
		}
		if bestMask < 0 || prio < bestPrio || prio == bestPrio && (pods < bestPods || pods == bestPods && got < bestMilli) {
			bestMask, bestPrio, bestPods, bestMilli = mask, prio, pods, got
		}
	}
	if bestMask < 0 {
		return nil
	}
	group := make(map[*unit]bool, bits.OnesCount(uint(bestMask)))
	for i, s := range shares {
		if bestMask&(1<<i) != 0 {
			group[s.u] = true
		}
	}
	return group
}

// subsets lists the k-subsets of from, or nil when there are more than
// limit.
func subsets(from []int, k, limit int) [][]int {
	n := len(from)
	if k <= 0 || k > n {
		return nil
	}
	count := 1.0
	for i := 0; i < k; i++ {
		count = count * float64(n-i) / float64(i+1)
	}
	if count > float64(limit) {
		return nil
	}
	var out [][]int
	cur := make([]int, 0, k)
	var rec func(start int)
	rec = func(start int) {
		if len(cur) == k {
			out = append(out, slices.Clone(cur))
			return
		}
		for i := start; i <= n-(k-len(cur)); i++ {
			cur = append(cur, from[i])
			rec(i + 1)
			cur = cur[:len(cur)-1]
		}
	}
	rec(0)
	return out
}

// dropStale removes, in the dry run's state only, GPU bookings of pods
// the snapshot no longer has on the node (deleted while GPUPack's
// informer handler has not caught up).
func (pl *Plugin) dropStale(ctx context.Context, c *cycle, s *sim, preemptor *v1.Pod) (int, error) {
	if c.gp == nil {
		return 0, nil
	}
	dropped := 0
	in := map[types.UID]bool{}
	for _, pi := range s.ni.GetPods() {
		in[pi.GetPod().UID] = true
	}
	for _, uid := range c.gp.BookedOn(s.main) {
		if in[uid] {
			continue
		}
		pi, err := framework.NewPodInfo(&v1.Pod{ObjectMeta: metav1.ObjectMeta{UID: uid}})
		if err != nil {
			return dropped, err
		}
		if st := c.gp.RemovePod(ctx, s.state, preemptor, pi, s.ni); !st.IsSuccess() {
			return dropped, st.AsError()
		}
		dropped++
	}
	return dropped, nil
}
