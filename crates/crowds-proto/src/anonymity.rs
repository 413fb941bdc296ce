//! The paper's closed-form anonymity figures.
//!
//! Owns the formulas of Reiter and Rubin for `n` members, `c` collaborators and forward
//! probability `pf`, and how many of `n` members an assumed share of collaborators is.
//! Pure arithmetic; used by the status page and the analysis tools.
//!
//! `n` counts the members that forward. A client-only member (one the blender cannot
//! reach, [`crate::document::FLAG_CLIENT_ONLY`]) is never on anybody's path, so it hides
//! nobody, and its own first hop knows that its requests start with it: counted in `n`,
//! it would make every figure look better than it is.

/// Expected number of jondos on a path, initiator included: `1 + 1/(1 - pf)`.
pub fn expected_path_length(pf: f64) -> f64 {
    1.0 + 1.0 / (1.0 - pf)
}

/// P(the first collaborator's predecessor is the initiator) = `1 - pf*(n-c-1)/n`.
pub fn predecessor_probability(n: u64, c: u64, pf: f64) -> f64 {
    if n == 0 || c >= n {
        return 1.0;
    }
    1.0 - pf * (n - c - 1) as f64 / n as f64
}

/// Whether the initiator keeps probable innocence: `n >= pf/(pf - 1/2) * (c + 1)`.
pub fn probable_innocence(n: u64, c: u64, pf: f64) -> bool {
    pf > 0.5 && n as f64 >= pf / (pf - 0.5) * (c as f64 + 1.0)
}

/// The largest number of collaborators against which `n` members keep probable
/// innocence, or `None` if not even one lone member is safe (c = 0 fails).
pub fn max_collaborators(n: u64, pf: f64) -> Option<u64> {
    if pf <= 0.5 {
        return None;
    }
    let bound = (n as f64 * (pf - 0.5) / pf - 1.0).floor();
    (bound >= 0.0).then_some(bound as u64)
}

/// The fewest members with which a crowd keeps probable innocence against `c`
/// collaborators, or `None` when no crowd size does (pf <= 1/2, or a pf that is not a
/// number) or the size would not fit a `u64`. Never a negative or infinite count: status
/// pages print this number as it is.
pub fn min_members(c: u64, pf: f64) -> Option<u64> {
    if pf.is_nan() || pf <= 0.5 {
        return None;
    }
    // The very expression `probable_innocence` compares with, so its ceiling is exact.
    let bound = (pf / (pf - 0.5) * (c as f64 + 1.0)).ceil();
    // Below 2^53 every integer is exact in an f64.
    (bound.is_finite() && bound <= (1u64 << 53) as f64).then_some(bound as u64)
}

/// How many of `n` members collaborate if `percent` % of them do: rounded to the nearest
/// whole member, but at least one (an assumption about collaborators that assumes none
/// tells nothing) and fewer than `n` (the initiator is honest); 0 when `n < 2`.
pub fn collaborators_at_percent(n: u64, percent: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    let rounded = n.saturating_mul(percent).saturating_add(50) / 100;
    rounded.clamp(1, n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_from_the_paper() {
        assert_eq!(expected_path_length(0.75), 5.0);
        // pf = 3/4: n >= 3(c+1).
        assert!(probable_innocence(24, 7, 0.75));
        assert!(!probable_innocence(23, 7, 0.75));
        assert_eq!(max_collaborators(24, 0.75), Some(7));
        assert_eq!(max_collaborators(2, 0.75), None);
        assert!(predecessor_probability(24, 7, 0.75) <= 0.5);
        for n in 1..200 {
            if let Some(c) = max_collaborators(n, 0.75) {
                assert!(probable_innocence(n, c, 0.75));
                assert!(!probable_innocence(n, c + 1, 0.75));
                assert!(predecessor_probability(n, c, 0.75) <= 0.5 + 1e-12);
            }
        }
    }

    #[test]
    fn min_members_is_the_threshold_and_never_negative() {
        // pf = 3/4: n >= 3(c+1).
        assert_eq!(min_members(0, 0.75), Some(3));
        assert_eq!(min_members(1, 0.75), Some(6));
        assert_eq!(min_members(7, 0.75), Some(24));
        for pf in [0.51, 0.6, 2.0 / 3.0, 0.75, 0.8, 0.9, 0.99] {
            for c in 0..50 {
                let n = min_members(c, pf).expect("pf > 1/2");
                assert!(probable_innocence(n, c, pf), "pf {pf} c {c}");
                assert!(!probable_innocence(n - 1, c, pf), "pf {pf} c {c}");
            }
        }
        // No crowd size helps at pf <= 1/2 (where pf/(pf - 1/2) is infinite or negative).
        for pf in [0.5, 0.4, 0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(min_members(1, pf), None, "pf {pf}");
            assert_eq!(max_collaborators(1000, pf), None, "pf {pf}");
        }
        // Beyond what a count can say exactly: no number rather than a wrong one.
        assert_eq!(min_members(u64::MAX, 0.75), None);
        assert_eq!(min_members(1 << 60, 0.75), None);
    }

    #[test]
    fn too_small_crowds_tolerate_nobody_rather_than_minus_one() {
        // floor(n (pf - 1/2)/pf - 1) is negative below 3 members at pf = 3/4.
        for n in 0..3 {
            assert_eq!(max_collaborators(n, 0.75), None, "n {n}");
        }
        assert_eq!(max_collaborators(3, 0.75), Some(0));
        assert_eq!(max_collaborators(6, 0.75), Some(1));
    }

    #[test]
    fn share_of_collaborators() {
        assert_eq!(collaborators_at_percent(50, 10), 5);
        assert_eq!(collaborators_at_percent(200, 10), 20);
        assert_eq!(collaborators_at_percent(1000, 10), 100);
        assert_eq!(collaborators_at_percent(45, 10), 5);
        assert_eq!(collaborators_at_percent(44, 10), 4);
        // Small crowds: at least one, never everybody.
        assert_eq!(collaborators_at_percent(6, 10), 1);
        assert_eq!(collaborators_at_percent(2, 10), 1);
        assert_eq!(collaborators_at_percent(2, 100), 1);
        assert_eq!(collaborators_at_percent(1, 10), 0);
        assert_eq!(collaborators_at_percent(0, 10), 0);
        assert_eq!(collaborators_at_percent(u64::MAX, 10), u64::MAX / 100);
    }
}
