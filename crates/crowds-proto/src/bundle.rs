//! The page bundle: how an exit sends a page and its embedded objects back along a path.
//!
//! This is the full paper's timing defence. When the initiator asks for it (the
//! [`PREFETCH_HEADER`] on a GET), an exit that receives an HTML page parses it while
//! streaming it, fetches the page's embedded objects itself, and sends them back on the
//! same response, after announcing each one. The initiator answers the browser's
//! follow-up requests for those objects itself, so no request for them travels the path
//! and a collaborator on the path cannot time the gap between page and follow-ups.
//!
//! This module owns the framing only (no I/O): each frame is a type byte, a 4-byte
//! big-endian length and a payload of at most [`MAX_FRAME_PAYLOAD`] bytes. The decoder is
//! incremental (feed bytes, take frames) and rejects anything malformed.

/// Request header: the initiator accepts a bundle for this GET.
pub const PREFETCH_HEADER: &str = "crowds-prefetch";
/// Response header: the body is a bundle, not the page itself.
pub const BUNDLE_HEADER: &str = "crowds-bundle";
/// Response header carrying the page's own Content-Length inside a bundle.
pub const PAGE_LENGTH_HEADER: &str = "crowds-page-length";
/// Largest payload of one frame.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;
/// Longest URL announced or fetched.
pub const MAX_URL: usize = 4096;
/// Most response headers of one object.
pub const MAX_OBJECT_HEADERS: usize = 64;

/// One frame of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes of the page, in order.
    PageData(Vec<u8>),
    /// The page is complete.
    PageEnd,
    /// The exit will send this object (absolute `http://` URL) later in the bundle.
    Announce(String),
    /// An object's response head; its data frames follow, then [`Frame::ObjectEnd`].
    ObjectHead {
        /// The object's absolute URL, as announced.
        url: String,
        /// HTTP status.
        status: u16,
        /// Response headers (already sanitised by the exit).
        headers: Vec<(String, Vec<u8>)>,
    },
    /// Bytes of the current object.
    ObjectData(Vec<u8>),
    /// The current object is complete.
    ObjectEnd,
    /// An announced object could not be fetched; the initiator asks the crowd for it.
    ObjectFailed(String),
}

/// What is wrong with a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// An unknown frame type.
    #[error("unknown bundle frame type {0}")]
    UnknownType(u8),
    /// A frame longer than [`MAX_FRAME_PAYLOAD`].
    #[error("bundle frame too long ({0} bytes)")]
    TooLong(usize),
    /// A payload that does not decode.
    #[error("malformed bundle frame: {0}")]
    Malformed(&'static str),
}

const T_PAGE_DATA: u8 = 1;
const T_PAGE_END: u8 = 2;
const T_ANNOUNCE: u8 = 3;
const T_OBJECT_HEAD: u8 = 4;
const T_OBJECT_DATA: u8 = 5;
const T_OBJECT_END: u8 = 6;
const T_OBJECT_FAILED: u8 = 7;

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl Frame {
    /// Encodes the frame. Data longer than [`MAX_FRAME_PAYLOAD`] must be split by the
    /// caller (see [`encode_data`]); heads that do not fit are an error.
    pub fn encode(&self) -> Result<Vec<u8>, BundleError> {
        let out = match self {
            Frame::PageData(d) => frame(T_PAGE_DATA, d),
            Frame::PageEnd => frame(T_PAGE_END, &[]),
            Frame::Announce(url) => frame(T_ANNOUNCE, url.as_bytes()),
            Frame::ObjectHead {
                url,
                status,
                headers,
            } => {
                let payload = postcard::to_stdvec(&(url, status, headers))
                    .map_err(|_| BundleError::Malformed("object head"))?;
                frame(T_OBJECT_HEAD, &payload)
            }
            Frame::ObjectData(d) => frame(T_OBJECT_DATA, d),
            Frame::ObjectEnd => frame(T_OBJECT_END, &[]),
            Frame::ObjectFailed(url) => frame(T_OBJECT_FAILED, url.as_bytes()),
        };
        if out.len() - 5 > MAX_FRAME_PAYLOAD {
            return Err(BundleError::TooLong(out.len() - 5));
        }
        Ok(out)
    }
}

/// Encodes page or object bytes as as many data frames as needed.
pub fn encode_data(page: bool, data: &[u8]) -> Vec<u8> {
    let kind = if page { T_PAGE_DATA } else { T_OBJECT_DATA };
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / MAX_FRAME_PAYLOAD + 1));
    for chunk in data.chunks(MAX_FRAME_PAYLOAD) {
        out.extend(frame(kind, chunk));
    }
    out
}

fn url(payload: &[u8]) -> Result<String, BundleError> {
    if payload.len() > MAX_URL {
        return Err(BundleError::Malformed("URL too long"));
    }
    let text = std::str::from_utf8(payload).map_err(|_| BundleError::Malformed("URL not UTF-8"))?;
    if !text.starts_with("http://") {
        return Err(BundleError::Malformed("not an http:// URL"));
    }
    Ok(text.to_string())
}

/// The encoded content of an object head: URL, status, headers.
type ObjectHeadWire = (String, u16, Vec<(String, Vec<u8>)>);

/// Decodes a bundle incrementally.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, BundleError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME_PAYLOAD {
            return Err(BundleError::TooLong(len));
        }
        if !(T_PAGE_DATA..=T_OBJECT_FAILED).contains(&kind) {
            return Err(BundleError::UnknownType(kind));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
        let frame = match kind {
            T_PAGE_DATA => Frame::PageData(payload),
            T_PAGE_END if payload.is_empty() => Frame::PageEnd,
            T_ANNOUNCE => Frame::Announce(url(&payload)?),
            T_OBJECT_HEAD => {
                let ((u, status, headers), rest): (ObjectHeadWire, _) =
                    postcard::take_from_bytes(&payload)
                        .map_err(|_| BundleError::Malformed("object head"))?;
                if !rest.is_empty() || headers.len() > MAX_OBJECT_HEADERS {
                    return Err(BundleError::Malformed("object head"));
                }
                Frame::ObjectHead {
                    url: url(u.as_bytes())?,
                    status,
                    headers,
                }
            }
            T_OBJECT_DATA => Frame::ObjectData(payload),
            T_OBJECT_END if payload.is_empty() => Frame::ObjectEnd,
            T_OBJECT_FAILED => Frame::ObjectFailed(url(&payload)?),
            _ => return Err(BundleError::Malformed("end frame with a payload")),
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Frame> {
        vec![
            Frame::Announce("http://a.example/x.png".into()),
            Frame::PageData(b"<html><img src=x.png>".to_vec()),
            Frame::PageEnd,
            Frame::ObjectHead {
                url: "http://a.example/x.png".into(),
                status: 200,
                headers: vec![("content-type".into(), b"image/png".to_vec())],
            },
            Frame::ObjectData(vec![1, 2, 3]),
            Frame::ObjectEnd,
            Frame::ObjectFailed("http://a.example/y.css".into()),
        ]
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let bytes: Vec<u8> = sample()
            .iter()
            .flat_map(|f| f.encode().expect("encode"))
            .collect();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().expect("valid") {
                out.push(f);
            }
        }
        assert_eq!(out, sample());
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn big_data_is_split() {
        let data = vec![7u8; MAX_FRAME_PAYLOAD * 2 + 10];
        let mut d = Decoder::new();
        d.push(&encode_data(true, &data));
        let mut total = 0;
        while let Some(Frame::PageData(chunk)) = d.next_frame().expect("valid") {
            assert!(chunk.len() <= MAX_FRAME_PAYLOAD);
            total += chunk.len();
        }
        assert_eq!(total, data.len());
    }

    #[test]
    fn bad_frames() {
        let mut d = Decoder::new();
        d.push(&[9, 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(BundleError::UnknownType(9)));
        let mut d = Decoder::new();
        d.push(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(BundleError::TooLong(_))));
        let mut d = Decoder::new();
        d.push(&frame(T_ANNOUNCE, b"file:///etc/passwd"));
        assert!(d.next_frame().is_err());
        let mut d = Decoder::new();
        d.push(&frame(T_PAGE_END, b"x"));
        assert!(d.next_frame().is_err());
        assert!(Frame::Announce("x".repeat(MAX_FRAME_PAYLOAD + 1))
            .encode()
            .is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut d = Decoder::new();
            for c in chunks {
                d.push(&c);
                while let Ok(Some(_)) = d.next_frame() {}
            }
        }
    }
}
