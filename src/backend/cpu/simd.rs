//! Which vector unit the CPU backend's kernels use: the widest this CPU has, or less under
//! `VLK_CPU_SIMD`, so that the AVX2 and baseline paths can be timed and tested on a machine with
//! AVX-512. Every run-time choice of a vector path (the GEMM micro-kernels, `vectorised` and
//! `multiversion!` builds, the intrinsic row kernels, streamed stores) asks `level()`.

use crate::{Error, Result};
use std::sync::OnceLock;

/// Vector units, ordered: each level's paths need the features of those below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// What every x86_64 (and any other) CPU has: SSE2 on x86_64.
    Baseline,
    /// AVX2 and FMA.
    Avx2Fma,
    /// AVX-512F (with AVX2 and FMA).
    Avx512,
}

/// The level the kernels use: `detected()` capped by `VLK_CPU_SIMD` (checked once per process;
/// an invalid cap, which the `vlk` binary refuses at start, caps nothing here).
#[inline]
pub fn level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let detected = detected();
        env_cap().ok().flatten().map_or(detected, |cap| cap.min(detected))
    })
}

/// The widest level this CPU supports.
pub fn detected() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::is_x86_feature_detected!("fma");
        if fma && std::is_x86_feature_detected!("avx2") {
            return if std::is_x86_feature_detected!("avx512f") {
                SimdLevel::Avx512
            } else {
                SimdLevel::Avx2Fma
            };
        }
    }
    SimdLevel::Baseline
}

/// `VLK_CPU_SIMD`: `avx512` (no cap), `avx2` (AVX2+FMA at most; no AVX-512 path, AMX or
/// AVX512-BF16 included) or `baseline`; unset or empty for no cap. Any other value is an error
/// naming the variable.
pub fn env_cap() -> Result<Option<SimdLevel>> {
    match std::env::var("VLK_CPU_SIMD").unwrap_or_default().as_str() {
        "" => Ok(None),
        "avx512" => Ok(Some(SimdLevel::Avx512)),
        "avx2" => Ok(Some(SimdLevel::Avx2Fma)),
        "baseline" => Ok(Some(SimdLevel::Baseline)),
        other => Err(Error::msg(format!(
            "VLK_CPU_SIMD={other:?}: expected avx512, avx2 or baseline (or unset)"
        ))),
    }
}
