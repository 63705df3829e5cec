//! The keyed 128-bit hash that rule paths are stored under: SipHash-2-4 in two independent lanes
//! (`lo` keyed with k0,k1 and `hi` with k2,k3), the same function `enforce.bpf.c` computes over the
//! path it resolved in the kernel. The keys are random per pinned map set, so a workload cannot
//! construct a path whose hash equals an allowed one.

use super::abi;

/// The four 64-bit keys of the two lanes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HashKeys(pub [u64; 4]);

impl std::fmt::Debug for HashKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secret: never printed.
        f.write_str("HashKeys(..)")
    }
}

impl HashKeys {
    /// Fresh keys from the kernel's random source.
    pub fn random() -> std::io::Result<HashKeys> {
        let mut bytes = [0u8; 32];
        let mut filled = 0;
        while filled < bytes.len() {
            // SAFETY: the pointer and length describe the unfilled tail of `bytes`.
            let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            filled += n as usize;
        }
        let mut k = [0u64; 4];
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            k[i] = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        Ok(HashKeys(k))
    }

    /// The 128-bit hash of `bytes`.
    pub fn hash(&self, bytes: &[u8]) -> Hash128 {
        Hash128 { lo: siphash24(self.0[0], self.0[1], bytes), hi: siphash24(self.0[2], self.0[3], bytes) }
    }
}

/// A path (or other string) as the kernel maps store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash128 {
    pub lo: u64,
    pub hi: u64,
}

impl From<Hash128> for abi::stance_hash128 {
    fn from(h: Hash128) -> Self {
        abi::stance_hash128 { lo: h.lo, hi: h.hi }
    }
}

impl From<abi::stance_hash128> for Hash128 {
    fn from(h: abi::stance_hash128) -> Self {
        Hash128 { lo: h.lo, hi: h.hi }
    }
}

struct Sip {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
}

impl Sip {
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.round();
        self.v0 ^= m;
    }
}

/// SipHash-2-4 (Aumasson and Bernstein), 64-bit output.
pub fn siphash24(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut s = Sip {
        v0: k0 ^ 0x736f_6d65_7073_6575,
        v1: k1 ^ 0x646f_7261_6e64_6f6d,
        v2: k0 ^ 0x6c79_6765_6e65_7261,
        v3: k1 ^ 0x7465_6462_7974_6573,
    };
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        s.compress(u64::from_le_bytes(w.try_into().expect("8-byte chunk")));
    }
    let mut last = (bytes.len() as u64 & 0xff) << 56;
    for (i, b) in words.remainder().iter().enumerate() {
        last |= u64::from(*b) << (8 * i);
    }
    s.compress(last);
    s.v2 ^= 0xff;
    for _ in 0..4 {
        s.round();
    }
    s.v0 ^ s.v1 ^ s.v2 ^ s.v3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_vectors() {
        // From the SipHash paper (appendix A) and its reference implementation's vectors.h:
        // key 00..0f, messages 00, 00 01, ..., 64-bit outputs little-endian.
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(siphash24(k0, k1, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(k0, k1, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(k0, k1, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(k0, k1, &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    #[test]
    #[allow(deprecated)]
    fn agrees_with_std_siphasher_at_every_length() {
        use std::hash::Hasher;
        let keys = HashKeys([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 7, 11]);
        let path: Vec<u8> = b"/usr/lib/x86_64-linux-gnu/libc.so.6/and/some/more/bytes".to_vec();
        for n in 0..path.len() {
            let mut a = std::hash::SipHasher::new_with_keys(keys.0[0], keys.0[1]);
            a.write(&path[..n]);
            let mut b = std::hash::SipHasher::new_with_keys(keys.0[2], keys.0[3]);
            b.write(&path[..n]);
            assert_eq!(keys.hash(&path[..n]), Hash128 { lo: a.finish(), hi: b.finish() }, "length {n}");
        }
    }

    #[test]
    fn lanes_are_independent_and_keyed() {
        let a = HashKeys([1, 2, 3, 4]).hash(b"/etc/shadow");
        let b = HashKeys([1, 2, 3, 5]).hash(b"/etc/shadow");
        assert_eq!(a.lo, b.lo);
        assert_ne!(a.hi, b.hi);
        assert_ne!(a, HashKeys([1, 2, 3, 4]).hash(b"/etc/shadoW"));
        assert_ne!(HashKeys::random().unwrap(), HashKeys::random().unwrap());
    }
}
