//! Messages larger than one chunk (8,192 bytes by default) travel as several frames, each with
//! six more header bytes: `chunkId u16` (from 1), `chunkCount u16`, `chunkSize u16` (the
//! sender's chunk size). Every chunk of a request starts with the request's entity type and
//! name; the receiver strips them and puts them back once.

use crate::message::{Body, HEADER, MULTIPART_HEADER, Message};
use crate::wire::{Reader, Writer};
use crate::{Code, Error};
use std::collections::{BTreeMap, HashMap};

/// One chunk as received.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub header: crate::Header,
    pub id: u16,
    pub count: u16,
    pub size: u16,
    /// A request's entity type and name, repeated in each of its chunks.
    pub entity: Option<(u8, String)>,
    pub data: Vec<u8>,
}

impl Chunk {
    pub(crate) fn read(header: crate::Header, r: &mut Reader) -> Result<Chunk, Error> {
        let id = r.u16("the chunk id")?;
        let count = r.u16("the chunk count")?;
        let size = r.u16("the chunk size")?;
        if id == 0 || id > count {
            return Err(Error::BadChunk(format!("chunk {id} of {count}")));
        }
        let entity = if header.code.is_request() {
            Some((
                r.u8("a chunk's entity type")?,
                r.string("a chunk's entity name")?,
            ))
        } else if header.code.is_response() {
            None
        } else {
            return Err(Error::NotChunked { code: header.code });
        };
        Ok(Chunk {
            header,
            id,
            count,
            size,
            entity,
            data: r.rest().to_vec(),
        })
    }
}

/// The frames of `message`: one when it fits `chunk_size` bytes, else chunks of at most
/// `chunk_size` bytes each. A message over `max_message` bytes is refused (the SDK's rule).
pub fn frames(
    message: &Message,
    chunk_size: usize,
    max_message: usize,
) -> Result<Vec<Vec<u8>>, Error> {
    message.check_counts()?;
    let body = message.body_bytes();
    let size = body.len() + HEADER;
    if size > max_message {
        return Err(Error::TooLarge {
            size,
            max: max_message,
        });
    }
    if size <= chunk_size {
        return Ok(vec![message.to_frame()]);
    }
    // A request's entity, written before the data of each chunk.
    let (prefix, rest): (Vec<u8>, &[u8]) = match &message.body {
        Body::Request(r) => {
            let mut w = Writer::new();
            w.u8(r.entity_type);
            w.string(&r.entity_name);
            let n = w.bytes.len();
            (w.bytes, &body[n..])
        }
        Body::Response(_) => (Vec::new(), &body[..]),
        _ => {
            return Err(Error::NotChunked {
                code: message.header.code,
            });
        }
    };
    let room = chunk_size
        .checked_sub(HEADER + MULTIPART_HEADER + prefix.len())
        .filter(|room| *room > 0)
        .ok_or_else(|| {
            Error::BadChunk(format!(
                "a chunk size of {chunk_size} bytes leaves no room for data"
            ))
        })?;
    let count = rest.len().div_ceil(room);
    let count16 = u16::try_from(count)
        .map_err(|_| Error::BadChunk(format!("{count} chunks (at most 65,535)")))?;
    let size16 = u16::try_from(chunk_size).map_err(|_| {
        Error::BadChunk(format!(
            "a chunk size of {chunk_size} bytes (at most 65,535)"
        ))
    })?;
    Ok(rest
        .chunks(room)
        .enumerate()
        .map(|(i, data)| {
            let mut w = Writer::new();
            message.header.write(&mut w, true);
            w.u16(i as u16 + 1);
            w.u16(count16);
            w.u16(size16);
            w.raw(&prefix);
            w.raw(data);
            w.bytes
        })
        .collect())
}

/// The smallest chunk size a sender may declare (the SDKs use 8,192): tiny chunks would make a
/// message of many thousands of parts.
pub const MIN_CHUNK: usize = 256;
/// What the reassembler counts for each chunk it holds, beside its data (its map entry).
pub const CHUNK_OVERHEAD: usize = 64;

/// Chunks being put back together into messages, bounded: a message's declared size
/// (`chunkCount x chunkSize`) and its bytes at most `max_message`, at most `max_pending`
/// messages at once, each dropped `timeout_ms` after its first chunk ([`Reassembler::expire`]).
pub struct Reassembler {
    max_message: usize,
    max_pending: usize,
    timeout_ms: u64,
    pending: HashMap<u32, Pending>,
}

struct Pending {
    header: crate::Header,
    count: u16,
    entity: Option<(u8, String)>,
    chunks: BTreeMap<u16, Vec<u8>>,
    bytes: usize,
    since_ms: u64,
}

impl Reassembler {
    pub fn new(max_message: usize, max_pending: usize, timeout_ms: u64) -> Reassembler {
        Reassembler {
            max_message,
            max_pending,
            timeout_ms,
            pending: HashMap::new(),
        }
    }

    /// How many messages are incomplete.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The bytes held for incomplete messages.
    pub fn held(&self) -> usize {
        self.pending.values().map(|p| p.bytes).sum()
    }

    /// Takes one chunk at `now_ms`; the whole message once its last chunk is in. A chunk over a
    /// limit or at odds with its message's earlier chunks drops that message and is an error.
    pub fn add(&mut self, chunk: Chunk, now_ms: u64) -> Result<Option<Message>, Error> {
        let declared = chunk.count as usize * chunk.size as usize;
        let id = chunk.header.request_id;
        if (chunk.size as usize) < MIN_CHUNK || chunk.data.len() > chunk.size as usize {
            self.pending.remove(&id);
            return Err(Error::BadChunk(format!(
                "a chunk of {} bytes declared with a chunk size of {} (at least {MIN_CHUNK})",
                chunk.data.len(),
                chunk.size
            )));
        }
        if declared > self.max_message {
            self.pending.remove(&id);
            return Err(Error::TooLarge {
                size: declared,
                max: self.max_message,
            });
        }
        if !self.pending.contains_key(&id) {
            if self.pending.len() >= self.max_pending {
                return Err(Error::TooManyPending {
                    max: self.max_pending,
                });
            }
            self.pending.insert(
                id,
                Pending {
                    header: chunk.header,
                    count: chunk.count,
                    entity: chunk.entity.clone(),
                    chunks: BTreeMap::new(),
                    bytes: 0,
                    since_ms: now_ms,
                },
            );
        }
        let p = self.pending.get_mut(&id).expect("inserted above");
        let at_odds =
            if p.header != chunk.header || p.count != chunk.count || p.entity != chunk.entity {
                Some("its header, count or entity differ from its first chunk's".to_string())
            } else if p.chunks.contains_key(&chunk.id) {
                Some(format!("chunk {} of {} came twice", chunk.id, chunk.count))
            } else {
                None
            };
        if let Some(why) = at_odds {
            self.pending.remove(&id);
            return Err(Error::BadChunk(format!("message {id}: {why}")));
        }
        p.bytes += chunk.data.len() + CHUNK_OVERHEAD;
        if p.bytes > self.max_message {
            let size = p.bytes;
            self.pending.remove(&id);
            return Err(Error::TooLarge {
                size,
                max: self.max_message,
            });
        }
        p.chunks.insert(chunk.id, chunk.data);
        if p.chunks.len() < p.count as usize {
            return Ok(None);
        }
        let p = self.pending.remove(&id).expect("present");
        let mut w = Writer::new();
        if let Some((t, name)) = &p.entity {
            w.u8(*t);
            w.string(name);
        }
        for data in p.chunks.values() {
            w.raw(data);
        }
        let body = Body::read(p.header.code, &mut Reader::new(&w.bytes))?;
        Ok(Some(Message {
            header: p.header,
            body,
        }))
    }

    /// Drops the messages whose first chunk came more than the timeout before `now_ms`; their
    /// request ids.
    pub fn expire(&mut self, now_ms: u64) -> Vec<u32> {
        let timeout = self.timeout_ms;
        let stale: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.since_ms) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in &stale {
            self.pending.remove(id);
        }
        stale
    }

    /// The request code of a message being reassembled.
    pub fn code_of(&self, request_id: u32) -> Option<Code> {
        self.pending.get(&request_id).map(|p| p.header.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, Header, Request, Response, Table, Value, codes, decode};

    fn post(bytes_of_text: usize) -> Message {
        Message {
            header: Header {
                code: Code::POST,
                request_id: 42,
                endpoint_id: 0,
                session_id: 7,
            },
            body: Body::Request(Request {
                entity_type: codes::THING,
                entity_name: "Boiler1".into(),
                characteristic: codes::SERVICES,
                name: "Store".into(),
                headers: vec![],
                params: Some(Table::single(
                    "text",
                    Value::string("x".repeat(bytes_of_text)),
                )),
            }),
        }
    }

    fn size(m: &Message) -> usize {
        m.body_bytes().len() + HEADER
    }

    fn join(frames: &[Vec<u8>], r: &mut Reassembler) -> Result<Option<Message>, Error> {
        let mut out = None;
        for f in frames {
            match decode(f)? {
                Frame::Chunk(c) => out = r.add(c, 0)?,
                Frame::Whole(m) => out = Some(m),
            }
        }
        Ok(out)
    }

    /// C6: a message one byte over a chunk goes in chunks no larger than the chunk size, and
    /// comes back whole, in any order of its chunks.
    #[test]
    fn c6_a_message_larger_than_a_chunk_travels_in_chunks_and_comes_back_whole() {
        // The text's length takes 4 bytes from 128 on: sizes measured from one that long.
        let text = 8192 - size(&post(200)) + 200;
        let exact = post(text);
        assert_eq!(size(&exact), 8192);
        assert_eq!(frames(&exact, 8192, 1 << 20).unwrap().len(), 1);
        for m in [post(text + 1), post(100_000), {
            let mut r = post(0);
            r.header.code = Code::SUCCESS;
            r.body = Body::Response(Response {
                reason: None,
                content: Some(Table::single("result", Value::string("y".repeat(30_000)))),
            });
            r
        }] {
            let mut sent = frames(&m, 8192, 1 << 20).unwrap();
            assert!(sent.len() > 1);
            assert!(
                sent.iter().all(|f| f.len() <= 8192),
                "a chunk over 8,192 bytes"
            );
            sent.reverse();
            let mut r = Reassembler::new(1 << 20, 4, 10_000);
            assert_eq!(join(&sent, &mut r).unwrap(), Some(m));
            assert_eq!(r.pending(), 0);
        }
    }

    /// C6: at the size limit a message passes; one byte over, it is refused, as a limit.
    #[test]
    fn c6_the_message_size_limit_holds_both_ways() {
        let max = 64 * 1024;
        let base = size(&post(200)) - 200;
        let at = post(max - base);
        assert_eq!(size(&at), max);
        let sent = frames(&at, 8192, max).unwrap();
        let mut r = Reassembler::new(max + 8192, 4, 10_000);
        assert_eq!(join(&sent, &mut r).unwrap(), Some(at));
        let over = frames(&post(max - base + 1), 8192, max).unwrap_err();
        assert!(over.is_limit(), "{over}");
        // A receiver with a smaller limit refuses a message declared larger, at its first chunk.
        let sent = frames(&post(30_000), 8192, 1 << 20).unwrap();
        let mut small = Reassembler::new(16 * 1024, 4, 10_000);
        let e = join(&sent, &mut small).unwrap_err();
        assert!(e.is_limit(), "{e}");
        assert_eq!(small.pending(), 0);
    }

    #[test]
    fn c6_incomplete_messages_are_bounded_in_number_and_age() {
        let sent = frames(&post(20_000), 8192, 1 << 20).unwrap();
        let mut r = Reassembler::new(1 << 20, 2, 1_000);
        for id in 0..2u32 {
            let mut f = sent[0].clone();
            f[2..6].copy_from_slice(&id.to_be_bytes());
            let Frame::Chunk(c) = decode(&f).unwrap() else {
                panic!()
            };
            assert_eq!(r.add(c, 0).unwrap(), None);
        }
        let Frame::Chunk(c) = decode(&sent[0]).unwrap() else {
            panic!()
        };
        assert!(r.add(c, 0).unwrap_err().is_limit());
        assert!(r.held() > 0);
        assert_eq!(r.expire(500), Vec::<u32>::new());
        let mut gone = r.expire(1_001);
        gone.sort();
        assert_eq!(gone, vec![0, 1]);
        assert_eq!((r.pending(), r.held()), (0, 0));
    }

    #[test]
    fn a_chunk_twice_or_at_odds_with_its_message_drops_the_message() {
        let sent = frames(&post(20_000), 8192, 1 << 20).unwrap();
        let chunk = |i: usize| match decode(&sent[i]).unwrap() {
            Frame::Chunk(c) => c,
            Frame::Whole(_) => panic!(),
        };
        let mut r = Reassembler::new(1 << 20, 4, 10_000);
        r.add(chunk(0), 0).unwrap();
        assert!(matches!(r.add(chunk(0), 0), Err(Error::BadChunk(_))));
        assert_eq!(r.pending(), 0);
        r.add(chunk(0), 0).unwrap();
        let mut other = chunk(1);
        other.entity = Some((codes::THING, "Other".into()));
        assert!(matches!(r.add(other, 0), Err(Error::BadChunk(_))));
        assert_eq!(r.pending(), 0);
        // Chunk 0, or one past the count, is not a chunk.
        let mut f = sent[0].clone();
        f[15..17].copy_from_slice(&0u16.to_be_bytes());
        assert!(matches!(decode(&f), Err(Error::BadChunk(_))));
        // A declared chunk size under the minimum, or data larger than it, is not a chunk.
        let mut tiny = chunk(0);
        tiny.size = 16;
        assert!(matches!(r.add(tiny, 0), Err(Error::BadChunk(_))));
        let mut fat = chunk(0);
        fat.size = 300;
        assert!(matches!(r.add(fat, 0), Err(Error::BadChunk(_))));
        // AUTH and BIND are never chunked.
        let mut f = sent[0].clone();
        f[1] = Code::AUTH.0;
        assert!(matches!(decode(&f), Err(Error::NotChunked { .. })));
    }
}
