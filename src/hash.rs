//! A tiny deterministic mixer, shared by the planner (revision suffixes derived from a change),
//! the clients (request ids) and the simulator (ids and generated names). Not cryptographic.

/// SplitMix64 (Steele, Lea and Flood, 2014): one round of a fast, well-distributed 64-bit mix.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn splitmix_is_deterministic_and_mixes() {
        assert_eq!(super::splitmix(1), super::splitmix(1));
        assert_ne!(super::splitmix(1), super::splitmix(2));
        assert_ne!(super::splitmix(0), 0);
    }
}
