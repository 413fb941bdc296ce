use super::*;
use proptest::prelude::*;

pub(crate) fn sample(epoch: u64, n: u64) -> CrowdDocument {
    CrowdDocument {
        crowd: "default".into(),
        epoch,
        forward_probability: 0.75,
        issued_at: 1_000,
        expires_at: 601_000,
        members: (1..=n)
            .map(|id| Member {
                id,
                addr: SocketAddr::from(([127, 0, 0, id as u8], 7000)),
                key: PublicKey([id as u8; 32]),
                flags: 0,
            })
            .collect(),
    }
}

#[test]
fn sign_verify_round_trip() {
    let key = SecretKey::generate().expect("key");
    let doc = sample(3, 5);
    let bytes = doc.sign(&key).expect("sign");
    assert_eq!(
        CrowdDocument::verify(&bytes, &key.public()).expect("verify"),
        doc
    );
}

#[test]
fn forged_signature_is_rejected() {
    let key = SecretKey::generate().expect("key");
    let other = SecretKey::generate().expect("key");
    let bytes = sample(3, 5).sign(&other).expect("sign");
    assert_eq!(
        CrowdDocument::verify(&bytes, &key.public()),
        Err(DocumentError::BadSignature)
    );
}

#[test]
fn tampered_body_is_rejected() {
    let key = SecretKey::generate().expect("key");
    let mut bytes = sample(3, 5).sign(&key).expect("sign");
    // Flip one bit in every position in turn: none may verify.
    for i in MAGIC.len()..bytes.len() {
        bytes[i] ^= 0x01;
        assert!(
            CrowdDocument::verify(&bytes, &key.public()).is_err(),
            "byte {i}"
        );
        bytes[i] ^= 0x01;
    }
}

#[test]
fn structural_rules() {
    let key = SecretKey::generate().expect("key");
    let mut doc = sample(1, 3);
    doc.forward_probability = 1.0;
    assert!(doc.sign(&key).is_err());
    let mut doc = sample(1, 3);
    doc.members.swap(0, 1);
    assert!(doc.sign(&key).is_err());
    let mut doc = sample(1, 3);
    doc.members[1].key = doc.members[0].key;
    assert!(doc.sign(&key).is_err());
    let mut doc = sample(1, 3);
    doc.expires_at = doc.issued_at;
    assert!(doc.sign(&key).is_err());
}

#[test]
fn lookups() {
    let doc = sample(1, 4);
    assert_eq!(doc.member(3).map(|m| m.id), Some(3));
    assert!(doc.member(9).is_none());
    assert_eq!(
        doc.member_by_key(&PublicKey([2; 32])).map(|m| m.id),
        Some(2)
    );
    assert_eq!(doc.forwarders(), vec![1, 2, 3, 4]);
}

proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let key = PublicKey([7; 32]);
        let _ = CrowdDocument::verify(&bytes, &key);
        let mut tagged = MAGIC.to_vec();
        tagged.extend_from_slice(&bytes);
        prop_assert!(CrowdDocument::verify(&tagged, &key).is_err());
    }

    #[test]
    fn round_trip_any_members(n in 0u64..60, epoch in any::<u64>(), pf in 0.0f64..0.999) {
        let key = SecretKey::generate().expect("key");
        let mut doc = sample(epoch, n);
        doc.forward_probability = pf;
        let bytes = doc.sign(&key).expect("sign");
        prop_assert_eq!(CrowdDocument::verify(&bytes, &key.public()).expect("verify"), doc);
    }

    #[test]
    fn truncation_is_an_error(n in 1u64..10, cut in 0usize..400) {
        let key = SecretKey::generate().expect("key");
        let bytes = sample(1, n).sign(&key).expect("sign");
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(CrowdDocument::verify(&bytes[..cut], &key.public()).is_err());
    }
}
