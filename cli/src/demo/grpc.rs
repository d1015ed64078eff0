//! Just enough gRPC for the demo's `emoji` service: message framing and a few protobuf
//! messages, encoded by hand.
//!
//! The demo exists to show the proxy handling real gRPC (HTTP/2, `application/grpc`,
//! `grpc-status` in trailers), not to exercise a gRPC library, so it carries no code
//! generator or runtime: the wire format of two messages fits in this file. Only what the
//! demo sends is supported: uncompressed, single-message unary calls whose protobuf messages
//! hold length-delimited fields (strings and sub-messages).

use bytes::{BufMut, Bytes, BytesMut};

/// `grpc-status` codes the demo uses.
pub(crate) mod code {
    pub(crate) const OK: u32 = 0;
    pub(crate) const INVALID_ARGUMENT: u32 = 3;
    pub(crate) const NOT_FOUND: u32 = 5;
    pub(crate) const UNIMPLEMENTED: u32 = 12;
}

pub(crate) const CONTENT_TYPE: &str = "application/grpc";
pub(crate) const LIST_ALL: &str = "/emoji.EmojiService/ListAll";
pub(crate) const FIND_BY_SHORTCODE: &str = "/emoji.EmojiService/FindByShortcode";

/// `message Emoji { string unicode = 1; string shortcode = 2; }`
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Emoji {
    pub unicode: String,
    pub shortcode: String,
}

/// Why bytes from the wire were not a message we understand.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(&'static str);

// === framing ===

/// Prefixes `message` with gRPC's 5-byte header: a compression flag (0) and a big-endian length.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(message.len() as u32);
    buf.put_slice(message);
    buf.freeze()
}

/// Returns the one message in a unary call's body.
pub(crate) fn unframe(body: &[u8]) -> Result<&[u8], DecodeError> {
    let (header, rest) = body
        .split_at_checked(5)
        .ok_or(DecodeError("grpc frame shorter than its header"))?;
    if header[0] != 0 {
        return Err(DecodeError("compressed grpc messages are not supported"));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if rest.len() != len {
        return Err(DecodeError("grpc frame length does not match the body"));
    }
    Ok(rest)
}

// === messages ===

/// `message FindByShortcodeRequest { string shortcode = 1; }`
pub(crate) fn encode_find_request(shortcode: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    put_field(&mut buf, 1, shortcode.as_bytes());
    buf
}

pub(crate) fn decode_find_request(buf: &[u8]) -> Result<String, DecodeError> {
    let mut shortcode = String::new();
    for field in Fields(buf) {
        if let (1, bytes) = field? {
            shortcode = utf8(bytes)?;
        }
    }
    Ok(shortcode)
}

/// `message FindByShortcodeResponse { Emoji emoji = 1; }`
pub(crate) fn encode_find_response(emoji: &Emoji) -> Vec<u8> {
    let mut buf = Vec::new();
    put_field(&mut buf, 1, &encode_emoji(emoji));
    buf
}

pub(crate) fn decode_find_response(buf: &[u8]) -> Result<Option<Emoji>, DecodeError> {
    let mut emoji = None;
    for field in Fields(buf) {
        if let (1, bytes) = field? {
            emoji = Some(decode_emoji(bytes)?);
        }
    }
    Ok(emoji)
}

/// `message ListAllResponse { repeated Emoji list = 1; }`
pub(crate) fn encode_list_response(list: &[Emoji]) -> Vec<u8> {
    let mut buf = Vec::new();
    for emoji in list {
        put_field(&mut buf, 1, &encode_emoji(emoji));
    }
    buf
}

pub(crate) fn decode_list_response(buf: &[u8]) -> Result<Vec<Emoji>, DecodeError> {
    let mut list = Vec::new();
    for field in Fields(buf) {
        if let (1, bytes) = field? {
            list.push(decode_emoji(bytes)?);
        }
    }
    Ok(list)
}

fn encode_emoji(emoji: &Emoji) -> Vec<u8> {
    let mut buf = Vec::new();
    put_field(&mut buf, 1, emoji.unicode.as_bytes());
    put_field(&mut buf, 2, emoji.shortcode.as_bytes());
    buf
}

fn decode_emoji(buf: &[u8]) -> Result<Emoji, DecodeError> {
    let mut emoji = Emoji {
        unicode: String::new(),
        shortcode: String::new(),
    };
    for field in Fields(buf) {
        match field? {
            (1, bytes) => emoji.unicode = utf8(bytes)?,
            (2, bytes) => emoji.shortcode = utf8(bytes)?,
            _ => {}
        }
    }
    Ok(emoji)
}

// === protobuf wire format ===

/// Wire type 2: a varint length followed by that many bytes.
const LENGTH_DELIMITED: u64 = 2;

fn put_field(buf: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(buf, (number << 3) | LENGTH_DELIMITED);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn take_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first().ok_or(DecodeError("truncated varint"))?;
        *buf = rest;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint longer than 10 bytes"))
}

fn utf8(bytes: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError("string field is not utf-8"))
}

/// Iterates over a message's `(field number, bytes)` pairs, skipping varint fields and
/// rejecting the wire types the demo never sends (fixed-width numbers, groups).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.0.is_empty() {
                return None;
            }
            let field = (|| {
                let key = take_varint(&mut self.0)?;
                match key & 7 {
                    0 => take_varint(&mut self.0).map(|_| None),
                    LENGTH_DELIMITED => {
                        let len = usize::try_from(take_varint(&mut self.0)?)
                            .map_err(|_| DecodeError("field length overflows"))?;
                        let (bytes, rest) = self
                            .0
                            .split_at_checked(len)
                            .ok_or(DecodeError("truncated field"))?;
                        self.0 = rest;
                        Ok(Some((key >> 3, bytes)))
                    }
                    _ => Err(DecodeError("unsupported protobuf wire type")),
                }
            })();
            match field {
                Ok(None) => continue,
                Ok(Some(field)) => return Some(Ok(field)),
                Err(e) => {
                    // Stop after an error: the rest of the buffer cannot be trusted.
                    self.0 = &[];
                    return Some(Err(e));
                }
            }
        }
    }
}

// === impl DecodeError ===

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn emoji(unicode: &str, shortcode: &str) -> Emoji {
        Emoji {
            unicode: unicode.into(),
            shortcode: shortcode.into(),
        }
    }

    #[test]
    fn frames_round_trip() {
        let framed = frame(b"hello");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(unframe(&framed), Ok(&b"hello"[..]));
        assert!(unframe(&framed[..7]).is_err());
        assert!(unframe(&[1, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn messages_round_trip() {
        let list = vec![emoji("😂", ":joy:"), emoji("💯", ":100:")];
        assert_eq!(decode_list_response(&encode_list_response(&list)), Ok(list));
        assert_eq!(
            decode_find_request(&encode_find_request(":joy:")),
            Ok(":joy:".into())
        );
        let joy = emoji("😂", ":joy:");
        assert_eq!(
            decode_find_response(&encode_find_response(&joy)),
            Ok(Some(joy))
        );
        assert_eq!(decode_find_response(&[]), Ok(None));
    }

    #[test]
    fn matches_protoc_encoding() {
        // `FindByShortcodeRequest { shortcode: ":joy:" }` as encoded by protoc.
        assert_eq!(encode_find_request(":joy:"), b"\x0a\x05:joy:");
        let mut long = Vec::new();
        put_varint(&mut long, 300);
        assert_eq!(long, [0xac, 0x02]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for input in [
            &b"\x0a"[..],
            b"\x0a\x05ab",
            b"\x0d\x00\x00\x00\x00",
            b"\xff\xff\xff",
        ] {
            assert!(decode_list_response(input).is_err(), "{input:?}");
        }
        // Unknown varint fields are skipped, as protobuf requires.
        assert_eq!(decode_find_request(b"\x10\x01\x0a\x01x"), Ok("x".into()));
    }
}
