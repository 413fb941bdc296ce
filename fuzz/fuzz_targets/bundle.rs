//! Page bundles (the timing defence): the initiator decodes frames an exit sent along
//! the path, so every byte is untrusted.
//!
//! Feeds the input to `bundle::Decoder` in chunks whose sizes come from the input
//! itself, and checks that decoding never panics, that every decoded frame re-encodes
//! to bytes that decode to the same frame, and that no frame exceeds the payload limit.
#![no_main]

use crowds_proto::bundle::{Decoder, Frame, MAX_FRAME_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = Decoder::new();
    for chunk in rest.chunks(step) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => check(&frame),
                Ok(None) | Err(_) => break,
            }
        }
    }
});

fn check(frame: &Frame) {
    if let Frame::PageData(d) | Frame::ObjectData(d) = frame {
        assert!(d.len() <= MAX_FRAME_PAYLOAD);
    }
    let bytes = frame.encode().expect("a decoded frame re-encodes");
    let mut again = Decoder::new();
    again.push(&bytes);
    assert_eq!(
        again.next_frame().expect("re-decodes").as_ref(),
        Some(frame)
    );
    assert_eq!(again.pending(), 0);
}
