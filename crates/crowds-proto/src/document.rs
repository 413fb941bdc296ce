//! The signed crowd document: the blender's statement of who is in the crowd.
//!
//! Owns the document's fields, its wire encoding (a magic tag, then a postcard-encoded
//! envelope of body bytes and an Ed25519 signature) and the structural checks every
//! decoded document must pass. It does not decide which documents a jondo accepts over
//! time (that is [`crate::view`]) and never touches the network.
//!
//! The signature covers the exact body bytes that were sent, prefixed with a domain
//! separation tag, so verification never depends on re-encoding.

use crate::identity::{PublicKey, SecretKey};
use crate::{pf_is_valid, MemberId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;

/// First bytes of every encoded crowd document.
pub const MAGIC: &[u8; 6] = b"CROWD1";
/// Largest encoded document a jondo will read (about 50,000 members).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Most members a document may list.
pub const MAX_MEMBERS: usize = 50_000;
/// Longest crowd name.
pub const MAX_CROWD_NAME: usize = 64;
/// Signed bytes are this tag followed by the body, so a document signature can never be
/// confused with any other signature made by the blender key.
const SIGNATURE_CONTEXT: &[u8] = b"crowds crowd document v1\0";

/// Member flag: the member could not be reached by the blender and never forwards.
pub const FLAG_CLIENT_ONLY: u8 = 1;

/// Why a document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// More bytes than [`MAX_DOCUMENT_BYTES`].
    #[error("crowd document too large ({0} bytes)")]
    TooLarge(usize),
    /// The bytes do not start with [`MAGIC`].
    #[error("not a crowd document (bad magic)")]
    BadMagic,
    /// The envelope or body could not be decoded.
    #[error("malformed crowd document: {0}")]
    Malformed(String),
    /// The signature does not verify under the pinned blender key.
    #[error("crowd document signature is not valid for the pinned blender key")]
    BadSignature,
    /// A field has an impossible value.
    #[error("invalid crowd document: {0}")]
    Invalid(&'static str),
}

/// One member as listed in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's number, assigned by the blender.
    pub id: MemberId,
    /// Where other jondos reach the member's peer port.
    pub addr: SocketAddr,
    /// The member's identity key; links authenticate against it.
    pub key: PublicKey,
    /// Bit flags ([`FLAG_CLIENT_ONLY`]).
    pub flags: u8,
}

impl Member {
    /// Whether other jondos may choose this member as a forwarder.
    pub fn forwards(&self) -> bool {
        self.flags & FLAG_CLIENT_ONLY == 0
    }
}

/// The content of a crowd document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrowdDocument {
    /// The crowd's name (one blender may serve several crowds later).
    pub crowd: String,
    /// Increases by one each time the member set changes.
    pub epoch: u64,
    /// The forward probability pf of this crowd.
    pub forward_probability: f64,
    /// When the blender signed it, unix milliseconds.
    pub issued_at: u64,
    /// After this instant (unix milliseconds) the document must not be used.
    pub expires_at: u64,
    /// The members, sorted by id.
    pub members: Vec<Member>,
}

impl CrowdDocument {
    /// Checks the structural rules every document must satisfy.
    pub fn check(&self) -> Result<(), DocumentError> {
        if self.crowd.len() > MAX_CROWD_NAME {
            return Err(DocumentError::Invalid("crowd name too long"));
        }
        if !pf_is_valid(self.forward_probability) {
            return Err(DocumentError::Invalid("forward probability outside [0, 1)"));
        }
        if self.expires_at <= self.issued_at {
            return Err(DocumentError::Invalid("expires before it is issued"));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(DocumentError::Invalid("too many members"));
        }
        if !self.members.windows(2).all(|w| w[0].id < w[1].id) {
            return Err(DocumentError::Invalid("members not sorted by unique id"));
        }
        let mut keys = HashSet::with_capacity(self.members.len());
        if !self.members.iter().all(|m| keys.insert(m.key)) {
            return Err(DocumentError::Invalid("two members share a key"));
        }
        Ok(())
    }

    /// The member with this id.
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.members[i])
    }

    /// The member holding this key.
    pub fn member_by_key(&self, key: &PublicKey) -> Option<&Member> {
        self.members.iter().find(|m| &m.key == key)
    }

    /// Ids of the members that may be chosen as forwarders, in id order.
    pub fn forwarders(&self) -> Vec<MemberId> {
        self.members
            .iter()
            .filter(|m| m.forwards())
            .map(|m| m.id)
            .collect()
    }

    /// Signs and encodes the document.
    pub fn sign(&self, key: &SecretKey) -> Result<Vec<u8>, DocumentError> {
        self.check()?;
        let body =
            postcard::to_stdvec(self).map_err(|e| DocumentError::Malformed(e.to_string()))?;
        let signature = key.sign(&signed_bytes(&body)).to_vec();
        Envelope { body, signature }.encode()
    }

    /// Decodes `bytes`, verifies the signature under `blender` and checks the content.
    pub fn verify(bytes: &[u8], blender: &PublicKey) -> Result<Self, DocumentError> {
        let envelope = Envelope::decode(bytes)?;
        if !blender.verify(&signed_bytes(&envelope.body), &envelope.signature) {
            return Err(DocumentError::BadSignature);
        }
        let doc: CrowdDocument = decode_body(&envelope.body)?;
        doc.check()?;
        Ok(doc)
    }
}

pub(crate) fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_CONTEXT.len() + body.len());
    msg.extend_from_slice(SIGNATURE_CONTEXT);
    msg.extend_from_slice(body);
    msg
}

pub(crate) fn decode_body(body: &[u8]) -> Result<CrowdDocument, DocumentError> {
    let (doc, rest) = postcard::take_from_bytes::<CrowdDocument>(body)
        .map_err(|e| DocumentError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DocumentError::Malformed("trailing bytes after body".into()));
    }
    Ok(doc)
}

/// The signed wrapper: body bytes as signed, and the signature.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) body: Vec<u8>,
    pub(crate) signature: Vec<u8>,
}

impl Envelope {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, DocumentError> {
        let mut out = MAGIC.to_vec();
        out.extend(postcard::to_stdvec(self).map_err(|e| DocumentError::Malformed(e.to_string()))?);
        Ok(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DocumentError> {
        let envelope: Envelope = decode_framed(bytes, MAGIC, "envelope")?;
        if envelope.signature.len() != 64 {
            return Err(DocumentError::Malformed("signature is not 64 bytes".into()));
        }
        Ok(envelope)
    }
}

/// Decodes `magic` followed by one postcard value and nothing else, at most
/// [`MAX_DOCUMENT_BYTES`] in all.
pub(crate) fn decode_framed<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    magic: &[u8],
    what: &str,
) -> Result<T, DocumentError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError::TooLarge(bytes.len()));
    }
    let rest = bytes.strip_prefix(magic).ok_or(DocumentError::BadMagic)?;
    let (value, trailing) = postcard::take_from_bytes::<T>(rest)
        .map_err(|e| DocumentError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(DocumentError::Malformed(format!(
            "trailing bytes after {what}"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
