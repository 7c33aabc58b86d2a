//! Reading and writing the protocol's primitives: big-endian integers, IEEE doubles, and its
//! strings (a length below 128 in one byte, else four bytes with bit 0x80 of the first set).
//!
//! The reader never allocates more than the bytes it has left: every length is checked against
//! them first, so a forged length cannot make it reserve memory it was not sent.

use crate::Error;

/// A cursor over one frame or message.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Where the next byte is read (for errors).
    pub fn offset(&self) -> usize {
        self.at
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The bytes left, taken.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    /// `n` bytes, or the error that the frame ends first.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                what,
                at: self.at,
                needed: n,
                left: self.remaining(),
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, Error> {
        Ok(self.u32(what)? as i32)
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, Error> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn f64(&mut self, what: &'static str) -> Result<f64, Error> {
        Ok(f64::from_bits(self.i64(what)? as u64))
    }

    /// A string's length: one byte below 128, else four with bit 0x80 of the first masked off.
    pub fn length(&mut self, what: &'static str) -> Result<usize, Error> {
        let first = self.u8(what)?;
        if first < 0x80 {
            return Ok(first as usize);
        }
        let rest = self.take(3, what)?;
        Ok(u32::from_be_bytes([first & 0x7f, rest[0], rest[1], rest[2]]) as usize)
    }

    /// A string (UTF-8; a null string, one `00`, is empty).
    pub fn string(&mut self, what: &'static str) -> Result<String, Error> {
        let at = self.at;
        let n = self.length(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::NotUtf8 { what, at })
    }
}

/// Appends primitives to a buffer.
#[derive(Default)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i32(&mut self, v: i32) {
        self.bytes.extend_from_slice(&v.to_be_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.bytes.extend_from_slice(&v.to_be_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.bytes.extend_from_slice(&v.to_bits().to_be_bytes());
    }

    /// A length as strings carry it. Lengths of 2^31 bytes or more cannot be written; nothing
    /// here comes near (messages are at most a few MiB), so they are refused by the caller's
    /// size limits long before.
    pub fn length(&mut self, n: usize) {
        if n < 0x80 {
            self.u8(n as u8);
        } else {
            let n = (n as u32) & 0x7fff_ffff;
            self.u32(n | 0x8000_0000);
        }
    }

    pub fn string(&mut self, s: &str) {
        self.length(s.len());
        self.bytes.extend_from_slice(s.as_bytes());
    }

    pub fn raw(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_take_one_length_byte_below_128_and_four_above() {
        for n in [0usize, 1, 127, 128, 300, 70_000] {
            let s = "x".repeat(n);
            let mut w = Writer::new();
            w.string(&s);
            assert_eq!(w.bytes.len(), n + if n < 128 { 1 } else { 4 });
            let mut r = Reader::new(&w.bytes);
            assert_eq!(r.string("s").unwrap(), s);
            assert_eq!(r.remaining(), 0);
        }
        // 128 bytes: 80 00 00 80.
        let mut w = Writer::new();
        w.string(&"a".repeat(128));
        assert_eq!(&w.bytes[..4], &[0x80, 0, 0, 0x80]);
    }

    #[test]
    fn a_length_beyond_the_frame_is_an_error_not_an_allocation() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, b'a']);
        let e = r.string("name").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Truncated {
                    needed: 0x7fff_ffff,
                    left: 1,
                    ..
                }
            ),
            "{e}"
        );
    }
}
