//! The vendor's AlwaysOn edge protocol as bytes (`protocols/alwayson.md` in the shared folder,
//! and the vendor's public Edge C SDK): frames, messages, typed values, InfoTables, and the
//! multipart framing of messages larger than one chunk.
//!
//! **Architecture Invariant:** this crate does no I/O and keeps no clock: the server and the
//! simulator hand it bytes and the time. Nothing it is given makes it panic, allocate more than
//! the bytes it was given (or the limits it was told), or loop: every length is checked against
//! the bytes left, nesting is bounded ([`value::MAX_DEPTH`]), and a message being reassembled is
//! bounded in size, number and age ([`Reassembler`]).
//!
//! ```
//! use thinghost_alwayson::{decode, frames, Frame, Message};
//! let auth = Message::auth(1, "my-app-key");
//! let sent = frames(&auth, 8192, 1 << 20).unwrap();
//! assert_eq!(sent.len(), 1);
//! assert_eq!(decode(&sent[0]).unwrap(), Frame::Whole(auth));
//! ```

pub mod codes;
pub mod message;
pub mod multipart;
pub mod value;
pub mod wire;

pub use codes::Code;
pub use message::{Body, Gateway, Header, Message, Request, Response};
pub use multipart::{Chunk, Reassembler, frames};
pub use value::{Field, Table, Value};

/// Why bytes are not a message, or a message cannot be sent or taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the frame ends inside {what}: byte {at} needs {needed} byte(s), {left} left")]
    Truncated {
        what: &'static str,
        at: usize,
        needed: usize,
        left: usize,
    },
    #[error("{what} at byte {at} is not UTF-8")]
    NotUtf8 { what: &'static str, at: usize },
    #[error("protocol version {0}, not 1")]
    Version(u8),
    #[error("unknown message code 0x{0:02X}")]
    UnknownCode(u8),
    #[error("unknown base type 0x{base_type:02X} at byte {at}")]
    UnknownBaseType { base_type: u8, at: usize },
    #[error("{what}: marker 0x{found:02X} at byte {at} is not one the protocol has")]
    BadMarker {
        what: &'static str,
        found: u8,
        at: usize,
    },
    #[error("values nest deeper than {} levels, at byte {at}", value::MAX_DEPTH)]
    TooDeep { at: usize },
    #[error("{left} byte(s) after the message's end, at byte {at}")]
    Trailing { left: usize, at: usize },
    #[error("multipart: {0}")]
    BadChunk(String),
    #[error("a message cannot say this many: {0}")]
    Counts(String),
    #[error("a {code} message is never sent in chunks")]
    NotChunked { code: Code },
    /// Over a limit the receiver set: answered with BAD_REQUEST, the connection kept (C6).
    #[error("a message of {size} bytes is over the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// Over a limit the receiver set: answered with BAD_REQUEST, the connection kept (C6).
    #[error("{max} messages are being reassembled already")]
    TooManyPending { max: usize },
}

impl Error {
    /// Is this a limit the receiver set (answer BAD_REQUEST and keep the connection), rather
    /// than bytes that are not the protocol (close it, C6)?
    pub fn is_limit(&self) -> bool {
        matches!(self, Error::TooLarge { .. } | Error::TooManyPending { .. })
    }
}

/// One frame as received: a whole message, or one chunk of a larger one.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Whole(Message),
    Chunk(Chunk),
}

/// Reads one frame.
pub fn decode(bytes: &[u8]) -> Result<Frame, Error> {
    let mut r = wire::Reader::new(bytes);
    let (header, multipart) = Header::read(&mut r)?;
    if multipart {
        return Chunk::read(header, &mut r).map(Frame::Chunk);
    }
    let body = message::Body::read(header.code, &mut r)?;
    Ok(Frame::Whole(Message { header, body }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// C6: no bytes make the decoder panic, and whatever it accepts it writes back as
        /// what it read.
        #[test]
        fn c6_any_bytes_are_a_frame_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Frame::Whole(m)) = decode(&bytes) {
                prop_assert_eq!(decode(&m.to_frame()).unwrap(), Frame::Whole(m));
            }
        }

        /// The same, from a valid header on: random bodies of every code.
        #[test]
        fn c6_any_body_after_a_valid_header_is_a_message_or_an_error(
            code in prop::sample::select(Code::TABLE.iter().map(|r| r.0.0).collect::<Vec<u8>>()),
            multipart in 0u8..2,
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut frame = vec![1, code, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, multipart];
            frame.extend(body);
            let mut joiner = Reassembler::new(1 << 16, 4, 10_000);
            match decode(&frame) {
                Ok(Frame::Chunk(c)) => { let _ = joiner.add(c, 0); }
                Ok(Frame::Whole(m)) => prop_assert_eq!(decode(&m.to_frame()).unwrap(), Frame::Whole(m)),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn c6_truncated_frames_are_errors_at_every_length() {
        let m = Message {
            header: Header {
                code: Code::POST,
                request_id: 9,
                endpoint_id: 0,
                session_id: 1,
            },
            body: Body::Request(Request {
                entity_type: codes::THING,
                entity_name: "Pump".into(),
                characteristic: codes::SERVICES,
                name: "UpdateSubscribedPropertyValues".into(),
                headers: vec![],
                params: Some(Table::single("values", Value::Number(1.0))),
            }),
        };
        let frame = m.to_frame();
        for n in 0..frame.len() {
            assert!(decode(&frame[..n]).is_err(), "{n} bytes");
        }
        assert!(decode(&frame).is_ok());
    }
}
