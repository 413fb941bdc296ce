//! Document deltas: `DocumentDelta::apply` on untrusted bytes against a fixed base.
//!
//! Two modes, chosen by the input:
//! - input starting with `CRDLT1`: the bytes are an encoded delta, applied as they are;
//!   whatever applies must be a document that verifies under the pinned key and keeps
//!   the base's crowd;
//! - anything else: the bytes are a document *body*; if it decodes and checks, the
//!   harness signs it, builds the delta from the base and applies it, which must give
//!   back exactly the signed document (the delta path loses nothing).
#![no_main]

use crowds_fuzz::{blender, blender_public, sample_document};
use crowds_proto::delta::{DocumentDelta, DELTA_MAGIC};
use crowds_proto::document::CrowdDocument;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = blender_public();
    let base = sample_document(3, 5, 1_000);
    if data.starts_with(DELTA_MAGIC) {
        if let Ok(full) = DocumentDelta::apply(&base, data, &key) {
            let doc = CrowdDocument::verify(&full, &key).expect("an applied delta verifies");
            assert_eq!(doc.crowd, base.crowd);
        }
        return;
    }
    let Ok(mut next) = postcard::from_bytes::<CrowdDocument>(data) else {
        return;
    };
    next.crowd = base.crowd.clone();
    let Ok(signed) = next.sign(blender()) else {
        return;
    };
    let delta = DocumentDelta::encode_between(&base, &signed).expect("a delta encodes");
    assert_eq!(
        DocumentDelta::apply(&base, &delta, &key).expect("the delta applies"),
        signed
    );
});
