//! Where a rank sits in a parallel job, and which ranks each of its collectives spans.
//!
//! A job of `pp · dp` ranks (no tensor parallelism: DeepSeek-V3 trains without it) is a mesh of
//! `pp` pipeline stages, each of `dp` data-parallel ranks: world rank `stage · dp + dp_rank`.
//! Routed experts are sharded over `ep` ranks taken from the data-parallel ones, as DeepSeek-V3
//! does: data-parallel ranks `g·ep .. (g+1)·ep` of a stage exchange tokens (one expert-parallel
//! group each), and rank `dp_rank` holds the routed experts of shard `dp_rank mod ep`, which the
//! `dp / ep` ranks of that shard hold alike.
//!
//! The groups ([`CommGroup`]), each listed in a fixed order (its ranks' indices within it):
//! - `World`: every rank (what the host sums: losses, the decision to stop).
//! - `Data`: the `dp` ranks of this stage (non-expert gradients, routing statistics, ZeRO-1 of
//!   non-expert parameters).
//! - `Expert`: the `ep` ranks exchanging routed tokens (dispatch and combine).
//! - `ExpertData`: the `dp / ep` ranks holding this rank's experts (their gradients, their ZeRO-1).
//! - `Pipeline`: the `pp` stages of this data-parallel rank (activations and their gradients
//!   between neighbours, the gradient norm's sum over stages).
//! - `Ends`: the first and the last stage of this data-parallel rank, which both hold the token
//!   embedding when the last stage's MTP modules (or a tied head) read it: their gradients are summed.

use serde::{Deserialize, Serialize};

/// The shape of a parallel job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mesh {
    /// Data-parallel ranks per stage.
    pub dp: usize,
    /// Expert-parallel ranks (a divisor of `dp`).
    pub ep: usize,
    /// Pipeline stages.
    pub pp: usize,
}

impl Mesh {
    /// The job of one rank.
    pub const SINGLE: Mesh = Mesh { dp: 1, ep: 1, pp: 1 };

    /// Ranks in the job.
    pub fn world(&self) -> usize {
        self.dp * self.pp
    }

    /// Why this mesh cannot be a job's: every degree at least 1, and `ep` dividing `dp`.
    pub fn check(&self) -> Result<(), String> {
        if self.dp == 0 || self.ep == 0 || self.pp == 0 {
            return Err(format!("dp = {}, ep = {}, pp = {}: each must be at least 1", self.dp, self.ep, self.pp));
        }
        if !self.dp.is_multiple_of(self.ep) {
            return Err(format!(
                "ep = {} does not divide dp = {}: expert-parallel ranks are taken from the data-parallel ones",
                self.ep, self.dp
            ));
        }
        Ok(())
    }

    /// Every rank's place.
    pub fn places(&self) -> impl Iterator<Item = Place> + '_ {
        (0..self.world()).map(|rank| Place { mesh: *self, rank })
    }
}

impl std::fmt::Display for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dp={},ep={},pp={}", self.dp, self.ep, self.pp)
    }
}

/// A group of ranks that collectives span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommGroup {
    World,
    Data,
    Expert,
    ExpertData,
    Pipeline,
    Ends,
}

impl CommGroup {
    pub const ALL: [CommGroup; 6] = [
        CommGroup::World,
        CommGroup::Data,
        CommGroup::Expert,
        CommGroup::ExpertData,
        CommGroup::Pipeline,
        CommGroup::Ends,
    ];

    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            CommGroup::World => "world",
            CommGroup::Data => "data-parallel",
            CommGroup::Expert => "expert-parallel",
            CommGroup::ExpertData => "expert-data-parallel",
            CommGroup::Pipeline => "pipeline",
            CommGroup::Ends => "embedding (first and last stage)",
        }
    }
}

/// One rank of a mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Place {
    pub mesh: Mesh,
    /// World rank, `0..mesh.world()`.
    pub rank: usize,
}

impl Place {
    /// The only rank of a job of one.
    pub const SINGLE: Place = Place { mesh: Mesh::SINGLE, rank: 0 };

    pub fn stage(&self) -> usize {
        self.rank / self.mesh.dp
    }
    pub fn dp_rank(&self) -> usize {
        self.rank % self.mesh.dp
    }
    /// Which shard of the routed experts this rank holds (its index in its expert-parallel group).
    pub fn ep_rank(&self) -> usize {
        self.dp_rank() % self.mesh.ep
    }
    pub fn first_stage(&self) -> bool {
        self.stage() == 0
    }
    pub fn last_stage(&self) -> bool {
        self.stage() + 1 == self.mesh.pp
    }

    /// The world ranks of `group` that this rank belongs to, in the group's order.
    pub fn members(&self, group: CommGroup) -> Vec<usize> {
        let Mesh { dp, ep, pp } = self.mesh;
        let (stage, d) = (self.stage(), self.dp_rank());
        let at = |s: usize, d: usize| s * dp + d;
        match group {
            CommGroup::World => (0..self.mesh.world()).collect(),
            CommGroup::Data => (0..dp).map(|d| at(stage, d)).collect(),
            CommGroup::Expert => {
                let g = d / ep;
                (0..ep).map(|e| at(stage, g * ep + e)).collect()
            }
            CommGroup::ExpertData => (0..dp / ep).map(|i| at(stage, i * ep + d % ep)).collect(),
            CommGroup::Pipeline => (0..pp).map(|s| at(s, d)).collect(),
            CommGroup::Ends if pp == 1 => vec![self.rank],
            CommGroup::Ends => vec![at(0, d), at(pp - 1, d)],
        }
    }

    /// This rank's index within `group` (or `None` when it is not a member: a middle stage's
    /// `Ends`).
    pub fn index_in(&self, group: CommGroup) -> Option<usize> {
        self.members(group).iter().position(|&r| r == self.rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rank's groups: each group is the same list for each of its members, the groups of
    /// a kind partition the ranks (but `Ends`, which only the end stages join), and the sizes
    /// are the mesh's degrees.
    #[test]
    fn groups_partition_the_mesh_and_agree_between_their_members() {
        for mesh in [Mesh { dp: 4, ep: 2, pp: 3 }, Mesh { dp: 8, ep: 8, pp: 1 }, Mesh { dp: 2, ep: 1, pp: 2 }] {
            mesh.check().unwrap();
            for g in CommGroup::ALL {
                let mut seen = vec![0usize; mesh.world()];
                for p in mesh.places() {
                    let m = p.members(g);
                    if p.index_in(g).is_none() {
                        continue;
                    }
                    for &r in &m {
                        assert_eq!(Place { mesh, rank: r }.members(g), m, "{mesh} {g:?}: rank {r} sees another group");
                    }
                    seen[p.rank] += 1;
                    let want = match g {
                        CommGroup::World => mesh.world(),
                        CommGroup::Data => mesh.dp,
                        CommGroup::Expert => mesh.ep,
                        CommGroup::ExpertData => mesh.dp / mesh.ep,
                        CommGroup::Pipeline => mesh.pp,
                        CommGroup::Ends => mesh.pp.min(2),
                    };
                    assert_eq!(m.len(), want, "{mesh} {g:?}");
                }
                assert!(seen.iter().all(|&n| n <= 1), "{mesh} {g:?}");
            }
            // Expert shards: each expert-parallel group holds every shard once, and each shard's
            // holders are its expert-data-parallel group.
            for p in mesh.places() {
                let shards: Vec<usize> =
                    p.members(CommGroup::Expert).iter().map(|&r| Place { mesh, rank: r }.ep_rank()).collect();
                assert_eq!(shards, (0..mesh.ep).collect::<Vec<_>>());
                for &r in &p.members(CommGroup::ExpertData) {
                    assert_eq!(Place { mesh, rank: r }.ep_rank(), p.ep_rank());
                }
            }
        }
    }

    #[test]
    fn a_mesh_whose_experts_do_not_divide_is_refused() {
        assert!(Mesh { dp: 4, ep: 3, pp: 1 }.check().unwrap_err().contains("does not divide"));
        assert!(Mesh { dp: 0, ep: 1, pp: 1 }.check().is_err());
    }
}
