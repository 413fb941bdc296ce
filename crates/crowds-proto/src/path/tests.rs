use super::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn initiator_always_forwards_even_at_pf_zero() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..100 {
        let hop = choose_hop(&mut rng, true, 0.0, &[1, 2, 3]).expect("hop");
        assert!(hop.is_some());
    }
}

#[test]
fn relay_submits_at_pf_zero_and_forwards_almost_always_near_one() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    assert_eq!(choose_hop(&mut rng, false, 0.0, &[1]), Ok(None));
    let forwards = (0..1000)
        .filter(|_| {
            choose_hop(&mut rng, false, 0.999, &[1])
                .expect("hop")
                .is_some()
        })
        .count();
    assert!(forwards > 980, "{forwards}");
}

#[test]
fn a_nan_pf_submits_instead_of_panicking() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    assert_eq!(choose_hop(&mut rng, false, f64::NAN, &[1, 2]), Ok(None));
    assert!(choose_hop(&mut rng, true, f64::NAN, &[1, 2])
        .expect("hop")
        .is_some());
}

#[test]
fn empty_crowd_is_an_error_only_when_forwarding() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    assert_eq!(
        choose_hop(&mut rng, true, 0.75, &[]),
        Err(RouteError::EmptyCrowd)
    );
    assert_eq!(choose_hop(&mut rng, false, 0.0, &[]), Ok(None));
}

#[test]
fn successors_are_uniform_including_self() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let members = [10, 20, 30, 40];
    let mut counts = [0usize; 4];
    let n = 40_000;
    for _ in 0..n {
        let m = choose_hop(&mut rng, true, 0.75, &members)
            .expect("hop")
            .expect("forward");
        counts[members.iter().position(|x| *x == m).expect("member")] += 1;
    }
    for c in counts {
        // 10,000 expected; 5 standard deviations is about 430.
        assert!((9_500..10_500).contains(&c), "{counts:?}");
    }
}

#[test]
fn paths_are_static_per_predecessor_and_id() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut table = PathTable::new();
    let members = [1, 2, 3, 4, 5];
    let first = table
        .route(&mut rng, Predecessor::Member(2), PathId(77), 0.75, &members)
        .expect("route");
    for _ in 0..50 {
        let again = table
            .route(&mut rng, Predecessor::Member(2), PathId(77), 0.75, &members)
            .expect("route");
        assert_eq!(again, first);
    }
    assert_eq!(table.len(), 1);
    assert_eq!(table.formed(), 1, "a static path is decided once");
}

#[test]
fn outgoing_ids_are_fresh_per_link() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut table = PathTable::new();
    let mut seen = std::collections::HashSet::new();
    for i in 0..1000u64 {
        if let Hop::Forward { successor, path } = table
            .route(
                &mut rng,
                Predecessor::Member(i % 7),
                PathId(i),
                1.0,
                &[1, 2],
            )
            .expect("route")
        {
            assert_ne!(path, PathId(i), "incoming id reused");
            assert!(seen.insert((successor, path)), "duplicate outgoing id");
        }
    }
}

#[test]
fn vanished_successor_reforms_that_path_only() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut table = PathTable::new();
    let hop = table
        .route(&mut rng, Predecessor::Local, PathId::LOCAL, 0.75, &[9])
        .expect("route");
    assert!(matches!(hop, Hop::Forward { successor: 9, .. }));
    let hop = table
        .route(&mut rng, Predecessor::Local, PathId::LOCAL, 0.75, &[4])
        .expect("route");
    assert!(matches!(hop, Hop::Forward { successor: 4, .. }));
    table.forget_all();
    assert!(table.is_empty());
}

#[test]
fn forget_from_drops_a_predecessors_paths() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut table = PathTable::new();
    for i in 0..10 {
        table
            .route(
                &mut rng,
                Predecessor::Member(i % 2),
                PathId(i + 1),
                0.5,
                &[1],
            )
            .expect("route");
    }
    table.forget_from(0);
    assert_eq!(table.len(), 5);
}

#[test]
fn path_id_hex() {
    let id = PathId(0x0123_4567_89ab_cdef);
    assert_eq!(PathId::from_hex(&id.to_hex()), Some(id));
    assert_eq!(PathId::from_hex("123"), None);
    assert_eq!(PathId::from_hex("+123456789abcdef"), None);
    assert_eq!(PathId::from_hex("0123456789abcdeg"), None);
}

/// Walks a whole path through a crowd of `n` jondos, each with its own table, using the
/// real routing code. Returns the number of jondos on the path, initiator included.
fn path_length(rng: &mut ChaCha8Rng, n: u64, pf: f64) -> u64 {
    let members: Vec<u64> = (0..n).collect();
    let mut tables: Vec<PathTable> = (0..n).map(|_| PathTable::new()).collect();
    let (mut at, mut pred, mut path) = (0u64, Predecessor::Local, PathId::LOCAL);
    let mut jondos = 1;
    loop {
        match tables[at as usize]
            .route(rng, pred, path, pf, &members)
            .expect("route")
        {
            Hop::Submit => return jondos,
            Hop::Forward {
                successor,
                path: next,
            } => {
                pred = Predecessor::Member(at);
                at = successor;
                path = next;
                jondos += 1;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Path lengths follow the geometric law: mean 1 + 1/(1 - pf) jondos.
    #[test]
    fn path_lengths_are_geometric(seed in any::<u64>(), pf in 0.5f64..0.9, n in 3u64..40) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let samples = 4000;
        let lengths: Vec<u64> = (0..samples).map(|_| path_length(&mut rng, n, pf)).collect();
        let mean = lengths.iter().sum::<u64>() as f64 / samples as f64;
        let expected = 1.0 + 1.0 / (1.0 - pf);
        // Jondos after the first relay are geometric with variance pf/(1-pf)^2.
        let sd = (pf / (1.0 - pf).powi(2) / samples as f64).sqrt();
        prop_assert!((mean - expected).abs() < 5.0 * sd, "mean {mean} expected {expected}");
        // Every path has at least the initiator and one more jondo.
        prop_assert!(lengths.iter().all(|l| *l >= 2));
        // P(length == 2) = 1 - pf: the first relay submits.
        let p2 = lengths.iter().filter(|l| **l == 2).count() as f64 / samples as f64;
        prop_assert!((p2 - (1.0 - pf)).abs() < 5.0 * ((pf * (1.0 - pf)) / samples as f64).sqrt());
    }
}

#[test]
fn one_flooding_predecessor_cannot_fill_the_table() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut table = PathTable::new();
    let members = [1, 2, 3];
    let mut refused = 0;
    for i in 0..(MAX_PATHS_PER_PREDECESSOR as u64 + 100) {
        match table.route(
            &mut rng,
            Predecessor::Member(7),
            PathId(i + 1),
            0.75,
            &members,
        ) {
            Ok(_) => {}
            Err(RouteError::PredecessorFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(refused, 100);
    // Others still get paths, and the flooder gets one again once a path is forgotten.
    assert!(table
        .route(&mut rng, Predecessor::Member(8), PathId(1), 0.75, &members)
        .is_ok());
    table.forget(Predecessor::Member(7), PathId(1));
    assert!(table
        .route(
            &mut rng,
            Predecessor::Member(7),
            PathId(999_999),
            0.75,
            &members
        )
        .is_ok());
    table.forget_from(7);
    assert_eq!(table.len(), 1);
}

/// Collaborating predecessors together cannot fill the table: each has its share, the
/// shares of all members fit, and the jondo's own user always gets its path.
#[test]
fn collaborators_cannot_fill_the_table_or_block_the_local_path() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut table = PathTable::new();
    let members: Vec<MemberId> = (1..=20).collect();
    table.set_crowd_size(members.len());
    let share = table.predecessor_share();
    assert_eq!(share, MAX_PATHS / 20);
    // Every member but one floods the table to its share and beyond.
    let mut refused = 0;
    for pred in 1..=19u64 {
        for i in 0..(share as u64 + 5) {
            match table.route(
                &mut rng,
                Predecessor::Member(pred),
                PathId(i + 1),
                0.75,
                &members,
            ) {
                Ok(_) => {}
                Err(RouteError::PredecessorFull) => refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
    assert_eq!(
        refused,
        19 * 5,
        "each flooder is refused beyond its own share"
    );
    // The last honest member and the local user still form paths.
    assert!(table
        .route(&mut rng, Predecessor::Member(20), PathId(1), 0.75, &members)
        .is_ok());
    assert!(table
        .route(&mut rng, Predecessor::Local, PathId::LOCAL, 0.75, &members)
        .is_ok());
}

#[test]
fn shares_shrink_with_the_crowd_but_not_below_the_floor() {
    let mut table = PathTable::new();
    assert_eq!(table.predecessor_share(), MAX_PATHS_PER_PREDECESSOR);
    table.set_crowd_size(3);
    assert_eq!(table.predecessor_share(), MAX_PATHS_PER_PREDECESSOR);
    table.set_crowd_size(1_000);
    assert_eq!(table.predecessor_share(), MAX_PATHS / 1_000);
    table.set_crowd_size(1_000_000);
    assert_eq!(table.predecessor_share(), MIN_PATHS_PER_PREDECESSOR);
}

/// The local path is exempt even when its own count would be over a share.
#[test]
fn the_local_path_is_never_refused() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut table = PathTable::new();
    table.set_crowd_size(1_000_000);
    for _ in 0..100 {
        table.forget(Predecessor::Local, PathId::LOCAL);
        assert!(table
            .route(&mut rng, Predecessor::Local, PathId::LOCAL, 0.75, &[1, 2])
            .is_ok());
    }
}
