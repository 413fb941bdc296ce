//! Scale on paper, with the real code: crowds of 10 to 10,000 members simulated with
//! `crowds_proto::path::PathTable::route` (one table per member, the initiator routing
//! with `Predecessor::Local`), and a signed crowd document of 10,000 members.

use anyhow::{anyhow, Result};
use crowds_proto::document::{CrowdDocument, Member};
use crowds_proto::identity::{PublicKey, SecretKey};
use crowds_proto::path::{Hop, PathId, PathTable, Predecessor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

/// Load of one simulated crowd size.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    /// Members.
    pub members: usize,
    /// Independent crowds simulated (fresh tables each).
    pub trials: usize,
    /// Requests initiated in all (each member initiates one per trial).
    pub initiated: u64,
    /// Mean requests a jondo handles per request it initiates (its own included); with
    /// every member initiating alike this is also the mean number of jondos on a path.
    pub handled_per_initiated: f64,
    /// The busiest jondo's load in the same unit, averaged over trials.
    pub busiest_per_initiated: f64,
    /// Mean time of one `route` call, nanoseconds.
    pub route_ns: f64,
}

/// Walks one path from `initiator` through `tables`, counting each jondo that handles
/// the request (a jondo choosing itself handles it again, as the daemon does).
fn walk(
    rng: &mut ChaCha8Rng,
    tables: &mut [PathTable],
    members: &[u64],
    initiator: usize,
    pf: f64,
    handled: &mut [u32],
) -> Result<u64> {
    let (mut at, mut pred, mut path) = (initiator, Predecessor::Local, PathId::LOCAL);
    let mut jondos = 0u64;
    // A path ends with probability 1 - pf per hop; 100,000 hops never happen.
    for _ in 0..100_000 {
        handled[at] += 1;
        jondos += 1;
        match tables[at]
            .route(rng, pred, path, pf, members)
            .map_err(|e| anyhow!("route: {e}"))?
        {
            Hop::Submit => return Ok(jondos),
            Hop::Forward {
                successor,
                path: next,
            } => {
                pred = Predecessor::Member(at as u64);
                at = successor as usize;
                path = next;
            }
        }
    }
    Err(anyhow!("a path did not end"))
}

/// Simulates crowds of each size in `sizes` at `pf`, with about `walks` paths per size.
pub fn simulate(sizes: &[usize], pf: f64, walks: usize) -> Result<Vec<ScaleRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(0xC0DE);
    let mut rows = Vec::new();
    for &n in sizes {
        let members: Vec<u64> = (0..n as u64).collect();
        let trials = (walks / n).max(1);
        let (mut hops, mut initiated, mut busiest_sum) = (0u64, 0u64, 0f64);
        let mut route_time = 0f64;
        for _ in 0..trials {
            let mut tables: Vec<PathTable> = (0..n).map(|_| PathTable::new()).collect();
            let mut handled = vec![0u32; n];
            // Every member initiates one request, in random order.
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                order.swap(i, rng.gen_range(0..=i));
            }
            let t0 = Instant::now();
            for &initiator in &order {
                hops += walk(&mut rng, &mut tables, &members, initiator, pf, &mut handled)?;
                initiated += 1;
            }
            route_time += t0.elapsed().as_secs_f64();
            busiest_sum += f64::from(handled.iter().copied().max().unwrap_or(0));
        }
        rows.push(ScaleRow {
            members: n,
            trials,
            initiated,
            handled_per_initiated: hops as f64 / initiated as f64,
            busiest_per_initiated: busiest_sum / trials as f64,
            route_ns: route_time * 1e9 / hops as f64,
        });
    }
    Ok(rows)
}

/// Size and verification time of a signed crowd document.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentFigures {
    /// Members listed.
    pub members: usize,
    /// Encoded, signed size in bytes.
    pub bytes: usize,
    /// Time to sign (encode + Ed25519), milliseconds.
    pub sign_ms: f64,
    /// Verifications timed.
    pub runs: usize,
    /// Median time of `CrowdDocument::verify` (decode, signature, checks), ms.
    pub verify_p50_ms: f64,
    /// Fastest verification, ms.
    pub verify_min_ms: f64,
    /// Slowest verification, ms.
    pub verify_max_ms: f64,
}

/// Builds, signs and verifies (`runs` times) a document listing `members` members.
pub fn document(members: usize, runs: usize) -> Result<DocumentFigures> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let key = SecretKey::generate().map_err(|e| anyhow!("key: {e:?}"))?;
    let list: Vec<Member> = (0..members)
        .map(|i| Member {
            id: i as u64 + 1,
            addr: SocketAddr::from((
                Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1),
                7070,
            )),
            // Random 32-byte keys: the document checks keys for uniqueness only.
            key: PublicKey(rng.gen()),
            flags: 0,
        })
        .collect();
    let now = 1_750_000_000_000u64;
    let doc = CrowdDocument {
        crowd: "default".into(),
        epoch: 42,
        forward_probability: 0.75,
        issued_at: now,
        expires_at: now + 600_000,
        members: list,
    };
    let t0 = Instant::now();
    let bytes = doc.sign(&key).map_err(|e| anyhow!("sign: {e}"))?;
    let sign_ms = t0.elapsed().as_secs_f64() * 1e3;
    let public = key.public();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let back = CrowdDocument::verify(&bytes, &public).map_err(|e| anyhow!("verify: {e}"))?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(back.members.len() == members, "document lost members");
    }
    times.sort_by(f64::total_cmp);
    Ok(DocumentFigures {
        members,
        bytes: bytes.len(),
        sign_ms,
        runs: times.len(),
        verify_p50_ms: crate::client::percentile(&times, 0.5),
        verify_min_ms: times.first().copied().unwrap_or(f64::NAN),
        verify_max_ms: times.last().copied().unwrap_or(f64::NAN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_per_jondo_is_the_mean_path_length() {
        let rows = simulate(&[10, 200], 0.75, 20_000).expect("simulate");
        for r in rows {
            // 1 + 1/(1 - pf) = 5 jondos per path, so 5 requests per jondo per request.
            assert!((r.handled_per_initiated - 5.0).abs() < 0.15, "{r:?}");
            assert!(r.busiest_per_initiated >= r.handled_per_initiated);
        }
    }

    #[test]
    fn a_signed_document_verifies() {
        let d = document(300, 3).expect("document");
        assert_eq!((d.members, d.runs), (300, 3));
        assert!(d.bytes > 300 * 32);
    }
}
