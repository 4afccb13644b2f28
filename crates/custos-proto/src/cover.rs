//! Minimal cover: the fewest tree nodes whose leaves tile a time range exactly.
//!
//! Walking from the start of the range, take the largest node that starts there and ends inside the range, then
//! continue from its end. Every node taken this way has a parent that reaches outside the range, and the set of
//! such nodes is the one minimal exact cover (property-tested against brute force). The walk needs no heap and
//! yields nodes in time order; two whole calendar months under `month/week/day` are two nodes.
//!
//! The *frontier* of a DPK at time `now` is the cover of `[start of now's leaf, epoch end)`: the secrets a device
//! keeps to seal from now on while holding nothing that opens an earlier leaf.

use crate::time::{Span, UnixTime};
use crate::tree::{NodeId, NodeSecret, TreeSpec};
use crate::{Crypto, Error};

/// The nodes of a minimal cover, in time order.
#[derive(Clone, Debug)]
pub struct Cover<'a> {
    spec: &'a TreeSpec,
    at: UnixTime,
    end: UnixTime,
}

impl TreeSpec {
    /// The minimal cover of `range`, which must lie inside the epoch and start and end on leaf boundaries.
    pub fn cover(&self, range: Span) -> Result<Cover<'_>, Error> {
        if !self.span().includes(range) {
            return Err(Error::OutsideEpoch);
        }
        let leaf = self.schedule().leaf();
        for t in [range.start(), range.end()] {
            if t != self.span().end() && !leaf.is_boundary(t) {
                return Err(Error::NotAligned { at: t.secs(), leaf });
            }
        }
        Ok(Cover {
            spec: self,
            at: range.start(),
            end: range.end(),
        })
    }

    /// The smallest leaf-aligned range that contains `range`, clipped to the epoch.
    pub fn align_outward(&self, range: Span) -> Result<Span, Error> {
        let range = range.intersect(self.span()).ok_or(Error::OutsideEpoch)?;
        let first = self.node_span(self.node_at(self.leaf_depth(), range.start())?)?;
        let last_second = UnixTime::new(range.end().secs() - 1)?;
        let last = self.node_span(self.node_at(self.leaf_depth(), last_second)?)?;
        Span::new(first.start(), last.end())
    }

    /// The frontier at `now`: the cover of `[start of now's leaf, epoch end)`, each node derived from whichever
    /// secret in `held` covers it — the DPK, or the device's earlier frontier, so a device moves its frontier
    /// forward without ever holding the DPK again.
    ///
    /// A device that keeps only these secrets can seal every later record and open no earlier one. Before the
    /// epoch starts the frontier is the whole epoch; once it has ended the frontier is empty. Fails with
    /// [`Error::NotDescendant`] if `held` does not cover the new frontier (e.g. a frontier of a later time).
    pub fn frontier<'a, C: Crypto>(
        &'a self,
        crypto: &'a C,
        held: &'a [NodeSecret],
        now: UnixTime,
    ) -> Result<impl Iterator<Item = Result<NodeSecret, Error>> + 'a, Error> {
        let from = if now < self.span().start() {
            self.span().start()
        } else if now >= self.span().end() {
            self.span().end()
        } else {
            self.node_span(self.node_at(self.leaf_depth(), now)?)?
                .start()
        };
        let cover = match Span::new(from, self.span().end()) {
            Ok(rest) => self.cover(rest)?,
            // The epoch is over: an empty walk.
            Err(_) => Cover {
                spec: self,
                at: from,
                end: from,
            },
        };
        Ok(cover.map(move |node| {
            let holder = self.holder(held, node)?.ok_or(Error::NotDescendant)?;
            self.derive(crypto, holder, node)
        }))
    }
}

impl Iterator for Cover<'_> {
    type Item = NodeId;

    fn next(&mut self) -> Option<NodeId> {
        if self.at >= self.end {
            return None;
        }
        for depth in 0..=self.spec.leaf_depth() {
            // `at` lies in the epoch and on a leaf boundary (checked in `cover`, kept by the walk), so every lookup
            // succeeds; a failure would end the walk early rather than yield a wrong node.
            let node = self.spec.node_at(depth, self.at).ok()?;
            let span = self.spec.node_span(node).ok()?;
            if span.start() == self.at && span.end() <= self.end {
                self.at = span.end();
                return Some(node);
            }
        }
        None
    }
}

#[cfg(all(test, feature = "rustcrypto"))]
mod tests {
    use super::*;
    use crate::{DeviceId, Epoch, MasterSecret, NodeId, RustCrypto, Schedule, Secret};
    use std::vec::Vec;

    fn spec() -> TreeSpec {
        let span = Span::new(
            UnixTime::from_date(2026, 1, 1).unwrap(),
            UnixTime::from_date(2027, 1, 1).unwrap(),
        );
        TreeSpec::new(
            DeviceId([1; 8]),
            Epoch(1),
            Schedule::default(),
            span.unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn frontier_before_during_and_after_the_epoch() {
        let (c, spec) = (RustCrypto, spec());
        let dpk = spec
            .root(&c, &MasterSecret::new(Secret::from_bytes([9; 32])))
            .unwrap();
        let dpk = [dpk];
        let nodes = |t: UnixTime| -> Vec<NodeId> {
            spec.frontier(&c, &dpk, t)
                .unwrap()
                .map(|n| n.unwrap().node())
                .collect()
        };
        assert_eq!(
            nodes(UnixTime::from_date(2025, 6, 1).unwrap()),
            [NodeId::ROOT]
        );
        assert_eq!(
            nodes(UnixTime::from_date(2026, 1, 1).unwrap()),
            [NodeId::ROOT]
        );
        // Mid-month, mid-week: the rest of the week's days, the rest of the month's weeks, the later months.
        let mid =
            nodes(UnixTime::new(UnixTime::from_date(2026, 3, 10).unwrap().secs() + 3600).unwrap());
        assert_eq!(mid.len(), 5 + 3 + 9, "{mid:?}");
        assert!(nodes(UnixTime::from_date(2027, 1, 1).unwrap()).is_empty());
        assert!(nodes(UnixTime::from_date(2030, 1, 1).unwrap()).is_empty());
    }

    #[test]
    fn a_device_moves_its_frontier_forward_from_its_own_frontier() {
        let (c, spec) = (RustCrypto, spec());
        let dpk = [spec
            .root(&c, &MasterSecret::new(Secret::from_bytes([9; 32])))
            .unwrap()];
        let at = |m, d, h: u64| {
            UnixTime::new(UnixTime::from_date(2026, m, d).unwrap().secs() + h * 3600).unwrap()
        };
        let mut held: Vec<NodeSecret> = spec
            .frontier(&c, &dpk, at(3, 1, 0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for t in [
            at(3, 1, 13),
            at(3, 9, 2),
            at(3, 15, 0),
            at(3, 31, 23),
            at(4, 2, 0),
            at(11, 30, 5),
        ] {
            let next: Vec<NodeSecret> = spec
                .frontier(&c, &held, t)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let from_dpk: Vec<NodeSecret> = spec
                .frontier(&c, &dpk, t)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(
                next, from_dpk,
                "advancing to {t} from the device's own frontier"
            );
            held = next;
        }
        // Going back is impossible: a later frontier does not cover an earlier one.
        let back = spec
            .frontier(&c, &held, at(3, 1, 0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>();
        assert_eq!(back, Err(Error::NotDescendant));
    }
}
