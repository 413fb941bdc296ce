//! Epoch deltas: how a jondo holding one signed crowd document gets the next one without
//! downloading every member again.
//!
//! A delta names the document it applies to (epoch and issue time), carries the new
//! document's header fields, the ids of members removed, the members added or changed,
//! and the blender's signature over the *whole* new document. The jondo rebuilds the new
//! document (members sorted by id, as every document must be), encodes it and checks that
//! signature, so a delta needs no trust of its own: a wrong or forged delta simply fails
//! to verify, and the jondo fetches the full document instead. Nothing here touches the
//! network.

use crate::document::{
    decode_body, decode_framed, signed_bytes, CrowdDocument, DocumentError, Envelope, Member,
    MAX_MEMBERS,
};
use crate::identity::PublicKey;
use crate::MemberId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// First bytes of every encoded delta.
pub const DELTA_MAGIC: &[u8; 6] = b"CRDLT1";

/// The change from one signed document to the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentDelta {
    /// Epoch of the document this applies to.
    pub base_epoch: u64,
    /// Issue time of the document this applies to.
    pub base_issued_at: u64,
    /// The new document's epoch.
    pub epoch: u64,
    /// Its forward probability.
    pub forward_probability: f64,
    /// Its issue time.
    pub issued_at: u64,
    /// Its expiry.
    pub expires_at: u64,
    /// Members of the base document that are not in the new one.
    pub removed: Vec<MemberId>,
    /// Members of the new document that are not in the base, or changed.
    pub upserted: Vec<Member>,
    /// The blender's signature over the new document's body.
    pub signature: Vec<u8>,
}

impl DocumentDelta {
    /// The encoded delta from `base` to the signed document `next` (as the blender
    /// published it).
    pub fn encode_between(base: &CrowdDocument, next: &[u8]) -> Result<Vec<u8>, DocumentError> {
        let envelope = Envelope::decode(next)?;
        let new = decode_body(&envelope.body)?;
        if new.crowd != base.crowd {
            return Err(DocumentError::Invalid("a delta cannot change the crowd"));
        }
        let old: BTreeMap<MemberId, &Member> = base.members.iter().map(|m| (m.id, m)).collect();
        let delta = DocumentDelta {
            base_epoch: base.epoch,
            base_issued_at: base.issued_at,
            epoch: new.epoch,
            forward_probability: new.forward_probability,
            issued_at: new.issued_at,
            expires_at: new.expires_at,
            removed: base
                .members
                .iter()
                .filter(|m| new.member(m.id).is_none())
                .map(|m| m.id)
                .collect(),
            upserted: new
                .members
                .iter()
                .filter(|m| old.get(&m.id) != Some(m))
                .cloned()
                .collect(),
            signature: envelope.signature,
        };
        let mut out = DELTA_MAGIC.to_vec();
        out.extend(
            postcard::to_stdvec(&delta).map_err(|e| DocumentError::Malformed(e.to_string()))?,
        );
        Ok(out)
    }

    /// Decodes a delta (no signature check yet: see [`DocumentDelta::apply`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, DocumentError> {
        let delta: DocumentDelta = decode_framed(bytes, DELTA_MAGIC, "delta")?;
        if delta.signature.len() != 64 {
            return Err(DocumentError::Malformed("signature is not 64 bytes".into()));
        }
        if delta.removed.len() > MAX_MEMBERS || delta.upserted.len() > MAX_MEMBERS {
            return Err(DocumentError::Invalid("too many members"));
        }
        Ok(delta)
    }

    /// Applies the encoded delta `bytes` to `base` and returns the new document, signed
    /// and encoded exactly as the blender published it, once its signature verifies
    /// under `blender`.
    pub fn apply(
        base: &CrowdDocument,
        bytes: &[u8],
        blender: &PublicKey,
    ) -> Result<Vec<u8>, DocumentError> {
        let delta = Self::decode(bytes)?;
        if (delta.base_epoch, delta.base_issued_at) != (base.epoch, base.issued_at) {
            return Err(DocumentError::Invalid("the delta is for another document"));
        }
        let mut members: BTreeMap<MemberId, Member> =
            base.members.iter().map(|m| (m.id, m.clone())).collect();
        for id in &delta.removed {
            members.remove(id);
        }
        for m in delta.upserted {
            members.insert(m.id, m);
            if members.len() > MAX_MEMBERS {
                return Err(DocumentError::Invalid("too many members"));
            }
        }
        let new = CrowdDocument {
            crowd: base.crowd.clone(),
            epoch: delta.epoch,
            forward_probability: delta.forward_probability,
            issued_at: delta.issued_at,
            expires_at: delta.expires_at,
            members: members.into_values().collect(),
        };
        new.check()?;
        let body =
            postcard::to_stdvec(&new).map_err(|e| DocumentError::Malformed(e.to_string()))?;
        if !blender.verify(&signed_bytes(&body), &delta.signature) {
            return Err(DocumentError::BadSignature);
        }
        Envelope {
            body,
            signature: delta.signature,
        }
        .encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn member(id: u64, port: u16) -> Member {
        Member {
            id,
            addr: SocketAddr::from(([127, 0, 0, 2], port)),
            key: PublicKey([id as u8; 32]),
            flags: 0,
        }
    }

    fn doc(epoch: u64, issued_at: u64, members: Vec<Member>) -> CrowdDocument {
        CrowdDocument {
            crowd: "default".into(),
            epoch,
            forward_probability: 0.75,
            issued_at,
            expires_at: issued_at + 600_000,
            members,
        }
    }

    #[test]
    fn a_delta_rebuilds_the_signed_document_exactly() {
        let key = SecretKey::generate().expect("key");
        let base = doc(1, 10, (1..=100).map(|i| member(i, 7000)).collect());
        let mut next_members: Vec<Member> = (3..=100).map(|i| member(i, 7000)).collect();
        next_members[0].addr = SocketAddr::from(([127, 0, 0, 9], 1)); // member 3 moved
        next_members.push(member(101, 7000));
        let next = doc(2, 20, next_members).sign(&key).expect("sign");
        let delta = DocumentDelta::encode_between(&base, &next).expect("delta");
        assert!(
            delta.len() * 20 < next.len(),
            "{} vs {}",
            delta.len(),
            next.len()
        );
        let decoded = DocumentDelta::decode(&delta).expect("decode");
        assert_eq!(decoded.removed, [1, 2]);
        assert_eq!(
            decoded.upserted.iter().map(|m| m.id).collect::<Vec<_>>(),
            [3, 101]
        );
        assert_eq!(
            DocumentDelta::apply(&base, &delta, &key.public()).expect("apply"),
            next
        );
    }

    #[test]
    fn a_delta_for_another_base_or_key_is_refused() {
        let key = SecretKey::generate().expect("key");
        let other = SecretKey::generate().expect("key");
        let base = doc(1, 10, vec![member(1, 1)]);
        let next = doc(2, 20, vec![member(1, 1), member(2, 2)])
            .sign(&key)
            .expect("sign");
        let delta = DocumentDelta::encode_between(&base, &next).expect("delta");
        let stale = doc(1, 11, vec![member(1, 1)]);
        assert!(DocumentDelta::apply(&stale, &delta, &key.public()).is_err());
        assert_eq!(
            DocumentDelta::apply(&base, &delta, &other.public()),
            Err(DocumentError::BadSignature)
        );
        // A tampered member list no longer matches the signature.
        let mut forged = DocumentDelta::decode(&delta).expect("decode");
        forged.upserted[0].addr = SocketAddr::from(([127, 0, 0, 66], 66));
        let mut bytes = DELTA_MAGIC.to_vec();
        bytes.extend(postcard::to_stdvec(&forged).expect("encode"));
        assert_eq!(
            DocumentDelta::apply(&base, &bytes, &key.public()),
            Err(DocumentError::BadSignature)
        );
    }

    proptest! {
        /// Any base and next member set: the delta rebuilds `next` byte for byte; garbage
        /// never panics.
        #[test]
        fn deltas_round_trip(
            base_ids in proptest::collection::btree_set(1u64..200, 0..40),
            next_ids in proptest::collection::btree_set(1u64..200, 0..40),
            port in 1u16..3,
            garbage in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let key = SecretKey::generate().expect("key");
            let base = doc(5, 50, base_ids.iter().map(|&i| member(i, 1)).collect());
            let next = doc(6, 60, next_ids.iter().map(|&i| member(i, port)).collect())
                .sign(&key)
                .expect("sign");
            let delta = DocumentDelta::encode_between(&base, &next).expect("delta");
            prop_assert_eq!(DocumentDelta::apply(&base, &delta, &key.public()).expect("apply"), next);
            let mut junk = DELTA_MAGIC.to_vec();
            junk.extend(garbage);
            let _ = DocumentDelta::apply(&base, &junk, &key.public());
        }
    }
}
