//! Which tenants a process exports when a fleet is split over K processes (a
//! Kubernetes Indexed Job's pods): shard `i` of `K` takes the tenants whose highest
//! score of all shards is its own (rendezvous hashing). Adding a tenant moves only that
//! tenant; going from K to K+1 shards moves about 1/(K+1) of them, all to the new
//! shard; no list of assignments is kept anywhere.
//!
//! The score is a fixed function of the tenant's name (case-folded, as Entra treats
//! it) and the shard's number — FNV-1a, then a 64-bit finaliser —, so every version of
//! msgx-once on every host assigns the same tenants to the same shards.

/// One shard of K.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// The most shards: more pods than this would each export next to nothing.
pub const MAX_SHARDS: u32 = 1000;

impl Shard {
    /// Whether `tenant` falls to this shard.
    pub fn owns(&self, tenant: &str) -> bool {
        shard_of(tenant, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard of `count` that `tenant` falls to.
pub fn shard_of(tenant: &str, count: u32) -> u32 {
    let tenant = tenant.to_ascii_lowercase();
    (0..count.max(1))
        .max_by_key(|&shard| (score(&tenant, shard), shard))
        .unwrap_or(0)
}

fn score(tenant: &str, shard: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in tenant.bytes().chain([0]).chain(shard.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    // splitmix64's finaliser: FNV's low bits alone mix poorly.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tenant-{i}.example")).collect()
    }

    #[test]
    fn every_tenant_falls_to_exactly_one_shard_and_shards_are_even() {
        let all = tenants(3000);
        for count in [1, 2, 4, 7] {
            let mut sizes = vec![0usize; count as usize];
            for tenant in &all {
                let owners: Vec<u32> = (0..count)
                    .filter(|&index| Shard { index, count }.owns(tenant))
                    .collect();
                assert_eq!(owners.len(), 1, "{tenant} in {count} shards: {owners:?}");
                sizes[owners[0] as usize] += 1;
            }
            let even = all.len() / count as usize;
            assert!(
                sizes.iter().all(|&s| s.abs_diff(even) < even / 5 + 10),
                "{count} shards: {sizes:?}"
            );
        }
    }

    #[test]
    fn a_new_shard_takes_about_its_share_and_nothing_else_moves() {
        let all = tenants(3000);
        for count in [1, 3, 8] {
            let moved: Vec<&String> = all
                .iter()
                .filter(|t| shard_of(t, count) != shard_of(t, count + 1))
                .collect();
            assert!(
                moved.iter().all(|t| shard_of(t, count + 1) == count),
                "a tenant moved between old shards"
            );
            let share = all.len() / (count as usize + 1);
            assert!(
                moved.len().abs_diff(share) < share / 5 + 10,
                "{count}→{}: {} moved, about {share} expected",
                count + 1,
                moved.len()
            );
        }
    }

    #[test]
    fn assignments_are_fixed_and_ignore_case() {
        // Pinned: a change of the function would move tenants between pods of a
        // running fleet.
        let pinned: Vec<u32> = ["contoso.onmicrosoft.com", "fabrikam.example", "t.example"]
            .iter()
            .map(|t| shard_of(t, 4))
            .collect();
        assert_eq!(pinned, PINNED);
        assert_eq!(shard_of("Contoso.OnMicrosoft.com", 4), PINNED[0]);
        assert_eq!(shard_of("anything.example", 1), 0);
    }

    const PINNED: [u32; 3] = [2, 1, 0];
}
