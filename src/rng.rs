//! vlk's one random number generator: xoshiro256** (Blackman & Vigna, 2018), seeded from a u64
//! through SplitMix64. It is defined bit for bit, so a seed gives the same numbers on every
//! machine and device (random tensors are always drawn on the host, then moved). Uniform floats
//! take the top 53 bits; normals use Box-Muller with both outputs. The whole state is four u64s,
//! which checkpoints save to resume a run exactly.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
    /// The second Box-Muller value, kept for the next call.
    spare_normal: Option<u64>,
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        Rng {
            s: [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)],
            spare_normal: None,
        }
    }

    /// The full state, for checkpoints: four words plus the pending normal (bits, or u64::MAX
    /// with a flag word of 0).
    pub fn state(&self) -> [u64; 6] {
        let (flag, spare) = match self.spare_normal {
            Some(bits) => (1, bits),
            None => (0, 0),
        };
        [self.s[0], self.s[1], self.s[2], self.s[3], flag, spare]
    }

    pub fn from_state(state: [u64; 6]) -> Self {
        Rng {
            s: [state[0], state[1], state[2], state[3]],
            spare_normal: (state[4] == 1).then_some(state[5]),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(bits) = self.spare_normal.take() {
            return f64::from_bits(bits);
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare_normal = Some((r * theta.sin()).to_bits());
        r * theta.cos()
    }

    /// A fresh generator for a sub-task, derived from this one's stream.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
