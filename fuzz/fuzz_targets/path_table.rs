//! The routing table: a script of `route` / `forget` / `forget_from` / `forget_all`
//! operations against `crowds_proto::path::PathTable`, checked against a model.
//!
//! Input: 8 bytes seed a deterministic `StdRng`; then each operation is one opcode byte
//! followed by its operand bytes (missing operands read as 0). Invariants:
//! - `route` twice for the same (predecessor, path id) with the same member list and pf
//!   returns the same hop both times;
//! - a path stays static: a remembered Submit stays Submit, a remembered Forward stays
//!   the same while its successor is still a forwarder; it is only re-decided after
//!   `forget*` or when its successor left the member list;
//! - a Forward successor is always in the member list, its outgoing path id is never
//!   `PathId::LOCAL` and never reused for the same successor;
//! - the initiator (`Predecessor::Local`) never submits;
//! - `len()` equals the model's size and never exceeds the table's capacity, `formed()`
//!   counts the hops decided anew; `PredecessorFull` / `TableFull` are returned exactly
//!   when a member predecessor's new path would exceed its share (`MAX_PATHS` divided by
//!   the crowd size, clamped to `MIN_PATHS_PER_PREDECESSOR..=MAX_PATHS_PER_PREDECESSOR`)
//!   / the capacity (every member's share, at least `MAX_PATHS`; the local path may come
//!   on top);
//!   the local path is never refused (reached through the "flood" operation, enabled by
//!   `CROWDS_FUZZ_FLOOD=1` because it is slow).
#![no_main]

use crowds_proto::path::{
    choose_hop, Hop, PathId, PathTable, Predecessor, RouteError, MAX_PATHS,
    MAX_PATHS_PER_PREDECESSOR, MIN_PATHS_PER_PREDECESSOR,
};
use crowds_proto::MemberId;
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// Forward probabilities offered to `route`. Documents only ever carry pf in [0, 1)
/// (`document::check`), but `route` clamps, so out-of-range values are tried as well.
const PF: [f64; 12] = [
    0.0,
    0.5,
    0.75,
    0.9,
    0.999,
    1.0 - f64::EPSILON,
    1.0,
    -1.0,
    2.0,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MIN_POSITIVE,
];

/// Index 12 offers NaN: `route`/`choose_hop` once panicked on it (`f64::clamp` keeps
/// NaN, `Rng::gen_bool` unwraps); they now treat NaN as "submit"
/// (fuzz/regressions/path_table-nan-pf).
fn pf(b: u8) -> f64 {
    match usize::from(b) % (PF.len() + 1) {
        12 => f64::NAN,
        i => PF[i],
    }
}

struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

fn flood_enabled() -> bool {
    static FLOOD: OnceLock<bool> = OnceLock::new();
    *FLOOD.get_or_init(|| std::env::var_os("CROWDS_FUZZ_FLOOD").is_some_and(|v| v == "1"))
}

fn pred(b: u8) -> Predecessor {
    // Few distinct values, so operations collide on the same paths.
    match b % 9 {
        0 => Predecessor::Local,
        m => Predecessor::Member(u64::from(m)),
    }
}

fn path_id(b: u8) -> PathId {
    match b % 16 {
        15 => PathId(u64::MAX),
        n => PathId(u64::from(n)),
    }
}

/// Member lists: a bitmask over ids 1..=8, or a list with a large id, a duplicate, or
/// none at all.
fn members(b: u8) -> Vec<MemberId> {
    match b {
        0 => vec![],
        0xfe => vec![3, 3, 3],
        0xff => vec![u64::MAX, 1],
        mask => (0..8u64)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| i + 1)
            .collect(),
    }
}

/// What the table should hold, kept independently of it.
#[derive(Default)]
struct Model {
    routes: HashMap<(Predecessor, PathId), Hop>,
    per_predecessor: HashMap<Predecessor, usize>,
    outgoing: HashSet<(MemberId, PathId)>,
    /// Hops decided anew so far (what `PathTable::formed` counts).
    formed: u64,
    /// The crowd size last given to `set_crowd_size` (0: never).
    crowd_size: usize,
    /// The largest capacity the table has had (entries made then may remain).
    most_capacity: usize,
}

impl Model {
    fn get(&self, p: Predecessor, id: PathId) -> Option<Hop> {
        self.routes.get(&(p, id)).copied()
    }

    fn count(&self, p: Predecessor) -> usize {
        self.per_predecessor.get(&p).copied().unwrap_or(0)
    }

    fn share(&self) -> usize {
        (MAX_PATHS / self.crowd_size.max(1))
            .clamp(MIN_PATHS_PER_PREDECESSOR, MAX_PATHS_PER_PREDECESSOR)
    }

    fn capacity(&self) -> usize {
        MAX_PATHS.max(self.crowd_size * self.share())
    }

    fn set_crowd_size(&mut self, n: usize) {
        self.crowd_size = n;
        self.most_capacity = self.most_capacity.max(self.capacity());
    }

    fn insert(&mut self, p: Predecessor, id: PathId, hop: Hop) {
        assert!(self.get(p, id).is_none());
        if let Hop::Forward { successor, path } = hop {
            assert_ne!(path, PathId::LOCAL, "outgoing path id is the local id");
            assert!(
                self.outgoing.insert((successor, path)),
                "outgoing path id {path:?} reused towards member {successor}"
            );
        }
        self.routes.insert((p, id), hop);
        *self.per_predecessor.entry(p).or_default() += 1;
        self.formed += 1;
    }

    fn remove(&mut self, p: Predecessor, id: PathId) {
        if let Some(hop) = self.routes.remove(&(p, id)) {
            if let Hop::Forward { successor, path } = hop {
                self.outgoing.remove(&(successor, path));
            }
            let n = self.per_predecessor.get_mut(&p).expect("counted");
            *n -= 1;
            if *n == 0 {
                self.per_predecessor.remove(&p);
            }
        }
    }

    fn remove_from(&mut self, p: Predecessor) {
        let gone: Vec<_> = self
            .routes
            .keys()
            .filter(|(q, _)| *q == p)
            .copied()
            .collect();
        for (q, id) in gone {
            self.remove(q, id);
        }
        assert_eq!(self.count(p), 0);
    }

    fn clear(&mut self) {
        self.routes.clear();
        self.per_predecessor.clear();
        self.outgoing.clear();
    }

    fn check(&self, table: &PathTable) {
        assert_eq!(table.len(), self.routes.len());
        assert_eq!(table.is_empty(), self.routes.is_empty());
        // Members fill at most the capacity; the local path may come on top.
        assert!(
            table.len() <= self.most_capacity.max(self.capacity()) + 1,
            "len {} most {} cap {} size {} local {:?}",
            table.len(),
            self.most_capacity,
            self.capacity(),
            self.crowd_size,
            self.get(Predecessor::Local, PathId::LOCAL)
        );
        assert_eq!(table.predecessor_share(), self.share());
        assert_eq!(table.formed(), self.formed, "formed() miscounts");
    }
}

fn route_checked(
    table: &mut PathTable,
    model: &mut Model,
    rng: &mut StdRng,
    p: Predecessor,
    id: PathId,
    pf: f64,
    list: &[MemberId],
) -> Result<Hop, RouteError> {
    let known = model.get(p, id);
    let first = table.route(rng, p, id, pf, list);
    match (known, &first) {
        (Some(Hop::Submit), r) => assert_eq!(r, &Ok(Hop::Submit), "submit path changed"),
        (Some(hop @ Hop::Forward { successor, .. }), r) if list.contains(&successor) => {
            assert_eq!(
                r,
                &Ok(hop),
                "forward path changed while its successor stayed"
            )
        }
        // A Forward whose successor left is forgotten, then decided anew.
        (Some(Hop::Forward { .. }), _) => model.remove(p, id),
        (None, _) => {}
    }
    let fresh = model.get(p, id).is_none();
    match &first {
        Ok(hop) => {
            if let Hop::Forward { successor, .. } = hop {
                assert!(
                    list.contains(successor),
                    "successor {successor} not in {list:?}"
                );
            }
            if p == Predecessor::Local {
                assert_ne!(*hop, Hop::Submit, "the initiator submitted");
            }
            if fresh {
                if (p, id) != (Predecessor::Local, PathId::LOCAL) {
                    assert!(
                        model.routes.len() < model.capacity(),
                        "routed past the capacity"
                    );
                    assert!(model.count(p) < model.share(), "routed past the share");
                }
                model.insert(p, id, *hop);
            }
        }
        Err(RouteError::TableFull) => {
            assert!(fresh);
            assert_ne!(
                (p, id),
                (Predecessor::Local, PathId::LOCAL),
                "the local path was refused"
            );
            assert!(
                model.count(p) < model.share(),
                "TableFull instead of PredecessorFull"
            );
            assert!(
                model.routes.len() >= model.capacity(),
                "TableFull below the capacity"
            );
        }
        Err(RouteError::PredecessorFull) => {
            assert!(fresh);
            assert_ne!(
                (p, id),
                (Predecessor::Local, PathId::LOCAL),
                "the local path was refused"
            );
            assert!(
                model.count(p) >= model.share(),
                "PredecessorFull below the share"
            );
        }
        Err(RouteError::EmptyCrowd) => {
            assert!(fresh);
            assert!(list.is_empty(), "EmptyCrowd with members {list:?}");
        }
        Err(e) => panic!("unexpected route error {e:?}"),
    }
    model.check(table);
    // Same question again, nothing changed in between: same answer.
    if let Ok(hop) = first {
        let second = table.route(rng, p, id, pf, list);
        assert_eq!(second, Ok(hop), "route not stable for {p:?} {id:?}");
        model.check(table);
    }
    first
}

/// Routes new paths until the table is full: a share from each of several
/// predecessors (each then refused with PredecessorFull), until TableFull; the local
/// path is still served.
fn flood(table: &mut PathTable, model: &mut Model, rng: &mut StdRng, list: &[MemberId]) {
    let list = if list.is_empty() { &[1][..] } else { list };
    let cap = model.share() as u64;
    let mut n = 0u64;
    for filler in 1_000u64.. {
        let p = Predecessor::Member(filler);
        while model.count(p) < model.share() && model.routes.len() < model.capacity() {
            let id = PathId(1 << 32 | n);
            n += 1;
            let hop = table.route(rng, p, id, 0.75, list).expect("room left");
            model.insert(p, id, hop);
        }
        model.check(table);
        let r = route_checked(table, model, rng, p, PathId(1 << 33 | filler), 0.75, list);
        if r == Err(RouteError::TableFull) {
            break;
        }
        assert_eq!(r, Err(RouteError::PredecessorFull));
        assert!(filler < 1_000 + model.capacity() as u64 / cap + 1);
    }
    model.remove(Predecessor::Local, PathId::LOCAL);
    table.forget(Predecessor::Local, PathId::LOCAL);
    let local = route_checked(
        table,
        model,
        rng,
        Predecessor::Local,
        PathId::LOCAL,
        0.75,
        list,
    );
    assert!(local.is_ok(), "the local path was refused in a full table");
}

fuzz_target!(|data: &[u8]| {
    let (seed, script) = data.split_at(data.len().min(8));
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..seed.len()].copy_from_slice(seed);
    let mut rng = StdRng::from_seed(seed_bytes);
    let mut table = PathTable::new();
    let mut model = Model::default();
    let mut ops = Ops(script);
    let mut flooded = false;

    let mut steps = 0;
    while !ops.0.is_empty() && steps < 512 {
        steps += 1;
        match ops.byte() % 8 {
            0..=3 => {
                let (p, id) = (pred(ops.byte()), path_id(ops.byte()));
                let pf = pf(ops.byte());
                let list = members(ops.byte());
                let _ = route_checked(&mut table, &mut model, &mut rng, p, id, pf, &list);
            }
            4 => {
                let (p, id) = (pred(ops.byte()), path_id(ops.byte()));
                table.forget(p, id);
                model.remove(p, id);
            }
            5 => {
                let m = u64::from(ops.byte() % 9);
                table.forget_from(m);
                model.remove_from(Predecessor::Member(m));
            }
            6 if ops.0.first().is_some_and(|b| b & 0x80 != 0) => {
                // A new crowd size: shares shrink and grow with it.
                let n = usize::from(ops.byte() & 0x7f) * 97;
                table.set_crowd_size(n);
                model.set_crowd_size(n);
            }
            6 => {
                table.forget_all();
                model.clear();
            }
            _ => match ops.byte() {
                // Fill the table to its limits: at most once per input, and only when
                // CROWDS_FUZZ_FLOOD=1 (65,536 routes take ~0.3 s under ASan, which would
                // swamp a normal campaign).
                0xf0..=0xff if !flooded && flood_enabled() => {
                    flooded = true;
                    let list = members(ops.byte());
                    flood(&mut table, &mut model, &mut rng, &list);
                }
                b => {
                    // The coin alone.
                    let pf = pf(b);
                    let list = members(ops.byte());
                    let initiator = ops.byte() & 1 == 1;
                    match choose_hop(&mut rng, initiator, pf, &list) {
                        Ok(Some(m)) => assert!(list.contains(&m)),
                        Ok(None) => assert!(!initiator),
                        Err(e) => {
                            assert_eq!(e, RouteError::EmptyCrowd);
                            assert!(list.is_empty());
                        }
                    }
                }
            },
        }
        model.check(&table);
    }
    // Finally, a full comparison of what the table answers for every remembered path.
    let remembered: Vec<_> = model.routes.iter().map(|(k, h)| (*k, *h)).collect();
    for ((p, id), hop) in remembered {
        let list: Vec<MemberId> = match hop {
            Hop::Forward { successor, .. } => vec![successor],
            Hop::Submit => vec![],
        };
        assert_eq!(table.route(&mut rng, p, id, 0.5, &list), Ok(hop));
    }
    model.check(&table);
});
