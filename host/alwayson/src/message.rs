//! Messages: the 15-byte header and the bodies of AUTH, BIND/UNBIND, requests and responses.
//!
//! ```text
//! header:   version u8 (1), code u8, requestId u32, endpointId u32, sessionId u32, multipart u8
//! AUTH:     claimCount u8, claimCount x (name str, value str)
//! BIND:     gateway u8 (1: gatewayName str, gatewayType str follow), count u16, count x name str
//! request:  entityType u8, entityName str, characteristic u8, name str,
//!           headerCount u8, headerCount x (name str, value str), params (0x05 table | 0xFF)
//! response: reasonMarker u8 (non-zero: reason str follows), content (0x05 table | 0xFF)
//! ```

use crate::Error;
use crate::codes::{self, Code};
use crate::value::Table;
use crate::wire::{Reader, Writer};

/// The protocol version every message carries.
pub const VERSION: u8 = 1;
/// The header's size.
pub const HEADER: usize = 15;
/// What a multipart frame adds to it: chunkId u16, chunkCount u16, chunkSize u16.
pub const MULTIPART_HEADER: usize = 6;
/// The session id an AUTH is sent with.
pub const NO_SESSION: u32 = 0xFFFF_FFFF;

/// The fields of a header but the multipart marker (which framing decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub code: Code,
    pub request_id: u32,
    pub endpoint_id: u32,
    pub session_id: u32,
}

impl Header {
    pub(crate) fn write(&self, w: &mut Writer, multipart: bool) {
        w.u8(VERSION);
        w.u8(self.code.0);
        w.u32(self.request_id);
        w.u32(self.endpoint_id);
        w.u32(self.session_id);
        w.u8(u8::from(multipart));
    }

    /// Reads a header; the multipart marker is returned beside it.
    pub(crate) fn read(r: &mut Reader) -> Result<(Header, bool), Error> {
        let version = r.u8("the header")?;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let code = Code(r.u8("the header")?);
        let request_id = r.u32("the header")?;
        let endpoint_id = r.u32("the header")?;
        let session_id = r.u32("the header")?;
        let multipart = match r.u8("the header")? {
            0 => false,
            1 => true,
            other => {
                return Err(Error::BadMarker {
                    what: "the multipart marker",
                    found: other,
                    at: 14,
                });
            }
        };
        Ok((
            Header {
                code,
                request_id,
                endpoint_id,
                session_id,
            },
            multipart,
        ))
    }

    /// The header of the answer to this request: its ids, the given code.
    pub fn answer(&self, code: Code) -> Header {
        Header { code, ..*self }
    }
}

/// A gateway that binds Things on behalf of others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub name: String,
    pub kind: String,
}

/// A GET, PUT, POST or DEL.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub entity_type: u8,
    pub entity_name: String,
    pub characteristic: u8,
    pub name: String,
    pub headers: Vec<(String, String)>,
    pub params: Option<Table>,
}

impl Request {
    fn read(r: &mut Reader) -> Result<Request, Error> {
        let entity_type = r.u8("the entity type")?;
        let entity_name = r.string("the entity's name")?;
        let characteristic = r.u8("the characteristic")?;
        let name = r.string("the characteristic's name")?;
        let count = r.u8("the header count")?;
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            headers.push((r.string("a header's name")?, r.string("a header's value")?));
        }
        let params = content(r, "the parameters")?;
        Ok(Request {
            entity_type,
            entity_name,
            characteristic,
            name,
            headers,
            params,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.u8(self.entity_type);
        w.string(&self.entity_name);
        w.u8(self.characteristic);
        w.string(&self.name);
        w.u8(self.headers.len() as u8);
        for (n, v) in &self.headers {
            w.string(n);
            w.string(v);
        }
        write_content(w, self.params.as_ref());
    }
}

/// An answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub reason: Option<String>,
    pub content: Option<Table>,
}

/// `0x05` and a table, or `0xFF` for none.
fn content(r: &mut Reader, what: &'static str) -> Result<Option<Table>, Error> {
    let at = r.offset();
    match r.u8(what)? {
        codes::INFOTABLE => Ok(Some(Table::read(r, 0)?)),
        codes::NOTHING => Ok(None),
        other => Err(Error::BadMarker {
            what,
            found: other,
            at,
        }),
    }
}

fn write_content(w: &mut Writer, table: Option<&Table>) {
    match table {
        Some(t) => {
            w.u8(codes::INFOTABLE);
            t.write(w);
        }
        None => w.u8(codes::NOTHING),
    }
}

/// A message's body, by its code.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Auth {
        claims: Vec<(String, String)>,
    },
    /// BIND or UNBIND (the header's code tells which).
    Bind {
        gateway: Option<Gateway>,
        names: Vec<String>,
    },
    Request(Request),
    Response(Response),
    /// KEEP_ALIVE: whatever follows the header is ignored.
    KeepAlive,
}

impl Body {
    /// Reads the body of a message with `code`.
    pub(crate) fn read(code: Code, r: &mut Reader) -> Result<Body, Error> {
        let body = if code.is_request() {
            Body::Request(Request::read(r)?)
        } else if code.is_response() {
            let reason = match r.u8("the reason marker")? {
                0 => None,
                _ => Some(r.string("the reason")?),
            };
            Body::Response(Response {
                reason,
                content: content(r, "the content")?,
            })
        } else if code == Code::AUTH {
            let count = r.u8("the claim count")?;
            let mut claims = Vec::with_capacity(count as usize);
            for _ in 0..count {
                claims.push((r.string("a claim's name")?, r.string("a claim's value")?));
            }
            Body::Auth { claims }
        } else if code == Code::BIND || code == Code::UNBIND {
            let gateway = match r.u8("the gateway marker")? {
                0 => None,
                _ => Some(Gateway {
                    name: r.string("the gateway's name")?,
                    kind: r.string("the gateway's type")?,
                }),
            };
            let count = r.u16("the count of names")? as usize;
            // Each name takes at least its length byte.
            let mut names = Vec::with_capacity(count.min(r.remaining()));
            for _ in 0..count {
                names.push(r.string("a Thing's name")?);
            }
            Body::Bind { gateway, names }
        } else if code == Code::KEEP_ALIVE {
            r.rest();
            Body::KeepAlive
        } else {
            return Err(Error::UnknownCode(code.0));
        };
        if r.remaining() > 0 {
            return Err(Error::Trailing {
                left: r.remaining(),
                at: r.offset(),
            });
        }
        Ok(body)
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
            Body::Auth { claims } => {
                w.u8(claims.len() as u8);
                for (n, v) in claims {
                    w.string(n);
                    w.string(v);
                }
            }
            Body::Bind { gateway, names } => {
                match gateway {
                    Some(g) => {
                        w.u8(1);
                        w.string(&g.name);
                        w.string(&g.kind);
                    }
                    None => w.u8(0),
                }
                w.u16(names.len() as u16);
                for n in names {
                    w.string(n);
                }
            }
            Body::Request(r) => r.write(w),
            Body::Response(r) => {
                match &r.reason {
                    Some(reason) => {
                        w.u8(1);
                        w.string(reason);
                    }
                    None => w.u8(0),
                }
                write_content(w, r.content.as_ref());
            }
            Body::KeepAlive => {}
        }
    }

    /// Does this body go with `code`?
    pub fn fits(&self, code: Code) -> bool {
        match self {
            Body::Auth { .. } => code == Code::AUTH,
            Body::Bind { .. } => code == Code::BIND || code == Code::UNBIND,
            Body::Request(_) => code.is_request(),
            Body::Response(_) => code.is_response(),
            Body::KeepAlive => code == Code::KEEP_ALIVE,
        }
    }
}

/// A whole message: a header and its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub header: Header,
    pub body: Body,
}

impl Message {
    /// The AUTH a device sends first.
    pub fn auth(request_id: u32, app_key: &str) -> Message {
        Message {
            header: Header {
                code: Code::AUTH,
                request_id,
                endpoint_id: 0,
                session_id: NO_SESSION,
            },
            body: Body::Auth {
                claims: vec![("appKey".into(), app_key.into())],
            },
        }
    }

    /// The answer to `request` with `code`, a reason, and a table.
    pub fn answer(
        request: &Header,
        code: Code,
        reason: Option<String>,
        content: Option<Table>,
    ) -> Message {
        Message {
            header: request.answer(code),
            body: Body::Response(Response { reason, content }),
        }
    }

    /// Whether every count the protocol writes fits its field: at most 255 claims and headers,
    /// 65,535 names, fields, aspects and rows, values within the nesting limit. The writer
    /// would otherwise cut a count short and send a frame that is not what it means.
    pub fn check_counts(&self) -> Result<(), Error> {
        let over = |what: &str, n: usize, max: usize| {
            if n > max {
                Err(Error::Counts(format!("{n} {what} (at most {max})")))
            } else {
                Ok(())
            }
        };
        match &self.body {
            Body::Auth { claims } => over("claims", claims.len(), u8::MAX as usize),
            Body::Bind { names, .. } => over("names", names.len(), u16::MAX as usize),
            Body::Request(r) => {
                over("headers", r.headers.len(), u8::MAX as usize)?;
                r.params.as_ref().map_or(Ok(()), |t| t.check_counts(0))
            }
            Body::Response(r) => r.content.as_ref().map_or(Ok(()), |t| t.check_counts(0)),
            Body::KeepAlive => Ok(()),
        }
    }

    /// The body's bytes (without the header).
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.body.write(&mut w);
        w.bytes
    }

    /// The message as one frame, whatever its size (framing into chunks: [`crate::frames`]).
    pub fn to_frame(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.header.write(&mut w, false);
        self.body.write(&mut w);
        w.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for part in s.split_whitespace() {
            if let Some(text) = part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                out.extend_from_slice(text.as_bytes());
            } else {
                for i in (0..part.len()).step_by(2) {
                    out.push(u8::from_str_radix(&part[i..i + 2], 16).unwrap());
                }
            }
        }
        out
    }

    /// C1: the protocol note's worked AUTH, byte for byte.
    #[test]
    fn c1_the_worked_auth_frame_byte_for_byte() {
        let frame =
            hex(r#"01 14 00003039 00000000 ffffffff 00 01 06 "appKey" 0f "my-app-key-0000""#);
        let m = Message::auth(12345, "my-app-key-0000");
        assert_eq!(m.to_frame(), frame);
        assert_eq!(crate::decode(&frame).unwrap(), crate::Frame::Whole(m));
    }

    /// The protocol note's worked GET of `Things/SteamSensor1/Properties/Temp`.
    #[test]
    fn the_worked_get_frame_byte_for_byte() {
        let frame =
            hex(r#"01 01 00000005 00000000 00001234 00 0a 0c "SteamSensor1" 01 04 "Temp" 00 ff"#);
        let m = Message {
            header: Header {
                code: Code::GET,
                request_id: 5,
                endpoint_id: 0,
                session_id: 0x1234,
            },
            body: Body::Request(Request {
                entity_type: codes::THING,
                entity_name: "SteamSensor1".into(),
                characteristic: codes::PROPERTIES,
                name: "Temp".into(),
                headers: vec![],
                params: None,
            }),
        };
        assert_eq!(m.to_frame(), frame);
        assert_eq!(crate::decode(&frame).unwrap(), crate::Frame::Whole(m));
    }

    #[test]
    fn every_body_round_trips() {
        let header = |code| Header {
            code,
            request_id: 7,
            endpoint_id: 3,
            session_id: 99,
        };
        let bodies = [
            (
                Code::BIND,
                Body::Bind {
                    gateway: None,
                    names: vec!["A".into(), "B".into()],
                },
            ),
            (
                Code::UNBIND,
                Body::Bind {
                    gateway: Some(Gateway {
                        name: "gw".into(),
                        kind: "EMS".into(),
                    }),
                    names: vec!["A".into()],
                },
            ),
            (
                Code::POST,
                Body::Request(Request {
                    entity_type: codes::THING,
                    entity_name: "Pump".into(),
                    characteristic: codes::SERVICES,
                    name: "Vent".into(),
                    headers: vec![("h".into(), "v".into())],
                    params: Some(Table::single("amount", crate::Value::Number(2.0))),
                }),
            ),
            (
                Code::NOT_FOUND,
                Body::Response(Response {
                    reason: Some("no such Thing".into()),
                    content: None,
                }),
            ),
            (
                Code::SUCCESS,
                Body::Response(Response {
                    reason: None,
                    content: Some(Table::single("result", crate::Value::Boolean(true))),
                }),
            ),
            (Code::KEEP_ALIVE, Body::KeepAlive),
        ];
        for (code, body) in bodies {
            assert!(body.fits(code));
            let m = Message {
                header: header(code),
                body,
            };
            assert_eq!(
                crate::decode(&m.to_frame()).unwrap(),
                crate::Frame::Whole(m)
            );
        }
    }

    #[test]
    fn bytes_after_a_body_are_refused() {
        let mut frame = Message::auth(1, "k").to_frame();
        frame.push(0);
        let e = crate::decode(&frame).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 byte(s) after the message's end, at byte 25"
        );
    }

    #[test]
    fn an_unknown_code_or_version_is_refused() {
        let mut frame = Message::auth(1, "k").to_frame();
        frame[1] = 0x30;
        assert_eq!(crate::decode(&frame).unwrap_err(), Error::UnknownCode(0x30));
        frame[0] = 2;
        assert_eq!(crate::decode(&frame).unwrap_err(), Error::Version(2));
    }
}
