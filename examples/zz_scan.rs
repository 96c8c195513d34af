#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;
use esl_replay::storage::{LogOptions, Reader, Seq};
use std::time::Instant;

fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let rounds: usize = std::env::args().nth(2).map_or(5, |s| s.parse().unwrap());
    let reader = Reader::open(&dir, &LogOptions::default()).unwrap();
    let mut best = f64::MAX;
    let mut all = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut cursor = reader.cursor(Seq(1)).unwrap();
        let (mut n, mut sum) = (0u64, 0u64);
        while let Some(r) = cursor.next().unwrap() {
            n += 1;
            sum = sum.wrapping_add(r.payload.len() as u64 + r.payload[r.payload.len() / 2] as u64);
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        best = best.min(ns);
        all.push(format!("{ns:.0}"));
        std::hint::black_box(sum);
    }
    println!("{dir}: ns/record best {best:.0} all {}", all.join(" "));
}
