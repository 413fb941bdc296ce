//! Crowd documents: `CrowdDocument::verify` and `CrowdView::accept` on untrusted bytes.
//!
//! Two modes, chosen by the input:
//! - input starting with `CROWD1`: the bytes are an encoded document, verified as they
//!   are under the fixed blender key (seeds are real documents signed by that key);
//! - anything else: `now` (8 bytes LE), then up to four length-prefixed (u16 LE) chunks,
//!   each a document *body* the harness signs with the fixed key, so the fuzzer gets
//!   past the signature into the postcard decoder, `check()` and the view's epoch rules.
//!
//! Besides "never panics", checks that `accept` agrees with `verify` and with the
//! expiry/clock-skew/epoch rules documented in `crowds_proto::view`.
#![no_main]

use crowds_fuzz::{blender, blender_public, seal};
use crowds_proto::document::CrowdDocument;
use crowds_proto::view::{Change, CrowdView, ViewError, MAX_CLOCK_SKEW_MS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = blender_public();
    let verified = CrowdDocument::verify(data, &key);
    if let Ok(doc) = &verified {
        doc.check()
            .expect("verify returned a document that fails check()");
        assert!(doc.forward_probability.is_finite());
        assert_eq!(
            doc.member(u64::MAX).is_some(),
            doc.members.iter().any(|m| m.id == u64::MAX)
        );
        for m in &doc.members {
            assert_eq!(doc.member(m.id), Some(m));
            assert_eq!(doc.member_by_key(&m.key), Some(m));
        }
        // Re-signing what was verified yields a document that verifies to the same.
        let again = doc.sign(blender()).expect("a verified document signs");
        assert_eq!(CrowdDocument::verify(&again, &key).as_ref(), Ok(doc));
    }

    if data.starts_with(crowds_proto::document::MAGIC) {
        raw(data, verified);
    } else {
        signed_script(data);
    }
});

/// The raw bytes, offered to fresh views at a few instants.
fn raw(data: &[u8], verified: Result<CrowdDocument, crowds_proto::document::DocumentError>) {
    let key = blender_public();
    let nows: Vec<u64> = match &verified {
        Ok(doc) => vec![
            doc.issued_at,
            doc.expires_at - 1,
            doc.expires_at,
            doc.issued_at.saturating_sub(MAX_CLOCK_SKEW_MS + 1),
            0,
            u64::MAX,
        ],
        // Rejected bytes are rejected whatever the time: one instant is enough (every
        // accept re-verifies the signature, the bulk of this target's cost).
        Err(_) => vec![1_000],
    };
    for now in nows {
        let mut view = CrowdView::new(key);
        let got = view.accept(data, now);
        check_fresh_accept(&verified, now, &got, &view);
        // The very same bytes again: a refresh, never a new epoch.
        if got.is_ok() {
            assert_eq!(view.accept(data, now), Ok(Change::Refreshed));
        }
        let mut named = CrowdView::new(key).for_crowd("default");
        let got_named = named.accept(data, now);
        if let Ok(doc) = &verified {
            if doc.crowd != "default" {
                assert_eq!(got_named, Err(ViewError::WrongCrowd));
            } else {
                assert_eq!(got_named, got);
            }
        }
    }
}

/// What a view that holds nothing must answer for `verify`'s result at `now`.
fn check_fresh_accept(
    verified: &Result<CrowdDocument, crowds_proto::document::DocumentError>,
    now: u64,
    got: &Result<Change, ViewError>,
    view: &CrowdView,
) {
    match verified {
        Err(e) => {
            assert_eq!(got, &Err(ViewError::Document(e.clone())));
            assert!(view.current().is_none());
        }
        Ok(doc) if now >= doc.expires_at => {
            assert_eq!(got, &Err(ViewError::Expired { epoch: doc.epoch }));
            assert!(view.current().is_none());
        }
        Ok(doc) if doc.issued_at > now.saturating_add(MAX_CLOCK_SKEW_MS) => {
            assert_eq!(got, &Err(ViewError::FromFuture));
            assert!(view.current().is_none());
        }
        Ok(doc) => {
            let joined: Vec<u64> = doc.members.iter().map(|m| m.id).collect();
            assert_eq!(
                got,
                &Ok(Change::NewEpoch {
                    joined,
                    left: vec![]
                })
            );
            assert_eq!(view.current(), Some(doc));
            assert_eq!(view.usable(now), Some(doc));
        }
    }
}

/// Bodies signed by the harness, fed in sequence to one view.
fn signed_script(data: &[u8]) {
    let key = blender_public();
    let Some((now_bytes, mut rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut now = u64::from_le_bytes(*now_bytes);
    let mut view = CrowdView::new(key);
    for _ in 0..4 {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = (u16::from_le_bytes(*len) as usize).min(tail.len());
        let (body, tail) = tail.split_at(len);
        rest = tail;

        let bytes = seal(blender(), body);
        let verified = CrowdDocument::verify(&bytes, &key);
        if let Err(e) = &verified {
            assert!(
                !matches!(e, crowds_proto::document::DocumentError::BadSignature),
                "a document sealed with the pinned key failed its signature check"
            );
        }
        let before = view.current().cloned();
        let got = view.accept(&bytes, now);
        match (&before, &got) {
            (None, _) => check_fresh_accept(&verified, now, &got, &view),
            (Some(_), Err(_)) => assert_eq!(view.current(), before.as_ref()),
            (Some(old), Ok(change)) => {
                let doc = verified.as_ref().expect("accepted but does not verify");
                assert_eq!(view.current(), Some(doc));
                assert!(now < doc.expires_at);
                assert!(doc.issued_at <= now.saturating_add(MAX_CLOCK_SKEW_MS));
                assert!(doc.epoch >= old.epoch, "epoch went backwards");
                match change {
                    Change::Refreshed => {
                        assert_eq!(doc.epoch, old.epoch);
                        assert_eq!(doc.members, old.members);
                        assert!(doc.issued_at >= old.issued_at);
                    }
                    Change::NewEpoch { joined, left } => {
                        assert!(doc.epoch > old.epoch);
                        for id in joined {
                            let m = doc.member(*id).expect("joined member not listed");
                            assert_ne!(old.member(*id), Some(m));
                        }
                        for id in left {
                            let m = old.member(*id).expect("departed member was not listed");
                            assert_ne!(doc.member(*id), Some(m));
                        }
                        for m in &doc.members {
                            if old.member(m.id) != Some(m) {
                                assert!(joined.contains(&m.id));
                            }
                        }
                    }
                }
            }
        }
        // Time moves on by a fuzzer-chosen amount (possibly not at all).
        if let Some((step, tail)) = rest.split_first_chunk::<4>() {
            now = now.saturating_add(u32::from_le_bytes(*step) as u64 * 1_000);
            rest = tail;
        }
    }
}
