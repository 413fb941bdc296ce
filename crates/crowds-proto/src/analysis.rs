//! Anonymity analysis: the paper's closed forms next to Monte Carlo estimates that run the
//! very path code the jondos run.
//!
//! Owns the figures behind `crowds analyze` for a crowd of `n` members in which member 0
//! initiates (and is honest) and members `1..=c` collaborate:
//!
//! - closed forms: expected path length, P(H1+) (a collaborator is on the path),
//!   P(I | H1+) (the first collaborator's predecessor is the initiator), the end server's
//!   view, probable innocence, and the per-re-formation odds of the predecessor attack;
//! - an approximation of how soon the predecessor attack singles the initiator out
//!   ([`CrowdModel::stand_out_probability`], [`CrowdModel::reformations_to_stand_out`]),
//!   cheap enough for a status page, and never below the true risk;
//! - Monte Carlo: [`SimulatedCrowd`] gives every member its own [`PathTable`] and walks a
//!   request from the initiator through [`PathTable::route`] exactly as the jondos do
//!   (`Predecessor::Local` at the initiator, `Predecessor::Member(prev)` after), and the
//!   estimators below count what the collaborators and the end server see, with 95%
//!   confidence intervals.
//!
//! Randomness is injected; nothing here prints, reads the clock or does I/O (the binary
//! formats the report). Every loop is bounded by the caller's counts and [`MAX_PATH_JONDOS`].
//!
//! # The closed forms
//!
//! After the initiator, the path has `k >= 1` jondos with P(k) = `pf^(k-1) (1 - pf)`, each
//! a uniformly chosen member (repeats allowed), so each is a collaborator with probability
//! `c/n`, independently. Hence
//! P(H1+) = Σ_k `pf^(k-1) (1-pf) (1 - (1 - c/n)^k)` = `(c/n) / (1 - pf (1 - c/n))`
//! = `c / (n - pf (n - c))`, and the first collaborator sits at position `i` with
//! P(H_i) = `(pf (n-c)/n)^(i-1) c/n`. Its predecessor is the initiator always when `i = 1`
//! and with probability `1/(n-c)` when `i >= 2` (any honest member, the initiator
//! included, may precede it), which gives the paper's P(I | H1+) = `1 - pf (n-c-1)/n`.
//!
//! # The predecessor attack, approximately
//!
//! Each re-formation names at most one member as the first collaborator's predecessor:
//! the initiator with `p` = P(H1+) P(I | H1+) ([`CrowdModel::initiator_observed`]), each
//! of the `m = n - c - 1` other honest members with `p_o` ([`CrowdModel::other_observed`]).
//! After `R` independent re-formations the initiator *stands out* when its count `X` is
//! strictly above every other member's. `X` ~ Binomial(R, p) exactly. Given `X = x`, the
//! other `R - x` re-formations name one given other member with `q = p_o / (1 - p)` each,
//! so its count is Binomial(R - x, q); the `m` counts together are multinomial, and
//! treating them as independent gives
//!
//! P(stands out after R) ≈ Σ_{x>=1} Binomial(x; R, p) · P(Binomial(R - x, q) <= x - 1)^m.
//!
//! Multinomial counts are negatively associated (Joag-Dev and Proschan, 1983), so
//! P(all of them <= x - 1) is at most the product of the single probabilities: the
//! approximation is an upper bound, exact when `m = 0` or `R = 1`, and within a few
//! hundredths of the Monte Carlo [`stand_out_curve`] (unit tests: crowds of 5 to 200
//! members; README: 50, 200 and 1,000). The sums keep the terms within 10 standard
//! deviations (plus ten) of their means, so one evaluation costs about
//! `(20 σ_X + 20) (20 σ_Y + 20)` terms whatever `R` (microseconds near the attack's
//! threshold, 20 ms at `R` = 10^6 with `n` = 1,000, `c` = 100).

use crate::anonymity;
use crate::path::{Hop, PathId, PathTable, Predecessor, RouteError};
use crate::MemberId;
use rand::Rng;
use std::collections::HashMap;

/// Most members a simulated crowd may have (each has its own routing table in memory).
pub const MAX_MEMBERS: u64 = 100_000;

/// Largest forward probability analysed: the expected path is then 101 jondos long.
/// Closer to 1, paths grow so long that the real tables' limits
/// ([`crate::path::MAX_PATHS_PER_PREDECESSOR`] entries from one predecessor, e.g. a lone
/// jondo forwarding to itself) start to refuse them, and a simulation slows to a crawl.
pub const MAX_FORWARD_PROBABILITY: f64 = 0.99;

/// A simulated path longer than this many jondos is abandoned (at pf <=
/// [`MAX_FORWARD_PROBABILITY`] the chance of reaching it is below `e^-10000`).
pub const MAX_PATH_JONDOS: u64 = 1_000_000;

/// The standard normal quantile for two-sided 95% intervals.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The simulated initiator: member 0, always honest.
pub const INITIATOR: MemberId = 0;

/// Why an analysis cannot be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// A crowd needs at least one member (the initiator).
    #[error("a crowd needs at least one member")]
    NoMembers,
    /// More members than [`MAX_MEMBERS`].
    #[error("at most {MAX_MEMBERS} members can be simulated, not {0}")]
    TooManyMembers(u64),
    /// As many collaborators as members: nobody honest is left to initiate.
    #[error("{collaborators} collaborators among {members} members leave no honest initiator (need fewer collaborators than members)")]
    TooManyCollaborators {
        /// Crowd size `n`.
        members: u64,
        /// Collaborators `c`.
        collaborators: u64,
    },
    /// pf is not in `[0, MAX_FORWARD_PROBABILITY]`.
    #[error("pf {0} must be at least 0 and at most {MAX_FORWARD_PROBABILITY}")]
    InvalidForwardProbability(f64),
    /// The real routing code refused to route (e.g. a table overflowed).
    #[error("path formation failed: {0}")]
    Route(#[from] RouteError),
    /// A path exceeded [`MAX_PATH_JONDOS`].
    #[error("a simulated path grew past {MAX_PATH_JONDOS} jondos")]
    PathTooLong,
}

/// A crowd as the analysis sees it: `n` members, `c` collaborators, forward probability pf.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrowdModel {
    members: u64,
    collaborators: u64,
    forward_probability: f64,
}

impl CrowdModel {
    /// Checks the parameters: `1 <= n <= MAX_MEMBERS`, `c < n` (the initiator is
    /// honest), `0 <= pf <= MAX_FORWARD_PROBABILITY`.
    pub fn new(
        members: u64,
        collaborators: u64,
        forward_probability: f64,
    ) -> Result<Self, AnalysisError> {
        if members == 0 {
            return Err(AnalysisError::NoMembers);
        }
        if members > MAX_MEMBERS {
            return Err(AnalysisError::TooManyMembers(members));
        }
        if collaborators >= members {
            return Err(AnalysisError::TooManyCollaborators {
                members,
                collaborators,
            });
        }
        if !(forward_probability.is_finite()
            && (0.0..=MAX_FORWARD_PROBABILITY).contains(&forward_probability))
        {
            return Err(AnalysisError::InvalidForwardProbability(
                forward_probability,
            ));
        }
        Ok(Self {
            members,
            collaborators,
            forward_probability,
        })
    }

    /// Crowd size `n`.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Collaborators `c` (members `1..=c`).
    pub fn collaborators(&self) -> u64 {
        self.collaborators
    }

    /// Forward probability pf.
    pub fn forward_probability(&self) -> f64 {
        self.forward_probability
    }

    /// Honest members, the initiator included: `n - c`.
    pub fn honest(&self) -> u64 {
        self.members - self.collaborators
    }

    /// Expected jondos on a path, the initiator included: `1 + 1/(1 - pf)`.
    pub fn expected_path_length(&self) -> f64 {
        anonymity::expected_path_length(self.forward_probability)
    }

    /// P(H1+): at least one collaborator is on the path, `c / (n - pf (n - c))`.
    pub fn collaborator_on_path(&self) -> f64 {
        collaborator_on_path_probability(self.members, self.collaborators, self.forward_probability)
    }

    /// P(I | H1+): the first collaborator's predecessor is the initiator,
    /// `1 - pf (n-c-1)/n`. (With `c = 0` the condition never happens; the formula's value
    /// is still returned.)
    pub fn initiator_given_collaborator(&self) -> f64 {
        anonymity::predecessor_probability(
            self.members,
            self.collaborators,
            self.forward_probability,
        )
    }

    /// P(the exit is the initiator) = `1/n`: the end server sees the last jondo, which is
    /// a uniform choice made independently of who initiated. This is also the chance
    /// that an eavesdropper on the initiator's link sees the request leave for the server.
    pub fn exit_is_initiator(&self) -> f64 {
        1.0 / self.members as f64
    }

    /// Per path (re-formation): P(the collaborators observe the initiator as the first
    /// collaborator's predecessor) = P(H1+) P(I | H1+).
    pub fn initiator_observed(&self) -> f64 {
        if self.collaborators == 0 {
            return 0.0;
        }
        self.collaborator_on_path() * self.initiator_given_collaborator()
    }

    /// Per path (re-formation): P(one given other honest member is observed as the first
    /// collaborator's predecessor) = P(H2+) / (n - c) = P(H1+) pf / n.
    pub fn other_observed(&self) -> f64 {
        self.collaborator_on_path() * self.forward_probability / self.members as f64
    }

    /// Whether probable innocence holds: `n >= pf/(pf - 1/2) (c + 1)`.
    pub fn probable_innocence(&self) -> bool {
        anonymity::probable_innocence(self.members, self.collaborators, self.forward_probability)
    }

    /// `pf/(pf - 1/2) (c + 1)`, the crowd size probable innocence needs, or `None` when
    /// pf <= 1/2 (no crowd is large enough).
    pub fn required_members(&self) -> Option<f64> {
        let pf = self.forward_probability;
        (pf > 0.5).then(|| pf / (pf - 0.5) * (self.collaborators as f64 + 1.0))
    }

    /// The smallest whole crowd size with probable innocence against `c`.
    pub fn min_members(&self) -> Option<u64> {
        let bound = self.required_members()?.ceil();
        if !bound.is_finite() || bound > u64::MAX as f64 / 2.0 {
            return None;
        }
        let n = bound as u64;
        // The float bound may land just above an exact integer: trust the same predicate
        // the rest of the crate uses, one step either way.
        let holds =
            |n| anonymity::probable_innocence(n, self.collaborators, self.forward_probability);
        if n > 0 && holds(n - 1) {
            return Some(n - 1);
        }
        if !holds(n) {
            return Some(n + 1);
        }
        Some(n)
    }

    /// The largest `c` this crowd tolerates with probable innocence, or `None`.
    pub fn max_collaborators(&self) -> Option<u64> {
        anonymity::max_collaborators(self.members, self.forward_probability)
    }

    /// P(the initiator stands out, i.e. is strictly the most-observed member, after
    /// `reformations` independent re-formations of its path), by the approximation in
    /// the module documentation ([`stand_out_probability`]).
    pub fn stand_out_probability(&self, reformations: u64) -> f64 {
        stand_out_probability(self, reformations)
    }

    /// The fewest re-formations after which the initiator stands out with probability at
    /// least `target` (strictly between 0 and 1) by [`CrowdModel::stand_out_probability`],
    /// looking no further than `max_reformations`; `None` if it is not reached by then
    /// (always so without collaborators, or for a target outside (0, 1)).
    ///
    /// Found by doubling and then bisection, in `O(log R)` evaluations: that assumes the
    /// curve crosses `target` once, which holds except for ripples of the first few
    /// re-formations of crowds in which P(H1+) is large.
    pub fn reformations_to_stand_out(&self, target: f64, max_reformations: u64) -> Option<u64> {
        // Outside (0, 1) the target is trivial or unreachable: a search for it would only
        // walk up to `max_reformations` at growing cost.
        if !(target > 0.0 && target < 1.0)
            || self.initiator_observed() <= 0.0
            || max_reformations == 0
        {
            return None;
        }
        let reached = |r| self.stand_out_probability(r) >= target;
        // P(stands out after 0) = 0: `below` is a count known to fall short.
        let (mut below, mut above) = (0u64, 1u64);
        while !reached(above) {
            if above >= max_reformations {
                return None;
            }
            below = above;
            above = above.saturating_mul(2).min(max_reformations);
        }
        while above - below > 1 {
            let middle = below + (above - below) / 2;
            if reached(middle) {
                above = middle;
            } else {
                below = middle;
            }
        }
        Some(above)
    }
}

/// P(H1+) for `n` members, `c` collaborators and forward probability pf:
/// `(c/n) / (1 - pf (1 - c/n))`. Zero when `c = 0`, one when `c >= n`.
pub fn collaborator_on_path_probability(members: u64, collaborators: u64, pf: f64) -> f64 {
    if members == 0 || collaborators >= members {
        return 1.0;
    }
    let hit = collaborators as f64 / members as f64;
    hit / (1.0 - pf * (1.0 - hit))
}

/// P(X >= 2) for X ~ Binomial(trials, p): the initiator seen more than once.
pub fn binomial_more_than_once(trials: u64, p: f64) -> f64 {
    if trials < 2 || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let r = trials as f64;
    let none = (r * (1.0 - p).ln()).exp();
    let once = r * p * ((r - 1.0) * (1.0 - p).ln()).exp();
    (1.0 - none - once).clamp(0.0, 1.0)
}

/// P(the initiator stands out after `reformations` re-formations): the approximation of
/// the module documentation,
/// `Σ_x Binomial(x; R, p) · P(Binomial(R - x, q) <= x - 1)^(n - c - 1)`.
/// Zero without collaborators or re-formations. The work grows like `R sqrt(p q)` terms
/// (20 ms in a release build at R = 10^6, n = 1,000, c = 100), so callers bound `R`.
pub fn stand_out_probability(model: &CrowdModel, reformations: u64) -> f64 {
    let p = model.initiator_observed();
    if reformations == 0 || p <= 0.0 {
        return 0.0;
    }
    let others = model.honest() - 1;
    // Given that a re-formation did not name the initiator, the chance it names one given
    // other member. p + (n - c - 1) p_o = P(H1+) <= 1 keeps it at most 1/(n - c - 1).
    let q = (model.other_observed() / (1.0 - p)).clamp(0.0, 1.0);
    let (first, pmf) = binomial_terms(reformations, p);
    let mut total = 0.0;
    for (x, b) in (first..).zip(pmf) {
        if x == 0 {
            continue;
        }
        let ln_all_below = if others == 0 {
            0.0
        } else {
            others as f64 * ln_binomial_cdf(reformations - x, q, x - 1)
        };
        total += b * ln_all_below.exp();
    }
    total.clamp(0.0, 1.0)
}

/// Terms a binomial sum keeps on each side of the mean, in standard deviations (plus a
/// constant for small means): the mass left out is far below `f64` precision.
const TAIL_SDS: f64 = 10.0;

/// `ln(k!)`: summed exactly for small `k`, by Stirling's series above (truncation error
/// below 1e-15 from k = 20 on), so a binomial term costs the same for any `k`.
fn ln_factorial(k: u64) -> f64 {
    if k < 20 {
        return (2..=k).map(|i| (i as f64).ln()).sum();
    }
    let z = k as f64 + 1.0;
    let z2 = z * z;
    (z - 0.5) * z.ln() - z
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * z2)) / z2) / z2) / z
}

/// The terms of Binomial(trials, p) near its mean: `(first, pmf)` with `pmf[i]` the
/// probability of `first + i` successes, from `TAIL_SDS` standard deviations (plus ten)
/// below the mean to as far above it, clipped to `[0, trials]`.
fn binomial_terms(trials: u64, p: f64) -> (u64, Vec<f64>) {
    if p <= 0.0 {
        return (0, vec![1.0]);
    }
    if p >= 1.0 {
        return (trials, vec![1.0]);
    }
    let mean = trials as f64 * p;
    let spread = TAIL_SDS * (mean * (1.0 - p)).sqrt() + 10.0;
    let first = (mean - spread).floor().max(0.0) as u64;
    let last = ((mean + spread).ceil() as u64).min(trials);
    let (ln_p, ln_q) = (p.ln(), (-p).ln_1p());
    // Start in logs (the first term may be too small for a direct product), then step
    // by the ratio of successive terms.
    let mut term = (ln_factorial(trials) - ln_factorial(first) - ln_factorial(trials - first)
        + first as f64 * ln_p
        + (trials - first) as f64 * ln_q)
        .exp();
    let ratio = p / (1.0 - p);
    let mut pmf = Vec::with_capacity((last - first + 1) as usize);
    for k in first..=last {
        pmf.push(term);
        term *= (trials - k) as f64 / (k + 1) as f64 * ratio;
    }
    (first, pmf)
}

/// `ln P(Y <= limit)` for Y ~ Binomial(trials, p), from the terms near the mean: the
/// upper tail is summed when `limit` is above the mean (so a probability close to 1
/// keeps its precision when raised to a large power).
fn ln_binomial_cdf(trials: u64, p: f64, limit: u64) -> f64 {
    if limit >= trials || p <= 0.0 {
        return 0.0;
    }
    let (first, pmf) = binomial_terms(trials, p);
    let last = first + pmf.len() as u64 - 1;
    if limit >= last {
        return 0.0;
    }
    if limit < first {
        return f64::NEG_INFINITY;
    }
    let split = (limit - first + 1) as usize;
    if limit as f64 >= trials as f64 * p {
        let upper: f64 = pmf[split..].iter().sum();
        (-upper.min(1.0)).ln_1p()
    } else {
        let lower: f64 = pmf[..split].iter().sum();
        lower.min(1.0).ln()
    }
}

/// A Monte Carlo estimate with its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The point estimate (sample proportion or sample mean).
    pub value: f64,
    /// Lower end of the 95% interval.
    pub low: f64,
    /// Upper end of the 95% interval.
    pub high: f64,
    /// How many samples it rests on.
    pub samples: u64,
}

/// The Wilson score interval of `successes / trials` at normal quantile `z` (good even
/// near 0 and 1, where the normal approximation collapses), or `None` without trials.
pub fn wilson_interval(successes: u64, trials: u64, z: f64) -> Option<(f64, f64)> {
    if trials == 0 {
        return None;
    }
    let t = trials as f64;
    let p = successes.min(trials) as f64 / t;
    let z2 = z * z;
    let denom = 1.0 + z2 / t;
    let center = (p + z2 / (2.0 * t)) / denom;
    let half = z * (p * (1.0 - p) / t + z2 / (4.0 * t * t)).sqrt() / denom;
    let low = if successes == 0 {
        0.0
    } else {
        (center - half).max(0.0)
    };
    let high = if successes >= trials {
        1.0
    } else {
        (center + half).min(1.0)
    };
    Some((low, high))
}

impl Estimate {
    /// A proportion `successes / trials` with its Wilson score interval (good even near 0
    /// and 1, where the normal approximation collapses), or `None` without trials.
    pub fn proportion(successes: u64, trials: u64) -> Option<Self> {
        if trials == 0 {
            return None;
        }
        let p = successes.min(trials) as f64 / trials as f64;
        let (low, high) = wilson_interval(successes, trials, Z95)?;
        Some(Self {
            value: p,
            low,
            high,
            samples: trials,
        })
    }

    /// A sample mean from the sum and sum of squares of `samples` values, with the
    /// normal-approximation interval, or `None` without samples.
    pub fn mean(sum: f64, sum_of_squares: f64, samples: u64) -> Option<Self> {
        if samples == 0 {
            return None;
        }
        let k = samples as f64;
        let mean = sum / k;
        let variance = if samples > 1 {
            ((sum_of_squares - sum * mean) / (k - 1.0)).max(0.0)
        } else {
            0.0
        };
        let half = Z95 * (variance / k).sqrt();
        Some(Self {
            value: mean,
            low: mean - half,
            high: mean + half,
            samples,
        })
    }

    /// Whether `x` lies in the 95% interval (allowing for rounding of exact values).
    pub fn contains(&self, x: f64) -> bool {
        let slack = 1e-12 * x.abs().max(1.0);
        self.low - slack <= x && x <= self.high + slack
    }
}

/// One path as the collaborators and the end server see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOutcome {
    /// Jondos on the path, the initiator included (a member met twice counts twice).
    pub jondos: u64,
    /// The jondo that submitted the request: all the end server sees.
    pub exit: MemberId,
    /// The first collaborator's predecessor, if a collaborator is on the path: the member
    /// the collaborators suspect.
    pub observed: Option<MemberId>,
}

/// A crowd of simulated jondos, members `0..n`, each with its own routing table, in which
/// member [`INITIATOR`] initiates and members `1..=c` collaborate (passively: they route
/// like everybody else and pool what they see).
#[derive(Debug)]
pub struct SimulatedCrowd {
    model: CrowdModel,
    forwarders: Vec<MemberId>,
    tables: Vec<PathTable>,
    touched: Vec<usize>,
}

impl SimulatedCrowd {
    /// A crowd of `model.members()` jondos with empty routing tables.
    pub fn new(model: CrowdModel) -> Self {
        Self {
            model,
            forwarders: (0..model.members).collect(),
            tables: (0..model.members).map(|_| PathTable::new()).collect(),
            touched: Vec::new(),
        }
    }

    /// The crowd's parameters.
    pub fn model(&self) -> &CrowdModel {
        &self.model
    }

    /// Whether `member` is one of the collaborators `1..=c`.
    pub fn is_collaborator(&self, member: MemberId) -> bool {
        (1..=self.model.collaborators).contains(&member)
    }

    /// Re-forms the initiator's path and sends one request along it.
    ///
    /// First every jondo that holds a path forgets them all, which is what each jondo
    /// does when new members join ([`PathTable::forget_all`]), so each call is an
    /// independent path formation. Then the request walks from the initiator
    /// (`Predecessor::Local`, [`PathId::LOCAL`]) through each jondo's own table, each
    /// later hop arriving as `Predecessor::Member(previous)` with the id the previous
    /// jondo chose, until a jondo submits.
    pub fn reform_path<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<PathOutcome, AnalysisError> {
        for i in self.touched.drain(..) {
            self.tables[i].forget_all();
        }
        let pf = self.model.forward_probability;
        let (mut at, mut pred, mut path) = (INITIATOR, Predecessor::Local, PathId::LOCAL);
        let mut jondos = 1;
        let mut observed = None;
        loop {
            let index = at as usize;
            let table = &mut self.tables[index];
            if table.is_empty() {
                self.touched.push(index);
            }
            match table.route(rng, pred, path, pf, &self.forwarders)? {
                Hop::Submit => {
                    return Ok(PathOutcome {
                        jondos,
                        exit: at,
                        observed,
                    })
                }
                Hop::Forward {
                    successor,
                    path: next,
                } => {
                    if observed.is_none() && self.is_collaborator(successor) {
                        observed = Some(at);
                    }
                    pred = Predecessor::Member(at);
                    at = successor;
                    path = next;
                    jondos += 1;
                    if jondos > MAX_PATH_JONDOS {
                        return Err(AnalysisError::PathTooLong);
                    }
                }
            }
        }
    }
}

/// Monte Carlo estimates over independent paths of the initiator.
#[derive(Debug, Clone, PartialEq)]
pub struct PathStats {
    /// Paths simulated.
    pub paths: u64,
    /// Jondos per path, the initiator included.
    pub jondos: Option<Estimate>,
    /// P(H1+): a collaborator on the path.
    pub collaborator_on_path: Option<Estimate>,
    /// P(I | H1+), over the paths that met a collaborator (`None` if none did).
    pub initiator_given_collaborator: Option<Estimate>,
    /// P(the exit is the initiator).
    pub exit_is_initiator: Option<Estimate>,
}

/// Simulates `paths` independent path formations of the initiator.
pub fn simulate_paths<R: Rng + ?Sized>(
    rng: &mut R,
    crowd: &mut SimulatedCrowd,
    paths: u64,
) -> Result<PathStats, AnalysisError> {
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    let (mut met, mut initiator_seen, mut own_exit) = (0u64, 0u64, 0u64);
    for _ in 0..paths {
        let outcome = crowd.reform_path(rng)?;
        let len = outcome.jondos as f64;
        sum += len;
        sum_sq += len * len;
        if let Some(pred) = outcome.observed {
            met += 1;
            if pred == INITIATOR {
                initiator_seen += 1;
            }
        }
        if outcome.exit == INITIATOR {
            own_exit += 1;
        }
    }
    Ok(PathStats {
        paths,
        jondos: Estimate::mean(sum, sum_sq, paths),
        collaborator_on_path: Estimate::proportion(met, paths),
        initiator_given_collaborator: Estimate::proportion(initiator_seen, met),
        exit_is_initiator: Estimate::proportion(own_exit, paths),
    })
}

/// What the collaborators learn from `reformations` re-formations of the initiator's path,
/// over many independent campaigns.
#[derive(Debug, Clone, PartialEq)]
pub struct AttackStats {
    /// Re-formations per campaign (R).
    pub reformations: u64,
    /// Campaigns simulated.
    pub campaigns: u64,
    /// `initiator_histogram[k]`: campaigns in which the initiator was observed `k` times.
    pub initiator_histogram: Vec<u64>,
    /// Times the initiator is observed per campaign.
    pub initiator_count: Option<Estimate>,
    /// P(the initiator is observed more than once).
    pub initiator_more_than_once: Option<Estimate>,
    /// Times the most-observed other honest member is observed per campaign.
    pub top_other_count: Option<Estimate>,
    /// P(the most-observed other honest member is observed more than once).
    pub top_other_more_than_once: Option<Estimate>,
    /// P(the initiator is observed strictly more often than every other member).
    pub initiator_stands_out: Option<Estimate>,
}

/// The collaborators' tally in one campaign: who was seen as the predecessor, how often.
#[derive(Debug, Default)]
struct Tally {
    initiator: u64,
    others: HashMap<MemberId, u64>,
    top_other: u64,
}

impl Tally {
    fn record(&mut self, outcome: &PathOutcome) {
        match outcome.observed {
            Some(INITIATOR) => self.initiator += 1,
            Some(member) => {
                let count = self.others.entry(member).or_insert(0);
                *count += 1;
                self.top_other = self.top_other.max(*count);
            }
            None => {}
        }
    }

    /// The initiator is strictly the most-observed member (so the collaborators' best
    /// guess is unambiguous and right).
    fn stands_out(&self) -> bool {
        self.initiator > self.top_other
    }
}

/// Simulates `campaigns` campaigns of `reformations` path re-formations each, counting
/// who the collaborators observe as the first collaborator's predecessor.
pub fn predecessor_attack<R: Rng + ?Sized>(
    rng: &mut R,
    crowd: &mut SimulatedCrowd,
    reformations: u64,
    campaigns: u64,
) -> Result<AttackStats, AnalysisError> {
    let mut histogram = vec![0u64; reformations as usize + 1];
    let (mut sum, mut sum_sq, mut top_sum, mut top_sum_sq) = (0.0, 0.0, 0.0, 0.0);
    let (mut init_twice, mut top_twice, mut stands_out) = (0u64, 0u64, 0u64);
    for _ in 0..campaigns {
        let mut tally = Tally::default();
        for _ in 0..reformations {
            tally.record(&crowd.reform_path(rng)?);
        }
        if let Some(slot) = histogram.get_mut(tally.initiator as usize) {
            *slot += 1;
        }
        let (i, t) = (tally.initiator as f64, tally.top_other as f64);
        sum += i;
        sum_sq += i * i;
        top_sum += t;
        top_sum_sq += t * t;
        init_twice += u64::from(tally.initiator > 1);
        top_twice += u64::from(tally.top_other > 1);
        stands_out += u64::from(tally.stands_out());
    }
    Ok(AttackStats {
        reformations,
        campaigns,
        initiator_histogram: histogram,
        initiator_count: Estimate::mean(sum, sum_sq, campaigns),
        initiator_more_than_once: Estimate::proportion(init_twice, campaigns),
        top_other_count: Estimate::mean(top_sum, top_sum_sq, campaigns),
        top_other_more_than_once: Estimate::proportion(top_twice, campaigns),
        initiator_stands_out: Estimate::proportion(stands_out, campaigns),
    })
}

/// P(the initiator is strictly the most-observed member) after each number of
/// re-formations `1, 2, …`, from campaigns run side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct StandOutCurve {
    /// Campaigns simulated.
    pub campaigns: u64,
    /// `stands_out[r - 1]`: campaigns in which the initiator stood out after `r`
    /// re-formations.
    pub stands_out: Vec<u64>,
}

impl StandOutCurve {
    /// Re-formations simulated (the curve's length).
    pub fn reformations(&self) -> u64 {
        self.stands_out.len() as u64
    }

    /// The estimate after `r` re-formations, if simulated.
    pub fn at(&self, r: u64) -> Option<Estimate> {
        let index = usize::try_from(r.checked_sub(1)?).ok()?;
        Estimate::proportion(*self.stands_out.get(index)?, self.campaigns)
    }

    /// The fewest re-formations after which the estimated probability is at least `p`.
    pub fn first_reaching(&self, p: f64) -> Option<u64> {
        let campaigns = self.campaigns as f64;
        self.stands_out
            .iter()
            .position(|&k| self.campaigns > 0 && k as f64 >= p * campaigns)
            .map(|i| i as u64 + 1)
    }
}

/// Runs `campaigns` campaigns side by side, one re-formation at a time, recording after
/// each how many campaigns have the initiator strictly most-observed; stops after
/// `max_reformations`, or once at least `min_reformations` are done and the fraction has
/// reached `stop_at`.
pub fn stand_out_curve<R: Rng + ?Sized>(
    rng: &mut R,
    crowd: &mut SimulatedCrowd,
    campaigns: u64,
    min_reformations: u64,
    max_reformations: u64,
    stop_at: f64,
) -> Result<StandOutCurve, AnalysisError> {
    let mut tallies: Vec<Tally> = (0..campaigns).map(|_| Tally::default()).collect();
    let mut curve = StandOutCurve {
        campaigns,
        stands_out: Vec::new(),
    };
    for r in 1..=max_reformations {
        let mut standing = 0u64;
        for tally in &mut tallies {
            tally.record(&crowd.reform_path(rng)?);
            standing += u64::from(tally.stands_out());
        }
        curve.stands_out.push(standing);
        if r >= min_reformations && standing as f64 >= stop_at * campaigns as f64 {
            break;
        }
    }
    Ok(curve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn model(n: u64, c: u64, pf: f64) -> CrowdModel {
        CrowdModel::new(n, c, pf).expect("valid crowd")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// P(H1+) by summing over path lengths: after the initiator, `k` jondos with
    /// probability pf^(k-1) (1 - pf), each a collaborator with probability c/n.
    fn collaborator_on_path_by_series(n: u64, c: u64, pf: f64) -> f64 {
        let hit = c as f64 / n as f64;
        (1..20_000)
            .map(|k| pf.powi(k - 1) * (1.0 - pf) * (1.0 - (1.0 - hit).powi(k)))
            .sum()
    }

    #[test]
    fn probable_innocence_at_three_quarters() {
        // pf = 3/4: n >= 3(c + 1).
        assert!(model(24, 7, 0.75).probable_innocence());
        assert!(!model(23, 7, 0.75).probable_innocence());
        assert_eq!(model(23, 7, 0.75).min_members(), Some(24));
        assert_eq!(model(24, 7, 0.75).required_members(), Some(24.0));
        assert_eq!(model(24, 7, 0.75).max_collaborators(), Some(7));
        assert_eq!(model(23, 7, 0.75).max_collaborators(), Some(6));
        assert!(model(24, 7, 0.75).initiator_given_collaborator() <= 0.5);
        assert!(model(23, 7, 0.75).initiator_given_collaborator() > 0.5);
        assert_eq!(model(24, 7, 0.75).expected_path_length(), 5.0);
        // pf <= 1/2: no crowd is large enough.
        assert!(!model(1000, 0, 0.5).probable_innocence());
        assert_eq!(model(1000, 0, 0.5).min_members(), None);
        assert_eq!(model(1000, 0, 0.5).max_collaborators(), None);
    }

    #[test]
    fn min_members_is_the_exact_threshold() {
        for pf in [0.51, 0.6, 0.67, 0.75, 0.8, 0.9, 0.99] {
            for c in 0..40 {
                let need = model(c + 1, c, pf).min_members().expect("pf > 1/2");
                assert!(model(need, c, pf).probable_innocence(), "pf {pf} c {c}");
                assert!(
                    !model(need - 1, c, pf).probable_innocence(),
                    "pf {pf} c {c}"
                );
            }
        }
    }

    #[test]
    fn collaborator_on_path_hand_computed() {
        // n = 20, c = 3, pf = 3/4: 3 / (20 - 0.75 * 17) = 3 / 7.25 = 12/29.
        assert!(close(
            model(20, 3, 0.75).collaborator_on_path(),
            12.0 / 29.0
        ));
        // n = 4, c = 1, pf = 1/2: (1/4) / (1 - 3/8) = 2/5.
        assert!(close(model(4, 1, 0.5).collaborator_on_path(), 0.4));
        // pf = 0: one jondo after the initiator, a collaborator with probability c/n.
        assert!(close(model(10, 3, 0.0).collaborator_on_path(), 0.3));
        // No collaborators: never met.
        assert_eq!(model(50, 0, 0.9).collaborator_on_path(), 0.0);
        assert_eq!(model(50, 0, 0.9).initiator_observed(), 0.0);
        assert_eq!(model(50, 0, 0.9).other_observed(), 0.0);
        // Every other member collaborates.
        assert!(close(
            model(2, 1, 0.75).collaborator_on_path(),
            0.5 / (1.0 - 0.375)
        ));
    }

    #[test]
    fn closed_forms_agree_with_their_derivations() {
        for (n, c, pf) in [
            (20, 3, 0.75),
            (4, 1, 0.5),
            (100, 10, 0.9),
            (7, 6, 0.67),
            (30, 0, 0.8),
        ] {
            let m = model(n, c, pf);
            let h1_plus = m.collaborator_on_path();
            assert!((h1_plus - collaborator_on_path_by_series(n, c, pf)).abs() < 1e-9);
            if c > 0 {
                // P(I | H1+) = P(H1 | H1+) + P(H2+ | H1+) / (n - c).
                let h1 = (c as f64 / n as f64) / h1_plus;
                let via_positions = h1 + (1.0 - h1) / (n - c) as f64;
                assert!(close(via_positions, m.initiator_given_collaborator()));
            }
            // Every observation names the initiator or one of the n - c - 1 others.
            let total = m.initiator_observed() + (n - c - 1) as f64 * m.other_observed();
            assert!(close(total, h1_plus), "{n} {c} {pf}");
            assert!(close(m.exit_is_initiator() * n as f64, 1.0));
        }
    }

    #[test]
    fn binomial_tail_hand_computed() {
        assert!(close(binomial_more_than_once(2, 0.5), 0.25));
        assert!(close(binomial_more_than_once(3, 0.5), 0.5));
        assert_eq!(binomial_more_than_once(1, 0.9), 0.0);
        assert_eq!(binomial_more_than_once(10, 0.0), 0.0);
        assert_eq!(binomial_more_than_once(10, 1.0), 1.0);
    }

    #[test]
    fn wilson_intervals() {
        let e = Estimate::proportion(5, 10).expect("trials");
        assert!(
            (e.low - 0.2366).abs() < 1e-4 && (e.high - 0.7634).abs() < 1e-4,
            "{e:?}"
        );
        let none = Estimate::proportion(0, 100).expect("trials");
        assert_eq!(none.low, 0.0);
        assert!(none.contains(0.0) && none.high < 0.04);
        let all = Estimate::proportion(100, 100).expect("trials");
        assert_eq!(all.high, 1.0);
        assert!(Estimate::proportion(0, 0).is_none());
        let constant = Estimate::mean(20.0, 40.0, 10).expect("samples");
        assert!(constant.contains(2.0) && constant.low == constant.high);
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(CrowdModel::new(0, 0, 0.75), Err(AnalysisError::NoMembers));
        assert_eq!(
            CrowdModel::new(5, 5, 0.75),
            Err(AnalysisError::TooManyCollaborators {
                members: 5,
                collaborators: 5
            })
        );
        assert!(matches!(
            CrowdModel::new(5, 0, 1.0),
            Err(AnalysisError::InvalidForwardProbability(_))
        ));
        assert!(CrowdModel::new(5, 0, f64::NAN).is_err());
        assert!(CrowdModel::new(5, 0, -0.1).is_err());
        assert!(CrowdModel::new(MAX_MEMBERS + 1, 0, 0.75).is_err());
        assert!(CrowdModel::new(1, 0, 0.0).is_ok());
    }

    /// Checks Monte Carlo estimates against closed forms: every one within 4.5 standard
    /// errors, and the 95% intervals calibrated (they contain the closed form about 95% of
    /// the time; a handful of misses among dozens is expected, more is a bug).
    #[derive(Default)]
    struct Agreement {
        checks: usize,
        misses: Vec<String>,
    }

    impl Agreement {
        fn check(&mut self, what: &str, estimate: Estimate, expected: f64) {
            let se = (estimate.high - estimate.low) / (2.0 * Z95);
            assert!(
                (estimate.value - expected).abs() <= 4.5 * se + 1e-12,
                "{what}: {estimate:?} is far from {expected}"
            );
            self.checks += 1;
            if !estimate.contains(expected) {
                self.misses
                    .push(format!("{what}: {estimate:?} vs {expected}"));
            }
        }

        fn assert_calibrated(&self) {
            assert!(self.checks >= 20, "only {} checks", self.checks);
            let covered = 1.0 - self.misses.len() as f64 / self.checks as f64;
            assert!(covered >= 0.85, "{:#?}", self.misses);
        }
    }

    /// Every Monte Carlo estimate agrees with its closed form, over a few crowds and seeds.
    #[test]
    fn monte_carlo_agrees_with_closed_forms() {
        let mut agreement = Agreement::default();
        for (n, c, pf) in [(20, 3, 0.75), (10, 1, 0.5), (5, 4, 0.9), (12, 0, 0.67)] {
            for seed in 1..=3 {
                let m = model(n, c, pf);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut crowd = SimulatedCrowd::new(m);
                let stats = simulate_paths(&mut rng, &mut crowd, 4000).expect("paths");
                let at = format!("n {n} c {c} pf {pf} seed {seed}");
                let mut check = |what: &str, e: Option<Estimate>, x: f64| {
                    agreement.check(&format!("{at} {what}"), e.expect("samples"), x)
                };
                check("length", stats.jondos, m.expected_path_length());
                check(
                    "P(H1+)",
                    stats.collaborator_on_path,
                    m.collaborator_on_path(),
                );
                check("exit", stats.exit_is_initiator, m.exit_is_initiator());
                if c > 0 {
                    let i = m.initiator_given_collaborator();
                    check("P(I|H1+)", stats.initiator_given_collaborator, i);
                } else {
                    assert_eq!(stats.initiator_given_collaborator, None, "{at}");
                    assert_eq!(stats.collaborator_on_path.expect("paths").value, 0.0);
                }
            }
        }
        agreement.assert_calibrated();
    }

    #[test]
    fn attack_agrees_with_the_binomial_law() {
        let mut agreement = Agreement::default();
        let m = model(20, 3, 0.75);
        let p = m.initiator_observed();
        let (r, campaigns) = (6, 1500);
        for seed in 1..=3 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut crowd = SimulatedCrowd::new(m);
            let attack = predecessor_attack(&mut rng, &mut crowd, r, campaigns).expect("attack");
            let at = format!("seed {seed}");
            let mut check = |what: &str, e: Option<Estimate>, x: f64| {
                agreement.check(&format!("{at} {what}"), e.expect("campaigns"), x)
            };
            check("mean", attack.initiator_count, r as f64 * p);
            check(
                ">1",
                attack.initiator_more_than_once,
                binomial_more_than_once(r, p),
            );
            assert_eq!(attack.initiator_histogram.len(), r as usize + 1);
            assert_eq!(attack.initiator_histogram.iter().sum::<u64>(), campaigns);
            // The histogram against Binomial(r, p).
            let mut binomial = (1.0 - p).powi(r as i32);
            for (k, &seen) in attack.initiator_histogram.iter().enumerate() {
                check(
                    &format!("bin {k}"),
                    Estimate::proportion(seen, campaigns),
                    binomial,
                );
                binomial *= (r - k as u64) as f64 / (k as f64 + 1.0) * p / (1.0 - p);
            }
            // After one re-formation the initiator stands out exactly when it is observed.
            let curve = stand_out_curve(&mut rng, &mut crowd, campaigns, 1, 1, 1.0).expect("curve");
            check("stands out at 1", curve.at(1), p);
        }
        agreement.assert_calibrated();
    }

    #[test]
    fn attack_edge_cases() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // Nobody collaborates: nobody is ever observed.
        let mut crowd = SimulatedCrowd::new(model(8, 0, 0.75));
        let attack = predecessor_attack(&mut rng, &mut crowd, 20, 50).expect("attack");
        assert_eq!(attack.initiator_histogram[0], 50);
        assert_eq!(attack.initiator_stands_out.expect("campaigns").value, 0.0);
        // Everybody else collaborates: the initiator is the only member ever observed.
        let mut crowd = SimulatedCrowd::new(model(8, 7, 0.75));
        let attack = predecessor_attack(&mut rng, &mut crowd, 20, 50).expect("attack");
        assert_eq!(attack.top_other_count.expect("campaigns").value, 0.0);
        assert_eq!(attack.initiator_stands_out.expect("campaigns").value, 1.0);
        // One member alone submits its own requests.
        let mut crowd = SimulatedCrowd::new(model(1, 0, 0.5));
        let outcome = crowd.reform_path(&mut rng).expect("path");
        assert_eq!(outcome.exit, INITIATOR);
        assert_eq!(outcome.observed, None);
    }

    #[test]
    fn stand_out_curve_grows_and_stops() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut crowd = SimulatedCrowd::new(model(20, 3, 0.75));
        let curve = stand_out_curve(&mut rng, &mut crowd, 400, 5, 200, 0.9).expect("curve");
        let last = curve.reformations();
        assert!((5..200).contains(&last), "{curve:?}");
        assert!(curve.at(last).expect("last").value >= 0.9);
        let half = curve.first_reaching(0.5).expect("reached");
        assert!(half <= last && curve.at(half).expect("half").value >= 0.5);
        assert!(curve.at(0).is_none() && curve.at(last + 1).is_none());
    }

    /// Each re-formation starts from empty tables: afterwards the tables hold exactly the
    /// new path, one entry per jondo on it.
    #[test]
    fn reformations_start_from_empty_tables() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut crowd = SimulatedCrowd::new(model(3, 1, 0.9));
        for _ in 0..500 {
            let outcome = crowd.reform_path(&mut rng).expect("path");
            let held: usize = crowd.tables.iter().map(PathTable::len).sum();
            assert_eq!(held as u64, outcome.jondos);
        }
    }

    #[test]
    fn ln_factorial_and_binomial_terms() {
        let mut exact = 0.0f64;
        for k in 0..300u64 {
            if k > 1 {
                exact += (k as f64).ln();
            }
            let got = ln_factorial(k);
            assert!(
                (got - exact).abs() <= 1e-12 * exact.max(1.0),
                "{k}: {got} {exact}"
            );
        }
        for (trials, p) in [(0, 0.3), (1, 0.5), (10, 0.1), (1000, 0.001), (86_400, 0.17)] {
            let (first, pmf) = binomial_terms(trials, p);
            let total: f64 = pmf.iter().sum();
            assert!((total - 1.0).abs() < 1e-9, "{trials} {p}: {total}");
            assert!(first + pmf.len() as u64 - 1 <= trials);
        }
        // Binomial(3, 1/2) <= 1: 4/8.
        assert!(close(ln_binomial_cdf(3, 0.5, 1).exp(), 0.5));
        assert_eq!(ln_binomial_cdf(3, 0.5, 3), 0.0);
        assert_eq!(ln_binomial_cdf(3, 0.0, 0), 0.0);
    }

    #[test]
    fn stand_out_approximation_is_exact_where_it_should_be() {
        // One re-formation: the initiator stands out exactly when it is observed.
        for (n, c, pf) in [(20, 3, 0.75), (1000, 100, 0.75), (5, 1, 0.9)] {
            let m = model(n, c, pf);
            assert!(close(m.stand_out_probability(1), m.initiator_observed()));
            assert_eq!(m.stand_out_probability(0), 0.0);
        }
        // Nobody else honest: the initiator stands out once it is observed at all.
        let m = model(8, 7, 0.75);
        for r in [1, 2, 5, 40] {
            let expected = 1.0 - (1.0 - m.initiator_observed()).powi(r as i32);
            assert!(close(m.stand_out_probability(r), expected), "{r}");
        }
        // Nobody collaborates: nobody is ever observed.
        let m = model(50, 0, 0.75);
        assert_eq!(m.stand_out_probability(1000), 0.0);
        assert_eq!(m.reformations_to_stand_out(0.5, 1_000_000), None);
        // Given enough re-formations the initiator always stands out.
        let m = model(1000, 100, 0.75);
        assert!(m.stand_out_probability(86_400) > 0.999_999);
        assert!(m.stand_out_probability(1_000_000) <= 1.0);
    }

    #[test]
    fn reformations_to_stand_out_is_the_first_crossing() {
        for (n, c, pf) in [
            (20, 3, 0.75),
            (50, 5, 0.75),
            (200, 20, 0.75),
            (100, 1, 0.75),
        ] {
            let m = model(n, c, pf);
            let r = m
                .reformations_to_stand_out(0.5, 1_000_000)
                .expect("reached");
            assert!(m.stand_out_probability(r) >= 0.5, "{n} {c}");
            assert!(m.stand_out_probability(r - 1) < 0.5, "{n} {c}");
            // A search that stops short says so.
            assert_eq!(m.reformations_to_stand_out(0.5, r - 1), None);
            assert_eq!(m.reformations_to_stand_out(0.5, r), Some(r));
        }
        assert_eq!(model(20, 3, 0.75).reformations_to_stand_out(0.5, 0), None);
        for target in [0.0, 1.0, f64::NAN, -1.0, 2.0] {
            assert_eq!(
                model(20, 3, 0.75).reformations_to_stand_out(target, u64::MAX),
                None
            );
        }
        assert_eq!(
            model(20, 3, 0.75).reformations_to_stand_out(1e-9, 5),
            Some(1)
        );
    }

    /// The approximation against the real path code: never clearly below the Monte Carlo
    /// curve (it is an upper bound), at most a few hundredths above it, and the number
    /// of re-formations it gives for 1/2 close to the simulated one.
    #[test]
    fn stand_out_approximation_bounds_the_monte_carlo() {
        for (seed, (n, c, pf)) in (1..).zip([
            (20, 3, 0.75),
            (50, 5, 0.75),
            (200, 20, 0.75),
            (10, 4, 0.75),
            (5, 1, 0.9),
            (12, 3, 0.6),
        ]) {
            let m = model(n, c, pf);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut crowd = SimulatedCrowd::new(m);
            let curve = stand_out_curve(&mut rng, &mut crowd, 1000, 1, 400, 0.95).expect("curve");
            for r in 1..=curve.reformations() {
                let e = curve.at(r).expect("simulated");
                let se = (e.value * (1.0 - e.value) / e.samples as f64)
                    .sqrt()
                    .max(0.005);
                let approx = m.stand_out_probability(r);
                let at = format!("n {n} c {c} pf {pf} R {r}: {approx} vs {e:?}");
                assert!(approx >= e.value - 4.5 * se, "below: {at}");
                assert!(approx <= e.value + 0.06 + 4.5 * se, "far above: {at}");
            }
            let simulated = curve.first_reaching(0.5).expect("the curve reaches 1/2");
            let approx = m.reformations_to_stand_out(0.5, 10_000).expect("reached");
            assert!(
                approx <= simulated + 1 && approx + 2 + simulated / 10 >= simulated,
                "n {n} c {c} pf {pf}: {approx} vs {simulated}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The closed forms are probabilities and behave as the paper says.
        #[test]
        fn closed_forms_are_consistent(n in 1u64..500, c_frac in 0.0f64..1.0, pf in 0.0f64..0.99) {
            let c = ((n as f64 * c_frac) as u64).min(n - 1);
            let m = model(n, c, pf);
            let h = m.collaborator_on_path();
            prop_assert!((0.0..=1.0).contains(&h));
            // At least c/n (the first relay) and at most what the longest paths give.
            prop_assert!(h >= c as f64 / n as f64 - 1e-12);
            let i = m.initiator_given_collaborator();
            prop_assert!((0.0..=1.0).contains(&i));
            // The initiator is at least as suspect as any other honest member.
            prop_assert!(m.initiator_observed() + 1e-15 >= m.other_observed());
            // Probable innocence is exactly P(I | H1+) <= 1/2 (up to rounding at the edge).
            if m.probable_innocence() {
                prop_assert!(i <= 0.5 + 1e-9);
            } else {
                prop_assert!(pf <= 0.5 || i >= 0.5 - 1e-9);
            }
            if let Some(max) = m.max_collaborators() {
                prop_assert!(model(n, 0, pf).probable_innocence());
                prop_assert!(anonymity::probable_innocence(n, max, pf));
                prop_assert!(!anonymity::probable_innocence(n, max + 1, pf));
            }
            if c + 1 < n {
                prop_assert!(model(n, c + 1, pf).collaborator_on_path() >= h);
            }
        }

        /// Monte Carlo over the real path code stays within five standard errors of P(H1+)
        /// and of the end server's 1/n, whatever the crowd.
        #[test]
        fn monte_carlo_tracks_closed_forms(seed in any::<u64>(), n in 1u64..30, c_frac in 0.0f64..1.0, pf in 0.0f64..0.9) {
            let c = ((n as f64 * c_frac) as u64).min(n - 1);
            let m = model(n, c, pf);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut crowd = SimulatedCrowd::new(m);
            let paths = 1500;
            let stats = simulate_paths(&mut rng, &mut crowd, paths).expect("paths");
            for (estimate, expected) in [
                (stats.collaborator_on_path, m.collaborator_on_path()),
                (stats.exit_is_initiator, m.exit_is_initiator()),
            ] {
                let e = estimate.expect("paths");
                let sd = (expected * (1.0 - expected) / paths as f64).sqrt();
                prop_assert!((e.value - expected).abs() <= 5.0 * sd + 1e-12, "{e:?} vs {expected}");
            }
        }
    }
}
