//! Making inputs: a small deterministic random number generator, and the
//! byte-level mutations applied to a target's seeds.

/// xoshiro256** seeded through splitmix64: fast, and the same on every
/// machine.
#[derive(Debug, Clone)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    /// The generator for input `index` of a run with `seed`.
    pub fn for_input(seed: u64, index: u64) -> Rng {
        Rng::new(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93).rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 32).wrapping_mul(n as u64) >> 32) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A length up to `max`, small ones far more often than large ones.
    pub fn length(&mut self, max: usize) -> usize {
        let bits = self.below(usize::BITS as usize - max.leading_zeros() as usize + 1);
        let cap = (1usize << bits).min(max + 1);
        self.below(cap.max(1))
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values that sit at the edges of integer and length fields.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    7,
    8,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

/// Applies one random mutation to `data`, keeping it at most `max_len`
/// bytes. `dict` holds tokens worth inserting; `other` is another seed to
/// splice from.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, max_len: usize, dict: &[&[u8]], other: &[u8]) {
    let len = data.len();
    match rng.below(12) {
        // Flip a bit.
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        // Set a byte.
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        // An interesting byte (a protobuf key or length, a quote, a NUL).
        2 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(&[
                0, 0x01, 0x0a, 0x12, 0x1a, 0x22, b'"', b'\\', b'=', b',', b'/', 0x7f, 0x80, 0xff,
            ]);
        }
        // Delete a range.
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.length(len - at - 1);
            data.drain(at..at + n);
        }
        // Insert random bytes.
        4 => {
            let at = rng.below(len + 1);
            let mut bytes = vec![0; 1 + rng.length(32)];
            rng.fill(&mut bytes);
            data.splice(at..at, bytes);
        }
        // Duplicate a range.
        5 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.length(len - at - 1);
            let copy = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, copy);
        }
        // Insert or overwrite with a dictionary token.
        6 | 7 if !dict.is_empty() => {
            let token = *rng.pick(dict);
            let at = rng.below(len + 1);
            if rng.one_in(2) {
                data.splice(at..at, token.iter().copied());
            } else {
                let end = (at + token.len()).min(len);
                data.splice(at..end, token.iter().copied());
            }
        }
        // An interesting number, as a varint or little-endian.
        8 => {
            let n = *rng.pick(INTERESTING);
            let mut bytes = Vec::new();
            if rng.one_in(2) {
                barge_shim::fuzzing::varint(&mut bytes, n);
            } else {
                bytes.extend_from_slice(&n.to_le_bytes()[..1 << rng.below(4)]);
            }
            let at = rng.below(len + 1);
            let end = if rng.one_in(2) {
                at
            } else {
                (at + bytes.len()).min(len)
            };
            data.splice(at..end, bytes);
        }
        // Splice in a part of another seed.
        9 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = 1 + rng.length(other.len() - from - 1);
            let at = rng.below(len + 1);
            let end = if rng.one_in(2) { at } else { (at + n).min(len) };
            data.splice(at..end, other[from..from + n].iter().copied());
        }
        // Truncate.
        10 if len > 0 => data.truncate(rng.below(len)),
        // Add or subtract a little from a byte (a length off by one).
        _ if len > 0 => {
            let i = rng.below(len);
            data[i] = data[i].wrapping_add(*rng.pick(&[1, 2, 0xff, 0xfe]));
        }
        _ => data.push(rng.next_u64() as u8),
    }
    data.truncate(max_len);
}
