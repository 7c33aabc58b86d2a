//! Per-check timing: median and p99 of single calls, and throughput on one core.
//!
//! Each call is timed alone with `Instant` (a vDSO clock read on Linux); the median cost of an
//! empty timed call is measured first and subtracted, so sub-microsecond checks are not inflated
//! by the clock. Throughput is measured separately, over whole passes without per-call timing.

use std::hint::black_box;
use std::time::Instant;

/// Figures for one contender.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub median_ns: f64,
    pub p99_ns: f64,
    pub per_sec: f64,
}

fn clock_overhead_ns() -> f64 {
    let mut v: Vec<u64> = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2] as f64
}

/// Times `f(i)` for i in 0..n, `rounds` times over (after one warm-up pass).
pub fn measure(n: usize, rounds: usize, mut f: impl FnMut(usize) -> bool) -> Stats {
    let overhead = clock_overhead_ns();
    for i in 0..n {
        black_box(f(i));
    }
    let mut samples: Vec<u64> = Vec::with_capacity(n * rounds);
    for _ in 0..rounds {
        for i in 0..n {
            let t = Instant::now();
            black_box(f(black_box(i)));
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    samples.sort_unstable();
    let at = |q: f64| {
        let v = samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64;
        (v - overhead).max(1.0)
    };
    let t = Instant::now();
    for _ in 0..rounds {
        for i in 0..n {
            black_box(f(black_box(i)));
        }
    }
    let per_sec = (n * rounds) as f64 / t.elapsed().as_secs_f64();
    Stats {
        median_ns: at(0.5),
        p99_ns: at(0.99),
        per_sec,
    }
}
