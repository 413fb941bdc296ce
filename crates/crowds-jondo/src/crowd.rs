//! The crowd as a jondo currently uses it: the verified document, this jondo's member
//! id in it, and who may be chosen as a forwarder.
//!
//! Owns the lookup from keys to members; it must not fetch or verify documents (the
//! jondo does) nor choose paths (the relay engine does).

use crowds_proto::document::CrowdDocument;
use crowds_proto::identity::PublicKey;
use crowds_proto::MemberId;
use std::collections::HashMap;

/// The crowd as this jondo currently uses it.
pub struct Crowd {
    /// The verified document.
    pub doc: CrowdDocument,
    /// This jondo's member id, if it is listed.
    pub self_id: Option<MemberId>,
    /// Members that may be chosen as forwarders.
    pub forwarders: Vec<MemberId>,
    pub(crate) by_key: HashMap<PublicKey, MemberId>,
}

impl Crowd {
    pub(crate) fn new(doc: CrowdDocument, me: &PublicKey) -> Self {
        let by_key: HashMap<PublicKey, MemberId> =
            doc.members.iter().map(|m| (m.key, m.id)).collect();
        Self {
            self_id: by_key.get(me).copied(),
            forwarders: doc.forwarders(),
            by_key,
            doc,
        }
    }
}
