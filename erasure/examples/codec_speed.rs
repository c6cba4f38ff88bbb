//! Single-thread throughput of cellar-erasure beside raw reed-solomon-erasure and a plain
//! memory copy of the same bytes, for `rs-6-3` and `rs-10-4` with 1 MiB shards (stripe
//! height 1 MiB). Every figure is GB/s (10^9 bytes) of data bytes processed, k MiB per
//! stripe, measured in the same run.
//!
//! Time is the thread's on-CPU time (from /proc/thread-self/schedstat, wall time where that
//! file is missing), and each figure is the best of a few interleaved rounds, so that
//! other work on the machine disturbs the comparison as little as possible.
//!
//! Run: `cargo run --release -p cellar-erasure --example codec_speed`

use std::hint::black_box;
use std::time::{Duration, Instant};

use cellar_erasure::{Codec, ErasureError, Layout, Scheme, StripeEncoder};
use reed_solomon_erasure::galois_8::ReedSolomon;

const SHARD_BYTES: usize = 1 << 20;
/// Wall time each round of each figure runs for.
const ROUND_DURATION: Duration = Duration::from_millis(400);
/// Rounds per figure; the best is reported.
const ROUNDS: usize = 5;
/// Stripes in the in-memory volume the streaming encoder copies from: k x 16 MiB, more
/// than the last-level cache, as a sealed volume read from disk would be.
const VOLUME_STRIPES: u64 = 16;

/// Nanoseconds this thread has spent on a CPU, or wall nanoseconds since `origin`.
fn cpu_ns(origin: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()))
        .unwrap_or_else(|| origin.elapsed().as_nanos() as u64)
}

/// Runs `step` (which processes `bytes_per_step` data bytes) for one round and returns
/// GB/s; the caller keeps the best round.
fn gb_per_s(bytes_per_step: usize, mut step: impl FnMut()) -> f64 {
    let origin = Instant::now();
    step(); // warm caches and page in buffers
    let cpu_start = cpu_ns(origin);
    let wall_start = Instant::now();
    let mut steps = 0u64;
    while wall_start.elapsed() < ROUND_DURATION {
        step();
        steps += 1;
    }
    let ns = cpu_ns(origin).saturating_sub(cpu_start).max(1);
    steps as f64 * bytes_per_step as f64 / ns as f64
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The figures of one scheme, in column order.
const COLUMNS: [&str; 7] = ["raw-enc", "enc", "enc-stream", "enc+copy", "rebuild-d0", "raw-rec", "memcpy"];

fn measure(scheme: Scheme) -> Result<[f64; 7], ErasureError> {
    let (k, m) = (scheme.data_count(), scheme.parity_count());
    let data_bytes = k * SHARD_BYTES;
    let data: Vec<Vec<u8>> = (0..k).map(|i| noise(SHARD_BYTES, i as u64 + 1)).collect();
    let mut parity = vec![vec![0u8; SHARD_BYTES]; m];
    let rs = ReedSolomon::new(k, m).expect("valid scheme");
    let codec = Codec::new(scheme)?;
    codec.encode_stripe(&data, &mut parity)?;
    let parity_ref = parity.clone();

    let volume = noise(k * SHARD_BYTES * VOLUME_STRIPES as usize, 99);
    let layout = Layout::new(scheme, volume.len() as u64, 4096)?;
    let mut encoder = StripeEncoder::new(layout, SHARD_BYTES)?;
    let mut next_stripe = 0u64;

    // Rebuild data fragment 0 from data 1..k and parity 0 (k survivors).
    let mut survivors: Vec<(usize, &[u8])> = (1..k).map(|i| (i, data[i].as_slice())).collect();
    survivors.push((k, parity_ref[0].as_slice()));
    let mut rebuilt = vec![0u8; SHARD_BYTES];
    let mut shards: Vec<Vec<u8>> = data.iter().chain(parity_ref.iter()).cloned().collect();
    let mut copies = vec![vec![0u8; SHARD_BYTES]; k];

    let mut best = [0f64; 7];
    for _ in 0..ROUNDS {
        let round = [
            gb_per_s(data_bytes, || {
                rs.encode_sep(black_box(&data), &mut parity).expect("raw encode");
                black_box(&parity);
            }),
            gb_per_s(data_bytes, || {
                codec.encode_stripe(black_box(&data), &mut parity).expect("encode");
                black_box(&parity);
            }),
            // The streaming encoder with a read that leaves its buffers as they are: its
            // own cost, as if the volume server's pread filled them.
            gb_per_s(data_bytes, || {
                let stripe = encoder.encode(0, |_, buf: &mut [u8]| {
                    black_box(buf);
                    Ok::<(), ErasureError>(())
                });
                black_box(stripe.expect("encode stripe").fragment(k));
            }),
            // The same, copying each data shard from an out-of-cache in-memory volume.
            gb_per_s(data_bytes, || {
                let stripe = encoder.encode(next_stripe % VOLUME_STRIPES, |offset, buf: &mut [u8]| {
                    let at = offset as usize;
                    buf.copy_from_slice(&volume[at..at + buf.len()]);
                    Ok::<(), ErasureError>(())
                });
                black_box(stripe.expect("encode stripe").fragment(k));
                next_stripe += 1;
            }),
            gb_per_s(data_bytes, || {
                codec.rebuild_stripe(0, black_box(&survivors), &mut rebuilt).expect("rebuild");
                black_box(&rebuilt);
            }),
            // reed-solomon-erasure's reconstruction of the same shard, in place.
            gb_per_s(data_bytes, || {
                let mut slices: Vec<(&mut [u8], bool)> =
                    shards.iter_mut().enumerate().map(|(i, s)| (s.as_mut_slice(), i != 0)).collect();
                rs.reconstruct_data(&mut slices).expect("raw reconstruct");
                black_box(&shards);
            }),
            gb_per_s(data_bytes, || {
                for (dst, src) in copies.iter_mut().zip(&data) {
                    dst.copy_from_slice(black_box(src));
                }
                black_box(&copies);
            }),
        ];
        for (b, r) in best.iter_mut().zip(round) {
            *b = b.max(r);
        }
    }
    assert_eq!(parity, parity_ref, "encode must match reed-solomon-erasure");
    assert_eq!(rebuilt, data[0], "rebuild must reproduce data fragment 0");
    assert_eq!(shards[0], data[0], "reconstruct must reproduce data fragment 0");
    Ok(best)
}

fn main() -> Result<(), ErasureError> {
    print!("{:<8}", "scheme");
    for column in COLUMNS {
        print!(" {column:>11}");
    }
    println!();
    for scheme in [Scheme::RS_6_3, Scheme::RS_10_4] {
        let figures = measure(scheme)?;
        print!("{:<8}", scheme.to_string());
        for figure in figures {
            print!(" {figure:>11.2}");
        }
        println!();
    }
    println!(
        "GB/s of data bytes (k x 1 MiB per stripe), one thread, best of {ROUNDS} rounds of on-CPU time.\n\
         raw-enc: reed-solomon-erasure ReedSolomon::encode_sep; enc: Codec::encode_stripe;\n\
         enc-stream: StripeEncoder::encode with buffers left as filled (its own cost);\n\
         enc+copy: StripeEncoder::encode copying each shard from a {VOLUME_STRIPES}-stripe in-memory volume;\n\
         rebuild-d0: Codec::rebuild_stripe of data fragment 0 from k survivors;\n\
         raw-rec: ReedSolomon::reconstruct_data of the same; memcpy: copy of the k data shards."
    );
    Ok(())
}
