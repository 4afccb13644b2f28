//! Properties of the minimal cover and of the forward-secure frontier, on small trees.
//!
//! Every tree here is enumerated completely (every node of every depth whose period meets the epoch) and the
//! cover is checked against an independent brute-force minimum: a dynamic programme over leaf boundaries. The
//! frontier is checked against secrets derived from the root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use custos_proto::time::DAY;
use custos_proto::{
    DeviceId, Epoch, Error, MasterSecret, NodeId, NodeSecret, RustCrypto, Schedule, Secret, Span,
    Stage, Suite, TreeSpec, UnixTime,
};
use proptest::prelude::*;
use proptest::sample::Index;

const DEVICE: DeviceId = DeviceId([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
const HOUR: u64 = 3_600;

fn date(y: i64, m: u32, d: u32) -> u64 {
    UnixTime::from_date(y, m, d).unwrap().secs()
}

fn t(secs: u64) -> UnixTime {
    UnixTime::new(secs).unwrap()
}

fn span(start: u64, end: u64) -> Span {
    Span::new(t(start), t(end)).unwrap()
}

fn spec(schedule: &str, start: u64, end: u64) -> TreeSpec {
    TreeSpec::new(
        DEVICE,
        Epoch(3),
        Schedule::parse(schedule).unwrap(),
        span(start, end),
    )
    .unwrap()
}

fn master() -> MasterSecret {
    MasterSecret::new(Secret::from_bytes([0x5a; 32]))
}

/// Small trees: schedules that nest, over epochs of a few hundred leaves at most, several of them starting or
/// ending in the middle of a coarser period (so that nodes are clipped to the epoch).
fn tree_specs() -> Vec<TreeSpec> {
    vec![
        spec("month/week/day", date(2026, 1, 1), date(2026, 7, 1)),
        spec("month/week/day", date(2024, 1, 10), date(2024, 5, 20)),
        spec("week/day", date(2025, 2, 3), date(2025, 4, 29)),
        spec("month/day", date(2024, 1, 15), date(2024, 6, 1)),
        spec("day/6h/1h", date(2026, 3, 1) + 5 * HOUR, date(2026, 3, 9)),
        spec("2d/1d", 20_001 * DAY, 20_200 * DAY),
        spec("year/month", date(2019, 7, 1), date(2040, 1, 1)),
        spec("month/week/day/6h", date(2026, 1, 25), date(2026, 3, 20)),
        spec("6h/2h/30m", date(2026, 3, 1) + 90 * 60, date(2026, 3, 4)),
        spec("year/month/week/day", date(2025, 11, 1), date(2026, 6, 1)),
        spec("day/hour", date(2026, 6, 1), date(2026, 6, 11)),
        spec("week/6h", date(2024, 2, 20), date(2024, 3, 10)),
        spec("month/week", date(2023, 11, 1), date(2028, 4, 1)),
    ]
}

/// One tree, fully enumerated.
struct Tree {
    spec: TreeSpec,
    /// Every node of the tree with its clipped span, root first, then by depth and index.
    nodes: Vec<(NodeId, Span)>,
    /// Leaf boundaries: the start of every leaf in order, then the epoch end.
    bounds: Vec<u64>,
    /// For each leaf position, the nodes whose clipped span starts there: (node, end position).
    starting_at: Vec<Vec<(NodeId, usize)>>,
    /// The secret of every node, derived from the root.
    secrets: HashMap<NodeId, Secret>,
}

impl Tree {
    fn build(spec: TreeSpec) -> Self {
        let epoch = spec.span();
        let mut nodes = vec![(NodeId::ROOT, spec.node_span(NodeId::ROOT).unwrap())];
        assert_eq!(nodes[0].1, epoch, "the root spans the epoch");
        for depth in 1..=spec.leaf_depth() {
            let stage: Stage = spec.schedule().stages()[usize::from(depth) - 1];
            let first = stage.index_of(epoch.start());
            let last = stage.index_of(t(epoch.end().secs() - 1));
            for index in first..=last {
                let node = NodeId { depth, index };
                match spec.node_span(node) {
                    Ok(s) => {
                        // The clipped span is the stage period intersected with the epoch.
                        let period =
                            Span::new(stage.start_of(index).unwrap(), stage.end_of(index).unwrap())
                                .unwrap();
                        assert_eq!(Some(s), period.intersect(epoch), "{node:?}");
                        nodes.push((node, s));
                    }
                    // Only a fifth week of a 28-day February does not exist.
                    Err(Error::InvalidNode) if stage == Stage::Week && index % 5 == 4 => {}
                    Err(e) => {
                        panic!("node {node:?} of {spec:?} inside the epoch has no span: {e:?}")
                    }
                }
            }
        }
        let leaves: Vec<Span> = nodes
            .iter()
            .filter(|(n, _)| n.depth == spec.leaf_depth())
            .map(|(_, s)| *s)
            .collect();
        let mut bounds: Vec<u64> = leaves.iter().map(|s| s.start().secs()).collect();
        bounds.push(epoch.end().secs());
        assert_eq!(bounds[0], epoch.start().secs());
        for (i, leaf) in leaves.iter().enumerate() {
            assert_eq!(leaf.end().secs(), bounds[i + 1], "leaves tile the epoch");
        }
        assert!(
            leaves.len() <= 400,
            "keep the trees small: {} leaves",
            leaves.len()
        );
        let pos: HashMap<u64, usize> = bounds.iter().enumerate().map(|(i, b)| (*b, i)).collect();
        let mut starting_at = vec![Vec::new(); bounds.len()];
        for (node, s) in &nodes {
            let (a, b) = (pos[&s.start().secs()], pos[&s.end().secs()]);
            starting_at[a].push((*node, b));
        }
        let c = RustCrypto;
        let root = spec.root(&c, &master()).unwrap();
        let secrets = nodes
            .iter()
            .map(|(n, _)| (*n, spec.derive(&c, &root, *n).unwrap().secret().clone()))
            .collect();
        Self {
            spec,
            nodes,
            bounds,
            starting_at,
            secrets,
        }
    }

    fn leaves(&self) -> usize {
        self.bounds.len() - 1
    }

    fn range(&self, a: usize, b: usize) -> Span {
        span(self.bounds[a], self.bounds[b])
    }

    fn span_of(&self, node: NodeId) -> Span {
        self.nodes
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, s)| *s)
            .unwrap()
    }

    /// Brute force: the fewest nodes whose clipped spans tile leaf positions `a..b` exactly.
    fn min_cover(&self, a: usize, b: usize) -> usize {
        const INF: usize = usize::MAX;
        let mut dp = vec![INF; b + 1];
        dp[b] = 0;
        for i in (a..b).rev() {
            for &(_, end) in &self.starting_at[i] {
                if end <= b && dp[end] != INF {
                    dp[i] = dp[i].min(1 + dp[end]);
                }
            }
        }
        dp[a]
    }

    /// Checks that `nodes` tile `range` exactly: disjoint, in time order, union equal to the range.
    fn assert_exact(&self, nodes: &[NodeId], range: Span) {
        let mut at = range.start();
        for node in nodes {
            let s = self.spec.node_span(*node).unwrap();
            assert_eq!(s, self.span_of(*node), "{node:?}");
            assert_eq!(
                s.start(),
                at,
                "node {node:?} does not start where the previous one ended (range {range})"
            );
            at = s.end();
        }
        assert_eq!(
            at,
            range.end(),
            "nodes {nodes:?} end at {at}, not at the end of {range}"
        );
    }
}

fn trees() -> &'static [Tree] {
    static TREES: OnceLock<Vec<Tree>> = OnceLock::new();
    TREES.get_or_init(|| tree_specs().into_iter().map(Tree::build).collect())
}

fn cover(tree: &Tree, range: Span) -> Vec<NodeId> {
    tree.spec.cover(range).unwrap().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (a) exact and (b) minimal, for random leaf-aligned sub-ranges of every tree.
    #[test]
    fn cover_is_exact_and_minimal(tree in 0..tree_specs().len(), a in any::<Index>(), b in any::<Index>()) {
        let tree = &trees()[tree];
        let n = tree.leaves();
        let (a, b) = (a.index(n), b.index(n));
        let (a, b) = (a.min(b), a.max(b) + 1);
        let range = tree.range(a, b);
        let nodes = cover(tree, range);
        tree.assert_exact(&nodes, range);
        prop_assert_eq!(
            nodes.len(),
            tree.min_cover(a, b),
            "cover {:?} of {} in {:?} is not minimal", nodes, range, tree.spec.schedule()
        );
    }
}

#[test]
fn cover_is_exact_and_minimal_for_every_range_of_a_clipped_month_week_day_tree() {
    // Exhaustive over all ~8 500 leaf-aligned ranges of one tree whose epoch starts and ends mid-month and
    // spans a leap-year February (which has a one-day fifth week).
    let tree = &trees()[1];
    assert_eq!(tree.spec.schedule().to_string(), "month/week/day");
    let n = tree.leaves();
    for b in 1..=n {
        // One DP pass per end position gives the minimum for every start.
        const INF: usize = usize::MAX;
        let mut dp = vec![INF; b + 1];
        dp[b] = 0;
        for i in (0..b).rev() {
            for &(_, end) in &tree.starting_at[i] {
                if end <= b && dp[end] != INF {
                    dp[i] = dp[i].min(1 + dp[end]);
                }
            }
        }
        for (a, &best) in dp.iter().enumerate().take(b) {
            let range = tree.range(a, b);
            let nodes = cover(tree, range);
            tree.assert_exact(&nodes, range);
            assert_eq!(
                nodes.len(),
                best,
                "cover {nodes:?} of {range} is not minimal"
            );
        }
    }
}

#[test]
fn whole_epoch_is_the_root() {
    for tree in trees() {
        let nodes = cover(tree, tree.spec.span());
        assert_eq!(nodes, vec![NodeId::ROOT], "{:?}", tree.spec.schedule());
    }
}

#[test]
fn two_whole_months_are_two_month_nodes() {
    let tree = &trees()[0]; // month/week/day over 2026-01-01 .. 2026-07-01
    for (y, m) in [(2026, 1), (2026, 2), (2026, 3), (2026, 4), (2026, 5)] {
        let start = date(y, m, 1);
        let end = date(y, m + 2, 1);
        let nodes = cover(tree, span(start, end));
        let month = Stage::Month.index_of(t(start));
        assert_eq!(
            nodes,
            vec![
                NodeId {
                    depth: 1,
                    index: month
                },
                NodeId {
                    depth: 1,
                    index: month + 1
                }
            ],
            "months {y}-{m:02} and the next"
        );
    }
    // One whole month is one node, and the same month plus one day is two.
    let nodes = cover(tree, span(date(2026, 2, 1), date(2026, 3, 1)));
    assert_eq!(
        nodes,
        vec![NodeId {
            depth: 1,
            index: Stage::Month.index_of(t(date(2026, 2, 1)))
        }]
    );
    let nodes = cover(tree, span(date(2026, 2, 1), date(2026, 3, 2)));
    assert_eq!(nodes.len(), 2);
    assert_eq!(
        nodes[1],
        NodeId {
            depth: 3,
            index: date(2026, 3, 1) / DAY
        }
    );
}

#[test]
fn second_week_of_a_month_is_one_week_node() {
    let tree = &trees()[0];
    for m in 1..=6 {
        let nodes = cover(tree, span(date(2026, m, 8), date(2026, m, 15)));
        let index = Stage::Week.index_of(t(date(2026, m, 8)));
        assert_eq!(index % 5, 1, "days 8–14 are the second week of the month");
        assert_eq!(
            nodes,
            vec![NodeId { depth: 2, index }],
            "2026-{m:02}-08 .. 15"
        );
    }
    // Days 8–15 are a week and a day; days 7–14 are a day and a week.
    assert_eq!(
        cover(tree, span(date(2026, 3, 8), date(2026, 3, 16))).len(),
        2
    );
    assert_eq!(
        cover(tree, span(date(2026, 3, 7), date(2026, 3, 15))).len(),
        2
    );
    // The fifth week of a 31-day month (days 29–31) is one node too.
    let nodes = cover(tree, span(date(2026, 3, 29), date(2026, 4, 1)));
    assert_eq!(
        nodes,
        vec![NodeId {
            depth: 2,
            index: Stage::Week.index_of(t(date(2026, 3, 29)))
        }]
    );
}

#[test]
fn a_single_leaf_is_one_node() {
    for tree in trees() {
        for i in [0, tree.leaves() / 3, tree.leaves() - 1] {
            let range = tree.range(i, i + 1);
            let nodes = cover(tree, range);
            let leaf = tree
                .spec
                .leaf_node(tree.spec.leaf_at(range.start()).unwrap());
            assert_eq!(
                nodes.len(),
                1,
                "{range} in {:?}: {nodes:?}",
                tree.spec.schedule()
            );
            assert_eq!(tree.span_of(nodes[0]), range);
            assert!(tree.spec.is_ancestor(nodes[0], leaf).unwrap());
            // Unless the leaf is the only leaf of its parent (e.g. the one-day fifth week of a leap February, or
            // a parent clipped to one leaf by the epoch), the node is the leaf itself.
            let parent = tree
                .spec
                .node_at(tree.spec.leaf_depth() - 1, range.start())
                .unwrap();
            if tree.span_of(parent) != range {
                assert_eq!(nodes[0], leaf, "{range} in {:?}", tree.spec.schedule());
            }
        }
    }
    // The plain case: 2026-03-10 under month/week/day is one day node at leaf depth 3.
    let tree = &trees()[0];
    let nodes = cover(tree, span(date(2026, 3, 10), date(2026, 3, 11)));
    assert_eq!(
        nodes,
        vec![NodeId {
            depth: 3,
            index: date(2026, 3, 10) / DAY
        }]
    );
    // Leap day 2024-02-29 is the whole fifth week of that February: the week node covers it.
    let tree = &trees()[1];
    let nodes = cover(tree, span(date(2024, 2, 29), date(2024, 3, 1)));
    assert_eq!(
        nodes,
        vec![NodeId {
            depth: 2,
            index: Stage::Week.index_of(t(date(2024, 2, 29)))
        }]
    );
}

#[test]
fn unaligned_ranges_are_rejected() {
    let tree = &trees()[0]; // leaf stage: day
    let noon = date(2026, 3, 10) + 12 * HOUR;
    assert_eq!(
        tree.spec.cover(span(noon, date(2026, 3, 20))).err(),
        Some(Error::NotAligned {
            at: noon,
            leaf: Stage::Day
        })
    );
    let end = date(2026, 3, 20) + 1;
    assert_eq!(
        tree.spec.cover(span(date(2026, 3, 10), end)).err(),
        Some(Error::NotAligned {
            at: end,
            leaf: Stage::Day
        })
    );
    let tree = &trees()[4]; // day/6h/1h: leaf stage 1h, a fixed stage
    let at = date(2026, 3, 2) + 30 * 60;
    let one_hour = Stage::Fixed(core::num::NonZeroU32::new(3600).unwrap());
    assert_eq!(
        tree.spec.cover(span(at, date(2026, 3, 3))).err(),
        Some(Error::NotAligned { at, leaf: one_hour })
    );
}

#[test]
fn ranges_outside_the_epoch_are_rejected() {
    let tree = &trees()[0]; // 2026-01-01 .. 2026-07-01
    for (a, b) in [
        (date(2025, 12, 31), date(2026, 1, 5)), // starts the day before the epoch
        (date(2026, 6, 20), date(2026, 7, 2)),  // ends the day after it
        (date(2025, 12, 1), date(2026, 8, 1)),  // contains it
        (date(2025, 1, 1), date(2025, 2, 1)),   // wholly before it
        (date(2027, 1, 1), date(2027, 2, 1)),   // wholly after it
    ] {
        assert_eq!(
            tree.spec.cover(span(a, b)).err(),
            Some(Error::OutsideEpoch),
            "{}",
            span(a, b)
        );
    }
}

#[test]
fn tree_spec_rejects_unaligned_epochs() {
    let s = Schedule::parse("month/week/day").unwrap();
    let noon = date(2026, 1, 1) + 12 * HOUR;
    assert_eq!(
        TreeSpec::new(DEVICE, Epoch(0), s, span(noon, date(2026, 2, 1))).err(),
        Some(Error::NotAligned {
            at: noon,
            leaf: Stage::Day
        })
    );
}

fn frontier(tree: &Tree, now: UnixTime) -> Vec<NodeSecret> {
    let c = RustCrypto;
    let root = [tree.spec.root(&c, &master()).unwrap()];
    tree.spec
        .frontier(&c, &root, now)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The frontier at `now` covers exactly [start of now's leaf, epoch end), opens no earlier leaf, shares no
    /// secret with any earlier leaf's path, and derives every later leaf exactly as the root does.
    #[test]
    fn frontier_is_exact_and_forward_secure(tree in 0..tree_specs().len(), at in any::<Index>()) {
        let c = RustCrypto;
        let tree = &trees()[tree];
        let epoch = tree.spec.span();
        let now = t(epoch.start().secs() + at.index(usize::try_from(epoch.end().secs() - epoch.start().secs()).unwrap()) as u64);
        // Now's leaf, found independently of the library: the last leaf boundary at or before `now`.
        let k = tree.bounds.partition_point(|&b| b <= now.secs()) - 1;
        prop_assert!(tree.bounds[k] <= now.secs() && now.secs() < tree.bounds[k + 1]);
        let n = tree.leaves();

        let fr = frontier(tree, now);
        let nodes: Vec<NodeId> = fr.iter().map(NodeSecret::node).collect();
        tree.assert_exact(&nodes, tree.range(k, n));
        prop_assert_eq!(nodes.len(), tree.min_cover(k, n), "frontier {:?} is not minimal", nodes);
        for f in &fr {
            prop_assert!(*f.secret() == tree.secrets[&f.node()], "frontier secret of {:?} differs from the root's", f.node());
        }

        // Nothing earlier is derivable, and no earlier path secret is held.
        let mut earlier_path = BTreeSet::new();
        for j in 0..k {
            let leaf = tree.spec.leaf_node(tree.spec.leaf_at(t(tree.bounds[j])).unwrap());
            for f in &fr {
                prop_assert_eq!(tree.spec.derive(&c, f, leaf).err(), Some(Error::NotDescendant), "{:?} derives earlier leaf {:?}", f.node(), leaf);
            }
            for depth in 0..=tree.spec.leaf_depth() {
                earlier_path.insert(tree.spec.node_at(depth, t(tree.bounds[j])).unwrap());
            }
        }
        for node in &earlier_path {
            let s = &tree.secrets[node];
            for f in &fr {
                prop_assert!(f.secret() != s, "frontier node {:?} holds the secret of {:?}, an ancestor of an earlier leaf", f.node(), node);
            }
        }

        // Everything from now's leaf on derives from exactly one frontier node, to the root's secret and keys.
        let root = tree.spec.root(&c, &master()).unwrap();
        for j in k..n {
            let leaf_index = tree.spec.leaf_at(t(tree.bounds[j])).unwrap();
            let leaf = tree.spec.leaf_node(leaf_index);
            let derived: Vec<NodeSecret> = fr.iter().filter_map(|f| tree.spec.derive(&c, f, leaf).ok()).collect();
            prop_assert_eq!(derived.len(), 1, "leaf {:?} derivable from {} frontier nodes", leaf, derived.len());
            prop_assert!(*derived[0].secret() == tree.secrets[&leaf], "leaf {:?} secret differs from the root's", leaf);
            if j == k || j == n - 1 {
                let holder = fr.iter().find(|f| tree.spec.is_ancestor(f.node(), leaf).unwrap()).unwrap();
                for suite in [Suite::AES256GCM, Suite::CHACHA20POLY1305] {
                    let from_frontier = tree.spec.leaf_key_bytes(&c, holder, leaf_index, suite).unwrap();
                    let from_root = tree.spec.leaf_key_bytes(&c, &root, leaf_index, suite).unwrap();
                    prop_assert!(from_frontier == from_root, "leaf key of {:?}", leaf);
                }
            }
        }
    }
}

#[test]
fn frontier_before_the_epoch_is_the_root_and_after_it_is_empty() {
    let tree = &trees()[0]; // 2026-01-01 .. 2026-07-01
    let (start, end) = (
        tree.spec.span().start().secs(),
        tree.spec.span().end().secs(),
    );
    for before in [0, start - DAY, start - 1] {
        let nodes: Vec<NodeId> = frontier(tree, t(before))
            .iter()
            .map(NodeSecret::node)
            .collect();
        assert_eq!(nodes, vec![NodeId::ROOT], "frontier at {}", t(before));
    }
    let last_second: Vec<NodeId> = frontier(tree, t(end - 1))
        .iter()
        .map(NodeSecret::node)
        .collect();
    assert_eq!(
        last_second,
        vec![NodeId {
            depth: 3,
            index: (end - 1) / DAY
        }],
        "the last day of the epoch"
    );
    for after in [end, end + 1, date(2030, 1, 1)] {
        assert!(
            frontier(tree, t(after)).is_empty(),
            "frontier at {} must be empty",
            t(after)
        );
    }
}

#[test]
fn frontier_at_the_start_is_the_root_and_shrinks_later() {
    let tree = &trees()[0]; // month/week/day, 2026-01-01 .. 2026-07-01
    let start = tree.spec.span().start();
    let nodes: Vec<NodeId> = frontier(tree, start).iter().map(NodeSecret::node).collect();
    assert_eq!(nodes, vec![NodeId::ROOT]);
    // In the middle of 2026-03-10: days 10–14, week 15–21, week 22–28, week 29–31, months April to June.
    let now = t(date(2026, 3, 10) + 13 * HOUR + 7);
    let nodes: Vec<NodeId> = frontier(tree, now).iter().map(NodeSecret::node).collect();
    let mut expected: Vec<NodeId> = (10..=14)
        .map(|d| NodeId {
            depth: 3,
            index: date(2026, 3, d) / DAY,
        })
        .collect();
    let week = Stage::Week.index_of(t(date(2026, 3, 15)));
    expected.extend((0..3).map(|w| NodeId {
        depth: 2,
        index: week + w,
    }));
    let month = Stage::Month.index_of(t(date(2026, 4, 1)));
    expected.extend((0..3).map(|m| NodeId {
        depth: 1,
        index: month + m,
    }));
    assert_eq!(nodes, expected);
}
